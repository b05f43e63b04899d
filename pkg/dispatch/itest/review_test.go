package itest

// Adversarial review of the exactly-once guarantees (branch review). Each
// TestReview_* test replays one interleaving deterministically and FAILS on the code it
// was written against: its comment names the interleaving and the invariant it breaks.

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
	"github.com/fileflow/fileflow/pkg/worker"
)

// hookedS3 is the stack's S3 client with a hook around GetObject: get may run other
// work in the middle of a GET (after the body was read, before the caller sees it).
type hookedS3 struct {
	*s3.Client
	get func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error)
}

func (h *hookedS3) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	next := func() (*s3.GetObjectOutput, error) { return h.Client.GetObject(ctx, in, o...) }
	if h.get == nil {
		return next()
	}
	return h.get(ctx, in, next)
}

// buffered reads a GET's body now, so what it returns is the content at this instant.
func buffered(out *s3.GetObjectOutput, err error) (*s3.GetObjectOutput, error) {
	if err != nil {
		return out, err
	}
	b, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil {
		return nil, err
	}
	out.Body = io.NopCloser(bytes.NewReader(b))
	return out, nil
}

// workerOver is a worker like the stack's, reading sources through objs.
func (s *stack) workerOver(objs worker.Objects) *worker.Handler {
	s.t.Helper()
	h, err := worker.New(worker.Config{Table: s.store.Table(), OutputBucket: s.out, MaxReceiveCount: maxReceive, MinItemTime: time.Millisecond},
		worker.Deps{Objects: objs, Ledger: s.store, Queue: s.q, Jobs: s.engine, Metrics: io.Discard})
	require.NoError(s.t, err)
	return h
}

// deliverTo hands m (a tasks-queue message) to worker h, as deliver does.
func (s *stack) deliverTo(h *worker.Handler, m *msg) events.SQSEventResponse {
	m.receive++
	rec := events.SQSMessage{MessageId: m.id, ReceiptHandle: m.id + "-" + strconv.Itoa(m.receive), Body: m.body,
		EventSourceARN: "arn:aws:sqs:us-east-1:000000000000:" + tasksQueue,
		Attributes:     map[string]string{"ApproximateReceiveCount": strconv.Itoa(m.receive)}}
	for k, v := range m.attrs {
		if rec.MessageAttributes == nil {
			rec.MessageAttributes = map[string]events.SQSMessageAttribute{}
		}
		rec.MessageAttributes[k] = events.SQSMessageAttribute{DataType: aws.ToString(v.DataType), StringValue: v.StringValue}
	}
	resp, err := h.Handle(s.ctx, events.SQSEvent{Records: []events.SQSMessage{rec}})
	require.NoError(s.t, err)
	if len(resp.BatchItemFailures) > 0 {
		s.q.requeue(tasksQueue, m)
	}
	return resp
}

// etag is the object's current ETag (unquoted).
func (s *stack) etag(key string) string {
	s.t.Helper()
	h, err := s.s3.HeadObject(s.ctx, &s3.HeadObjectInput{Bucket: aws.String(s.in), Key: aws.String(key)})
	require.NoError(s.t, err)
	return strings.Trim(aws.ToString(h.ETag), `"`)
}

// s3Event is an S3 event notification (AWS's shape) for one revision of a key.
func (s *stack) s3Event(key, etag, sequencer string) *msg {
	body, err := json.Marshal(map[string]any{"Records": []any{map[string]any{
		"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventName": "ObjectCreated:Put",
		"s3": map[string]any{"bucket": map[string]any{"name": s.in}, "object": map[string]any{
			"key": url.QueryEscape(key), "size": 1, "eTag": etag, "sequencer": sequencer}},
	}}})
	require.NoError(s.t, err)
	return &msg{id: "event-" + key + "-" + sequencer, body: string(body)}
}

// output reads an output object: its content and the revision it says it is of.
func (s *stack) output(key string) (content, revision string, ok bool) {
	s.t.Helper()
	out, err := s.s3.GetObject(s.ctx, &s3.GetObjectInput{Bucket: aws.String(s.out), Key: aws.String(key)})
	if err != nil {
		return "", "", false
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	require.NoError(s.t, err)
	return string(b), out.Metadata[worker.MetaRevision], true
}

func (s *stack) jobRecord(id string) ledger.Job {
	s.t.Helper()
	j, found, err := s.store.GetJob(s.ctx, id)
	require.NoError(s.t, err)
	require.True(s.t, found)
	return j
}

// Finding 1 — newest revision wins, broken by a manifest row that names no ETag.
//
// A manifest row "bucket,key" (no version, no ETag) is recorded job-scoped
// (job.FileKey: Scope "job:<id>"), outside the key's own record, so none of the
// newest-wins machinery (sequencer order, the conditional HEAD, Over, restore) sees it.
// But its output goes to the key's shared output (worker.outputKey ignores the scope).
//
// Interleaving: the job's worker GETs the key (content "old"); the key is overwritten
// ("new") and its S3 event is processed at once (output "new", the key's record "new");
// then the job's upload lands. Nothing is refused, nothing restores: the key's output is
// the OLDER content while its record says the newer revision SUCCEEDED.
func TestReview_UnpinnedManifestRowOverwritesNewerOutput(t *testing.T) {
	s := newStack(t)
	s.put("u/k.txt", "old content")
	s.put("u/manifest.csv", s.in+",u/k.txt\n")
	id := s.submit(job.Spec{Kind: job.KindManifest, Key: "u/manifest.csv"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue)) // the root reads the manifest
	tasks := s.q.take(tasksQueue)
	require.Len(t, tasks, 1)

	var fired atomic.Bool
	hooked := &hookedS3{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) != "u/k.txt" || in.IfMatch != nil || in.VersionId != nil || fired.Swap(true) {
			return next()
		}
		out, err := buffered(next()) // the job reads "old content"
		// Meanwhile the key is overwritten and its event handled by another worker.
		s.put("u/k.txt", "new content")
		s.deliverTo(s.worker, s.s3Event("u/k.txt", s.etag("u/k.txt"), "0000000000000000A2"))
		got, _, _ := s.output("u/k.txt")
		require.Equal(t, "new content", got, "the newer revision's output is in place")
		return out, err
	}
	s.deliverTo(s.workerOver(hooked), tasks[0])
	require.True(t, fired.Load())
	s.drain()
	require.Equal(t, ledger.JobComplete, s.jobRecord(id).Status)

	rec, ok, err := s.store.Get(s.ctx, ledger.Key{Bucket: s.in, Key: "u/k.txt"})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, s.etag("u/k.txt"), rec.ETag, "the key's record: the newest revision, SUCCEEDED")
	require.Equal(t, ledger.StatusSucceeded, rec.Status)
	got, rev, _ := s.output("u/k.txt")
	assert.Equal(t, "new content", got, "the key's output must be its newest revision's (it is %s's)", rev)
}

// Finding 2 — newest revision wins, broken by Write.Over across an Advance (ABA).
//
// Write.Over names the head the worker saw at Lookup by its ETag only. Between the
// conditional HEAD (skipDone: "B is current") and the commit, the key is overwritten
// with the content it had before (A again). That event finds the record at A, SUCCEEDED:
// a duplicate, skipped, its sequencer advanced (Advance) — no output is written. The
// job's commit then finds the head's ETag still A, so Over matches and B replaces it.
// B's own (delayed) event is a duplicate too, and Advance cannot order a record whose
// sequencer the unordered commit removed ("seq < :seq" is false on a missing attribute).
//
// End state: the object is A (the newest write), its output and its record are B.
func TestReview_OverMatchesAHeadThatChangedBackABA(t *testing.T) {
	s := newStack(t)
	s.put("v/k.txt", "AAAA")
	etagA := s.etag("v/k.txt")
	s.deliverTo(s.worker, s.s3Event("v/k.txt", etagA, "0000000000000000A1"))
	s.put("v/k.txt", "BBBB") // its event (A2) is delayed
	etagB := s.etag("v/k.txt")
	require.NotEqual(t, etagA, etagB)

	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "v/"}) // lists k.txt at B
	s.deliver(jobsQueue, s.q.pop(jobsQueue))
	tasks := s.q.take(tasksQueue)
	require.Len(t, tasks, 1)

	var fired atomic.Bool
	hooked := &hookedS3{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) != "v/k.txt" || aws.ToString(in.IfMatch) != `"`+etagB+`"` || fired.Swap(true) {
			return next()
		}
		out, err := buffered(next()) // the job reads B (confirmed current before)
		s.put("v/k.txt", "AAAA")     // A again: the newest write
		require.Equal(t, etagA, s.etag("v/k.txt"))
		s.deliverTo(s.worker, s.s3Event("v/k.txt", etagA, "0000000000000000A3"))
		return out, err
	}
	s.deliverTo(s.workerOver(hooked), tasks[0])
	require.True(t, fired.Load())
	s.deliverTo(s.worker, s.s3Event("v/k.txt", etagB, "0000000000000000A2")) // B's delayed event
	s.drain()
	require.Equal(t, ledger.JobComplete, s.jobRecord(id).Status)

	rec, _, err := s.store.Get(s.ctx, ledger.Key{Bucket: s.in, Key: "v/k.txt"})
	require.NoError(t, err)
	got, rev, _ := s.output("v/k.txt")
	assert.Equal(t, "AAAA", got, "the output must be the object's newest content (the output is revision %s)", rev)
	assert.Equal(t, etagA, rec.ETag, "the key's record must hold the newest revision")
}

// Finding 3 — a counted task's report lines are rewritten by a later delivery.
//
// A task's report part is keyed by its task id and written before every count attempt,
// also by deliveries that then count nothing (Duplicate). A task counted with a file
// DEAD_LETTERED (counted failed on the last receive) whose job check failed is sent
// again (CheckFailed -> SendAgain). The copy arrives with receive count 1, so the
// worker skips its TaskState look-up; the file's record is DEAD_LETTERED, not
// SUCCEEDED, so it is processed again — and now succeeds. The copy rewrites the part
// with a "succeeded" line, then counts as a Duplicate.
//
// The job's counts say 1 failed; its report says 0 failed and lists the file as
// succeeded. (Any duplicate delivery of a counted task — an SQS duplicate, an orphan of
// another run with the same content id — rewrites the part the same way.)
func TestReview_ReportPartRewrittenAfterTheTaskWasCounted(t *testing.T) {
	s := newStack(t)
	db := &checkFailsDB{flakyDB: s.db}
	s.store = ledger.New(db, s.store.Table(), 0)
	s.rewire(t)
	s.put("r/bad.txt", "sometimes unreadable")
	s.put("r/good.txt", "fine")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "r/", FilesPerTask: 1})
	s.deliver(jobsQueue, s.q.pop(jobsQueue))
	tasks := s.q.take(tasksQueue)
	require.Len(t, tasks, 2)
	var bad, good *msg
	for _, m := range tasks {
		if strings.Contains(m.body, "bad.txt") {
			bad = m
		} else {
			good = m
		}
	}

	var failing atomic.Bool
	failing.Store(true)
	hooked := &hookedS3{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) == "r/bad.txt" && failing.Load() {
			return nil, fmt.Errorf("injected: connection reset")
		}
		return next()
	}
	w := s.workerOver(hooked)
	for range maxReceive - 1 {
		s.deliverTo(w, bad)
		require.Same(t, bad, s.q.pop(tasksQueue), "it comes back")
	}
	db.on = true // the check after the last receive's count fails
	s.deliverTo(w, bad)
	db.on = false
	c, err := s.store.JobCounts(s.ctx, id, s.jobRecord(id).Shards)
	require.NoError(t, err)
	require.EqualValues(t, 1, c.Failed, "counted failed on its last receive")
	again := s.q.take(tasksQueue)
	require.Len(t, again, 1, "sent again to repeat the check")

	failing.Store(false) // the transient failure is over
	s.deliverTo(w, again[0])
	s.deliverTo(w, good)
	s.drain()
	j := s.jobRecord(id)
	require.Equal(t, ledger.JobComplete, j.Status)
	require.EqualValues(t, 1, j.Final.Failed)
	require.EqualValues(t, 1, j.Final.Succeeded)
	succeeded, failed := s.reported(id)
	assert.Equal(t, map[string]int{"r/bad.txt": 1}, failed, "the report must agree with the counts: bad.txt was counted failed")
	assert.Equal(t, map[string]int{"r/good.txt": 1}, succeeded)
}

// zipOf stores a one-entry zip at key and returns the task file naming its member as
// the archive planner does (ranged reads of the compressed bytes, the archive's ETag).
func (s *stack) zipOf(key, name, content string) task.File {
	s.t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
	require.NoError(s.t, err)
	_, err = w.Write([]byte(content))
	require.NoError(s.t, err)
	require.NoError(s.t, zw.Close())
	s.put(key, buf.String())
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(s.t, err)
	zf := zr.File[0]
	off, err := zf.DataOffset()
	require.NoError(s.t, err)
	return task.File{Bucket: s.in, Key: key, ETag: s.etag(key), Size: int64(zf.UncompressedSize64), Member: &task.Member{
		Name: zf.Name, Offset: off, CompressedSize: int64(zf.CompressedSize64), Size: int64(zf.UncompressedSize64), Method: zf.Method, CRC32: zf.CRC32}}
}

func (s *stack) taskOf(id string, files ...task.File) *msg {
	s.t.Helper()
	body, err := task.Message{Files: files}.Encode()
	require.NoError(s.t, err)
	return &msg{id: id, body: string(body)}
}

// Finding 4 — a SUCCEEDED newest revision left without its output (archive members).
//
// worker.restore, for an archive member, always deletes the output when the output
// holds the superseded revision — also when the key's newest revision is SUCCEEDED and
// names that very output ("|| it.file.Member != nil"). Its comment says the newest's
// own writer puts it; but that writer has finished: its output is the one the older
// revision just overwrote.
//
// Interleaving: member x.txt of a.zip at A is being processed (its compressed bytes
// read); a.zip is overwritten (B) and B's member x.txt is processed and committed
// (output "B's x", record B SUCCEEDED); then A's upload lands over it. A's commit is
// refused (another revision, A is no longer current): superseded, restore — which
// deletes the output. The record says B SUCCEEDED with an output that does not exist.
func TestReview_ArchiveMemberRestoreDeletesTheNewestOutput(t *testing.T) {
	s := newStack(t)
	fileA := s.zipOf("z/a.zip", "x.txt", "x as in archive A")

	var fired atomic.Bool
	hooked := &hookedS3{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) != "z/a.zip" || aws.ToString(in.IfMatch) != `"`+fileA.ETag+`"` || fired.Swap(true) {
			return next()
		}
		out, err := buffered(next()) // A's member bytes
		fileB := s.zipOf("z/a.zip", "x.txt", "x as in archive B")
		s.deliverTo(s.worker, s.taskOf("member-b", fileB))
		got, _, _ := s.output("z/a.zip!/x.txt")
		require.Equal(t, "x as in archive B", got, "B's member is processed and committed")
		return out, err
	}
	s.deliverTo(s.workerOver(hooked), s.taskOf("member-a", fileA))
	require.True(t, fired.Load())
	s.drain()

	rec, ok, err := s.store.Get(s.ctx, ledger.Key{Bucket: s.in, Key: "z/a.zip!/x.txt", Scope: ledger.ScopeMember})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ledger.StatusSucceeded, rec.Status)
	require.Equal(t, s.etag("z/a.zip"), rec.ETag, "the record holds the newest revision, SUCCEEDED")
	require.Equal(t, []string{"s3://" + s.out + "/z/a.zip!/x.txt"}, rec.Outputs)
	got, _, exists := s.output("z/a.zip!/x.txt")
	assert.True(t, exists, "the SUCCEEDED newest revision's output must exist")
	assert.Equal(t, "x as in archive B", got)
}

// Finding 5 — a job's file overwritten after its listing: the current content is never
// processed, and the record says it was.
//
// A job lists s/k.txt (ETag A); before its task runs, k.txt is overwritten (B). The
// task's GET (If-Match A) fails, the worker takes that as "the newer content has its
// own event" (supersededSource) and records A SUPERSEDED with the reason "a newer
// revision of the key was processed instead" — and the job counts k.txt failed. But a
// job may read any bucket (spec.Bucket: a backfill of objects that never had
// notifications to fileflow), and here no event for B exists: B is never processed by
// anyone, no output exists for the key, the job is COMPLETE. (With notifications, B is
// processed by its event; see the next test for what the job then says.)
func TestReview_JobFileOverwrittenAfterListingIsNeverProcessed(t *testing.T) {
	s := newStack(t)
	s.put("s/k.txt", "first")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "s/"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue)) // lists k.txt at A
	s.put("s/k.txt", "second")               // B: no notification reaches fileflow
	s.drain()
	j := s.jobRecord(id)
	require.Equal(t, ledger.JobComplete, j.Status)
	_, failed := s.reported(id)
	_, _, exists := s.output("s/k.txt")
	assert.True(t, exists || failed["s/k.txt"] == 0,
		"the key's current content is processed by the job (or not reported as superseded by a revision 'processed instead'): output exists=%v, failed=%v", exists, failed)
	_, ok, err := s.store.Get(s.ctx, ledger.Key{Bucket: s.in, Key: "s/k.txt"})
	require.NoError(t, err)
	assert.True(t, ok, "some record of the key's current revision exists")
}

// Finding 5b — tolerance counts SUPERSEDED as failures (policy; asked in the brief).
//
// A prefix job with tolerate "0" over a prefix where a file is overwritten while the job
// runs: the newer revision is processed (by its event) and SUCCEEDED, the job's listed
// revision is SUPERSEDED — and counted a failed file, so the job FAILS with "1 of 1
// finished files failed", although nothing failed and the key's output is its newest
// content. Jobs over live prefixes fail at random under any small tolerance.
func TestReview_SupersededFileFailsAJobUnderTolerance(t *testing.T) {
	s := newStack(t)
	s.put("t/k.txt", "first")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "t/", Tolerate: "0"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue)) // lists k.txt at A
	s.put("t/k.txt", "second")
	s.deliverTo(s.worker, s.s3Event("t/k.txt", s.etag("t/k.txt"), "0000000000000000B2"))
	got, _, _ := s.output("t/k.txt")
	require.Equal(t, "second", got, "the newest revision is processed")
	s.drain()
	j := s.jobRecord(id)
	assert.Equal(t, ledger.JobComplete, j.Status, "nothing failed: %s", j.Reason)
}

// Finding 6 — a fan-out task whose count fails on its last receive goes to the DLQ and
// leaves its job RUNNING.
//
// dispatch.Config.MaxReceiveCount says a fan-out task still failing on its last
// receive fails its job instead of hanging it; the worker sends a task whose files are
// done but whose count failed again rather than to the DLQ. But when the dispatcher's
// fanOut succeeded (children sent) and only Report's count fails (NotCounted: a ledger
// error, throttling), act() returns RetryAfter on every receive, the last included: the
// root goes to the dead-letter queue, the job stays RUNNING, and its children (five
// runs' worth) cycle WaitParent -> SendAgain for MaxSendAgain rounds (hours) before
// they too go to the DLQ.
func TestReview_FanoutTaskWhoseCountFailsOnItsLastReceiveIsDeadLettered(t *testing.T) {
	s := newStack(t)
	s.put("d/a.txt", "a")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "d/"})
	root := s.q.pop(jobsQueue)
	for range maxReceive {
		s.db.failTx.Store(1) // the count's transaction fails
		s.deliver(jobsQueue, root)
		s.q.take(jobsQueue) // (the root, back for its next receive, is root itself)
	}
	j := s.jobRecord(id)
	stuck := len(s.q.dlq[jobsQueue+"-dlq"])
	assert.False(t, j.Status == ledger.JobRunning && stuck > 0,
		"a fan-out task is never dead-lettered with its job RUNNING (status %s, %d in the jobs DLQ)", j.Status, stuck)
}

// failingWrites is the ledger store with the next n file writes failing (a throttled or
// timed-out UpdateItem; or the function dying between its upload and its commit).
type failingWrites struct {
	*ledger.Store
	fail atomic.Int32
}

func (f *failingWrites) WriteReplacing(ctx context.Context, w ledger.Write) (bool, error) {
	if f.fail.Load() > 0 {
		f.fail.Add(-1)
		return false, errInjected
	}
	return f.Store.WriteReplacing(ctx, w)
}

// Finding 7 — an older revision's output left as the key's output: restore never runs.
//
// supersede restores the output only if this invocation wrote it, or if the message was
// received before ("an earlier delivery may have, before it died"). That relies on the
// same message coming back to its files. A job's task message does not: on a later
// receive the worker first asks TaskState, and a task counted meanwhile (Duplicate), an
// orphan, or any task of a job no longer RUNNING is acknowledged without looking at its
// files.
//
// Interleaving: the root's run 1 sends T1 and dies before it is counted; run 2 sends
// T2 (same content id) and is counted. T1 runs: reads k.txt at A; k.txt is overwritten
// (B) and B's event processed (output B); T1's upload of A lands over it; T1's commit
// fails (the ledger write errors) — the item is pending and T1 comes back. T2 runs:
// A is not current, so A is SUPERSEDED — without restore (first receive, wrote
// nothing) — and counted; the job completes. T1 comes back: "job COMPLETE", acked.
// The output is A's for ever, the record says B.
func TestReview_StaleOutputNeverRestoredWhenTheTaskIsCountedElsewhere(t *testing.T) {
	s := newStack(t)
	s.put("o/k.txt", "AAAA")
	etagA := s.etag("o/k.txt")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "o/"})
	root := s.q.pop(jobsQueue)
	s.db.failTx.Store(1) // run 1 dies before its count lands
	s.deliver(jobsQueue, root)
	require.Same(t, root, s.q.pop(jobsQueue), "the root comes back")
	t1 := s.q.take(tasksQueue)
	require.Len(t, t1, 1)
	s.deliver(jobsQueue, root) // run 2, counted
	t2 := s.q.take(tasksQueue)
	require.Len(t, t2, 1)

	writes := &failingWrites{Store: s.store}
	var fired atomic.Bool
	hooked := &hookedS3{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) != "o/k.txt" || aws.ToString(in.IfMatch) != `"`+etagA+`"` || fired.Swap(true) {
			return next()
		}
		out, err := buffered(next())
		s.put("o/k.txt", "BBBB")
		s.deliverTo(s.worker, s.s3Event("o/k.txt", s.etag("o/k.txt"), "0000000000000000C2"))
		writes.fail.Store(1) // T1's commit, after its upload, fails
		return out, err
	}
	w, err := worker.New(worker.Config{Table: s.store.Table(), OutputBucket: s.out, MaxReceiveCount: maxReceive, MinItemTime: time.Millisecond},
		worker.Deps{Objects: hooked, Ledger: writes, Queue: s.q, Jobs: s.engine, Metrics: io.Discard})
	require.NoError(t, err)
	s.deliverTo(w, t1[0])
	require.True(t, fired.Load())
	back := s.q.pop(tasksQueue)
	require.NotNil(t, back)
	require.Equal(t, t1[0].body, back.body, "T1 comes back (sent again): its commit failed")
	// T1's upload landed last; since the fix, T1 puts B's output back at once, when its
	// commit fails and B holds the key (before, nothing ever did).

	s.deliverTo(s.worker, t2[0]) // A superseded, counted; the job completes
	s.deliverTo(s.worker, back)  // T1's second delivery
	s.drain()
	require.Equal(t, ledger.JobComplete, s.jobRecord(id).Status)
	rec, _, err := s.store.Get(s.ctx, ledger.Key{Bucket: s.in, Key: "o/k.txt"})
	require.NoError(t, err)
	require.Equal(t, s.etag("o/k.txt"), rec.ETag, "the record: B")
	got, rev, _ := s.output("o/k.txt")
	assert.Equal(t, "BBBB", got, "the output must be the newest revision's, not %s's", rev)
}

// Finding 8 — a split job's merge overwrites the key's output with an older revision.
//
// A split job's parts are job-scoped (their outputs are the job's), but the merge, at
// finalize, writes the merged result to the key's own output (worker.outputKey without
// the range: the same object an S3 event of the key writes), with no revision check.
// Finalize runs after the last part is counted, asynchronously (a finalize task).
//
// Interleaving: all parts of k.csv (revision A) are processed and counted, the job is
// COMPLETE and its finalize task queued; k.csv is overwritten (B) and B's event is
// processed (output B, record B); the finalize task runs and merges A's parts over B's
// output. Newest wins is broken: the key's record is B, its output is A.
func TestReview_SplitMergeOverwritesNewerOutput(t *testing.T) {
	s := newStack(t)
	var a strings.Builder
	for i := range 200 {
		fmt.Fprintf(&a, "line %03d of revision A\n", i)
	}
	s.put("x/k.csv", a.String())
	id := s.submit(job.Spec{Kind: job.KindSplit, Key: "x/k.csv", Parts: 2})
	s.deliver(jobsQueue, s.q.pop(jobsQueue)) // the root splits the file
	for m := s.q.pop(tasksQueue); m != nil; m = s.q.pop(tasksQueue) {
		s.deliver(tasksQueue, m)
	}
	require.Equal(t, ledger.JobComplete, s.jobRecord(id).Status)
	finalize := s.q.take(jobsQueue)
	require.Len(t, finalize, 1, "the finalize task, not run yet")

	s.put("x/k.csv", "revision B, one line\n")
	s.deliverTo(s.worker, s.s3Event("x/k.csv", s.etag("x/k.csv"), "0000000000000000D2"))
	got, _, _ := s.output("x/k.csv")
	require.Equal(t, "revision B, one line\n", got, "B is processed")

	s.q.requeueFresh(jobsQueue, finalize[0])
	s.drain()
	require.True(t, s.jobRecord(id).Notified)
	rec, _, err := s.store.Get(s.ctx, ledger.Key{Bucket: s.in, Key: "x/k.csv"})
	require.NoError(t, err)
	require.Equal(t, s.etag("x/k.csv"), rec.ETag, "the key's record: B")
	got, rev, _ := s.output("x/k.csv")
	assert.True(t, strings.HasPrefix(got, "revision B"), "the key's output must stay the newest revision's; it is the merge of %s (%q…)", rev, got[:min(len(got), 30)])
}

// Finding 9 — two different inputs share one ledger record and one output.
//
// An archive member is named "<zip>!/<entry>" (task.File.Name) and recorded and
// output under that name. '!' is legal in S3 keys, so an ordinary object literally
// named "z/b.zip!/x.txt" has the same ledger key and output key as entry x.txt of
// z/b.zip. Each looks like an unordered revision of the other and is "current" (the
// conditional HEAD checks each against its own object), so each replaces the other:
// the object's output is overwritten with the member's content, and its record is gone.
func TestReview_ObjectNamedLikeAnArchiveMemberSharesItsRecord(t *testing.T) {
	s := newStack(t)
	s.put("z/b.zip!/x.txt", "an ordinary object")
	s.deliverTo(s.worker, s.s3Event("z/b.zip!/x.txt", s.etag("z/b.zip!/x.txt"), "0000000000000000E1"))
	objectOut := task.File{Key: "z/b.zip!/x.txt"}.UniqueName() // "!" doubled: no member's name
	got, _, _ := s.output(objectOut)
	require.Equal(t, "an ordinary object", got)

	member := s.zipOf("z/b.zip", "x.txt", "an archive member")
	s.deliverTo(s.worker, s.taskOf("member", member))
	s.drain()
	rec, ok, err := s.store.Get(s.ctx, ledger.Key{Bucket: s.in, Key: "z/b.zip!/x.txt"})
	require.NoError(t, err)
	require.True(t, ok)
	got, _, _ = s.output(objectOut)
	assert.Equal(t, "an ordinary object", got, "an object's output is its own, not another input's")
	memberOut, _, _ := s.output("z/b.zip!/x.txt")
	assert.Equal(t, "an archive member", memberOut, "and the member's its own")
	assert.Equal(t, s.etag("z/b.zip!/x.txt"), rec.ETag, "the object's record is its own")
}

// Finding 10 — a job's report disagrees with its final counts: tasks are counted after
// the job finished.
//
// Settle never looks at the job's status, and a worker checks it (cached) only before
// each file starts. A task whose files started while the job ran is counted after the
// job FAILED (past its tolerance) or was CANCELLED; its marker makes the report
// (CountedTasks) include its lines, but the job's Final counts were taken when it
// finished. The manifest's Counts and its result files then disagree.
func TestReview_TaskCountedAfterTheJobFailedIsInTheReportButNotTheCounts(t *testing.T) {
	s := newStack(t)
	s.put("f/bad.txt", "deleted before it is read")
	s.put("f/good.txt", "fine")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "f/", FilesPerTask: 1, Tolerate: "0"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue))
	tasks := s.q.take(tasksQueue)
	require.Len(t, tasks, 2)
	var bad, good *msg
	for _, m := range tasks {
		if strings.Contains(m.body, "bad.txt") {
			bad = m
		} else {
			good = m
		}
	}
	s.del("f/bad.txt") // it fails for good (NoSuchKey)

	var fired atomic.Bool
	hooked := &hookedS3{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) != "f/good.txt" || fired.Swap(true) {
			return next()
		}
		out, err := buffered(next())
		s.deliverTo(s.worker, bad) // meanwhile: bad.txt fails, the job is past its tolerance
		require.Equal(t, ledger.JobFailed, s.jobRecord(id).Status)
		return out, err
	}
	s.deliverTo(s.workerOver(hooked), good)
	require.True(t, fired.Load())
	s.drain()
	j := s.jobRecord(id)
	require.Equal(t, ledger.JobFailed, j.Status)
	require.True(t, j.Notified)
	succeeded, failed := s.reported(id)
	assert.Len(t, failed, int(j.Final.Failed))
	assert.Len(t, succeeded, int(j.Final.Succeeded), "the report's lines must be the counts': succeeded.csv %v, counts %+v", succeeded, j.Final)
}
