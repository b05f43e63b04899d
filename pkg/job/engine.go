package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/upload"
)

// Ledger is the part of the ledger store the engine calls.
type Ledger interface {
	GetJob(ctx context.Context, id string) (ledger.Job, bool, error)
	Get(ctx context.Context, k ledger.Key) (ledger.Record, bool, error)
	Settle(ctx context.Context, now time.Time, all []ledger.Settlement) ([]ledger.Outcome, error)
	TaskState(ctx context.Context, jobID, taskID, parent, parentRun string) (ledger.Outcome, error)
	JobSnapshot(ctx context.Context, id string, shards int) (ledger.Snapshot, error)
	PeekCounts(ctx context.Context, id string, shards int) (ledger.Snapshot, error)
	FinishJob(ctx context.Context, id string, status ledger.JobStatus, reason string, snap ledger.Snapshot, now time.Time) (bool, error)
	StopJob(ctx context.Context, id string, shards int, status ledger.JobStatus, reason string, now time.Time) (bool, ledger.Snapshot, error)
	CountedTasks(ctx context.Context, jobID string) ([]ledger.CountedTask, error)
	MarkNotified(ctx context.Context, id, report string, missing int, now time.Time) error
	ClaimFinalize(ctx context.Context, id string, now time.Time, lease time.Duration) (int64, bool, error)
	ReleaseFinalize(ctx context.Context, id string, token int64) error
	MarkFinalizeRequested(ctx context.Context, id string, now time.Time) error
	OpenJobs(ctx context.Context) ([]string, error)
	MarkReconciled(ctx context.Context, id string, stuck int, now time.Time) error
}

// Objects is the part of the S3 client the engine calls (reports, split merges).
type Objects interface {
	upload.API
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	CopyObject(context.Context, *s3.CopyObjectInput, ...func(*s3.Options)) (*s3.CopyObjectOutput, error)
	UploadPartCopy(context.Context, *s3.UploadPartCopyInput, ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error)
}

// Publisher is the part of the SNS client the engine calls.
type Publisher interface {
	Publish(context.Context, *sns.PublishInput, ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// Engine runs jobs' bookkeeping. It is safe for concurrent use.
type Engine struct {
	Ledger       Ledger
	Objects      Objects
	Topic        Publisher // nil: no notification
	TopicARN     string
	OutputBucket string
	OutputPrefix string
	Log          *slog.Logger
	Now          func() time.Time
	// Queue and JobsQueueURL, if set, are where a finished job's finalize task is sent
	// (the dispatcher runs it). Without them the engine finalizes inline (the CLI).
	Queue        Sender
	JobsQueueURL string
	// StatusTTL is how long a job's status is cached per execution environment: a
	// cancel or an early failure stops new work within this long. Default 1 s.
	StatusTTL time.Duration

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	job ledger.Job
	at  time.Time
}

func (e *Engine) now() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}

func (e *Engine) log() *slog.Logger {
	if e.Log == nil {
		return slog.Default()
	}
	return e.Log
}

// ErrUnknownJob: no such job.
var ErrUnknownJob = errors.New("job: no such job")

func isUnknown(err error) bool { return errors.Is(err, ErrUnknownJob) }

// Job returns the job's record, from a short cache while it runs.
func (e *Engine) Job(ctx context.Context, id string) (ledger.Job, error) {
	ttl := e.StatusTTL
	if ttl == 0 {
		ttl = time.Second
	}
	e.mu.Lock()
	c, ok := e.cache[id]
	e.mu.Unlock()
	if ok && (c.job.Status != ledger.JobRunning || e.now().Sub(c.at) < ttl) {
		return c.job, nil
	}
	j, found, err := e.Ledger.GetJob(ctx, id)
	if err != nil {
		return ledger.Job{}, err
	}
	if !found {
		return ledger.Job{}, fmt.Errorf("job %s: %w", id, ErrUnknownJob)
	}
	e.remember(j)
	return j, nil
}

func (e *Engine) remember(j ledger.Job) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cache == nil {
		e.cache = map[string]cached{}
	}
	if len(e.cache) > 1000 {
		clear(e.cache)
	}
	e.cache[j.ID] = cached{job: j, at: e.now()}
}

// SpecOf decodes a job record's spec.
func SpecOf(j ledger.Job) (Spec, error) {
	var s Spec
	if err := json.Unmarshal([]byte(j.Spec), &s); err != nil {
		return s, fmt.Errorf("job %s: stored spec: %w", j.ID, err)
	}
	return s, nil
}

// FinalizeLease is how long a finalizer without a deadline (the CLI) holds a finished
// job; one with a deadline (a function) holds it until then plus a margin. One that dies
// is replaced when its lease ends.
const FinalizeLease = 5 * time.Minute

// RequeueAfter: a finished job still unreported this long after its finalize task was
// sent gets it sent again by the next check (it was lost, or its finalizer died).
const RequeueAfter = time.Minute

// ErrFinalizeBusy: another finalizer holds the job's lease; try again after it ends.
// It comes as a [*BusyError], which says when.
var ErrFinalizeBusy = errors.New("job: another finalizer is reporting this job")

// BusyError is [ErrFinalizeBusy] with the end of the other finalizer's lease: if that
// finalizer died, the job can be reported from then on.
type BusyError struct {
	Until time.Time // zero if unknown
}

func (e *BusyError) Error() string {
	if e.Until.IsZero() {
		return ErrFinalizeBusy.Error()
	}
	return ErrFinalizeBusy.Error() + " (its lease ends " + e.Until.UTC().Format(time.RFC3339) + ")"
}

func (e *BusyError) Unwrap() error { return ErrFinalizeBusy }

// Check finishes the job if it is done or past its tolerance, and finalizes a finished
// job whose report and notification were not done by its finisher (which crashed).
func (e *Engine) Check(ctx context.Context, id string) error {
	j, found, err := e.Ledger.GetJob(ctx, id)
	if err != nil || !found {
		return err
	}
	e.remember(j)
	if j.Status != ledger.JobRunning {
		if !j.Notified && (j.FinalizeRequested.IsZero() || e.now().Sub(j.FinalizeRequested) > RequeueAfter) {
			e.log().WarnContext(ctx, "job finished but not reported: finalize requested again", "job_id", id, "finished_at", j.FinishedAt)
			return e.requestFinalize(ctx, j.ID)
		}
		return nil
	}
	spec, err := SpecOf(j)
	if err != nil {
		return err
	}
	tol, _ := ParseTolerance(spec.Tolerate)
	// A cheap look first: while tasks are outstanding and the tolerance holds there is
	// nothing to decide, and the snapshot (which conflicts with settlements) is skipped.
	peek, err := e.Ledger.PeekCounts(ctx, id, j.Shards)
	if err != nil {
		return err
	}
	if peek.Stop.Status != "" {
		return e.takeOver(ctx, j, peek.Stop)
	}
	if peek.Outstanding() != 0 && !tol.Exceeded(peek.Failed, peek.Finished(), false) {
		return nil
	}
	return e.finishWith(ctx, j, func(c ledger.Counts) (ledger.JobStatus, string) {
		finished := c.Finished()
		switch {
		case tol.Exceeded(c.Failed, finished, c.Outstanding() == 0):
			return ledger.JobFailed, fmt.Sprintf("%d of %d finished files failed, over the tolerance of %s", c.Failed, finished, tol)
		case c.Outstanding() == 0 && spec.Kind == KindSplit && c.Failed+c.Superseded > 0:
			return ledger.JobFailed, fmt.Sprintf("%d of %d parts failed or were superseded; the parts cannot be merged", c.Failed+c.Superseded, finished)
		case c.Outstanding() == 0:
			return ledger.JobComplete, ""
		}
		return "", ""
	})
}

// Cancel stops a running job: its remaining tasks are skipped, and it is reported. A
// job cancelled before whose report failed is reported now.
func (e *Engine) Cancel(ctx context.Context, id, reason string) (ledger.Job, error) {
	j, found, err := e.Ledger.GetJob(ctx, id)
	if err != nil {
		return j, err
	}
	if !found {
		return j, fmt.Errorf("job %s: %w", id, ErrUnknownJob)
	}
	switch {
	case j.Status == ledger.JobCancelled && !j.Notified:
		if err := e.requestFinalize(ctx, id); err != nil {
			return j, err
		}
	case j.Status != ledger.JobRunning:
		return j, fmt.Errorf("job %s is already %s", id, j.Status)
	default:
		if err := e.stop(ctx, j, ledger.JobCancelled, reason); err != nil {
			return j, err
		}
	}
	j, _, err = e.Ledger.GetJob(ctx, id)
	return j, err
}

// Fail stops a running job as FAILED with the reason (a fan-out task that can never
// succeed: the manifest is gone, the archive is not a zip).
func (e *Engine) Fail(ctx context.Context, id, reason string) error {
	j, found, err := e.Ledger.GetJob(ctx, id)
	if err != nil || !found || j.Status != ledger.JobRunning {
		return err
	}
	return e.stop(ctx, j, ledger.JobFailed, reason)
}

// finishWith takes a snapshot of the job's counts, decides (status "" : not finished)
// and finishes the job with them — again, with a new snapshot, if a task was counted in
// between — so the decision and the final counts are those of one snapshot, exactly the
// tasks counted. A job decided FAILED (past its tolerance) whose snapshots keep being
// overtaken is stopped ([Engine.stop]) after five tries: on a busy job a snapshot that
// no settlement overtakes may never come. Its reason then tells the counts it failed
// at, and its final counts are what was counted until its shards stopped. A job decided
// COMPLETE had nothing outstanding: only a duplicate can overtake its snapshot.
func (e *Engine) finishWith(ctx context.Context, j ledger.Job, decide func(ledger.Counts) (ledger.JobStatus, string)) error {
	for attempt := 0; ; attempt++ {
		snap, err := e.Ledger.JobSnapshot(ctx, j.ID, j.Shards)
		if err != nil {
			return err
		}
		if snap.Stop.Status != "" {
			return e.takeOver(ctx, j, snap.Stop)
		}
		status, reason := decide(snap.Counts)
		if status == "" {
			return nil
		}
		err = e.finish(ctx, j, status, reason, snap)
		if !errors.Is(err, ledger.ErrCountsChanged) {
			return err
		}
		if attempt == 4 {
			if status == ledger.JobFailed {
				return e.stop(ctx, j, status, reason)
			}
			return err
		}
	}
}

// finish finishes the job with the snapshot's counts if nothing was counted since.
func (e *Engine) finish(ctx context.Context, j ledger.Job, status ledger.JobStatus, reason string, snap ledger.Snapshot) error {
	won, err := e.Ledger.FinishJob(ctx, j.ID, status, reason, snap, e.now())
	if err != nil || !won {
		return err
	}
	return e.finished(ctx, j, status, reason, snap.Counts)
}

// stop finishes a running job as status (FAILED, CANCELLED) however busy it is: its
// shards stop counting, and it is finished with what they counted.
func (e *Engine) stop(ctx context.Context, j ledger.Job, status ledger.JobStatus, reason string) error {
	won, snap, err := e.Ledger.StopJob(ctx, j.ID, j.Shards, status, reason, e.now())
	if err != nil || !won {
		return err
	}
	return e.finished(ctx, j, status, reason, snap.Counts)
}

// takeOver finishes a stop under way (a cancel or a failure is stopping the job's
// shards) if it began more than [StopTakeover] ago: its stopper died between the shards
// and the job's record. A younger one is left to its stopper.
func (e *Engine) takeOver(ctx context.Context, j ledger.Job, s ledger.Stop) error {
	if e.now().Sub(s.At) < StopTakeover {
		return nil
	}
	e.log().WarnContext(ctx, "job stopped but not finished: finishing it", "job_id", j.ID, "status", s.Status, "reason", s.Reason, "stopped_at", s.At)
	return e.stop(ctx, j, s.Status, s.Reason)
}

// StopTakeover: a job whose shards began to be stopped this long ago and which still
// runs is finished by the next check (its stopper died); a stop takes milliseconds.
const StopTakeover = time.Minute

// finished logs a job this caller finished, and requests its report.
func (e *Engine) finished(ctx context.Context, j ledger.Job, status ledger.JobStatus, reason string, c ledger.Counts) error {
	j.Status, j.Reason, j.Final, j.FinishedAt = status, reason, c, e.now()
	e.remember(j)
	e.log().InfoContext(ctx, "job finished", "job_id", j.ID, "status", status, "reason", reason,
		"files_listed", c.Listed, "files_succeeded", c.Succeeded, "files_failed", c.Failed, "bytes", c.Bytes,
		"duration_ms", j.FinishedAt.Sub(j.CreatedAt).Milliseconds())
	return e.requestFinalize(ctx, j.ID)
}

// requestFinalize queues the job's finalize task for the dispatcher, or finalizes inline.
func (e *Engine) requestFinalize(ctx context.Context, id string) error {
	if e.Queue == nil || e.JobsQueueURL == "" {
		return e.FinalizeJob(ctx, id, false)
	}
	body, err := json.Marshal(FanoutTask{V: 1, JobID: id, TaskID: StepFinalize, Step: StepFinalize})
	if err != nil {
		return err
	}
	if _, err := e.Queue.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(e.JobsQueueURL), MessageBody: aws.String(string(body))}); err != nil {
		return fmt.Errorf("job %s: queue its finalize task: %w", id, err)
	}
	return e.Ledger.MarkFinalizeRequested(ctx, id, e.now())
}

// FinalizeJob reports a finished job once: it claims the job's finalize lease, writes
// the report, publishes the notification and marks the job notified. A job reported
// already (or still running) needs nothing; one another finalizer holds returns
// [ErrFinalizeBusy]. On failure the lease is released so that a retry can take over at
// once. force writes the report even if report lines of counted tasks are missing (the
// last attempt): the manifest then says how many.
func (e *Engine) FinalizeJob(ctx context.Context, id string, force bool) error {
	j, found, err := e.Ledger.GetJob(ctx, id)
	if err != nil || !found || j.Status == ledger.JobRunning || j.Notified {
		return err
	}
	lease := FinalizeLease
	if dl, ok := ctx.Deadline(); ok {
		lease = time.Until(dl) + 30*time.Second
	}
	token, claimed, err := e.Ledger.ClaimFinalize(ctx, id, e.now(), lease)
	if err != nil {
		return err
	}
	if !claimed {
		busy := &BusyError{}
		if j, _, err := e.Ledger.GetJob(ctx, id); err == nil {
			if j.Notified {
				return nil
			}
			busy.Until = j.LeaseUntil
		}
		return fmt.Errorf("job %s: %w", id, busy)
	}
	if err := e.Finalize(ctx, j, force); err != nil {
		actx, cancel := Afterwards(ctx)
		defer cancel()
		if rerr := e.Ledger.ReleaseFinalize(actx, id, token); rerr != nil {
			e.log().WarnContext(ctx, "cannot release the finalize lease", "job_id", id, "error", rerr)
		}
		return err
	}
	return nil
}

// Notification is the completion topic's message.
type Notification struct {
	JobID      string        `json:"job_id"`
	Status     string        `json:"status"`
	Reason     string        `json:"reason,omitempty"`
	Kind       string        `json:"kind"`
	Source     string        `json:"source"`
	Counts     ledger.Counts `json:"counts"`
	DurationMS int64         `json:"duration_ms"`
	Report     string        `json:"report"`
	Merged     string        `json:"merged_output,omitempty"`
}

// Finalize writes a finished job's report (and a split job's merged output), publishes
// its notification and marks it notified. Every step is idempotent, so a finisher that
// crashed is replaced by the next check; the notification is then sent at least once.
func (e *Engine) Finalize(ctx context.Context, j ledger.Job, force bool) error {
	spec, err := SpecOf(j)
	if err != nil {
		return err
	}
	rep, err := e.writeReport(ctx, j, spec, force)
	if err != nil {
		return err
	}
	if e.Topic != nil && e.TopicARN != "" {
		n := Notification{
			JobID: j.ID, Status: string(j.Status), Reason: j.Reason, Kind: spec.Kind, Source: spec.Source(),
			Counts: j.Final, DurationMS: j.FinishedAt.Sub(j.CreatedAt).Milliseconds(), Report: rep.manifestURI, Merged: rep.merged,
		}
		body, err := json.Marshal(n)
		if err != nil {
			return err
		}
		_, err = e.Topic.Publish(ctx, &sns.PublishInput{
			TopicArn: aws.String(e.TopicARN), Message: aws.String(string(body)),
			Subject: aws.String(fmt.Sprintf("fileflow job %s %s", j.ID, j.Status)),
			MessageAttributes: map[string]snstypes.MessageAttributeValue{
				"status": {DataType: aws.String("String"), StringValue: aws.String(string(j.Status))},
				"job_id": {DataType: aws.String("String"), StringValue: aws.String(j.ID)},
			},
		})
		if err != nil {
			return fmt.Errorf("job %s: notify: %w", j.ID, err)
		}
	}
	return e.Ledger.MarkNotified(ctx, j.ID, rep.manifestURI, len(rep.missing), e.now())
}
