// Package dispatch is the job dispatcher: the Lambda handler on the jobs queue that
// turns a job into file tasks.
//
// A message on the jobs queue is a fan-out task (see [job.FanoutTask]), a finished job's
// finalize task, the reconcile message the component's schedule sends, or the S3 event
// of a job spec dropped under the ingest bucket's jobs/ prefix (which submits the job).
// A fan-out task lists one page of a prefix (its sub-prefixes and next page become
// child fan-out tasks: a parallel breadth-first listing), reads one byte-range chunk of
// a manifest, reads an archive's central directory through ranged GETs, or splits one
// large file into line-aligned byte ranges. The files it finds are packed into task
// messages (many files each, within the SQS message size) sent with SendMessageBatch
// to the tasks queue; bad entries are reported as failed files with their reason. Only
// after everything is sent is the task reported to the job engine ([job.Engine.Report]),
// which counts it with its children, so a job never completes while fan-out goes on.
//
// Each delivery of a fan-out task is a run with its own id, which its children carry;
// their ids are their content. If a run dies before it is counted and a later run over a
// changed listing is counted instead, the dead run's children are orphans, never counted.
package dispatch

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
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

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/fanout"
	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/source"
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
	job.Messenger
	job.Peeker
	SendMessageBatch(context.Context, *sqs.SendMessageBatchInput, ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// Jobs is the part of the job engine the dispatcher calls.
type Jobs interface {
	Job(ctx context.Context, id string) (ledger.Job, error)
	TaskState(ctx context.Context, jobID, taskID, parent, parentRun string) (job.Verdict, error)
	Report(ctx context.Context, results []job.TaskResult) []job.Answer
	Check(ctx context.Context, jobID string) error
	Fail(ctx context.Context, jobID, reason string) error
	FinalizeJob(ctx context.Context, jobID string, force bool) error
	Reconcile(ctx context.Context, peek job.Peeker, dlqs []string) (job.Reconciliation, error)
}

// Ledger is the part of the ledger store the dispatcher calls.
type Ledger interface {
	job.Creator
	RecordPoison(ctx context.Context, p ledger.Poison) error
}

// Config configures the dispatcher. [New] applies the defaults once, then validates.
type Config struct {
	TasksQueueURL string // file task messages go here; required
	JobsQueueURL  string // child fan-out tasks go here (the dispatcher's own queue); required
	PageSize      int32  // keys per listing page; default 1000
	MaxTaskBytes  int    // task message size bound; default fanout.DefaultMaxBytes
	Concurrency   int    // fan-out tasks of one batch run at once; default 4
	// MaxReceiveCount is the jobs queue's (default 5): a fan-out task still failing on
	// its last receive fails its job (with the error as the reason) instead of hanging it
	// when the error is permanent or it is the last of FanoutRounds rounds; otherwise it
	// is sent again for a new round.
	MaxReceiveCount int
	// DeadLetterQueues are the URLs of the tasks' and the jobs' dead-letter queues: the
	// reconciler reports the job tasks it finds there.
	DeadLetterQueues []string
	Retry            retry.Policy // backoff of failed fan-out tasks; default retry.DefaultPolicy
	FunctionName     string       // the metrics' dimension (AWS_LAMBDA_FUNCTION_NAME in Lambda)
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
	if c.Retry.Base == 0 && c.Retry.Cap == 0 {
		c.Retry = retry.DefaultPolicy
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	bad := func(field string, v any, want string) { errs = append(errs, fmt.Errorf("%s = %v: %s", field, v, want)) }
	if c.TasksQueueURL == "" {
		bad("TasksQueueURL", `""`, "required")
	}
	if c.JobsQueueURL == "" {
		bad("JobsQueueURL", `""`, "required")
	}
	if c.PageSize < 1 || c.PageSize > 1000 {
		bad("PageSize", c.PageSize, "must be in 1..1000")
	}
	if c.MaxTaskBytes < 1024 {
		bad("MaxTaskBytes", c.MaxTaskBytes, "must be at least 1024")
	}
	if c.Concurrency < 1 {
		bad("Concurrency", c.Concurrency, "must be at least 1")
	}
	if c.MaxReceiveCount < 1 {
		bad("MaxReceiveCount", c.MaxReceiveCount, "must be at least 1")
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
		FunctionName:    r.String(fnenv.FunctionName, ""),
	}
	for _, name := range []string{fnenv.TasksDLQURL, fnenv.JobsDLQURL} {
		if u := r.String(name, ""); u != "" {
			cfg.DeadLetterQueues = append(cfg.DeadLetterQueues, u)
		}
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
	Metrics io.Writer        // CloudWatch EMF lines; nil: os.Stdout
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
	emf    io.Writer
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
	if deps.Metrics == nil {
		deps.Metrics = os.Stdout
	}
	return &Handler{cfg: cfg, s3: deps.Objects, sqs: deps.Queue, jobs: deps.Jobs, ledger: deps.Ledger, log: deps.Logger, now: deps.Now, emf: deps.Metrics}, nil
}

// The waits of a fan-out task.
const (
	// ParentWait: a task whose parent is not counted yet is sent again after this long.
	ParentWait = 5 * time.Second
	// CheckWait: a counted task whose job check failed is sent again after this long.
	CheckWait = 10 * time.Second
	// BusyWait: a finalize task whose job another finalizer holds waits this long when
	// the end of that finalizer's lease is unknown; otherwise until it ends (busyWait).
	BusyWait = 15 * time.Minute
	// IncompleteWait: a finalize task waiting for report lines comes back after this long.
	IncompleteWait = 10 * time.Second
)

// FanoutRounds bounds a fan-out task's transient errors in its own work (listing,
// reading, sending): one that still fails on the last receive of its FanoutRounds-th
// round of MaxReceiveCount receives fails its job with the error as the reason; on an
// earlier round's last receive it is sent again for a new round (a connection reset at
// the wrong moment failed a job in chaos run 9), unless that copy cannot be sent.
const FanoutRounds = 3

// Handle runs a batch; each message ends in one action (see [job.Action]).
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	start := h.now()
	ctx, answer, cancel := job.Deadlines(ctx)
	defer cancel()
	ctx, metrics := withBatchMetrics(ctx, h.emf, h.cfg.FunctionName) // metrics.go: one EMF line per batch
	acts := make([]job.Action, len(ev.Records))
	sem := make(chan struct{}, h.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, rec := range ev.Records {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			acts[i] = h.handleOne(ctx, rec)
			if a := acts[i]; a.Kind != job.Ack {
				h.log.WarnContext(ctx, "fan-out task comes back", "message_id", rec.MessageId, "action", a.Kind, "delay", a.Delay.String(), "why", a.Why)
			}
		}()
	}
	wg.Wait()
	resp, err := job.Apply(answer, h.sqs, h.cfg.JobsQueueURL, ev.Records, acts)
	if err != nil {
		h.log.WarnContext(ctx, "some messages come back later than planned", "error", err)
	}
	metrics.emit(h.now(), len(ev.Records), len(resp.BatchItemFailures), h.now().Sub(start))
	return resp, nil
}

func receiveCount(rec events.SQSMessage) int {
	n, err := strconv.Atoi(rec.Attributes["ApproximateReceiveCount"])
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// retryAfter is the action for an error before a task was counted: back after the
// backoff for the receive (on the last receive, sent again unless the error is
// permanent).
func (h *Handler) retryAfter(rec events.SQSMessage, err error) job.Action {
	n, class := receiveCount(rec), retry.Classify(err)
	d := h.cfg.Retry.Delay(n+job.SentAgain(rec), class)
	if n >= h.cfg.MaxReceiveCount && class != retry.Permanent {
		// The last receive of a transient failure: sent again, with a fresh receive count
		// and the backoff of all its attempts, rather than to the DLQ, where its job would
		// wait for it (a ledger outage used up a task's receives in the chaos run). A
		// permanent one goes to the DLQ, where its alarm says so.
		return job.Again(d, err.Error())
	}
	return job.Retry(d, err.Error())
}

func (h *Handler) handleOne(ctx context.Context, rec events.SQSMessage) job.Action {
	body := []byte(rec.Body)
	if d, err := task.Decode(body); err == nil && (d.Kind == task.KindS3Event || d.Kind == task.KindTestEvent) {
		for _, f := range d.Files {
			if !strings.HasPrefix(f.Key, job.SpecPrefix) {
				h.log.WarnContext(ctx, "S3 event for a key outside jobs/ ignored", "key", f.Key)
				continue
			}
			if err := h.submitFromS3(ctx, rec, f); err != nil {
				return h.retryAfter(rec, err)
			}
		}
		return job.Acknowledge("job spec event")
	}
	p, err := job.DecodeFanoutTask(body)
	if err != nil {
		return h.poison(ctx, rec, err.Error())
	}
	receive := receiveCount(rec)
	switch p.Step {
	case job.StepFinalize:
		return h.finalize(ctx, rec, p, receive)
	case job.StepReconcile:
		return h.reconcile(ctx)
	}
	switch state, err := h.jobs.TaskState(ctx, p.JobID, p.TaskID, p.Parent, p.ParentRun); {
	case err != nil:
		return h.retryAfter(rec, err)
	case state == job.Duplicate:
		// Counted before; check again (the counted delivery's check may have failed).
		h.log.InfoContext(ctx, "fan-out task counted before: duplicate delivery", "job_id", p.JobID, "task_id", p.TaskID)
		if err := h.jobs.Check(ctx, p.JobID); err != nil {
			return job.Action{Kind: job.SendAgain, Delay: CheckWait, Why: "check job: " + err.Error(), Else: job.Ack}
		}
		return job.Acknowledge("duplicate")
	case state == job.Orphan:
		h.log.WarnContext(ctx, "orphan fan-out task dropped: a run of its parent that was not counted sent it", "job_id", p.JobID, "task_id", p.TaskID)
		return job.Acknowledge("orphan")
	case state == job.WaitParent:
		return job.Again(ParentWait, "its parent "+p.Parent+" is not counted yet")
	}
	j, err := h.jobs.Job(ctx, p.JobID)
	if errors.Is(err, job.ErrUnknownJob) {
		h.log.WarnContext(ctx, "fan-out task of an unknown job dropped", "job_id", p.JobID, "task_id", p.TaskID)
		return job.Acknowledge("unknown job")
	}
	if err != nil {
		return h.retryAfter(rec, err)
	}
	if j.Status != ledger.JobRunning {
		return job.Acknowledge("job " + string(j.Status)) // cancelled or failed: the rest is skipped
	}
	spec, err := job.SpecOf(j)
	if err != nil {
		return h.retryAfter(rec, err)
	}
	result, err := h.fanOut(ctx, j, spec, p)
	if err != nil {
		round := job.Rounds(rec) + 1
		if !permanent(err) && receive >= h.cfg.MaxReceiveCount && round < FanoutRounds {
			// The last receive of a round: sent again for the next, here rather than by
			// Apply, so that a copy that cannot be sent fails the job below instead of
			// leaving the task in the DLQ with its job RUNNING (found by review 4).
			d := h.cfg.Retry.Delay(receive+job.SentAgain(rec), retry.Classify(err))
			sent, serr := job.Resend(ctx, h.sqs, h.cfg.JobsQueueURL, rec, d, true)
			if sent {
				h.log.WarnContext(ctx, "fan-out task sent again for a new round of receives", "job_id", p.JobID, "task_id", p.TaskID,
					"round", round+1, "delay", d.String(), "error", err)
				return job.Acknowledge("sent again for round " + strconv.Itoa(round+1))
			}
			if serr != nil {
				err = fmt.Errorf("%w (and its copy for the next round was not sent: %w)", err, serr)
			}
		}
		if permanent(err) || receive >= h.cfg.MaxReceiveCount {
			// It can never succeed (or has had its last chance): the job fails with the
			// reason, rather than hang with a task in the DLQ.
			reason := fmt.Sprintf("fan-out task %s (%s) failed on receive %d: %v", p.TaskID, p.Step, receive, err)
			if round > 1 {
				reason = fmt.Sprintf("fan-out task %s (%s) failed on receive %d of round %d: %v", p.TaskID, p.Step, receive, round, err)
			}
			if ferr := h.jobs.Fail(ctx, j.ID, reason); ferr != nil {
				if receive >= h.cfg.MaxReceiveCount {
					// Never to the DLQ, where its job would wait for it: sent again to fail it.
					return job.Again(CheckWait, "fail job: "+ferr.Error())
				}
				return h.retryAfter(rec, errors.Join(err, ferr))
			}
			h.log.ErrorContext(ctx, "job failed by its fan-out task", "job_id", j.ID, "reason", reason)
			return job.Acknowledge("job failed")
		}
		return h.retryAfter(rec, err)
	}
	ans := h.jobs.Report(ctx, []job.TaskResult{result})[0]
	h.log.InfoContext(ctx, "fan-out task done", "job_id", j.ID, "task_id", p.TaskID, "step", p.Step, "run", result.Run,
		"verdict", ans.Verdict.String(), "files", result.Listed-int64(len(result.Lines)), "task_messages", result.Messages,
		"child_tasks", result.Plans, "bad_entries", len(result.Lines))
	return h.act(rec, ans)
}

// act is the action for the engine's answer about a task.
func (h *Handler) act(rec events.SQSMessage, ans job.Answer) job.Action {
	switch ans.Verdict {
	case job.WaitParent:
		return job.Again(ParentWait, "its parent is not counted yet")
	case job.NotCounted:
		if receiveCount(rec) >= h.cfg.MaxReceiveCount {
			// Its children are sent; only counting failed. Sent again rather than to the DLQ,
			// where its job would wait for it.
			return job.Again(CheckWait, "count: "+ans.Err.Error())
		}
		return h.retryAfter(rec, ans.Err)
	case job.CheckFailed:
		// Counted: never a reason to fail the job, nor to send it to the DLQ.
		return job.Action{Kind: job.SendAgain, Delay: CheckWait, Why: ans.Err.Error(), Else: job.Ack}
	}
	return job.Acknowledge(ans.Verdict.String())
}

// permanent: errors a fan-out task cannot get past by trying again.
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

// finalize runs a finished job's finalize task: report lines still missing bring it
// back (on its last receive it reports what there is); a finalizer already at work
// sends it again for after that finalizer's lease.
func (h *Handler) finalize(ctx context.Context, rec events.SQSMessage, p job.FanoutTask, receive int) job.Action {
	err := h.jobs.FinalizeJob(ctx, p.JobID, receive >= h.cfg.MaxReceiveCount)
	switch {
	case err == nil:
		return job.Acknowledge("finalized")
	case errors.Is(err, job.ErrFinalizeBusy):
		return job.Again(busyWait(err, h.now()), err.Error())
	case errors.Is(err, job.ErrReportIncomplete):
		return job.Retry(IncompleteWait, err.Error())
	}
	return h.retryAfter(rec, err)
}

// reconcile re-checks every open job. It is never retried: the schedule sends the next.
func (h *Handler) reconcile(ctx context.Context) job.Action {
	r, err := h.jobs.Reconcile(ctx, h.sqs, h.cfg.DeadLetterQueues)
	stuck := 0
	for _, n := range r.Stuck {
		stuck += n
	}
	h.log.InfoContext(ctx, "reconciled open jobs", "open", r.Open, "finished", r.Finished, "finalize_requested", r.Requested,
		"stuck_tasks", stuck, "errors", r.Errors)
	if err != nil {
		h.log.WarnContext(ctx, "reconcile: some jobs could not be checked; the next run tries again", "error", err)
	}
	return job.Acknowledge("reconciled")
}

// poison records an unreadable message, so it is not lost, and acknowledges it.
func (h *Handler) poison(ctx context.Context, rec events.SQSMessage, reason string) job.Action {
	err := h.ledger.RecordPoison(ctx, ledger.Poison{MessageID: rec.MessageId, Queue: rec.EventSourceARN,
		Body: rec.Body, Reason: reason, Receive: receiveCount(rec), At: h.now()})
	if err != nil {
		return h.retryAfter(rec, fmt.Errorf("record poison message (%s): %w", reason, err))
	}
	h.log.ErrorContext(ctx, "poison message recorded and acknowledged", "message_id", rec.MessageId, "reason", reason)
	return job.Acknowledge("poison")
}

// submitFromS3 submits the job spec uploaded at f, read at the event's revision. Its
// id, unless the spec names one, derives from that revision, so a duplicate event
// submits it once. A spec that cannot be read as a job (malformed, invalid, or another
// spec under an existing id) is recorded as poison, not retried.
func (h *Handler) submitFromS3(ctx context.Context, rec events.SQSMessage, f task.File) error {
	where := f.String()
	if !strings.HasSuffix(f.Key, ".json") {
		h.poison(ctx, rec, "job spec "+where+": not a .json file")
		return nil
	}
	out, err := source.Open(ctx, h.s3, f, source.Options{}) // at the event's version (or ETag)
	if err != nil {
		var api smithy.APIError
		if errors.As(err, &api) && (api.ErrorCode() == "PreconditionFailed" || api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NoSuchVersion") {
			// Overwritten or deleted since: the newer spec has its own event.
			h.log.WarnContext(ctx, "job spec changed since its event; this revision is not submitted", "spec", where, "error", err)
			return nil
		}
		return fmt.Errorf("job spec %s: %w", where, err)
	}
	b, err := io.ReadAll(io.LimitReader(out.Body, 1<<20))
	out.Body.Close()
	if err != nil {
		return fmt.Errorf("job spec %s: %w", where, err)
	}
	spec, err := job.ParseSpec(b)
	if err != nil {
		h.poison(ctx, rec, "job spec "+where+": "+err.Error())
		return nil
	}
	if spec.ID == "" {
		sum := sha256.Sum256([]byte(f.Bucket + "/" + f.Key + "@" + f.VersionID + "@" + strings.Trim(f.ETag, `"`)))
		spec.ID = "s3-" + hex.EncodeToString(sum[:8])
	}
	id, err := job.Submit(ctx, h.ledger, h.sqs, h.cfg.JobsQueueURL, spec, h.now())
	var conflict *job.ConflictError
	if errors.As(err, &conflict) {
		h.poison(ctx, rec, "job spec "+where+": "+err.Error())
		return nil
	}
	if err != nil {
		return fmt.Errorf("job spec %s: %w", where, err)
	}
	h.log.InfoContext(ctx, "job submitted from spec", "job_id", id, "spec", where, "kind", spec.Kind)
	return nil
}

// newRun is a run id: one delivery's attempt at a fan-out task.
func newRun() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// fanOut runs one fan-out task: find files, send their task messages and the child
// fan-out tasks, and return the result to report (with the bad entries' lines).
func (h *Handler) fanOut(ctx context.Context, j ledger.Job, spec job.Spec, p job.FanoutTask) (job.TaskResult, error) {
	out := h.newOutput(ctx, j.ID, p.TaskID, newRun(), spec.FilesPerTask)
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
		return job.TaskResult{}, fmt.Errorf("job %s task %s (%s): %w", j.ID, p.TaskID, p.Step, err)
	}
	recordFanout(ctx, out.packer.Files, out.packer.Messages, out.plans, len(out.bad))
	return job.TaskResult{
		JobID: j.ID, TaskID: p.TaskID, Parent: p.Parent, ParentRun: p.ParentRun, Run: out.run,
		Messages: int64(out.packer.Messages), Plans: int64(out.plans),
		Listed: int64(out.packer.Files + len(out.bad)), Failed: int64(len(out.bad)), Lines: out.bad,
	}, nil
}

// output collects what one run of a fan-out task sends.
type output struct {
	ctx    context.Context
	jobID  string
	taskID string
	run    string
	packer *fanout.Packer
	plans  int
	seen   map[string]int // a child's content -> children with it so far
	tasks  batch          // to the tasks queue
	planQ  batch          // to the jobs queue
	bad    []job.Line
}

func (h *Handler) newOutput(ctx context.Context, jobID, taskID, run string, filesPerTask int) *output {
	o := &output{ctx: ctx, jobID: jobID, taskID: taskID, run: run, seen: map[string]int{}}
	o.tasks = batch{url: h.cfg.TasksQueueURL, api: h.sqs}
	o.planQ = batch{url: h.cfg.JobsQueueURL, api: h.sqs}
	o.packer = &fanout.Packer{JobID: jobID, Parent: taskID, ParentRun: run, MaxBytes: h.cfg.MaxTaskBytes, MaxFiles: filesPerTask,
		Emit: func(body []byte, _ int) error { return o.tasks.add(o.ctx, string(body)) }}
	return o
}

// child sends a child fan-out task; its id is its content.
func (o *output) child(ctx context.Context, p job.FanoutTask) error {
	p.V, p.JobID, p.Parent, p.ParentRun = 1, o.jobID, o.taskID, o.run
	sum := p.ContentSum()
	p.TaskID = task.ContentID(o.taskID, "l", sum, o.seen[string(sum)])
	o.seen[string(sum)]++
	b, err := jsonMarshal(p)
	if err != nil {
		return err
	}
	o.plans++
	return o.planQ.add(ctx, b)
}

func (o *output) badEntry(bucket, key, reason string) {
	o.bad = append(o.bad, job.Line{Bucket: bucket, Key: key, Status: job.Failed, ErrorCode: failure.InvalidEntry,
		HTTPStatus: failure.StatusOf(failure.InvalidEntry), Message: reason})
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

// busyWait is how long a finalize task waits for another finalizer: until that
// finalizer's lease ends (and a second more), when the lease says; BusyWait otherwise.
// If the other finalizer reports the job meanwhile, the task then finds it notified.
func busyWait(err error, now time.Time) time.Duration {
	var busy *job.BusyError
	if !errors.As(err, &busy) || busy.Until.IsZero() {
		return BusyWait
	}
	return min(BusyWait, max(time.Second, busy.Until.Sub(now)+time.Second))
}
