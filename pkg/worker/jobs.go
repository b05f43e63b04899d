package worker

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

// errRejected starts the reason of a file a rule rejects.
const errRejected = "rejected by rule"

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
		m.failed, m.class = true, retry.Classify(err)
		return nil
	}
	log.InfoContext(ctx, "job spec event forwarded to the jobs queue", "specs", specs)
	return kept
}

// checkJobs reads the job of each job task message (cached per environment): a task
// of a job that is no longer running is skipped — acknowledged without any work, so a
// cancelled or failed job's remaining tasks cost one cached read.
func (h *Handler) checkJobs(ctx context.Context, log *slog.Logger, msgs []*message) {
	for _, m := range msgs {
		if m.jobID == "" || m.poison != nil {
			continue
		}
		j, err := h.deps.Jobs.Job(ctx, m.jobID)
		switch {
		case errors.Is(err, job.ErrUnknownJob):
			log.WarnContext(ctx, "task of an unknown job acknowledged without work", "job_id", m.jobID, "task_id", m.taskID)
			m.skipped = true
		case err != nil:
			log.WarnContext(ctx, "cannot read the job; the task comes back", "job_id", m.jobID, "error", err)
			m.failed, m.class = true, retry.Classify(err)
		case j.Status != ledger.JobRunning:
			m.skipped = true
		default:
			m.job = j
		}
	}
}

// jobStopped checks, before each file of a job starts, that the job still runs (from
// the engine's short cache). Once it does not, the message is skipped: acknowledged,
// never counted.
func (h *Handler) jobStopped(ctx context.Context, m *message) bool {
	if m.jobID == "" {
		return false
	}
	if m.skipped {
		return true
	}
	if j, err := h.deps.Jobs.Job(ctx, m.jobID); err == nil && j.Status != ledger.JobRunning {
		m.skipped = true
	}
	return m.skipped
}

// settleJobs counts each job task message whose files are all finished: one
// transaction for the batch's tasks; then the report lines of the tasks counted now
// (a duplicate's lines were written by the delivery that was counted, unless it died
// first); then each job is checked for completion. A task whose parent is not counted
// yet comes back; so does one whose lines or check failed (it is then a duplicate, and
// is checked again).
func (h *Handler) settleJobs(ctx context.Context, log *slog.Logger, msgs []*message) {
	var ready []*message
	var settlements []ledger.Settlement
	lines := map[*message][]job.Line{}
	for _, m := range msgs {
		if m.jobID == "" || m.poison != nil || m.skipped || m.failed || !finished(m) {
			continue
		}
		s := ledger.Settlement{JobID: m.jobID, TaskID: m.taskID, Parent: m.parent, Index: m.index, Shards: m.job.Shards}
		ls := make([]job.Line, 0, len(m.items))
		for _, it := range m.items {
			l := job.Line{Bucket: it.file.Bucket, Key: it.file.LedgerKey(), VersionID: it.file.VersionID}
			if it.status == ledger.StatusSucceeded {
				s.Succeeded++
				s.Bytes += fileBytes(it)
				l.Status, l.HTTPStatus = job.Succeeded, 200
				l.Message = "s3://" + h.cfg.OutputBucket + "/" + h.outputKey(it.file, m.jobID, it.pr)
			} else {
				s.Failed++
				l.Status = job.Failed
				l.ErrorCode, l.HTTPStatus = errorCode(it)
				if it.err != nil {
					l.Message = it.err.Error()
				}
			}
			ls = append(ls, l)
		}
		ready = append(ready, m)
		settlements = append(settlements, s)
		lines[m] = ls
	}
	if len(ready) == 0 {
		return
	}
	out, err := h.deps.Jobs.Settle(ctx, settlements)
	if err != nil {
		log.WarnContext(ctx, "cannot count the batch's job tasks; they come back", "tasks", len(ready), "error", err)
		for _, m := range ready {
			m.failed, m.class = true, retry.Classify(err)
		}
		return
	}
	var wg sync.WaitGroup
	jobs := map[string][]*message{}
	for i, m := range ready {
		switch out[i] {
		case ledger.ParentPending:
			// Its planning task sent it and is not counted yet: back after a short wait.
			m.failed, m.class, m.parentPending = true, retry.Retryable, true
			continue
		case ledger.UnknownJob:
			log.WarnContext(ctx, "task of an unknown job", "job_id", m.jobID, "task_id", m.taskID)
			continue
		case ledger.Orphan:
			log.WarnContext(ctx, "orphan task acknowledged uncounted: a re-run of its planning task sent it, the counted run did not",
				"job_id", m.jobID, "task_id", m.taskID, "parent", m.parent)
			continue
		case ledger.Duplicate:
			log.InfoContext(ctx, "duplicate task delivery: counted before", "job_id", m.jobID, "task_id", m.taskID)
		}
		jobs[m.jobID] = append(jobs[m.jobID], m)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := h.writeLines(ctx, m, lines[m], out[i] == ledger.Duplicate)
			if err != nil {
				log.WarnContext(ctx, "cannot write the task's report lines; it comes back", "job_id", m.jobID, "task_id", m.taskID, "error", err)
				m.failed, m.class = true, retry.Classify(err)
			}
		}()
	}
	wg.Wait()
	for id, ms := range jobs {
		if slices.ContainsFunc(ms, func(m *message) bool { return m.failed }) {
			continue // a task's lines are missing: it comes back, and checks then
		}
		if err := h.deps.Jobs.Check(ctx, id); err != nil {
			log.WarnContext(ctx, "job check failed; its tasks come back to check again", "job_id", id, "error", err)
			for _, m := range ms {
				m.failed, m.class = true, retry.Classify(err)
			}
		}
	}
}

// writeLines writes a counted task's report lines; for a duplicate only if the counted
// delivery did not (it died between counting and writing).
func (h *Handler) writeLines(ctx context.Context, m *message, lines []job.Line, duplicate bool) error {
	if duplicate {
		ok, err := h.deps.Jobs.HasPart(ctx, m.jobID, m.taskID)
		if err != nil || ok {
			return err
		}
	}
	return h.deps.Jobs.WritePart(ctx, m.jobID, m.taskID, lines)
}

// waitForParent sends the task again, delayed by ParentWait, counting its waits in a
// message attribute, so that waiting does not use up its receives. It reports whether
// it did (the original is then acknowledged); past MaxParentWaits it does not.
func (h *Handler) waitForParent(ctx context.Context, log *slog.Logger, m *message) bool {
	url, err := h.queueURL(ctx, m.rec.EventSourceARN)
	sent := false
	if err == nil {
		sent, err = job.WaitForParent(ctx, h.deps.Queue, url, m.rec, ParentWait, MaxParentWaits)
	}
	if err != nil {
		log.WarnContext(ctx, "cannot send the task again to wait for its parent; it comes back instead", "job_id", m.jobID, "error", err)
	}
	return sent
}

// finished: every file of the message succeeded or failed for good (a job's file whose
// receives are exhausted counts as failed).
func finished(m *message) bool {
	for _, it := range m.items {
		switch it.status {
		case ledger.StatusSucceeded, ledger.StatusFailed, ledger.StatusDeadLettered:
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

// errorCode is a failed file's ErrorCode and HTTP status in the report.
func errorCode(it *item) (string, int) {
	msg := ""
	if it.err != nil {
		msg = it.err.Error()
	}
	switch {
	case it.status == ledger.StatusDeadLettered:
		return "RetriesExhausted", 500
	case strings.Contains(msg, errRejected):
		return "Rejected", 403
	case strings.Contains(msg, "superseded"):
		return "PreconditionFailed", 412
	case strings.Contains(msg, "not found"):
		return "NoSuchKey", 404
	default:
		return "PermanentFailure", 400
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
	out := h.cfg.OutputPrefix + pr.OutputKey(name)
	if f.Range != nil {
		return job.PartOutputKey(out, jobID, f.Range.Part)
	}
	return out
}
