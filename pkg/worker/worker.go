// Package worker is the file worker: the SQS-triggered Lambda handler that processes one
// batch of messages, each naming one or more files, end to end.
//
// Per batch: decode every message (an S3 event notification, in any of its wrappings,
// or a fileflow task message); look up all its files in the ledger with one read,
// skipping those already committed and those a newer revision of the key superseded;
// and, when delivered again, those whose record is the same job's permanent failure of
// the same content; process the rest in parallel (bounded), each by streaming GET → processors → PUT to a
// deterministic output key → one conditional ledger write; report the finished task
// messages of jobs to the job engine; then end each message in one action (see
// [job.Action]): acknowledged, back after a backoff (a batch item failure whose
// visibility is set to an exponential backoff with full jitter), or sent again after a
// wait (a job task whose parent is not counted yet).
//
// A message is acknowledged when every file in it is SUCCEEDED, FAILED (permanently,
// with its reason) or SUPERSEDED in the ledger. An unreadable message is recorded as
// poison and acknowledged; one unreadable entry of a task message fails on its own.
// After the queue's maxReceiveCount SQS moves a still-failing message to the
// dead-letter queue — except a job's task, whose files are then counted failed so the
// job can finish.
//
// # Newest revision wins
//
// The ledger keeps one record per key, holding its newest revision (see package
// ledger). A revision older than the record's is SUPERSEDED without work. If two
// revisions race and the older one's output lands last, its writer finds its write
// refused, and restores the output: it processes the newest revision again (or removes
// its own output if the newest has none), so the output always ends as the newest
// revision's.
package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/source"
	"github.com/fileflow/fileflow/pkg/task"
	"github.com/fileflow/fileflow/pkg/upload"
)

// Objects is the part of the S3 client the worker calls.
type Objects interface {
	upload.API
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// Ledger is the part of the ledger store the worker calls.
type Ledger interface {
	Lookup(ctx context.Context, keys []ledger.Key) (map[ledger.Key]ledger.State, error)
	WriteReplacing(ctx context.Context, w ledger.Write) (replaced bool, err error)
	Get(ctx context.Context, k ledger.Key) (ledger.Record, bool, error)
	RecordSuperseded(ctx context.Context, k ledger.Key, rev, by ledger.Revision, reason string, att ledger.Attempt) error
	Advance(ctx context.Context, k ledger.Key, rev ledger.Revision)
	RecordPoison(ctx context.Context, p ledger.Poison) error
}

// Queue is the part of the SQS client the worker calls.
type Queue interface {
	job.Messenger
	GetQueueUrl(context.Context, *sqs.GetQueueUrlInput, ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
	DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
}

// Jobs is the part of the job engine the worker calls for task messages of a job.
type Jobs interface {
	Job(ctx context.Context, id string) (ledger.Job, error)
	TaskState(ctx context.Context, jobID, taskID, parent, parentRun string) (job.Verdict, error)
	Report(ctx context.Context, results []job.TaskResult) []job.Answer
	Check(ctx context.Context, jobID string) error
}

// Deps are the clients the handler needs.
type Deps struct {
	Objects  Objects
	Ledger   Ledger
	Queue    Queue
	Jobs     Jobs             // nil: task messages of a job are refused (poison)
	Registry process.Registry // nil: process.Builtins()
	Logger   *slog.Logger     // nil: slog.Default()
	Metrics  io.Writer        // CloudWatch EMF lines; nil: os.Stdout
	Now      func() time.Time // nil: time.Now
}

// Handler processes batches of SQS messages. It is safe for concurrent use.
type Handler struct {
	cfg      Config
	deps     Deps
	uploader *upload.Uploader
	procs    map[string][]process.Processor // rule processors, resolved once
	queues   sync.Map                       // queue ARN -> URL
	metrics  *emf
	spare    *goroutines // the files' and sweeps' goroutines, kept between batches
}

// New applies the config's defaults, validates it against the registry and returns a
// handler.
func New(cfg Config, deps Deps) (*Handler, error) {
	if deps.Objects == nil || deps.Ledger == nil || deps.Queue == nil {
		return nil, errors.New("worker: Objects, Ledger and Queue are required")
	}
	if deps.Registry == nil {
		deps.Registry = process.Builtins()
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Metrics == nil {
		deps.Metrics = os.Stdout
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(deps.Registry); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, deps: deps, procs: map[string][]process.Processor{}, spare: newGoroutines(time.Minute)}
	for _, r := range cfg.Rules {
		procs, err := deps.Registry.Lookup(r.Processors)
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		h.procs[strings.Join(r.Processors, ",")] = procs
	}
	up, err := upload.New(deps.Objects, cfg.PartSize)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	h.uploader = up
	h.metrics = &emf{w: deps.Metrics, function: cfg.FunctionName}
	return h, nil
}

// state is where one file of a message stands.
type state int

const (
	pending      state = iota // not finished: comes back (or was never started)
	succeeded                 // committed now, or before (dup)
	failed                    // failed for good, recorded FAILED with its reason
	superseded                // a newer revision of the key holds it, recorded SUPERSEDED
	deadLettered              // a job's file still failing on its message's last receive: counted failed
	skipped                   // its job stopped before it started
)

// item is one file of one message.
type item struct {
	msg  *message
	file task.File
	key  ledger.Key
	rev  ledger.Revision
	over *ledger.State // the record this revision may replace (it was confirmed current over it)
	// recorded: the key's record, when it may settle the item without its work: a
	// success, for a file that names no revision (unchangedSince), or a failure for good
	// (failedBefore). Its work first asks whether the record still holds.
	recorded *ledger.State
	// confirm: a success of this very revision, found on a redelivery; its work is only
	// confirmOutput.
	confirm bool
	// restoring: a probe of restore, processing the record's revision again; it reads
	// that revision or fails, never the key's content as it is now.
	restoring bool

	state state
	class retry.Class // of a pending item's error
	err   error       // why it failed, is pending, or was superseded
	// infra: pending for a failure outside the file's own processing — the ledger, the
	// check of the key's current revision, the restore of another revision's output. Not
	// the file's fault: it uses none of the file's receives (see backoff).
	infra bool
	dup   bool  // its outcome was recorded before (or by a concurrent delivery): a success, or a failure for good
	dupOf *item // the same file earlier in this batch: this one shares its outcome
	pr    *process.Result
	bytes int64
}

// message is one SQS message of the batch.
type message struct {
	rec     events.SQSMessage
	receive int
	d       task.Decoded
	bad     []task.BadEntry
	items   []*item
	// decided is the message's action when something other than its files decided it
	// (poison recorded, its job stopped, a counted duplicate, a forward that failed).
	decided *job.Action
	answer  *job.Answer // the job engine's, for a job's task
	poison  bool
	// open counts the message's files still being processed (see processAll); shared
	// says one of them takes its outcome from another message's file (item.dupOf), so
	// the message is not completed before the batch ends. tried: completeFinished took
	// it (reported, and deleted if acknowledged); completed: it was deleted then.
	open      atomic.Int32
	shared    bool
	tried     bool
	completed bool
}

func (m *message) decide(a job.Action) {
	if m.decided == nil {
		m.decided = &a
	}
}

func (m *message) last(maxReceive int) bool { return m.receive >= maxReceive }

// Handle processes one batch. It never returns an error: every problem is either
// recorded in the ledger or reported as a batch item failure, so SQS redelivers exactly
// the messages that need it.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	start := h.deps.Now()
	ctx, answer, cancel := job.Deadlines(ctx)
	defer cancel()
	log := h.deps.Logger
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		log = log.With("request_id", lc.AwsRequestID)
	}
	msgs := h.decode(ctx, log, ev.Records)
	h.checkJobs(ctx, log, msgs)
	var items []*item
	for _, m := range msgs {
		if m.decided == nil {
			items = append(items, m.items...)
		}
	}
	pending := h.skipDone(ctx, log, items)
	h.processAll(ctx, log, msgs, pending)
	shareDuplicates(items)
	h.reportJobs(ctx, log, msgs)

	acts := make([]job.Action, len(msgs))
	for i, m := range msgs {
		acts[i] = h.action(m)
		if a := acts[i]; a.Kind != job.Ack {
			log.InfoContext(ctx, "message comes back", "message_id", m.rec.MessageId, "action", a.Kind, "delay", a.Delay.String(), "why", a.Why)
		}
	}
	resp := h.apply(answer, log, ev.Records, acts)

	st := summarize(msgs)
	st.Duration = h.deps.Now().Sub(start)
	h.metrics.write(st, h.deps.Now())
	log.InfoContext(ctx, "batch done",
		"messages", len(msgs), "files", st.Files, "succeeded", st.Succeeded, "duplicates", st.Duplicates,
		"failed", st.Failed, "superseded", st.Superseded, "retrying", st.Retrying, "skipped", st.Skipped, "poison", st.Poison,
		"completed_early", st.CompletedEarly, "batch_item_failures", len(resp.BatchItemFailures), "ms", st.Duration.Milliseconds())
	return resp, nil
}

// action is the one place a message's outcome is decided.
func (h *Handler) action(m *message) job.Action {
	if m.decided != nil {
		return *m.decided
	}
	if m.d.JobID != "" {
		if m.answer == nil {
			// Not finished: a file comes back (a job's files are finished, counted failed,
			// on their last receive, so this is not the last).
			return h.backoff(m)
		}
		switch a := m.answer; a.Verdict {
		// Reported, so every file is finished and its output checked: the copies say so
		// (confirmOutput need not look again; review 9).
		case job.WaitParent:
			act := job.Again(ParentWait, "its parent "+m.d.Parent+" is not counted yet")
			act.Finished = true
			return act
		case job.NotCounted:
			// Its files are done; only counting failed (the ledger): sent again, with the
			// backoff of its attempts, rather than using up its receives.
			act := job.Again(max(CheckWait, h.cfg.Retry.Delay(m.receive+job.SentAgain(m.rec), retry.Classify(a.Err))), "count: "+a.Err.Error())
			act.Finished = true
			return act
		case job.CheckFailed:
			// Counted: never to the DLQ for what follows (the reconciler checks too).
			return job.Action{Kind: job.SendAgain, Delay: CheckWait, Why: a.Err.Error(), Else: job.Ack, Finished: true}
		default:
			return job.Acknowledge(a.Verdict.String())
		}
	}
	for _, it := range m.items {
		if it.state == pending {
			return h.backoff(m)
		}
	}
	return job.Acknowledge("done")
}

// backoff is the retry of a message with a file still pending, after the backoff of its
// worst error class. A message whose pending files failed in their own processing
// comes back (a batch item failure): that uses one of its receives, so a file that
// keeps failing ends, on the last, recorded as such. One whose pending files wait only
// for something else — the ledger was unreachable, another revision's output could not
// be restored yet — is sent again instead, with a fresh receive count and the backoff
// of all its attempts so far: an outage of DynamoDB uses up no file's retries and sends
// nothing to the dead-letter queue (the chaos run's DynamoDB restart did).
func (h *Handler) backoff(m *message) job.Action {
	class, why := retry.Retryable, "not finished"
	own := false
	for _, it := range m.items {
		if it.state != pending {
			continue
		}
		own = own || !it.infra
		if it.class >= class {
			class = it.class
			if it.err != nil {
				why = it.err.Error()
			}
		}
	}
	if !own {
		return job.Again(h.cfg.Retry.Delay(m.receive+job.SentAgain(m.rec), class), why)
	}
	return job.Retry(h.cfg.Retry.Delay(m.receive, class), why)
}

// wait leaves the item pending for a failure outside its own processing (item.infra).
func (it *item) wait(class retry.Class, err error) {
	it.state, it.class, it.err, it.infra, it.dup = pending, class, err, true, false
}

// The waits of a job's task message.
const (
	// ParentWait: a task whose fan-out task is not counted yet is sent again after this
	// long (fan-out tasks send their children first and count themselves last, so the
	// wait is usually one round). Waiting uses none of the message's receives.
	ParentWait = 10 * time.Second
	// CheckWait: a counted task whose job check failed is sent again after this long.
	CheckWait = 10 * time.Second
)

func receiveCount(m events.SQSMessage) int {
	n, err := strconv.Atoi(m.Attributes["ApproximateReceiveCount"])
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// decode reads every message, records the unreadable ones as poison, forwards job specs,
// and derives each file's ledger key.
func (h *Handler) decode(ctx context.Context, log *slog.Logger, recs []events.SQSMessage) []*message {
	msgs := make([]*message, 0, len(recs))
	for _, rec := range recs {
		m := &message{rec: rec, receive: receiveCount(rec)}
		msgs = append(msgs, m)
		d, err := task.Decode([]byte(rec.Body))
		if err == nil && d.JobID != "" && h.deps.Jobs == nil {
			err = &task.InvalidError{Reason: "task message of job " + d.JobID + ", but this worker runs without a job engine"}
		}
		if err != nil {
			h.recordPoison(ctx, log, m, err.Error())
			continue
		}
		m.d, m.bad = d, d.Bad
		files := d.Files
		if d.Kind == task.KindS3Event && h.cfg.ForwardJobSpecs && h.cfg.JobsQueueURL != "" {
			files = h.forwardSpecs(ctx, log, m, files)
		}
		if len(m.bad) > 0 && d.JobID == "" {
			// Not a job's: nothing counts the bad entries, so the message is kept as poison
			// (naming them) while its good files are processed.
			var reasons []string
			for _, b := range m.bad {
				reasons = append(reasons, b.Err.Error())
			}
			h.recordPoison(ctx, log, m, fmt.Sprintf("%d of %d entries are not files: %s", len(m.bad), len(m.bad)+len(files), strings.Join(reasons, "; ")))
			if m.decided != nil && m.decided.Kind == job.Ack {
				m.decided = nil // recorded: the good files still run
			}
		}
		for _, f := range files {
			k, rev := job.FileKey(f, d.JobID)
			m.items = append(m.items, &item{msg: m, file: f, key: k, rev: rev})
		}
	}
	return msgs
}

// recordPoison stores an undecodable message (or its bad entries) so it is not lost;
// one that cannot be stored comes back.
func (h *Handler) recordPoison(ctx context.Context, log *slog.Logger, m *message, reason string) {
	m.poison = true
	err := h.deps.Ledger.RecordPoison(ctx, ledger.Poison{
		MessageID: m.rec.MessageId, Queue: m.rec.EventSourceARN, Body: m.rec.Body,
		Reason: reason, Receive: m.receive, At: h.deps.Now(),
	})
	if err != nil {
		log.ErrorContext(ctx, "cannot record poison message; it will be redelivered", "message_id", m.rec.MessageId, "reason", reason, "error", err)
		m.decide(job.Retry(h.cfg.Retry.Delay(m.receive, retry.Classify(err)), "record poison: "+err.Error()))
		return
	}
	log.WarnContext(ctx, "poison message recorded", "message_id", m.rec.MessageId, "reason", reason, "receive", m.receive)
	m.decide(job.Acknowledge("poison"))
}

// reads says whether the duplicate check reads an item's record before its work (see
// Config.DuplicateCheck): always on a redelivery and for a replay.
func (h *Handler) reads(it *item) bool {
	if it.msg.receive > 1 || it.file.Replay != "" {
		return true
	}
	switch h.cfg.DuplicateCheck {
	case DuplicateCheckRedelivery:
		return false
	case DuplicateCheckAuto:
		// Only an S3 event's first receive is not read: a task message's files (a job's,
		// archive members, files sent again) are often committed before.
		return it.msg.d.Kind != task.KindS3Event
	}
	return true
}

// skipDone reads the batch's ledger records with one lookup and settles, before any
// work, the files already committed (duplicates) and those a newer revision superseded.
// If the lookup fails, everything is processed: the conditional write still decides.
func (h *Handler) skipDone(ctx context.Context, log *slog.Logger, items []*item) []*item {
	if len(items) == 0 {
		return nil
	}
	var keys []ledger.Key
	for _, it := range items {
		if !h.reads(it) {
			continue // first receive: trust the conditional write to catch a duplicate
		}
		keys = append(keys, it.key)
	}
	heads := map[ledger.Key]ledger.State{}
	if len(keys) > 0 {
		var err error
		if heads, err = h.deps.Ledger.Lookup(ctx, keys); err != nil {
			log.WarnContext(ctx, "ledger lookup failed; processing the whole batch", "error", err)
			heads = map[ledger.Key]ledger.State{}
		}
	}
	var pending []*item
	first := make(map[string]*item, len(items))
	for _, it := range items {
		// The same file twice in one batch, for the same job on the same receive: processed
		// once, the outcome shared. Never across jobs (each counts its own) nor receives.
		id := it.key.String() + "\x00" + it.rev.String() + "\x00" + it.msg.d.JobID + "\x00" + strconv.Itoa(it.msg.receive)
		if f, ok := first[id]; ok {
			it.dupOf, it.msg.shared = f, true
			continue
		}
		first[id] = it
		head, ok := heads[it.key]
		switch {
		case !ok:
		case it.rev.ETag == "" && it.rev.VersionID == "" && it.key.Ordered():
			// A file that names no revision (a manifest row with only a key): its
			// revision is the content its GET reads, placed when it is committed. If the
			// key's record is a success, its work first asks unchangedSince (a HEAD of the
			// input and one of the output) whether it is a duplicate, so a redelivery does
			// not redo what a killed delivery committed (make chaos's manifest batches
			// never finished otherwise). The HEADs run with the work, files in parallel:
			// one after another here, a batch of 1,000 did not get past them between kills.
			// A permanent failure is settled the same way (failedBefore).
			if head.Status == ledger.StatusSucceeded || head.Status == ledger.StatusFailed {
				it.recorded = &head
			}
		case !it.key.Ordered() || head.Rev.Same(it.rev):
			if head.Status == ledger.StatusSucceeded && it.file.Replay == "" {
				if it.rev.Placed(head.Rev) {
					h.deps.Ledger.Advance(ctx, it.key, it.rev) // the same content uploaded again
				}
				if it.key.Ordered() && delivered(it.msg) {
					// The delivery before may have died between a commit that replaced
					// another revision and the output check after it: confirmOutput, with
					// the work.
					it.recorded, it.confirm = &head, true
					break
				}
				it.state, it.dup = succeeded, true
				continue
			}
			if head.Status == ledger.StatusFailed {
				it.recorded = &head // this revision failed for good: failedBefore, with the work
			}
		case it.rev.Older(head.Rev):
			h.supersede(ctx, log, it, head.Rev, "")
			continue
		case head.Rev.Older(it.rev):
		default:
			// Nothing orders the two revisions: this one goes ahead only if it is still the
			// object's content.
			cur, err := h.current(ctx, it)
			switch {
			case err != nil:
				log.WarnContext(ctx, "cannot tell whether the revision is current; processing it", "key", it.file.Key, "error", err)
			case !cur:
				h.supersede(ctx, log, it, head.Rev, "")
				continue
			default:
				it.over = &head
			}
		}
		pending = append(pending, it)
	}
	return pending
}

// unchangedSince says whether an item that names no revision is a plain file whose
// record is a success of the content its object still holds (a HEAD If-Match the
// record's ETag) and whose output is that revision's (a HEAD of the output: an earlier
// delivery killed between its upload and its commit may have left its own output over
// the newer one's, which processing it again would repair; found by review 4). Any
// doubt says no: the file is processed and its commit decides.
func (h *Handler) unchangedSince(ctx context.Context, log *slog.Logger, it *item, head ledger.State) bool {
	if it.key.Scope != "" || it.file.Replay != "" || head.Status != ledger.StatusSucceeded || head.Rev.ETag == "" {
		return false
	}
	cur, err := h.holds(ctx, it.file, head.Rev.ETag)
	if err != nil || !cur {
		if err != nil {
			log.DebugContext(ctx, "cannot tell whether the recorded content is current; processing the file", "key", it.file.Key, "error", err)
		}
		return false
	}
	return h.outputIs(ctx, it, head.Rev)
}

// outputIs says whether the item's output (under the name its rule gives) is labelled
// rev's: one HEAD. Missing, unlabelled or unknown says no.
func (h *Handler) outputIs(ctx context.Context, it *item, rev ledger.Revision) bool {
	out, err := h.deps.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(h.cfg.OutputBucket), Key: aws.String(h.outputKey(it.file, it.msg.d.JobID, it.pr))})
	return err == nil && out.Metadata[MetaRevision] == task.MetaValue(rev.String())
}

// delivered says whether a delivery before this one may have stopped between a commit
// and the output check after it: the message is received again, or a copy sent again
// while some of its files were not finished.
func delivered(m *message) bool {
	return m.receive > 1 || job.SentAgain(m.rec) > 0 && !job.Finished(m.rec)
}

// confirmOutput settles an item whose revision's success is the key's record, found on
// a redelivery. The delivery before may have been killed between a commit that
// replaced an older revision and the output check that follows it (restore), with the
// older revision's output landed last: make chaos, seed 20261201, killed one 110 ms
// after such a commit, and the redelivery, settled from the record, left the older
// output for good. restore makes the check (the record, then one HEAD of the output it
// names) and puts the record's revision's output back. If that revision cannot be read
// any more (changed or deleted since), the item's own work decides, as on a first
// delivery; if the check cannot be made now, the file comes back (review 8).
func (h *Handler) confirmOutput(ictx, ctx context.Context, log *slog.Logger, it *item, head ledger.State) {
	// Most often the output is right: one HEAD of the output's usual name says so, and
	// only otherwise does restore read the record for the name it gives (review 9).
	var err error
	if !h.outputIs(ictx, it, head.Rev) {
		err = h.restore(ictx, log, it)
	}
	switch {
	case err == nil:
		it.rev, it.state, it.dup = head.Rev, succeeded, true
	case restoreGivesUp(err):
		log.InfoContext(ctx, "the committed revision cannot be read again; processing the file", "key", it.file.Key, "error", err)
		it.confirm, it.recorded = false, nil
		h.processOne(ictx, ctx, log, it)
	default:
		log.WarnContext(ctx, "cannot confirm a committed revision's output; the file comes back", "key", it.file.Key, "error", err)
		it.wait(retry.Classify(err), err)
	}
}

// restoreGivesUp says whether restore failed because the newest revision cannot be
// processed again (its source changed or was deleted since, or it fails for good):
// repeating the check cannot help.
func restoreGivesUp(err error) bool {
	var sup *supersededSource
	return errors.As(err, &sup) || retry.Classify(err) == retry.Permanent
}

// failedBefore settles an item whose key's record is a permanent failure that this
// delivery would only repeat: of the same revision (for a file that names none, its
// object still holds the recorded content: a HEAD If-Match the record's ETag), recorded
// for the same job (or, both outside any job, for the same S3 object), and with no older
// revision's output left at the item's output key (record removes it after a failure,
// and a transient error there brings the file back to do it again). The item takes the
// record's reason and code; nothing is read or written. Chaos run 13: each redelivery
// read and failed such files again, and a manifest's batch under kills every few
// seconds never finished. Any doubt says no: the file is processed and fails again.
// A new job naming the file, or a replay, tries it again.
func (h *Handler) failedBefore(ctx context.Context, it *item, head ledger.State) bool {
	if it.file.Replay != "" {
		return false
	}
	rec, ok, err := h.deps.Ledger.Get(ctx, it.key)
	if err != nil || !ok || rec.Status != ledger.StatusFailed || !rec.Rev().Same(head.Rev) || rec.JobID != it.msg.d.JobID || rec.Reason == "" {
		return false
	}
	switch {
	case it.rev.Placed(rec.Rev()):
		// The same content, uploaded again later: its failure is written again, which
		// moves the record's sequencer on (an older revision's late event must then be
		// superseded, not placed over it; review 5).
		return false
	case it.rev.ETag != "" || it.rev.VersionID != "":
		if !rec.Rev().Same(it.rev) {
			return false // another revision's failure (a job's split part keeps no order; review 5)
		}
	default:
		if rec.ETag == "" || it.key.Scope != "" {
			return false
		}
		if cur, err := h.holds(ctx, it.file, rec.ETag); err != nil || !cur {
			return false
		}
	}
	if it.key.Ordered() {
		outKey, ok := h.leftoverKey(it)
		if !ok {
			return false
		}
		out, err := h.deps.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(h.cfg.OutputBucket), Key: aws.String(outKey)})
		switch {
		case hasCode(err, "NotFound", "NoSuchKey"):
		case err != nil:
			return false
		case leftover(out.Metadata, it.key, rec.Rev()):
			return false
		}
	}
	it.rev, it.state, it.dup = rec.Rev(), failed, true
	it.err = failure.New(rec.Code, errors.New(rec.Reason))
	return true
}

// hasCode says whether err is an API error with one of the codes (S3 answers a HEAD of a
// missing key with NotFound, other calls with NoSuchKey).
func hasCode(err error, codes ...string) bool {
	var api smithy.APIError
	return errors.As(err, &api) && slices.Contains(codes, api.ErrorCode())
}

// leftover says whether an output with this metadata is another revision's of key,
// written by this code, that a failure of rev removes (see removeLeftover).
func leftover(meta map[string]string, key ledger.Key, rev ledger.Revision) bool {
	have, content := meta[MetaRevision], meta[MetaSourceETag]
	switch {
	case meta[task.MetaInput] != inputName(key):
		return false // another input's output (the conflict this failure may be), or not ours
	case have == "" || content == "":
		return false // not one this code wrote: its content is unknown
	case have == task.MetaValue(rev.String()) || content == task.MetaValue(rev.ETag):
		return false // this revision's own, or the same content under another version
	}
	return true
}

// current says whether the item's revision is still its object's content (for an
// archive member or a split part: the archive's, the split file's).
func (h *Handler) current(ctx context.Context, it *item) (bool, error) {
	return h.holds(ctx, it.file, it.rev.ETag)
}

// holds says whether f's object holds the content etag (an empty etag: whatever is there).
// HeadObject with If-Match answers 412 Precondition Failed when the ETag differs (S3 API
// reference, HeadObject, "If-Match"; RFC 7232), which the SDK reports as PreconditionFailed.
func (h *Handler) holds(ctx context.Context, f task.File, etag string) (bool, error) {
	if etag == "" {
		return true, nil // a file that names no content and was not read yet: whatever is there
	}
	_, err := h.deps.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(f.Bucket), Key: aws.String(f.Key), IfMatch: aws.String(`"` + etag + `"`)})
	switch {
	case err == nil:
		return true, nil
	case hasCode(err, "PreconditionFailed", "NotFound", "NoSuchKey"):
		return false, nil
	}
	return false, fmt.Errorf("head %s: %w", f, err)
}

// processAll runs the items with bounded concurrency and the invocation deadline, and
// meanwhile completes the batch's messages that are finished (completeFinished).
func (h *Handler) processAll(ctx context.Context, log *slog.Logger, msgs []*message, items []*item) {
	deadline, hasDeadline, margin := h.margin(ctx)
	for _, it := range items {
		it.msg.open.Add(1)
	}
	// The sweep's calls end with the files' work (the margin is the end of the batch's)
	// and are cancelled when the files are done: a hung one holds up nothing.
	sctx, cancelSweep := context.WithCancel(ctx)
	if hasDeadline {
		sctx, cancelSweep = context.WithDeadline(ctx, deadline.Add(-margin))
	}
	stop, swept := make(chan struct{}), make(chan struct{})
	h.spare.Go(func() { defer close(swept); h.sweep(sctx, log, msgs, stop) })
	defer func() { close(stop); cancelSweep(); <-swept }()

	var wg sync.WaitGroup
	sem := make(chan struct{}, h.cfg.Concurrency)
	for _, it := range items {
		sem <- struct{}{}
		if h.jobStopped(ctx, it.msg) {
			<-sem
			it.state = skipped // its job was cancelled or failed meanwhile
			it.msg.open.Add(-1)
			continue
		}
		if hasDeadline && time.Until(deadline) < h.cfg.MinItemTime+margin {
			<-sem
			// Not the file's failure but the batch's size: it waits like an infrastructure
			// failure (its message is sent again, spending none of its receives), never
			// given up on its last receive (the chaos run at 100,000 files sent job tasks
			// to the DLQ this way, their jobs left RUNNING).
			it.wait(retry.Retryable, errors.New("not started: too little of the invocation left"))
			it.msg.open.Add(-1)
			continue
		}
		wg.Add(1)
		h.spare.Go(func() { // a goroutine whose stack has grown before (goroutines)
			defer wg.Done()
			defer it.msg.open.Add(-1) // after its state is final: completeFinished reads it
			defer func() { <-sem }()
			ictx := ctx
			if hasDeadline {
				var cancel context.CancelFunc
				ictx, cancel = context.WithDeadline(ctx, deadline.Add(-margin))
				defer cancel()
			}
			h.processOne(ictx, ctx, log, it)
		})
	}
	wg.Wait()
}

// margin is the invocation's deadline, if it has one, and the time kept free before it
// for the final writes: Config.Margin, at most a tenth of what is left, so short
// function timeouts still leave time to work.
func (h *Handler) margin(ctx context.Context) (deadline time.Time, ok bool, margin time.Duration) {
	deadline, ok = ctx.Deadline()
	margin = h.cfg.Margin
	if ok {
		margin = min(margin, time.Until(deadline)/10)
	}
	return deadline, ok, margin
}

// completeEvery is how often a long batch completes its finished messages.
const completeEvery = 500 * time.Millisecond

// sweep completes the finished messages of a batch that runs long: from
// Config.CompleteAfter into the invocation, every completeEvery, until stop is closed or
// files stop being started (MinItemTime and the margin left: from then on the end of
// the batch completes them, as it completes every message of a short batch).
func (h *Handler) sweep(ctx context.Context, log *slog.Logger, msgs []*message, stop <-chan struct{}) {
	if h.cfg.CompleteAfter < 0 {
		return
	}
	deadline, hasDeadline, margin := h.margin(ctx)
	t := time.NewTimer(h.cfg.CompleteAfter)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if hasDeadline && time.Until(deadline) < h.cfg.MinItemTime+margin {
			return
		}
		h.completeFinished(ctx, log, msgs)
		t.Reset(completeEvery)
	}
}

// completeFinished completes at once the messages whose files are all finished, rather
// than when the batch ends: the job tasks among them are reported to the job engine in
// one call, and those whose action is then to acknowledge them are deleted
// (DeleteMessageBatch), so a crash, a kill or a timeout later in the batch brings back
// only the messages still open. Without it, a batch of ten task messages of 100
// key-only files each (about 15 s under make chaos's faults) came back whole after every
// kill, each message using one of its receives, until all ten were in the DLQ (chaos run
// 16). A batch that ends before CompleteAfter costs nothing more; one that runs longer,
// a report and a delete per sweep that finds messages, which Lambda's own delete at the
// end repeats harmlessly: SQS answers success for a receipt handle whose message is gone
// (SQS API reference, DeleteMessage). A message waits for the end of the batch if it
// has a file still being processed or one that takes another message's outcome
// (item.dupOf), or if its action is not to acknowledge it.
func (h *Handler) completeFinished(ctx context.Context, log *slog.Logger, msgs []*message) {
	var report, ack []*message
	for _, m := range msgs {
		// open is 0 only once every file of m is final and m.decided set for good:
		// processAll decides a message only before one of its files starts.
		if m.tried || m.shared || m.open.Load() != 0 {
			continue
		}
		switch {
		case m.decided != nil:
			if m.decided.Kind == job.Ack {
				ack = append(ack, m)
			}
			m.tried = true
		case m.d.JobID != "":
			if finished(m) {
				report = append(report, m)
			}
		case h.action(m).Kind == job.Ack:
			ack = append(ack, m)
			m.tried = true
		}
	}
	if len(report) > 0 {
		h.reportJobs(ctx, log, report)
		for _, m := range report {
			m.tried = true
			switch {
			case m.answer == nil:
			case m.answer.Verdict == job.NotCounted:
				m.answer = nil // the end of the batch reports it again (a settled task is a duplicate then)
			case h.action(m).Kind == job.Ack:
				ack = append(ack, m)
			}
		}
	}
	if len(ack) == 0 {
		return
	}
	url, err := h.queueURL(ctx, ack[0].rec.EventSourceARN)
	if err != nil {
		log.DebugContext(ctx, "cannot complete messages before their batch ends", "error", err)
		return
	}
	for start := 0; start < len(ack); start += 10 {
		chunk := ack[start:min(start+10, len(ack))]
		entries := make([]sqstypes.DeleteMessageBatchRequestEntry, len(chunk))
		for i, m := range chunk {
			entries[i] = sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(m.rec.ReceiptHandle)}
		}
		out, err := h.deps.Queue.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
		if err != nil {
			// Lambda deletes them when the batch ends; a crash before then brings them
			// back, duplicates of what is recorded and counted.
			log.DebugContext(ctx, "cannot complete messages before their batch ends", "messages", len(chunk), "error", err)
			continue
		}
		failed := map[string]bool{}
		for _, f := range out.Failed {
			failed[aws.ToString(f.Id)] = true
		}
		for i, m := range chunk {
			if !failed[strconv.Itoa(i)] {
				m.completed = true
			}
		}
	}
}

func (h *Handler) attempt(ctx context.Context, it *item, dur time.Duration) ledger.Attempt {
	att := ledger.Attempt{At: h.deps.Now(), Receive: it.msg.receive, DurationMS: dur.Milliseconds()}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		att.RequestID = lc.AwsRequestID
	}
	return att
}

// processOne processes one file and records the outcome. ictx bounds the work; ctx (the
// invocation's) is used for the final ledger write so a timed-out file is still recorded.
func (h *Handler) processOne(ictx, ctx context.Context, log *slog.Logger, it *item) {
	if it.confirm {
		h.confirmOutput(ictx, ctx, log, it, *it.recorded)
		return
	}
	if it.recorded != nil {
		switch head := *it.recorded; {
		case head.Status == ledger.StatusSucceeded && h.unchangedSince(ictx, log, it, head):
			it.rev, it.state, it.dup = head.Rev, succeeded, true
			return
		case head.Status == ledger.StatusFailed && h.failedBefore(ictx, it, head):
			return
		}
	}
	began := h.deps.Now()
	res, err := h.run(ictx, it, it.file)
	att := h.attempt(ctx, it, h.deps.Now().Sub(began))
	flog := log.With("bucket", it.file.Bucket, "key", it.file.Key, "revision", it.rev.String(), "receive", it.msg.receive)

	if err == nil {
		h.commit(ctx, flog, it, res, att)
		return
	}
	var sup *supersededSource
	if errors.As(err, &sup) {
		if !h.reads(it) {
			// Not read before the work: this very revision may be committed already (S3
			// sent its event twice, then the object changed). Then it is a duplicate, not
			// a superseded revision (review_auto_test.go).
			if rec, ok, gerr := h.deps.Ledger.Get(ctx, it.key); gerr == nil && ok && rec.Status == ledger.StatusSucceeded && rec.Rev().Same(it.rev) {
				it.state, it.dup = succeeded, true
				return
			}
		}
		h.supersede(ctx, flog, it, ledger.Revision{}, sup.Error())
		return
	}
	it.err, it.class = err, retry.Classify(err)
	status := ledger.StatusRetrying
	switch {
	case it.class == retry.Permanent:
		status = ledger.StatusFailed
	case it.msg.last(h.cfg.MaxReceiveCount):
		status = ledger.StatusDeadLettered
	}
	att.Class = it.class.String()
	h.record(ctx, flog, it, status, err.Error(), att)
}

// commit writes a success; a write refused because another revision holds the key is
// sorted out here.
func (h *Handler) commit(ctx context.Context, log *slog.Logger, it *item, res ledger.Result, att ledger.Attempt) {
	w := ledger.Write{Key: it.key, Rev: it.rev, JobID: it.msg.d.JobID, Status: ledger.StatusSucceeded, Result: res, Attempt: att, Over: it.over,
		Replay: it.file.Replay}
	for range 3 {
		replaced, err := h.deps.Ledger.WriteReplacing(ctx, w)
		log.DebugContext(ctx, "commit", "replaced", replaced, "error", err)
		var sup *ledger.SupersededError
		var other *ledger.OtherRevisionError
		switch {
		case err == nil:
			it.state, it.bytes = succeeded, res.Size
			if replaced {
				// The revision this one replaced may have written the output last; or an
				// older revision's writer, seeing this one's record unfinished, put its own
				// output or removed this one's meanwhile (review_auto_test.go).
				h.checkAfterCommit(ctx, log, it, "cannot check the output after replacing an older revision")
			}
			return
		case errors.Is(err, ledger.ErrAlreadySucceeded):
			it.state, it.dup = succeeded, true
			log.InfoContext(ctx, "duplicate delivery: already committed")
			// This may be this very write, retried by the SDK after its response was lost:
			// then whether it replaced another revision is unknown, and that revision's
			// output may have landed last (found by make chaos at 100,000 files). One HEAD
			// tells.
			if it.key.Ordered() {
				h.checkAfterCommit(ctx, log, it, "cannot check the output of a revision committed before")
			}
			return
		case errors.As(err, &sup):
			h.supersede(ctx, log, it, sup.Head.Rev, "")
			return
		case errors.As(err, &other):
			cur, cerr := h.current(ctx, it)
			if cerr != nil {
				it.wait(retry.Classify(cerr), cerr)
				h.verifyOutput(ctx, log, it)
				return
			}
			if !cur {
				h.supersede(ctx, log, it, other.Head.Rev, "")
				return
			}
			head := other.Head
			w.Over = &head // still the object's content: it replaces exactly that record
		default:
			// The output exists (deterministic key); only the record is missing. Retry: the
			// rerun overwrites the same output and commits. Meanwhile, if a newer revision
			// holds the key, its output is put back now (this message may never come back
			// to do it: its job may finish, another copy be counted).
			it.wait(retry.Classify(err), err)
			log.ErrorContext(ctx, "commit failed; will retry", "error", err)
			h.verifyOutput(ctx, log, it)
			return
		}
	}
	it.wait(retry.Retryable, errors.New("commit: the key's record kept changing"))
	h.verifyOutput(ctx, log, it)
}

// checkAfterCommit makes the output check that follows a commit (restore). If it cannot
// be made now, the file comes back, and its redelivery, settled from the record,
// confirms the output (confirmOutput): acknowledged, nothing would ever look again
// (review 8). A newest revision that cannot be read any more is only logged.
func (h *Handler) checkAfterCommit(ctx context.Context, log *slog.Logger, it *item, why string) {
	err := h.restore(ctx, log, it)
	switch {
	case err == nil:
	case restoreGivesUp(err):
		log.ErrorContext(ctx, why, "key", it.file.Key, "error", err)
	default:
		log.WarnContext(ctx, why+"; the file comes back", "key", it.file.Key, "error", err)
		it.wait(retry.Classify(err), err)
	}
}

// verifyOutput puts the newest revision's output back if this item's revision wrote
// the output and another revision holds the key's record. Best effort: used where this
// item's own write did not land.
func (h *Handler) verifyOutput(ctx context.Context, log *slog.Logger, it *item) {
	if !it.key.Ordered() {
		return
	}
	rec, ok, err := h.deps.Ledger.Get(ctx, it.key)
	if err != nil || !ok || rec.Rev().Same(it.rev) {
		return
	}
	if err := h.restore(ctx, log, it); err != nil {
		log.WarnContext(ctx, "cannot check the key's output against its newest revision", "key", it.file.Key, "error", err)
	}
}

// record writes a failure; status is FAILED, RETRYING or DEAD_LETTERED.
func (h *Handler) record(ctx context.Context, log *slog.Logger, it *item, status ledger.Status, reason string, att ledger.Attempt) {
	w := ledger.Write{Key: it.key, Rev: it.rev, JobID: it.msg.d.JobID, Status: status, Reason: reason, Attempt: att, Over: it.over}
	// The failure's code, as a job's report gives it (a retry's only if its error has one).
	def := failure.ProcessorFailed
	if status == ledger.StatusRetrying {
		def = ""
	}
	if w.Code, _ = failure.CodeOf(it.err, def); status == ledger.StatusDeadLettered {
		w.Code = failure.RetriesExhausted
	}
	if it.rev.ETag == "" && it.rev.VersionID == "" && it.key.Ordered() {
		// Never read, so no revision is known: the failure is kept beside the key's
		// record (the job's own, or an "unread" one), never in place of it.
		w.Key.Scope = ledger.ScopeUnread
		if it.msg.d.JobID != "" {
			w.Key.Scope = ledger.JobScope(it.msg.d.JobID)
		}
	}
	_, err := h.deps.Ledger.WriteReplacing(ctx, w)
	var sup *ledger.SupersededError
	var other *ledger.OtherRevisionError
	if errors.As(err, &other) && status != ledger.StatusRetrying {
		// Another revision holds the key and nothing orders the two: this failure
		// replaces it only if this revision is still the object's content (as a success
		// would), else it is superseded.
		if cur, cerr := h.current(ctx, it); cerr == nil && cur {
			head := other.Head
			w.Over = &head
			_, err = h.deps.Ledger.WriteReplacing(ctx, w)
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, ledger.ErrAlreadySucceeded):
		it.state, it.dup, it.err = succeeded, true, nil
		return
	case errors.As(err, &sup):
		h.supersede(ctx, log, it, sup.Head.Rev, "")
		return
	case errors.As(err, &other) && status != ledger.StatusRetrying:
		// Another revision holds the key, and this one is not the object's content.
		h.supersede(ctx, log, it, other.Head.Rev, "")
		return
	case errors.As(err, &other):
		// A transient failure of a revision not yet placed: it comes back and is sorted out
		// when it succeeds or fails for good.
	default:
		// Without a record, a permanent failure must come back rather than vanish.
		log.ErrorContext(ctx, "cannot record failure; message will be redelivered", "error", err, "failure", reason)
		it.state, it.class, it.infra = pending, retry.Classify(err), true
		return
	}
	if status == ledger.StatusFailed || status == ledger.StatusDeadLettered {
		if err := h.removeLeftover(ctx, log, it); err != nil && retry.Classify(err) != retry.Permanent {
			// The failure is recorded; the older output is not gone yet. Nothing else
			// would remove it (that revision is done), so this file comes back.
			log.WarnContext(ctx, "cannot remove an older revision's output yet; the file comes back", "key", it.file.Key, "error", err)
			it.wait(retry.Classify(err), err)
			return
		} else if err != nil {
			log.ErrorContext(ctx, "cannot remove an older revision's output", "key", it.file.Key, "error", err)
		}
	}
	switch status {
	case ledger.StatusFailed:
		it.state = failed
	case ledger.StatusDeadLettered:
		it.state = deadLettered
		if it.msg.d.JobID == "" {
			it.state = pending // its message goes to the DLQ with it
		}
	default:
		it.state = pending
	}
	level := slog.LevelWarn
	if status != ledger.StatusRetrying {
		level = slog.LevelError
	}
	log.Log(ctx, level, "file failed", "status", status, "class", it.class.String(), "error", reason)
}

// supersededSource: the source changed since its event or listing (the GET's
// precondition failed): the newer content has its own event.
type supersededSource struct{ err error }

func (e *supersededSource) Error() string { return e.err.Error() }
func (e *supersededSource) Unwrap() error { return e.err }

// supersede records a revision that a newer one replaces (by is the newer one, if
// known; else why says what is known). If this revision's output is the key's output
// (this or another delivery of it wrote it last), it is made the newest revision's again.
func (h *Handler) supersede(ctx context.Context, log *slog.Logger, it *item, by ledger.Revision, why string) {
	reason := "superseded by revision " + by.String() + " of the key"
	if by == (ledger.Revision{}) {
		reason = "superseded: " + why
	}
	it.state, it.err = superseded, failure.New(failure.Superseded, errors.New(reason))
	if err := h.deps.Ledger.RecordSuperseded(ctx, it.key, it.rev, by, reason, h.attempt(ctx, it, 0)); err != nil {
		log.WarnContext(ctx, "cannot record the superseded revision; it comes back", "key", it.file.Key, "error", err)
		it.wait(retry.Classify(err), err)
		return
	}
	log.InfoContext(ctx, "revision superseded", "key", it.file.Key, "revision", it.rev.String(), "by", by.String())
	// Whether or not this delivery wrote the output, another delivery of this revision
	// may have (one that died, or whose task was counted elsewhere): one HEAD tells.
	if !it.key.Ordered() {
		return
	}
	err := h.restore(ctx, log, it)
	switch {
	case err == nil:
	case retry.Classify(err) == retry.Permanent || it.msg.last(h.cfg.MaxReceiveCount):
		// The newest revision cannot be read again (deleted since), or this was the last
		// chance: this revision's output, if it is still there, is removed, and the file
		// stays superseded (never a job's task in a DLQ for it).
		log.ErrorContext(ctx, "cannot restore the newest revision's output; removing this revision's", "key", it.file.Key, "error", err)
		h.removeOwnOutput(ctx, log, it)
	default:
		log.WarnContext(ctx, "cannot restore the newest revision's output yet; it comes back", "key", it.file.Key, "error", err)
		it.wait(retry.Classify(err), err)
	}
}

// removeLeftover: this revision failed for good and holds the key's record, so no
// output may stand for the key. An output of this input made from other content (an
// older revision's, written before this one replaced its record) is removed:
//   - only while the record is still this failure (read after the HEAD), and only the
//     object the HEAD saw (If-Match on its ETag);
//   - never this revision's own output, nor one of the same content under another
//     version (told by fileflow-source-etag; an output without it is left);
//   - a newer revision that committed between the read and the delete is put back at
//     once (restore), so its output is never lost to the delete.
//
// An error is returned for the caller to bring the file back: nothing else would
// remove the leftover, since the revision that wrote it is done.
func (h *Handler) removeLeftover(ctx context.Context, log *slog.Logger, it *item) error {
	if !it.key.Ordered() || it.rev.ETag == "" {
		return nil // a job's own record, or never read: the key's record is not this failure
	}
	outKey, ok := h.leftoverKey(it)
	if !ok {
		return nil
	}
	uri := "s3://" + h.cfg.OutputBucket + "/" + outKey
	head, err := h.deps.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(h.cfg.OutputBucket), Key: aws.String(outKey)})
	if hasCode(err, "NotFound", "NoSuchKey") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("leftover: head %s: %w", uri, err)
	}
	if !leftover(head.Metadata, it.key, it.rev) {
		return nil
	}
	have := head.Metadata[MetaRevision]
	rec, found, err := h.deps.Ledger.Get(ctx, it.key)
	if err != nil {
		return fmt.Errorf("leftover: %w", err)
	}
	if !found || !rec.Rev().Same(it.rev) || (rec.Status != ledger.StatusFailed && rec.Status != ledger.StatusDeadLettered) {
		return nil // the record moved on: its writer makes the output agree
	}
	_, err = h.deps.Objects.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(h.cfg.OutputBucket), Key: aws.String(outKey), IfMatch: head.ETag})
	switch {
	case hasCode(err, "PreconditionFailed", "NoSuchKey", "NotFound"):
		// Rewritten or removed meanwhile: whoever did it decides.
	case err != nil:
		return fmt.Errorf("leftover: delete %s: %w", uri, err)
	default:
		log.WarnContext(ctx, "older revision's output removed: the newest revision failed", "output", uri, "had", have)
	}
	// A newer revision may have committed between the record's read and the delete
	// (its own check of the output may have come before the delete): look again.
	return h.restore(ctx, log, it)
}

// leftoverKey is the item's output key; false if it cannot be known (a processor that
// panicked naming it: outputKey runs the chain's naming again when the item has none).
func (h *Handler) leftoverKey(it *item) (key string, ok bool) {
	defer func() {
		if recover() != nil {
			key, ok = "", false
		}
	}()
	return h.outputKey(it.file, it.msg.d.JobID, it.pr), true
}

// removeOwnOutput deletes the output if it is still this item's revision's.
func (h *Handler) removeOwnOutput(ctx context.Context, log *slog.Logger, it *item) {
	outKey := h.outputKey(it.file, it.msg.d.JobID, it.pr)
	head, err := h.deps.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(h.cfg.OutputBucket), Key: aws.String(outKey)})
	if err != nil || head.Metadata[MetaRevision] != task.MetaValue(it.rev.String()) {
		return
	}
	if _, err := h.deps.Objects.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(h.cfg.OutputBucket), Key: aws.String(outKey)}); err != nil {
		log.WarnContext(ctx, "cannot remove a superseded revision's output", "output", outKey, "error", err)
	}
}

// restore makes the key's output agree with the key's record, which holds the newest
// revision: if the record is a success naming this output and the output is some other
// revision's (this older one's, landed last), the newest revision is processed again
// over it; if the record names no output here and will not (it failed for good, or its
// output is elsewhere), this revision's leftover output is removed — never one whose
// writer may still be at work (a record still RETRYING). Repeated while the record
// changes meanwhile.
func (h *Handler) restore(ctx context.Context, log *slog.Logger, it *item) error {
	for range 3 {
		rec, ok, err := h.deps.Ledger.Get(ctx, it.key)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		outKey := h.outputKey(it.file, it.msg.d.JobID, it.pr)
		if it.confirm && it.pr == nil && ok && rec.Status == ledger.StatusSucceeded {
			// A duplicate confirming its own revision's output, not processed here: under a
			// rule chosen by content type the name derived without it is not the output's;
			// the record names it (review 8).
			if k, named := h.recordedOutput(rec.Outputs); named {
				outKey = k
			}
		}
		uri := "s3://" + h.cfg.OutputBucket + "/" + outKey
		head, err := h.deps.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(h.cfg.OutputBucket), Key: aws.String(outKey)})
		missing := hasCode(err, "NotFound", "NoSuchKey")
		if err != nil && !missing {
			return fmt.Errorf("restore: head %s: %w", uri, err)
		}
		have := ""
		if !missing {
			have = head.Metadata[MetaRevision]
		}
		newest := rec.Rev()
		switch {
		case !ok:
			return nil // no record to agree with (yet): its writer decides
		case rec.Status == ledger.StatusSucceeded && contains(rec.Outputs, uri):
			if have == task.MetaValue(newest.String()) {
				return nil // the output is the newest revision's
			}
			if it.confirm && !missing && have == "" && (rec.OutputSize == 0 || aws.ToInt64(head.ContentLength) == rec.OutputSize) {
				// A duplicate confirming an output without its revision (one written before
				// multipart outputs were created with their labels, or by something else) of
				// the record's size: nothing tells whose it is, and processing it again would
				// not either. Elsewhere an unlabelled output is processed over, as an older
				// revision's may be (review 9).
				return nil
			}
		case have != "" && have == task.MetaValue(it.rev.String()) &&
			(rec.Status == ledger.StatusFailed || rec.Status == ledger.StatusDeadLettered || rec.Status == ledger.StatusSucceeded):
			// The newest revision has no output here and will not write one: this older
			// revision's output is a leftover.
			if _, err := h.deps.Objects.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(h.cfg.OutputBucket), Key: aws.String(outKey)}); err != nil {
				return fmt.Errorf("restore: delete %s: %w", uri, err)
			}
			log.WarnContext(ctx, "superseded revision's output removed", "output", uri)
			return nil
		default:
			return nil // in flight (RETRYING): its writer puts its output
		}
		f := it.file
		f.VersionID, f.ETag, f.Sequencer = newest.VersionID, newest.ETag, newest.Sequencer
		if f.Member != nil {
			if rec.Member == nil {
				// Nothing says where the member is in the newest archive: leave the output
				// (never remove one the newest revision names) and say so.
				return failure.Newf(failure.Internal, "restore: %s: the newest revision's record does not locate its member; re-run its archive job", uri)
			}
			m := *rec.Member
			f.Member = &task.Member{Name: m.Name, Offset: m.Offset, CompressedSize: m.CompressedSize, Size: m.Size, Method: m.Method, CRC32: m.CRC32}
		}
		probe := *it
		probe.rev, probe.restoring = newest, true
		if _, err := h.run(ctx, &probe, f); err != nil {
			return fmt.Errorf("restore: process newest revision %s: %w", newest, err)
		}
		log.WarnContext(ctx, "output put back to the newest revision", "output", uri, "revision", newest.String())
		// Look again: the record may have moved on meanwhile.
	}
	return errors.New("restore: the key's newest revision kept changing")
}

// recordedOutput is the one output in the output bucket a record names, as a key.
func (h *Handler) recordedOutput(outputs []string) (string, bool) {
	prefix := "s3://" + h.cfg.OutputBucket + "/"
	key, n := "", 0
	for _, o := range outputs {
		if k, ok := strings.CutPrefix(o, prefix); ok {
			key, n = k, n+1
		}
	}
	return key, n == 1
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// run does the work for one file f (it's file, or the newest revision of it when
// restoring): GET, choose the rule, stream through the processors, PUT the output. It
// returns what the ledger records on success.
func (h *Handler) run(ctx context.Context, it *item, f task.File) (res ledger.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = failure.New(failure.Internal, fmt.Errorf("processor panicked: %v\n%s", p, debug.Stack()))
		}
	}()
	opts := source.Options{Limits: source.Limits{MaxMemberBytes: h.cfg.Archive.MaxMemberBytes, MaxRatio: h.cfg.Archive.MaxRatio}}
	obj, err := source.Open(ctx, h.deps.Objects, f, opts)
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "PreconditionFailed" && it.msg.d.JobID != "" && f == it.file && !it.restoring &&
		f.VersionID == "" && f.Member == nil && f.Range == nil {
		// A job's file changed since it was listed. Nothing says its new content reaches
		// fileflow by an event (a job may read any bucket): the job processes the key's
		// content as it is now, placed by the ledger like any revision without an order.
		f.ETag = ""
		if obj, err = source.Open(ctx, h.deps.Objects, f, opts); err == nil {
			it.file.ETag, it.rev = obj.ETag, ledger.Revision{ETag: obj.ETag}
			f = it.file
		}
	}
	if err != nil {
		if errors.As(err, &api) {
			switch api.ErrorCode() {
			case "PreconditionFailed":
				why := "the newer content has its own event"
				if f.Member != nil || f.Range != nil {
					why = "the job was planned on an earlier revision"
				}
				return res, &supersededSource{fmt.Errorf("get %s: the object changed since (ETag %s); %s", f, f.ETag, why)}
			case "NoSuchKey", "NoSuchVersion":
				return res, failure.New(failure.NoSuchKey, fmt.Errorf("get %s: the object was deleted before it was processed: %w", f, err))
			case "AccessDenied":
				return res, failure.New(failure.AccessDenied, fmt.Errorf("get %s: %w", f, err))
			}
		}
		return res, fmt.Errorf("get %s: %w", f, err)
	}
	defer obj.Body.Close()
	src := &sourceReader{r: obj.Body, want: obj.Size}
	if it.rev.ETag == "" && it.key.Ordered() && f.Member == nil {
		it.rev.ETag = obj.ETag // the content read: the record's identity
	}

	size := obj.Size
	srcType := obj.ContentType
	name := f.Name()
	rule, ok := h.cfg.Rules.Match(name, srcType)
	switch {
	case !ok:
		return res, failure.Newf(failure.NoRule, "no processing rule matches key %q (content type %q)", name, srcType)
	case rule.Reject != "":
		return res, failure.Newf(failure.Rejected, "rejected by rule: %s", rule.Reject)
	case rule.MaxSize > 0 && size > rule.MaxSize:
		return res, failure.Newf(failure.TooLarge, "file is %d bytes, over the rule's max_size of %d", size, rule.MaxSize)
	}

	pr := &process.Result{Key: name, ContentType: srcType}
	body, err := process.Chain(src, pr, h.procs[strings.Join(rule.Processors, ",")]...)
	if err != nil {
		return res, err
	}
	it.pr = pr
	outKey := h.outputKey(f, it.msg.d.JobID, pr)
	if len(outKey) > task.MaxKeyBytes {
		// S3 would refuse the PUT (KeyTooLongError) on every retry: a key near the limit,
		// lengthened by the output prefix, a processor's suffix, a member's or part's name.
		return res, failure.Newf(failure.KeyTooLong, "output key of %d bytes (%q…) is over S3's limit of %d: shorten the key or the output prefix (%q)",
			len(outKey), strings.ToValidUTF8(outKey[:60], ""), task.MaxKeyBytes, h.cfg.OutputPrefix)
	}
	rev := ledger.Revision{VersionID: f.VersionID, ETag: strings.Trim(f.ETag, `"`)}
	if rev.ETag == "" {
		rev.ETag = obj.ETag
	}
	owner := inputName(it.key)
	up, err := h.uploader.Upload(ctx, upload.Object{
		Bucket: h.cfg.OutputBucket,
		Key:    outKey,
		Owner:  &upload.Owner{Key: task.MetaInput, Value: owner},
		Describe: func() upload.Description {
			m := outputMetadata(f, rev, pr)
			m[task.MetaInput] = owner
			return upload.Description{ContentType: pr.ContentType, ContentEncoding: pr.ContentEncoding, Metadata: m}
		},
	}, body)
	if err != nil {
		return res, err
	}
	// Every output write, at debug level (AWS_LAMBDA_LOG_LEVEL=DEBUG; make chaos sets it):
	// which revision's bytes went to the key, for reading a sequence after the fact.
	// A multipart output (over one part) carries its labels but not its checksums (up.Late):
	// those are in the record this commit writes.
	h.deps.Logger.DebugContext(ctx, "output written", "output", outKey, "revision", rev.String(), "for", it.rev.String(),
		"receive", it.msg.receive, "etag", up.ETag, "parts", up.Parts, "not in metadata", up.Late)
	res = ledger.Result{
		Size:        size,
		OutputSize:  up.Size,
		SHA256:      pr.SHA256,
		CRC32C:      pr.CRC32C,
		ContentType: pr.ContentType,
		Outputs:     []string{"s3://" + h.cfg.OutputBucket + "/" + outKey},
		Processors:  rule.Processors,
	}
	if m := f.Member; m != nil {
		res.Member = &ledger.Member{Name: m.Name, Offset: m.Offset, CompressedSize: m.CompressedSize, Size: m.Size, Method: m.Method, CRC32: m.CRC32}
	}
	return res, nil
}

// sourceReader checks that the source body is as long as S3 said. A body cut short is a
// retryable error of its own, so no processor mistakes it for corrupt content (a
// truncated gzip stream) and no truncated output is ever committed. A permanent read
// error (a corrupt archive member) keeps its chain; any other is flattened, so that a
// dropped connection's io.ErrUnexpectedEOF is not read as a truncated gzip stream.
type sourceReader struct {
	r    io.Reader
	want int64 // Content-Length, or -1 if unknown
	n    int64
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	switch {
	case err == io.EOF && s.want >= 0 && s.n != s.want:
		return n, fmt.Errorf("source body ended after %d of %d bytes", s.n, s.want)
	case err != nil && err != io.EOF && retry.Classify(err) == retry.Permanent: // a corrupt archive member stays permanent
		return n, fmt.Errorf("source body read failed after %d bytes: %w", s.n, err)
	case err != nil && err != io.EOF: // %s, not %w: gunzip must not see a dropped connection's io.ErrUnexpectedEOF
		return n, fmt.Errorf("source body read failed after %d bytes: %s", s.n, err.Error())
	}
	return n, err
}

// Metadata keys on every output object (S3 stores them as x-amz-meta-<key>).
const (
	MetaSource      = task.MetaSource
	MetaRevision    = task.MetaRevision
	MetaSourceETag  = task.MetaSourceETag
	MetaSHA256      = task.MetaSHA256
	MetaCRC32C      = task.MetaCRC32C
	MetaContentType = task.MetaContentType
)

func outputMetadata(f task.File, rev ledger.Revision, pr *process.Result) map[string]string {
	source := f.Bucket + "/" + f.Key
	if len(source) > 256 {
		// S3 allows 2 KB of user metadata; very long keys are identified by hash here and in
		// full in the ledger.
		sum := sha256.Sum256([]byte(source))
		source = "sha256:" + hex.EncodeToString(sum[:])
	}
	m := map[string]string{
		MetaSource:   source,
		MetaRevision: rev.String(),
	}
	if rev.ETag != "" {
		m[MetaSourceETag] = rev.ETag
	}
	if pr.SHA256 != "" {
		m[MetaSHA256] = pr.SHA256
		m[MetaCRC32C] = pr.CRC32C
	}
	if pr.ContentType != "" {
		m[MetaContentType] = pr.ContentType
	}
	for k, v := range m {
		m[k] = task.MetaValue(v)
	}
	return m
}

// inputName names the input an output belongs to, for its metadata: the record's
// bucket and key (an archive member's unique name, a split part's range), hashed when
// long, made safe for a header.
func inputName(k ledger.Key) string {
	name := k.Bucket + "/" + k.Key
	if len(name) > 256 {
		sum := sha256.Sum256([]byte(name))
		name = "sha256:" + hex.EncodeToString(sum[:])
	}
	return task.MetaValue(name)
}

// shareDuplicates gives an item that repeated another in the same batch (same file,
// job and receive) the outcome of the one that was processed: status, error, class and
// whether it waits on the infrastructure (then its message is sent again, as the first's).
// It is a duplicate delivery, not a second file.
func shareDuplicates(items []*item) {
	for _, it := range items {
		if f := it.dupOf; f != nil {
			it.state, it.class, it.err, it.pr, it.infra = f.state, f.class, f.err, f.pr, f.infra
			// A copy of a success, or of an outcome recorded before, is a duplicate; a copy
			// of a failure found now is the same failure (counted once per message).
			it.dup = f.state == succeeded || f.dup
			if f.state == skipped && it.msg.d.JobID == "" {
				it.state, it.class = pending, retry.Retryable // never acknowledged undone
			}
		}
	}
}

// apply carries out the actions on the batch's queue.
func (h *Handler) apply(ctx context.Context, log *slog.Logger, recs []events.SQSMessage, acts []job.Action) events.SQSEventResponse {
	if len(recs) == 0 {
		return events.SQSEventResponse{}
	}
	url, err := h.queueURL(ctx, recs[0].EventSourceARN)
	if err != nil {
		// Without the URL nothing can be sent again: what must come back comes back after
		// the queue's own visibility timeout.
		log.WarnContext(ctx, "cannot resolve the queue; retries use its visibility timeout", "error", err)
		var resp events.SQSEventResponse
		for i, a := range acts {
			if a.Kind != job.Ack && !(a.Kind == job.SendAgain && a.Else == job.Ack) {
				resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: recs[i].MessageId})
			}
		}
		return resp
	}
	resp, err := job.Apply(ctx, h.deps.Queue, url, recs, acts)
	if err != nil {
		log.WarnContext(ctx, "some messages come back later than planned", "error", err)
	}
	return resp
}

// queueURL resolves a queue ARN (arn:aws:sqs:region:account:name) to its URL once per
// execution environment.
func (h *Handler) queueURL(ctx context.Context, arn string) (string, error) {
	if u, ok := h.queues.Load(arn); ok {
		return u.(string), nil
	}
	parts := strings.Split(arn, ":")
	if len(parts) != 6 || parts[2] != "sqs" {
		return "", fmt.Errorf("event source %q is not an SQS queue ARN", arn)
	}
	out, err := h.deps.Queue.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{
		QueueName: aws.String(parts[5]), QueueOwnerAWSAccountId: aws.String(parts[4]),
	})
	if err != nil {
		return "", fmt.Errorf("queue url of %s: %w", arn, err)
	}
	h.queues.Store(arn, aws.ToString(out.QueueUrl))
	return aws.ToString(out.QueueUrl), nil
}
