// Package worker is the file worker: the SQS-triggered Lambda handler that processes one
// batch of messages, each naming one or more files, end to end.
//
// Per batch: decode every message (an S3 event notification or a fileflow task message);
// look up all its files in the ledger with one read, skipping those already committed;
// process the rest in parallel (bounded), each by streaming GET → processors → PUT to a
// deterministic output key → one conditional ledger commit; then answer with the
// messages that must come back as batch item failures, after setting their visibility
// timeout to an exponential backoff with full jitter.
//
// A message is acknowledged when every file in it is SUCCEEDED or FAILED (permanently,
// with its reason, in the ledger). An unreadable message is recorded as poison and
// acknowledged. Nothing is retried by re-sending to the own queue; after the queue's
// maxReceiveCount SQS moves a still-failing message to the dead-letter queue.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

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
}

// Ledger is the part of the ledger store the worker calls.
type Ledger interface {
	Lookup(ctx context.Context, keys []ledger.Key) (map[ledger.Key]ledger.Status, error)
	Commit(ctx context.Context, k ledger.Key, jobID string, res ledger.Result, att ledger.Attempt) error
	RecordFailure(ctx context.Context, k ledger.Key, jobID string, status ledger.Status, reason string, att ledger.Attempt) error
	RecordPoison(ctx context.Context, p ledger.Poison) error
}

// Queue is the part of the SQS client the worker calls.
type Queue interface {
	GetQueueUrl(context.Context, *sqs.GetQueueUrlInput, ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
	ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error)
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// Jobs is the part of the job engine the worker calls for task messages of a job.
type Jobs interface {
	Job(ctx context.Context, id string) (ledger.Job, error)
	WritePart(ctx context.Context, jobID, taskID string, lines []job.Line) error
	HasPart(ctx context.Context, jobID, taskID string) (bool, error)
	Settle(ctx context.Context, all []ledger.Settlement) ([]ledger.Outcome, error)
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
}

// New validates cfg against the registry and returns a handler.
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
	h := &Handler{cfg: cfg, deps: deps, procs: map[string][]process.Processor{}}
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

// item is one file of one message.
type item struct {
	msg  *message
	file task.File
	key  ledger.Key

	// outcome
	status ledger.Status // SUCCEEDED, FAILED, RETRYING, DEAD_LETTERED; "" if not started
	class  retry.Class   // for a failure
	err    error
	dup    bool            // skipped or lost the commit race: already succeeded
	dupOf  *item           // the same file earlier in this batch, whose outcome this one shares
	pr     *process.Result // the processing result, once run (names the output)
	bytes  int64
	dur    time.Duration
}

// message is one SQS message of the batch.
type message struct {
	rec     events.SQSMessage
	receive int
	jobID   string
	taskID  string
	parent  string
	index   int
	job     ledger.Job // the job's record (cached), for a job's task message
	skipped bool       // the job is no longer running: acknowledged without work
	// parentPending: its planning task is not counted yet; it comes back after
	// ParentWait, not after the error backoff.
	parentPending bool
	items         []*item
	poison        error // decode failure
	failed        bool  // must come back (batch item failure)
	class         retry.Class
}

// Handle processes one batch. It never returns an error: every problem is either
// recorded in the ledger or reported as a batch item failure, so SQS redelivers exactly
// the messages that need it.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	start := h.deps.Now()
	log := h.deps.Logger
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		log = log.With("request_id", lc.AwsRequestID)
	}

	msgs := make([]*message, 0, len(ev.Records))
	for _, rec := range ev.Records {
		m := &message{rec: rec, receive: receiveCount(rec)}
		msgs = append(msgs, m)
		d, err := task.Decode([]byte(rec.Body))
		if err == nil && d.JobID != "" && h.deps.Jobs == nil {
			err = &task.InvalidError{Reason: "task message of job " + d.JobID + ", but this worker runs without a job engine"}
		}
		if err != nil {
			m.poison = err
			continue
		}
		m.jobID, m.taskID, m.parent, m.index = d.JobID, d.TaskID, d.Parent, d.Index
		if d.Kind == task.KindS3Event && h.cfg.ForwardJobSpecs && h.cfg.JobsQueueURL != "" {
			d.Files = h.forwardSpecs(ctx, log, m, d.Files)
		}
		for _, f := range d.Files {
			k := ledger.Key{Bucket: f.Bucket, Key: f.LedgerKey(), Revision: f.Revision()}
			switch {
			case k.Revision == "latest" && d.JobID != "":
				// A manifest entry without version or ETag: unique within its job, so a
				// later job processes the key's content again.
				k.Revision = "job:" + d.JobID
			case f.Range != nil:
				// A split part's output is the job's own (merged at its end): another
				// job splitting the same file writes its own parts.
				k.Revision += "@job:" + d.JobID
			}
			m.items = append(m.items, &item{msg: m, file: f, key: k})
		}
	}

	h.recordPoison(ctx, log, msgs)
	h.checkJobs(ctx, log, msgs)
	var items []*item
	for _, m := range msgs {
		if !m.skipped && !m.failed {
			items = append(items, m.items...)
		}
	}
	pending := h.skipCommitted(ctx, log, items)
	h.processAll(ctx, log, pending)
	shareDuplicates(msgs)
	h.settleJobs(ctx, log, msgs)
	resp := h.respond(ctx, log, msgs)

	st := summarize(msgs)
	st.Duration = h.deps.Now().Sub(start)
	h.metrics.write(st, h.deps.Now())
	log.InfoContext(ctx, "batch done",
		"messages", len(msgs), "files", st.Files, "succeeded", st.Succeeded, "duplicates", st.Duplicates,
		"failed", st.Failed, "retrying", st.Retrying, "poison", st.Poison,
		"batch_item_failures", len(resp.BatchItemFailures), "ms", st.Duration.Milliseconds())
	return resp, nil
}

func receiveCount(m events.SQSMessage) int {
	n, err := strconv.Atoi(m.Attributes["ApproximateReceiveCount"])
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// recordPoison stores each undecodable message; one that can't be stored comes back.
func (h *Handler) recordPoison(ctx context.Context, log *slog.Logger, msgs []*message) {
	for _, m := range msgs {
		if m.poison == nil {
			continue
		}
		err := h.deps.Ledger.RecordPoison(ctx, ledger.Poison{
			MessageID: m.rec.MessageId, Queue: m.rec.EventSourceARN, Body: m.rec.Body,
			Reason: m.poison.Error(), Receive: m.receive, At: h.deps.Now(),
		})
		if err != nil {
			log.ErrorContext(ctx, "cannot record poison message; it will be redelivered",
				"message_id", m.rec.MessageId, "reason", m.poison.Error(), "error", err)
			m.failed, m.class = true, retry.Classify(err)
			continue
		}
		log.WarnContext(ctx, "poison message recorded and acknowledged",
			"message_id", m.rec.MessageId, "reason", m.poison.Error(), "receive", m.receive)
	}
}

// skipCommitted reads the batch's ledger statuses with one lookup and marks the files
// already SUCCEEDED as duplicates. If the lookup fails, everything is processed: the
// conditional commit still stops a second success.
func (h *Handler) skipCommitted(ctx context.Context, log *slog.Logger, items []*item) []*item {
	if len(items) == 0 {
		return nil
	}
	var keys []ledger.Key
	for _, it := range items {
		if h.cfg.DuplicateCheck == DuplicateCheckRedelivery && it.msg.receive <= 1 {
			continue // first receive: trust the conditional commit to catch a duplicate
		}
		keys = append(keys, it.key)
	}
	statuses := map[ledger.Key]ledger.Status{}
	var err error
	if len(keys) > 0 {
		statuses, err = h.deps.Ledger.Lookup(ctx, keys)
	}
	if err != nil {
		log.WarnContext(ctx, "ledger lookup failed; processing the whole batch", "error", err)
		return items
	}
	pending := items[:0:0]
	first := make(map[ledger.Key]*item, len(items))
	for _, it := range items {
		if statuses[it.key] == ledger.StatusSucceeded {
			it.status, it.dup = ledger.StatusSucceeded, true
			continue
		}
		if f, ok := first[it.key]; ok {
			it.dupOf = f // the same file twice in one batch: process once, share the outcome
			continue
		}
		first[it.key] = it
		pending = append(pending, it)
	}
	return pending
}

// processAll runs the items with bounded concurrency and the invocation deadline.
func (h *Handler) processAll(ctx context.Context, log *slog.Logger, items []*item) {
	deadline, hasDeadline := ctx.Deadline()
	// The margin kept for the final writes is at most a tenth of the invocation, so short
	// function timeouts still leave time to work.
	margin := h.cfg.Margin
	if hasDeadline {
		margin = min(margin, time.Until(deadline)/10)
	}
	sem := make(chan struct{}, h.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, it := range items {
		sem <- struct{}{}
		if h.jobStopped(ctx, it.msg) {
			<-sem
			continue // its job was cancelled or failed meanwhile: the rest is skipped
		}
		if hasDeadline && time.Until(deadline) < h.cfg.MinItemTime+margin {
			<-sem
			it.status, it.class = ledger.StatusRetrying, retry.Retryable
			it.err = errors.New("not started: too little of the invocation left")
			if it.msg.jobID != "" && it.msg.receive >= h.cfg.MaxReceiveCount {
				// A job's file on its last receive is recorded and counted failed rather
				// than sent to the DLQ with its message (which would hold the job open).
				h.giveUp(ctx, log, it)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ictx := ctx
			if hasDeadline {
				var cancel context.CancelFunc
				ictx, cancel = context.WithDeadline(ctx, deadline.Add(-margin))
				defer cancel()
			}
			h.processOne(ictx, ctx, log, it)
		}()
	}
	wg.Wait()
}

// processOne processes one file and records the outcome. ictx bounds the work; ctx (the
// invocation's) is used for the final ledger write so a timed-out file is still recorded.
func (h *Handler) processOne(ictx, ctx context.Context, log *slog.Logger, it *item) {
	began := h.deps.Now()
	res, err := h.run(ictx, it)
	it.dur = h.deps.Now().Sub(began)
	att := ledger.Attempt{At: h.deps.Now(), Receive: it.msg.receive, DurationMS: it.dur.Milliseconds()}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		att.RequestID = lc.AwsRequestID
	}
	flog := log.With("bucket", it.file.Bucket, "key", it.file.Key, "revision", it.key.Revision, "receive", it.msg.receive)

	if err == nil {
		switch cerr := h.deps.Ledger.Commit(ctx, it.key, it.msg.jobID, res, att); {
		case cerr == nil:
			it.status, it.bytes = ledger.StatusSucceeded, res.Size
		case errors.Is(cerr, ledger.ErrAlreadySucceeded):
			it.status, it.dup = ledger.StatusSucceeded, true
			flog.InfoContext(ctx, "duplicate delivery: already committed")
		default:
			// The output exists (deterministic key); only the record is missing. Retry:
			// the rerun overwrites the same output and commits.
			it.status, it.class, it.err = ledger.StatusRetrying, retry.Classify(cerr), cerr
			flog.ErrorContext(ctx, "commit failed; will retry", "error", cerr)
		}
		return
	}

	it.err, it.class = err, retry.Classify(err)
	last := it.msg.receive >= h.cfg.MaxReceiveCount
	status := ledger.StatusRetrying
	switch {
	case it.class == retry.Permanent:
		status = ledger.StatusFailed
	case last:
		status = ledger.StatusDeadLettered
	}
	if ferr := h.deps.Ledger.RecordFailure(ctx, it.key, it.msg.jobID, status, err.Error(), withClass(att, it.class)); ferr != nil {
		if errors.Is(ferr, ledger.ErrAlreadySucceeded) {
			it.status, it.dup, it.err = ledger.StatusSucceeded, true, nil
			return
		}
		// Without a record, a permanent failure must come back rather than vanish.
		flog.ErrorContext(ctx, "cannot record failure; message will be redelivered", "error", ferr, "failure", err)
		it.status, it.class = ledger.StatusRetrying, retry.Classify(ferr)
		return
	}
	it.status = status
	level := slog.LevelWarn
	if status != ledger.StatusRetrying {
		level = slog.LevelError
	}
	flog.Log(ctx, level, "file failed", "status", status, "class", it.class.String(), "error", err)
}

// giveUp records a job's file that was never started on its message's last receive as
// DEAD_LETTERED; if that fails it stays RETRYING (and its message goes to the DLQ).
func (h *Handler) giveUp(ctx context.Context, log *slog.Logger, it *item) {
	att := ledger.Attempt{At: h.deps.Now(), Receive: it.msg.receive, Class: retry.Retryable.String()}
	err := h.deps.Ledger.RecordFailure(ctx, it.key, it.msg.jobID, ledger.StatusDeadLettered, it.err.Error(), att)
	if errors.Is(err, ledger.ErrAlreadySucceeded) {
		it.status, it.dup, it.err = ledger.StatusSucceeded, true, nil
		return
	}
	if err != nil {
		log.ErrorContext(ctx, "cannot record an unstarted file on its last receive", "key", it.file.Key, "error", err)
		return
	}
	it.status = ledger.StatusDeadLettered
}

func withClass(a ledger.Attempt, c retry.Class) ledger.Attempt {
	a.Class = c.String()
	return a
}

// run does the work for one file: GET, choose the rule, stream through the processors,
// PUT the output. It returns what the ledger records on success.
func (h *Handler) run(ctx context.Context, it *item) (res ledger.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = retry.MarkPermanent(fmt.Errorf("processor panicked: %v\n%s", p, debug.Stack()))
		}
	}()
	f := it.file
	obj, err := source.Open(ctx, h.deps.Objects, f, source.Options{Limits: source.Limits{MaxMemberBytes: h.cfg.Archive.MaxMemberBytes, MaxRatio: h.cfg.Archive.MaxRatio}})
	if err != nil {
		var api smithy.APIError
		if errors.As(err, &api) && api.ErrorCode() == "PreconditionFailed" {
			return res, retry.MarkPermanent(fmt.Errorf("get %s: superseded: the object changed since this event (ETag %s); the newer content has its own event", f, f.ETag))
		}
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) && it.msg.receive >= h.cfg.MaxReceiveCount {
			return res, retry.MarkPermanent(fmt.Errorf("get %s: object not found after %d receives: %w", f, it.msg.receive, err))
		}
		return res, fmt.Errorf("get %s: %w", f, err)
	}
	defer obj.Body.Close()
	src := &sourceReader{r: obj.Body, want: obj.Size}

	size := obj.Size
	srcType := obj.ContentType
	name := f.Name()
	rule, ok := h.cfg.Rules.Match(name, srcType)
	switch {
	case !ok:
		return res, retry.MarkPermanent(fmt.Errorf("no processing rule matches key %q (content type %q)", name, srcType))
	case rule.Reject != "":
		return res, retry.MarkPermanent(fmt.Errorf("%s: %s", errRejected, rule.Reject))
	case rule.MaxSize > 0 && size > rule.MaxSize:
		return res, retry.MarkPermanent(fmt.Errorf("file is %d bytes, over the rule's max_size of %d", size, rule.MaxSize))
	}

	pr := &process.Result{Key: name, ContentType: srcType}
	body, err := process.Chain(src, pr, h.procs[strings.Join(rule.Processors, ",")]...)
	if err != nil {
		return res, err
	}
	it.pr = pr
	outKey := h.outputKey(f, it.msg.jobID, pr)
	up, err := h.uploader.Upload(ctx, upload.Object{
		Bucket: h.cfg.OutputBucket,
		Key:    outKey,
		Describe: func() upload.Description {
			return upload.Description{ContentType: pr.ContentType, ContentEncoding: pr.ContentEncoding, Metadata: outputMetadata(f, pr)}
		},
	}, body)
	if err != nil {
		return res, err
	}
	if !up.MetadataSet {
		h.deps.Logger.WarnContext(ctx, "output too large for metadata by copy; checksums are in the ledger only",
			"bucket", h.cfg.OutputBucket, "key", outKey, "bytes", up.Size)
	}
	return ledger.Result{
		Size:        size,
		OutputSize:  up.Size,
		ETag:        strings.Trim(obj.ETag, `"`),
		SHA256:      pr.SHA256,
		CRC32C:      pr.CRC32C,
		ContentType: pr.ContentType,
		Outputs:     []string{"s3://" + h.cfg.OutputBucket + "/" + outKey},
		Processors:  rule.Processors,
	}, nil
}

// sourceReader checks that the source body is as long as S3 said. A body cut short is a
// retryable error of its own, so no processor mistakes it for corrupt content (a
// truncated gzip stream) and no truncated output is ever committed.
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
	MetaSource      = "fileflow-source"
	MetaRevision    = "fileflow-revision"
	MetaSHA256      = "fileflow-sha256"
	MetaCRC32C      = "fileflow-crc32c"
	MetaContentType = "fileflow-content-type"
)

func outputMetadata(f task.File, pr *process.Result) map[string]string {
	source := f.Bucket + "/" + f.Key
	if len(source) > 256 {
		// S3 allows 2 KB of user metadata; very long keys are identified by hash here and in
		// full in the ledger.
		sum := sha256.Sum256([]byte(source))
		source = "sha256:" + hex.EncodeToString(sum[:])
	}
	m := map[string]string{
		MetaSource:   source,
		MetaRevision: f.Revision(),
	}
	if pr.SHA256 != "" {
		m[MetaSHA256] = pr.SHA256
		m[MetaCRC32C] = pr.CRC32C
	}
	if pr.ContentType != "" {
		m[MetaContentType] = pr.ContentType
	}
	for k, v := range m {
		m[k] = asciiHeader(v)
	}
	return m
}

// asciiHeader makes a metadata value safe for an HTTP header: non-ASCII bytes are
// percent-encoded (S3 would otherwise reject or mangle them).
func asciiHeader(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			var b strings.Builder
			for j := 0; j < len(s); j++ {
				if c := s[j]; c < 0x20 || c > 0x7e || c == '%' {
					fmt.Fprintf(&b, "%%%02X", c)
				} else {
					b.WriteByte(c)
				}
			}
			return b.String()
		}
	}
	return s
}

// respond decides which messages come back, sets their visibility to the backoff, and
// builds the response.
func (h *Handler) respond(ctx context.Context, log *slog.Logger, msgs []*message) events.SQSEventResponse {
	var resp events.SQSEventResponse
	byQueue := map[string][]sqstypes.ChangeMessageVisibilityBatchRequestEntry{}
	for _, m := range msgs {
		for _, it := range m.items {
			if m.skipped || m.jobID != "" && m.failed {
				break // decided by the job: skipped, or its settlement must come back
			}
			// A job's file that exhausted its receives is counted failed in the job (the
			// message is acknowledged); any other goes to the DLQ with its message.
			dead := it.status == ledger.StatusDeadLettered && m.jobID == ""
			if it.status == ledger.StatusRetrying || dead {
				m.failed = true
				if it.class > m.class {
					m.class = it.class
				}
			}
		}
		if !m.failed {
			continue
		}
		if m.parentPending && h.waitForParent(ctx, log, m) {
			continue // sent again with a delay; this copy is acknowledged
		}
		resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.rec.MessageId})
		delay := h.cfg.Retry.Delay(m.receive, m.class)
		if m.parentPending {
			delay = ParentWait
		}
		byQueue[m.rec.EventSourceARN] = append(byQueue[m.rec.EventSourceARN], sqstypes.ChangeMessageVisibilityBatchRequestEntry{
			Id:                aws.String(strconv.Itoa(len(byQueue[m.rec.EventSourceARN]))),
			ReceiptHandle:     aws.String(m.rec.ReceiptHandle),
			VisibilityTimeout: retry.VisibilitySeconds(delay),
		})
	}
	for arn, entries := range byQueue {
		if err := h.changeVisibility(ctx, arn, entries); err != nil {
			// Not fatal: the messages come back after the queue's own visibility timeout.
			log.WarnContext(ctx, "cannot set backoff visibility", "queue", arn, "error", err)
		}
	}
	return resp
}

// ParentWait is how long a job task whose planning task is not counted yet waits
// before it comes back. Planning tasks send their children first and count themselves
// last, so the wait is usually one round.
const ParentWait = 10 * time.Second

// MaxParentWaits bounds how often a task is sent again to wait for its parent (an hour
// at ParentWait): waiting does not use up the message's receives, so a long planning
// task does not push its children into the DLQ.
const MaxParentWaits = 360

// shareDuplicates gives an item that repeated another in the same batch the outcome of
// the one that was processed. It is a duplicate delivery, not a second file.
func shareDuplicates(msgs []*message) {
	for _, m := range msgs {
		for _, it := range m.items {
			if it.dupOf != nil {
				it.status, it.class = it.dupOf.status, it.dupOf.class
				it.dup = it.status == ledger.StatusSucceeded // a repeated failure is not a success
				if it.status == "" {
					// The copy that was to be processed never started (its job stopped, say):
					// this one comes back rather than being acknowledged undone.
					it.status, it.class = ledger.StatusRetrying, retry.Retryable
				}
			}
		}
	}
}

func (h *Handler) changeVisibility(ctx context.Context, arn string, entries []sqstypes.ChangeMessageVisibilityBatchRequestEntry) error {
	url, err := h.queueURL(ctx, arn)
	if err != nil {
		return err
	}
	var errs []error
	for start := 0; start < len(entries); start += 10 { // every chunk, even after a failed one
		out, err := h.deps.Queue.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{
			QueueUrl: aws.String(url),
			Entries:  entries[start:min(start+10, len(entries))],
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("change visibility: %w", err))
			continue
		}
		if len(out.Failed) > 0 {
			errs = append(errs, fmt.Errorf("change visibility: %d entries failed, first: %s", len(out.Failed), aws.ToString(out.Failed[0].Message)))
		}
	}
	return errors.Join(errs...)
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
