// Package dispatch is the job dispatcher: the Lambda handler on the jobs queue that
// turns a job into file tasks.
//
// A message on the jobs queue is a planning task (see [job.Plan]) or the S3 event of a
// job spec dropped under the ingest bucket's jobs/ prefix (which submits the job). A
// planning task lists one page of a prefix (its sub-prefixes and next page become child
// planning tasks: a parallel breadth-first listing), reads one byte-range chunk of a
// manifest, reads an archive's central directory through ranged GETs, or splits one
// large file into line-aligned byte ranges. The files it finds are packed into task
// messages (many files each, within the SQS message size) sent with SendMessageBatch
// to the tasks queue; bad entries are reported as failed files with their reason. Only
// after everything is sent is the task counted, with its children, in one transaction
// (see [ledger.Store.Settle]), so a job never completes while fan-out goes on.
package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/fileflow/fileflow/pkg/fanout"
	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

// Objects is the part of the S3 client the dispatcher calls.
type Objects interface {
	fanout.Lister
	fanout.RangeGetter
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
}

// Queue is the part of the SQS client the dispatcher calls.
type Queue interface {
	job.Sender
	ChangeMessageVisibility(context.Context, *sqs.ChangeMessageVisibilityInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	SendMessageBatch(context.Context, *sqs.SendMessageBatchInput, ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// Jobs is the part of the job engine the dispatcher calls.
type Jobs interface {
	Job(ctx context.Context, id string) (ledger.Job, error)
	WritePart(ctx context.Context, jobID, taskID string, lines []job.Line) error
	HasPart(ctx context.Context, jobID, taskID string) (bool, error)
	Settle(ctx context.Context, all []ledger.Settlement) ([]ledger.Outcome, error)
	Check(ctx context.Context, jobID string) error
	Fail(ctx context.Context, jobID, reason string) error
	FinalizeJob(ctx context.Context, jobID string, force bool) error
}

// Ledger is the part of the ledger store the dispatcher calls.
type Ledger interface {
	job.Creator
	RecordPoison(ctx context.Context, p ledger.Poison) error
	TaskState(ctx context.Context, jobID, taskID, parent string, index int) (ledger.Outcome, error)
}

// Config configures the dispatcher. [New] applies the defaults once, then validates.
type Config struct {
	TasksQueueURL string // file task messages go here; required
	JobsQueueURL  string // child planning tasks go here (the dispatcher's own queue); required
	PageSize      int32  // keys per listing page; default 1000
	MaxTaskBytes  int    // task message size bound; default fanout.DefaultMaxBytes
	Concurrency   int    // planning tasks of one batch run at once; default 4
	// MaxReceiveCount is the jobs queue's (default 5): a planning task still failing on
	// its last receive fails its job (with the error as the reason) instead of hanging it.
	MaxReceiveCount int
}

func (c Config) withDefaults() Config {
	if c.PageSize == 0 {
		c.PageSize = 1000
	}
	if c.MaxTaskBytes == 0 {
		c.MaxTaskBytes = fanout.DefaultMaxBytes
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.MaxReceiveCount == 0 {
		c.MaxReceiveCount = 5
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.TasksQueueURL == "" {
		errs = append(errs, errors.New("TasksQueueURL is required"))
	}
	if c.JobsQueueURL == "" {
		errs = append(errs, errors.New("JobsQueueURL is required"))
	}
	if c.PageSize < 1 || c.PageSize > 1000 {
		errs = append(errs, fmt.Errorf("PageSize = %d: must be in 1..1000", c.PageSize))
	}
	if c.MaxTaskBytes < 1024 {
		errs = append(errs, fmt.Errorf("MaxTaskBytes = %d: must be at least 1024", c.MaxTaskBytes))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("Concurrency = %d: must be at least 1", c.Concurrency))
	}
	if c.MaxReceiveCount < 1 {
		errs = append(errs, fmt.Errorf("MaxReceiveCount = %d: must be at least 1", c.MaxReceiveCount))
	}
	if len(errs) > 0 {
		return fmt.Errorf("dispatch: invalid configuration: %w", errors.Join(errs...))
	}
	return nil
}

// ConfigFromEnv reads the dispatcher's settings the component sets (package fnenv).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	r := fnenv.NewReader(getenv)
	cfg := Config{
		TasksQueueURL:   r.Required(fnenv.TasksQueueURL),
		JobsQueueURL:    r.Required(fnenv.JobsQueueURL),
		MaxReceiveCount: r.Int(fnenv.MaxReceiveCount, 0, 1, 1000),
	}
	if err := r.Err(); err != nil {
		return Config{}, fmt.Errorf("dispatch: invalid configuration: %w", err)
	}
	return cfg, nil
}

// Deps are the clients the dispatcher needs.
type Deps struct {
	Objects Objects
	Queue   Queue
	Ledger  Ledger
	Jobs    Jobs
	Logger  *slog.Logger     // nil: slog.Default()
	Now     func() time.Time // nil: time.Now
}

// Handler handles batches of the jobs queue. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	s3     Objects
	sqs    Queue
	jobs   Jobs
	ledger Ledger
	log    *slog.Logger
	now    func() time.Time
}

// New returns a dispatcher.
func New(cfg Config, deps Deps) (*Handler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.Objects == nil || deps.Queue == nil || deps.Ledger == nil || deps.Jobs == nil {
		return nil, errors.New("dispatch: Objects, Queue, Ledger and Jobs are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Handler{cfg: cfg, s3: deps.Objects, sqs: deps.Queue, jobs: deps.Jobs, ledger: deps.Ledger, log: deps.Logger, now: deps.Now}, nil
}

// Handle runs a batch's planning tasks; the ones that failed come back as batch item
// failures (SQS redelivers them; a task run twice sends the same ids and counts once).
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	start := h.now()
	ctx, metrics := withBatchMetrics(ctx) // metrics.go: one EMF line per batch
	var resp events.SQSEventResponse
	var mu sync.Mutex
	sem := make(chan struct{}, h.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, rec := range ev.Records {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := h.handleOne(ctx, rec); err != nil {
				h.log.WarnContext(ctx, "planning task failed; it comes back", "message_id", rec.MessageId, "error", err)
				mu.Lock()
				resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: rec.MessageId})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	metrics.emit(h.now(), len(ev.Records), len(resp.BatchItemFailures), h.now().Sub(start))
	return resp, nil
}

func (h *Handler) handleOne(ctx context.Context, rec events.SQSMessage) error {
	body := []byte(rec.Body)
	if d, err := task.Decode(body); err == nil && (d.Kind == task.KindS3Event || d.Kind == task.KindTestEvent) {
		for _, f := range d.Files {
			if !strings.HasPrefix(f.Key, job.SpecPrefix) {
				h.log.WarnContext(ctx, "S3 event for a key outside jobs/ ignored", "key", f.Key)
				continue
			}
			if err := h.submitFromS3(ctx, rec, f); err != nil {
				return err
			}
		}
		return nil
	}
	p, err := job.DecodePlan(body)
	if err != nil {
		return h.poison(ctx, rec, err.Error())
	}
	receive, _ := strconv.Atoi(rec.Attributes["ApproximateReceiveCount"])
	if p.Step == job.StepFinalize {
		return h.finalize(ctx, rec, p, receive)
	}
	state, err := h.ledger.TaskState(ctx, p.JobID, p.TaskID, p.Parent, p.Index)
	if err != nil {
		return err
	}
	switch state {
	case ledger.Duplicate:
		// Counted before; check again (the counted delivery's check may have failed).
		h.log.InfoContext(ctx, "planning task counted before: duplicate delivery", "job_id", p.JobID, "task_id", p.TaskID)
		return h.jobs.Check(ctx, p.JobID)
	case ledger.Orphan:
		h.log.WarnContext(ctx, "orphan planning task acknowledged: a re-run of its parent sent it, the counted run did not", "job_id", p.JobID, "task_id", p.TaskID)
		return nil
	case ledger.ParentPending:
		return h.waitForParent(ctx, rec, p)
	}
	j, err := h.jobs.Job(ctx, p.JobID)
	if errors.Is(err, job.ErrUnknownJob) {
		h.log.WarnContext(ctx, "planning task of an unknown job acknowledged", "job_id", p.JobID, "task_id", p.TaskID)
		return nil
	}
	if err != nil {
		return err
	}
	if j.Status != ledger.JobRunning {
		return nil // cancelled or failed: the rest is skipped
	}
	spec, err := job.SpecOf(j)
	if err != nil {
		return err
	}
	err = h.plan(ctx, rec, j, spec, p)
	var after *afterCounting
	if err == nil || errors.As(err, &after) {
		return err // counted: whatever failed after that is retried, never fails the job
	}
	if permanent(err) || receive >= h.cfg.MaxReceiveCount {
		// It can never succeed (or has had its last chance): the job fails with the
		// reason, rather than hang with a task in the DLQ.
		reason := fmt.Sprintf("planning task %s (%s) failed on receive %d: %v", p.TaskID, p.Step, receive, err)
		if ferr := h.jobs.Fail(ctx, j.ID, reason); ferr != nil {
			return errors.Join(err, ferr)
		}
		h.log.ErrorContext(ctx, "job failed by its planning task", "job_id", j.ID, "reason", reason)
		return nil
	}
	return err
}

// permanent: errors a planning task cannot get past by trying again.
func permanent(err error) bool {
	if retry.Classify(err) == retry.Permanent {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NotFound", "PreconditionFailed":
			return true // the object is gone or changed since the job was planned
		}
	}
	return false
}

// waitForParent sends the task again, delayed by ParentWait, counting its waits in a
// message attribute (waiting uses up no receive), and acknowledges this copy. Past
// MaxParentWaits, or if it cannot send, the task comes back after ParentWait instead.
func (h *Handler) waitForParent(ctx context.Context, rec events.SQSMessage, p job.Plan) error {
	sent, err := job.WaitForParent(ctx, h.sqs, h.cfg.JobsQueueURL, rec, ParentWait, MaxParentWaits)
	if err != nil {
		h.log.WarnContext(ctx, "cannot send the task again to wait for its parent", "error", err)
	}
	if sent {
		return nil
	}
	h.comeBackIn(ctx, rec, ParentWait)
	return fmt.Errorf("job %s task %s: its parent %s is not counted yet", p.JobID, p.TaskID, p.Parent)
}

// comeBackIn sets the message's visibility so that it comes back after d.
func (h *Handler) comeBackIn(ctx context.Context, rec events.SQSMessage, d time.Duration) {
	_, err := h.sqs.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(h.cfg.JobsQueueURL),
		ReceiptHandle: aws.String(rec.ReceiptHandle), VisibilityTimeout: int32(d / time.Second)})
	if err != nil {
		h.log.WarnContext(ctx, "cannot change the message's visibility", "error", err)
	}
}

// finalize runs a finished job's finalize task: report lines still being written bring
// it back in 10 s (on its last receive it reports what there is); a finalizer already
// at work sends it again for after that finalizer's lease.
func (h *Handler) finalize(ctx context.Context, rec events.SQSMessage, p job.Plan, receive int) error {
	err := h.jobs.FinalizeJob(ctx, p.JobID, receive >= h.cfg.MaxReceiveCount)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, job.ErrFinalizeBusy):
		_, serr := h.sqs.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(h.cfg.JobsQueueURL),
			MessageBody: aws.String(rec.Body), DelaySeconds: 900})
		if serr == nil {
			return nil
		}
		return errors.Join(err, serr)
	case errors.Is(err, job.ErrReportIncomplete):
		h.comeBackIn(ctx, rec, 10*time.Second)
	}
	return err
}

// The parent waits of a task, as in the worker.
const (
	ParentWait     = 5 * time.Second
	MaxParentWaits = 720 // an hour
)

// afterCounting marks an error from after the task was counted: retried, but never a
// reason to fail the job.
type afterCounting struct{ err error }

func (e *afterCounting) Error() string { return e.err.Error() }
func (e *afterCounting) Unwrap() error { return e.err }

// poison records an unreadable message, so it is not lost, and acknowledges it.
func (h *Handler) poison(ctx context.Context, rec events.SQSMessage, reason string) error {
	err := h.ledger.RecordPoison(ctx, ledger.Poison{MessageID: rec.MessageId, Queue: rec.EventSourceARN,
		Body: rec.Body, Reason: reason, Receive: 1, At: h.now()})
	if err != nil {
		return fmt.Errorf("record poison message (%s): %w", reason, err)
	}
	h.log.ErrorContext(ctx, "poison message recorded and acknowledged", "message_id", rec.MessageId, "reason", reason)
	return nil
}

// submitFromS3 submits the job spec uploaded at f. Its id, unless the spec names one,
// derives from the object's revision, so a duplicate event submits it once.
func (h *Handler) submitFromS3(ctx context.Context, rec events.SQSMessage, f task.File) error {
	where := f.String()
	if !strings.HasSuffix(f.Key, ".json") {
		return h.poison(ctx, rec, "job spec "+where+": not a .json file")
	}
	out, err := h.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(f.Bucket), Key: aws.String(f.Key)})
	if err != nil {
		return fmt.Errorf("job spec %s: %w", where, err)
	}
	b, err := io.ReadAll(io.LimitReader(out.Body, 1<<20))
	out.Body.Close()
	if err != nil {
		return fmt.Errorf("job spec %s: %w", where, err)
	}
	spec, err := job.ParseSpec(b)
	if err != nil {
		return h.poison(ctx, rec, "job spec "+where+": "+err.Error())
	}
	if spec.ID == "" {
		sum := sha256.Sum256([]byte(f.Bucket + "/" + f.Key + "@" + f.Revision()))
		spec.ID = "s3-" + hex.EncodeToString(sum[:8])
	}
	id, err := job.Submit(ctx, h.ledger, h.sqs, h.cfg.JobsQueueURL, spec, h.now())
	if err != nil {
		return fmt.Errorf("job spec %s: %w", where, err)
	}
	h.log.InfoContext(ctx, "job submitted from spec", "job_id", id, "spec", where, "kind", spec.Kind)
	return nil
}

// plan runs one planning task: find files, send their task messages and the child
// planning tasks, write the bad entries' report lines, then count the task.
func (h *Handler) plan(ctx context.Context, rec events.SQSMessage, j ledger.Job, spec job.Spec, p job.Plan) error {
	out := h.newOutput(ctx, j.ID, p.TaskID, spec.FilesPerTask)
	var err error
	switch {
	case p.Step == job.StepList:
		err = h.list(ctx, out, *p.List)
	case p.Step == job.StepChunk:
		err = h.chunk(ctx, out, spec, *p.Chunk, p.Format, p.ETag)
	case spec.Kind == job.KindPrefix:
		err = h.list(ctx, out, fanout.ListTask{Bucket: spec.Bucket, Prefix: spec.Key, Suffix: spec.Suffix})
	case spec.Kind == job.KindManifest:
		err = h.manifest(ctx, out, spec)
	case spec.Kind == job.KindArchive:
		err = h.archive(ctx, out, spec)
	case spec.Kind == job.KindSplit:
		err = h.split(ctx, out, spec)
	default:
		err = fmt.Errorf("job %s: unknown kind %q", j.ID, spec.Kind)
	}
	if err == nil {
		err = out.flush(ctx)
	}
	if err != nil {
		return fmt.Errorf("job %s task %s (%s): %w", j.ID, p.TaskID, p.Step, err)
	}
	res, err := h.jobs.Settle(ctx, []ledger.Settlement{{
		JobID: j.ID, TaskID: p.TaskID, Parent: p.Parent, Index: p.Index, Shards: j.Shards,
		Messages: int64(out.packer.Messages), Plans: int64(out.plans),
		Listed: int64(out.packer.Files + len(out.bad)), Failed: int64(len(out.bad)),
	}})
	if err != nil {
		return err
	}
	switch res[0] {
	case ledger.ParentPending:
		return h.waitForParent(ctx, rec, p)
	case ledger.Orphan, ledger.UnknownJob:
		h.log.WarnContext(ctx, "planning task not counted", "job_id", j.ID, "task_id", p.TaskID, "outcome", res[0].String())
		return nil
	case ledger.Duplicate:
		if ok, err := h.jobs.HasPart(ctx, j.ID, p.TaskID); err != nil || ok || len(out.bad) == 0 {
			if err != nil {
				return &afterCounting{err}
			}
			break
		}
		fallthrough
	default:
		if err := h.jobs.WritePart(ctx, j.ID, p.TaskID, out.bad); err != nil {
			return &afterCounting{err}
		}
	}
	recordPlanned(ctx, out.packer.Files, out.packer.Messages, out.plans, len(out.bad))
	h.log.InfoContext(ctx, "planning task done", "job_id", j.ID, "task_id", p.TaskID, "step", p.Step, "outcome", res[0].String(),
		"files", out.packer.Files, "task_messages", out.packer.Messages, "child_tasks", out.plans, "bad_entries", len(out.bad))
	if err := h.jobs.Check(ctx, j.ID); err != nil {
		return &afterCounting{err}
	}
	return nil
}

// output collects what one planning task sends.
type output struct {
	ctx    context.Context
	jobID  string
	taskID string
	packer *fanout.Packer
	plans  int
	tasks  batch // to the tasks queue
	planQ  batch // to the jobs queue
	bad    []job.Line
}

func (h *Handler) newOutput(ctx context.Context, jobID, taskID string, filesPerTask int) *output {
	o := &output{ctx: ctx, jobID: jobID, taskID: taskID}
	o.tasks = batch{url: h.cfg.TasksQueueURL, api: h.sqs}
	o.planQ = batch{url: h.cfg.JobsQueueURL, api: h.sqs}
	o.packer = &fanout.Packer{JobID: jobID, Parent: taskID, MaxBytes: h.cfg.MaxTaskBytes, MaxFiles: filesPerTask,
		Emit: func(body []byte, _ int) error { return o.tasks.add(o.ctx, string(body)) }}
	return o
}

func (o *output) child(ctx context.Context, p job.Plan) error {
	p.V, p.JobID, p.Parent, p.Index = 1, o.jobID, o.taskID, o.plans
	p.TaskID = task.ChildID(o.taskID, "l", o.plans)
	b, err := jsonMarshal(p)
	if err != nil {
		return err
	}
	o.plans++
	return o.planQ.add(ctx, b)
}

func (o *output) badEntry(bucket, key, reason string) {
	o.bad = append(o.bad, job.Line{Bucket: bucket, Key: key, Status: job.Failed, ErrorCode: "InvalidEntry", HTTPStatus: 400, Message: reason})
}

func (o *output) flush(ctx context.Context) error {
	if err := o.packer.Flush(); err != nil {
		return err
	}
	if err := o.tasks.flush(ctx); err != nil {
		return err
	}
	return o.planQ.flush(ctx)
}

// batch sends message bodies with SendMessageBatch: up to 10 per call and 256 KiB in
// all.
type batch struct {
	url     string
	api     Queue
	entries []sqstypes.SendMessageBatchRequestEntry
	bytes   int
	sent    int
}

const maxBatchBytes = 256 << 10

func (b *batch) add(ctx context.Context, body string) error {
	if len(b.entries) == 10 || (len(b.entries) > 0 && b.bytes+len(body) > maxBatchBytes) {
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	b.entries = append(b.entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(len(b.entries))), MessageBody: aws.String(body)})
	b.bytes += len(body)
	return nil
}

func (b *batch) flush(ctx context.Context) error {
	entries := b.entries
	for attempt := 0; len(entries) > 0; attempt++ {
		out, err := b.api.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(b.url), Entries: entries})
		if err != nil {
			return fmt.Errorf("send %d messages: %w", len(entries), err)
		}
		if len(out.Failed) == 0 {
			break
		}
		failed := map[string]bool{}
		for _, f := range out.Failed {
			if f.SenderFault || attempt == 3 {
				return fmt.Errorf("send: %d of %d messages failed, first: %s: %s", len(out.Failed), len(entries), aws.ToString(f.Code), aws.ToString(f.Message))
			}
			failed[aws.ToString(f.Id)] = true
		}
		var again []sqstypes.SendMessageBatchRequestEntry
		for _, e := range entries {
			if failed[aws.ToString(e.Id)] {
				again = append(again, e)
			}
		}
		entries = again
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
		}
	}
	b.sent += len(b.entries)
	b.entries, b.bytes = b.entries[:0], 0
	return nil
}
