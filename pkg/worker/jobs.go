package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

// forwardSpecs sends an S3 event that names job specs (jobs/*.json) to the jobs queue,
// and returns the event's other files. If it cannot, the message comes back.
func (h *Handler) forwardSpecs(ctx context.Context, log *slog.Logger, m *message, files []task.File) []task.File {
	kept := files[:0:0]
	specs := 0
	for _, f := range files {
		if job.IsSpecKey(f.Key) {
			specs++
			continue
		}
		kept = append(kept, f)
	}
	if specs == 0 {
		return files
	}
	_, err := h.deps.Queue.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(h.cfg.JobsQueueURL), MessageBody: aws.String(m.rec.Body)})
	if err != nil {
		log.WarnContext(ctx, "cannot forward a job spec event to the jobs queue; it comes back", "error", err)
		m.decide(job.Retry(h.cfg.Retry.Delay(m.receive, retry.Classify(err)), "forward job spec: "+err.Error()))
		return nil
	}
	log.InfoContext(ctx, "job spec event forwarded to the jobs queue", "specs", specs)
	return kept
}

// checkJobs reads the job of each job task message (cached per environment): a task
// of a job that is no longer running is acknowledged without any work, so a cancelled
// or failed job's remaining tasks cost one cached read. A task received before (a
// redelivery, or a copy sent again) is first looked up in the ledger: one counted
// already is acknowledged without redoing its files.
func (h *Handler) checkJobs(ctx context.Context, log *slog.Logger, msgs []*message) {
	for _, m := range msgs {
		if m.d.JobID == "" || m.decided != nil {
			continue
		}
		j, err := h.deps.Jobs.Job(ctx, m.d.JobID)
		switch {
		case errors.Is(err, job.ErrUnknownJob):
			log.WarnContext(ctx, "task of an unknown job acknowledged without work", "job_id", m.d.JobID, "task_id", m.d.TaskID)
			m.decide(job.Acknowledge("unknown job"))
			continue
		case err != nil:
			// The ledger, not the task, failed: sent again, spending none of its receives
			// (an outage longer than its receives' backoff would dead-letter it uncounted).
			m.decide(job.Again(h.cfg.Retry.Delay(m.receive+job.SentAgain(m.rec), retry.Classify(err)), "read job: "+err.Error()))
			continue
		case j.Status != ledger.JobRunning:
			m.decide(job.Acknowledge("job " + string(j.Status)))
			continue
		}
		if m.receive > 1 || job.SentAgain(m.rec) > 0 {
			switch v, err := h.deps.Jobs.TaskState(ctx, m.d.JobID, m.d.TaskID, m.d.Parent, m.d.ParentRun); {
			case err != nil:
				log.WarnContext(ctx, "cannot read the task's state; processing it", "job_id", m.d.JobID, "task_id", m.d.TaskID, "error", err)
			case v == job.Duplicate:
				// Counted before; check its job again (a copy sent to repeat a failed check
				// is exactly this).
				if err := h.deps.Jobs.Check(ctx, m.d.JobID); err != nil {
					m.decide(job.Action{Kind: job.SendAgain, Delay: CheckWait, Why: "check job: " + err.Error(), Else: job.Ack})
				} else {
					m.decide(job.Acknowledge("duplicate"))
				}
			case v == job.Orphan:
				m.decide(job.Acknowledge(v.String()))
			}
		}
	}
}

// jobStopped checks, before each file of a job starts, that the job still runs (from
// the engine's short cache). Once it does not, the message is acknowledged, never
// counted.
func (h *Handler) jobStopped(ctx context.Context, m *message) bool {
	if m.d.JobID == "" {
		return false
	}
	if m.decided != nil {
		return true
	}
	if j, err := h.deps.Jobs.Job(ctx, m.d.JobID); err == nil && j.Status != ledger.JobRunning {
		m.decide(job.Acknowledge("job " + string(j.Status)))
		return true
	}
	return false
}

// reportJobs reports each job task message whose files are all finished to the job
// engine, in one call for the batch; the answers decide the messages' actions.
func (h *Handler) reportJobs(ctx context.Context, log *slog.Logger, msgs []*message) {
	var ready []*message
	var results []job.TaskResult
	for _, m := range msgs {
		if m.d.JobID == "" || m.decided != nil || m.answer != nil || !finished(m) {
			continue // not a job's, decided, reported already (completeAtOnce), or not finished
		}
		r := job.TaskResult{JobID: m.d.JobID, TaskID: m.d.TaskID, Parent: m.d.Parent, ParentRun: m.d.ParentRun}
		for _, it := range m.items {
			key, _ := job.FileKey(it.file, "")
			l := job.Line{Bucket: it.file.Bucket, Key: key.Key, VersionID: it.file.VersionID}
			if it.state == succeeded {
				r.Succeeded++
				r.Bytes += fileBytes(it)
				l.Status, l.HTTPStatus = job.Succeeded, 200
				l.Message = "s3://" + h.cfg.OutputBucket + "/" + h.outputKey(it.file, m.d.JobID, it.pr)
			} else {
				if it.state == superseded && it.file.Member == nil && it.file.Range == nil {
					// The key's newer revision is processed on its own: not this job's failure.
					r.Superseded++
				} else {
					// A member or a part of a file the job was planned on that changed since:
					// nothing else processes the new content's members or parts.
					r.Failed++
				}
				l.Status = job.Failed
				def := failure.ProcessorFailed
				if it.state == deadLettered {
					def = failure.RetriesExhausted
				}
				l.ErrorCode, l.HTTPStatus = failure.CodeOf(it.err, def)
				if it.state == deadLettered {
					l.ErrorCode, l.HTTPStatus = failure.RetriesExhausted, failure.StatusOf(failure.RetriesExhausted)
				}
				if it.err != nil {
					l.Message = it.err.Error()
				}
			}
			r.Lines = append(r.Lines, l)
		}
		for _, b := range m.bad {
			r.Failed++
			r.Lines = append(r.Lines, job.Line{Bucket: b.File.Bucket, Key: b.File.Key, VersionID: b.File.VersionID, Status: job.Failed,
				ErrorCode: failure.InvalidEntry, HTTPStatus: failure.StatusOf(failure.InvalidEntry), Message: b.Err.Error()})
		}
		ready = append(ready, m)
		results = append(results, r)
	}
	if len(ready) == 0 {
		return
	}
	answers := h.deps.Jobs.Report(ctx, results)
	for i, m := range ready {
		a := answers[i]
		m.answer = &a
		switch a.Verdict {
		case job.Orphan:
			log.WarnContext(ctx, "orphan task dropped uncounted: a run of its fan-out task that was not counted sent it",
				"job_id", m.d.JobID, "task_id", m.d.TaskID, "parent", m.d.Parent)
		case job.NotCounted, job.CheckFailed:
			log.WarnContext(ctx, "job task: "+a.Verdict.String(), "job_id", m.d.JobID, "task_id", m.d.TaskID, "error", a.Err)
		}
	}
}

// finished: every file of the message is done for its job (succeeded, failed for good,
// superseded, or counted failed on its last receive).
func finished(m *message) bool {
	for _, it := range m.items {
		switch it.state {
		case succeeded, failed, superseded, deadLettered:
		default:
			return false
		}
	}
	return true
}

func fileBytes(it *item) int64 {
	switch f := it.file; {
	case it.bytes > 0:
		return it.bytes
	case f.Range != nil:
		return f.Range.End - f.Range.Start
	case f.Member != nil:
		return f.Member.Size
	default:
		return f.Size
	}
}

// outputKey is where a file's output goes: the output prefix and the file's name as the
// processors rename it; a split part goes beside its merged output. pr is the processing
// result, or nil to derive the naming from the file's rule (for a duplicate, whose
// output was written by an earlier delivery).
func (h *Handler) outputKey(f task.File, jobID string, pr *process.Result) string {
	name := f.Name()
	if pr == nil {
		pr = &process.Result{Key: name}
		if rule, ok := h.cfg.Rules.Match(name, ""); ok && rule.Reject == "" {
			// Processors set their naming when they wrap the stream; nothing is read.
			_, _ = process.Chain(strings.NewReader(""), pr, h.procs[strings.Join(rule.Processors, ",")]...)
		}
	}
	out := h.cfg.OutputPrefix + f.OutputName(pr.OutputKey)
	if f.Range != nil {
		return job.PartOutputKey(out, jobID, f.Range.Part)
	}
	return out
}
