package itest

// Second adversarial review of the exactly-once machinery (branch review2), after the
// fixes of the first (TestReview_*). Each TestReview2_* test replays one interleaving
// deterministically (hooks inside S3 and DynamoDB calls, a queue the test delivers) and
// FAILS on the code it was written against: its comment names the interleaving and the
// invariant it breaks.

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/dispatch"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/worker"
)

// s3Hooks is the stack's S3 client with optional hooks around the calls the handlers
// make: each hook gets the request and next (the real call) and may run other work
// before or after it.
type s3Hooks struct {
	*s3.Client
	get  func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error)
	head func(ctx context.Context, in *s3.HeadObjectInput, next func() (*s3.HeadObjectOutput, error)) (*s3.HeadObjectOutput, error)
	del  func(ctx context.Context, in *s3.DeleteObjectInput, next func() (*s3.DeleteObjectOutput, error)) (*s3.DeleteObjectOutput, error)
	list func(ctx context.Context, in *s3.ListObjectsV2Input, next func() (*s3.ListObjectsV2Output, error)) (*s3.ListObjectsV2Output, error)
}

func (h *s3Hooks) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	next := func() (*s3.GetObjectOutput, error) { return h.Client.GetObject(ctx, in, o...) }
	if h.get == nil {
		return next()
	}
	return h.get(ctx, in, next)
}

func (h *s3Hooks) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	next := func() (*s3.HeadObjectOutput, error) { return h.Client.HeadObject(ctx, in, o...) }
	if h.head == nil {
		return next()
	}
	return h.head(ctx, in, next)
}

func (h *s3Hooks) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, o ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	next := func() (*s3.DeleteObjectOutput, error) { return h.Client.DeleteObject(ctx, in, o...) }
	if h.del == nil {
		return next()
	}
	return h.del(ctx, in, next)
}

func (h *s3Hooks) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, o ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	next := func() (*s3.ListObjectsV2Output, error) { return h.Client.ListObjectsV2(ctx, in, o...) }
	if h.list == nil {
		return next()
	}
	return h.list(ctx, in, next)
}

// gatedWrites is the ledger store with a hook before each file write.
type gatedWrites struct {
	*ledger.Store
	before func(w ledger.Write)
}

func (g *gatedWrites) WriteReplacing(ctx context.Context, w ledger.Write) (bool, error) {
	if g.before != nil {
		g.before(w)
	}
	return g.Store.WriteReplacing(ctx, w)
}

// ddbHooks is the stack's DynamoDB client with a hook after each UpdateItem.
type ddbHooks struct {
	ledger.API
	afterUpdate func(in *dynamodb.UpdateItemInput, err error)
}

func (d *ddbHooks) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	out, err := d.API.UpdateItem(ctx, in, o...)
	if d.afterUpdate != nil {
		d.afterUpdate(in, err)
	}
	return out, err
}

// workerWith is a worker like the stack's over the given S3 client and ledger.
func (s *stack) workerWith(objs worker.Objects, l worker.Ledger, rules process.Rules) *worker.Handler {
	s.t.Helper()
	h, err := worker.New(worker.Config{Table: s.store.Table(), OutputBucket: s.out, MaxReceiveCount: maxReceive, MinItemTime: time.Millisecond, Rules: rules},
		worker.Deps{Objects: objs, Ledger: l, Queue: s.q, Jobs: s.engine, Metrics: io.Discard})
	require.NoError(s.t, err)
	return h
}

// handle runs one delivery of m on h without the test's require (safe off the test
// goroutine); it returns the response.
func (s *stack) handle(h *worker.Handler, m *msg) (events.SQSEventResponse, error) {
	m.receive++
	rec := events.SQSMessage{MessageId: m.id, ReceiptHandle: m.id, Body: m.body,
		EventSourceARN: "arn:aws:sqs:us-east-1:000000000000:" + tasksQueue,
		Attributes:     map[string]string{"ApproximateReceiveCount": "1"}}
	return h.Handle(s.ctx, events.SQSEvent{Records: []events.SQSMessage{rec}})
}

func (s *stack) record(key string, scope string) (ledger.Record, bool) {
	s.t.Helper()
	rec, ok, err := s.store.Get(s.ctx, ledger.Key{Bucket: s.in, Key: key, Scope: scope})
	require.NoError(s.t, err)
	return rec, ok
}

// Finding R2-1 — newest revision wins, broken when the OLDER revision commits first.
//
// The fix of the first review makes the older writer repair the output when its commit
// is refused. But nothing orders the uploads with the commits: the older revision's
// commit is not refused if it lands BEFORE the newer one's. The newer revision then
// replaces the record (modeReplace: it is newer by sequencer) and never looks at the
// output, which its older rival overwrote.
//
// Interleaving: k = A (event s1) and then B (event s2). B's worker reads B, uploads its
// output and is about to commit; A's worker (slow) uploads A's output over it and
// commits A (no record yet: accepted). Then B commits (newer: replaces A). End: the
// key's record is B SUCCEEDED, its output is A's, and no message is left to notice.
func TestReview2_OlderRevisionCommittedFirstKeepsItsOutputUnderTheNewerRecord(t *testing.T) {
	s := newStack(t)
	s.put("n/k.txt", "AAAA")
	etagA := s.etag("n/k.txt")

	reached, release := make(chan struct{}), make(chan struct{})
	gate := &gatedWrites{Store: s.store}
	var etagB string
	gate.before = func(w ledger.Write) {
		if w.Rev.ETag == etagB && w.Status == ledger.StatusSucceeded {
			close(reached) // B's output is uploaded; its commit waits
			<-release
		}
	}
	workerB := s.workerWith(s.s3, gate, nil)
	doneB := make(chan error, 1)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)

	var fired atomic.Bool
	hooked := &s3Hooks{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) != "n/k.txt" || aws.ToString(in.IfMatch) != `"`+etagA+`"` || fired.Swap(true) {
			return next()
		}
		out, err := buffered(next()) // A's worker has read A
		s.put("n/k.txt", "BBBB")
		etagB = s.etag("n/k.txt")
		go func() {
			_, err := s.handle(workerB, s.s3Event("n/k.txt", etagB, "0000000000000000A2"))
			doneB <- err
		}()
		select { // B's output is in place, B's commit pending
		case <-reached:
		case <-time.After(30 * time.Second):
			return nil, errors.New("test: B never reached its commit")
		}
		got, _, _ := s.output("n/k.txt")
		require.Equal(t, "BBBB", got)
		return out, err // A's upload lands now, then A commits
	}
	s.deliverTo(s.workerOver(hooked), s.s3Event("n/k.txt", etagA, "0000000000000000A1"))
	require.True(t, fired.Load())
	rec, _ := s.record("n/k.txt", "")
	require.Equal(t, etagA, rec.ETag, "A committed first")
	unblock() // B commits now
	require.NoError(t, <-doneB)
	s.drain()

	rec, _ = s.record("n/k.txt", "")
	require.Equal(t, etagB, rec.ETag, "the key's record: B, the newest revision")
	require.Equal(t, ledger.StatusSucceeded, rec.Status)
	got, rev, _ := s.output("n/k.txt")
	assert.Equal(t, "BBBB", got, "the output must be the newest revision's (it is %s's)", rev)
}

// Finding R2-2 — nothing lost, broken by restore's unconditional DeleteObject.
//
// restore removes a superseded revision's output when the key's newest revision has no
// output there (its record is not SUCCEEDED): "its own writer puts it". It reads the
// record, then deletes — with no condition. The newest revision's writer can put its
// output and commit in between: the delete removes the NEWEST revision's output.
//
// Interleaving: k = A (event s1), then B (event s2). A's worker reads A. B's first
// attempt fails transiently (record B RETRYING). A uploads its output, its commit is
// refused (B is newer): superseded, restore: the output is A's, the record B is not
// SUCCEEDED -> delete. Just before the delete lands, B's retry succeeds (output B,
// record B SUCCEEDED). End: record B SUCCEEDED naming an output that does not exist.
func TestReview2_RestoreDeletesTheNewestOutputWrittenAfterItsLook(t *testing.T) {
	s := newStack(t)
	s.put("r2/k.txt", "AAAA")
	etagA := s.etag("r2/k.txt")
	var etagB string

	failing := &s3Hooks{Client: s.s3}
	failing.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		return nil, errors.New("injected: connection reset")
	}
	var fired, deleted atomic.Bool
	hooked := &s3Hooks{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) != "r2/k.txt" || aws.ToString(in.IfMatch) != `"`+etagA+`"` || fired.Swap(true) {
			return next()
		}
		out, err := buffered(next()) // A read
		s.put("r2/k.txt", "BBBB")
		etagB = s.etag("r2/k.txt")
		s.deliverTo(s.workerOver(failing), s.s3Event("r2/k.txt", etagB, "0000000000000000B2")) // B fails once
		rec, _ := s.record("r2/k.txt", "")
		require.Equal(t, ledger.StatusRetrying, rec.Status, "B's record: RETRYING")
		return out, err
	}
	hooked.del = func(ctx context.Context, in *s3.DeleteObjectInput, next func() (*s3.DeleteObjectOutput, error)) (*s3.DeleteObjectOutput, error) {
		if aws.ToString(in.Key) == "r2/k.txt" && !deleted.Swap(true) {
			// B's retry runs between restore's look at the record and its delete.
			s.deliverTo(s.worker, s.s3Event("r2/k.txt", etagB, "0000000000000000B2"))
			got, _, _ := s.output("r2/k.txt")
			require.Equal(t, "BBBB", got, "B's output is in place")
		}
		return next()
	}
	s.deliverTo(s.workerOver(hooked), s.s3Event("r2/k.txt", etagA, "0000000000000000B1"))
	require.True(t, fired.Load())
	// Since the fix, restore does not delete while the newest record is in flight
	// (RETRYING): its writer puts its output. (Before, it deleted B's output here.)
	s.drain()

	rec, _ := s.record("r2/k.txt", "")
	require.Equal(t, etagB, rec.ETag)
	require.Equal(t, ledger.StatusSucceeded, rec.Status, "B SUCCEEDED")
	require.Equal(t, []string{"s3://" + s.out + "/r2/k.txt"}, rec.Outputs)
	got, _, exists := s.output("r2/k.txt")
	assert.True(t, exists, "the SUCCEEDED newest revision's output must exist")
	assert.Equal(t, "BBBB", got)
}

// Finding R2-3 — newest revision wins, broken by the replace's condition (the ABA fix
// of the first review holds only in Go).
//
// Write compares the head it read with Over (exactly, sequencer included) — in Go. The
// UpdateItem that then replaces the record is conditioned on the attempts and the ETag
// only, not the sequencer. An Advance (the same content uploaded again later: a
// duplicate whose event raises the sequencer) between the failed append that read the
// head and the replace is not seen: an older revision replaces the record of a newer
// event. No Over is needed; plain events do it.
//
// Interleaving: k = A (s1, processed). k = B (s2): B's worker uploads B's output, its
// append fails (the record is A) and returns the head A/s1. Now k = A again (s3): that
// event finds A SUCCEEDED, a duplicate: skipped, sequencer advanced to s3. B's
// replace (B/s2 newer than A/s1, as read) lands. End: the object is A (newest event
// s3), its record and output are B's.
func TestReview2_ReplaceIgnoresASequencerAdvancedSinceItsHeadWasRead(t *testing.T) {
	s := newStack(t)
	s.put("a3/k.txt", "AAAA")
	etagA := s.etag("a3/k.txt")
	s.deliverTo(s.worker, s.s3Event("a3/k.txt", etagA, "0000000000000000C1"))
	s.put("a3/k.txt", "BBBB")
	etagB := s.etag("a3/k.txt")

	var fired atomic.Bool
	db := &ddbHooks{API: s.db}
	db.afterUpdate = func(in *dynamodb.UpdateItemInput, err error) {
		var ccf *types.ConditionalCheckFailedException
		if !errors.As(err, &ccf) || ledgerText(in.ExpressionAttributeValues[":etag"]) != etagB || fired.Swap(true) {
			return
		}
		// B's append failed: it holds the head A/s1. A is uploaded again, its event seen.
		s.put("a3/k.txt", "AAAA")
		require.Equal(t, etagA, s.etag("a3/k.txt"))
		s.deliverTo(s.worker, s.s3Event("a3/k.txt", etagA, "0000000000000000C3"))
		rec, _ := s.record("a3/k.txt", "")
		require.Equal(t, ledger.NormalizeSequencer("0000000000000000C3"), rec.Sequencer, "advanced")
	}
	storeB := ledger.New(db, s.store.Table(), 0)
	s.deliverTo(s.workerWith(s.s3, storeB, nil), s.s3Event("a3/k.txt", etagB, "0000000000000000C2"))
	require.True(t, fired.Load())
	s.drain()

	rec, _ := s.record("a3/k.txt", "")
	got, rev, _ := s.output("a3/k.txt")
	assert.Equal(t, etagA, rec.ETag, "the record must hold the newest event's revision (A, s3), not B (s2)")
	assert.Equal(t, "AAAA", got, "the output must be the object's newest content (it is %s's)", rev)
}

// Finding R2-4 — a split job's merge checks the file, then writes over a newer output.
//
// The first review's fix (splitStillCurrent) HEADs the split file and merges over the
// key's output if it is still the parts' revision. Check, then act: the file can be
// overwritten and its newer revision processed and committed between the HEAD and the
// merge's upload, which then lands over it. The merge never consults the key's record.
//
// Interleaving: a split job over k.csv (A) completes; its finalize HEADs k.csv (A:
// current); k.csv is overwritten (B) and B's event processed (output B, record B); the
// merge of A's parts lands on the key's output. End: record B, output A's merge.
func TestReview2_SplitMergeChecksTheFileThenOverwritesANewerOutput(t *testing.T) {
	s := newStack(t)
	var a strings.Builder
	for range 200 {
		a.WriteString("line of revision A\n")
	}
	s.put("x2/k.csv", a.String())
	id := s.submit(job.Spec{Kind: job.KindSplit, Key: "x2/k.csv", Parts: 2})
	s.deliver(jobsQueue, s.q.pop(jobsQueue))
	for m := s.q.pop(tasksQueue); m != nil; m = s.q.pop(tasksQueue) {
		s.deliver(tasksQueue, m)
	}
	require.Equal(t, ledger.JobComplete, s.jobRecord(id).Status)
	s.q.take(jobsQueue) // the finalize task: run below with a hooked engine

	var fired atomic.Bool
	hooked := &s3Hooks{Client: s.s3}
	hooked.head = func(ctx context.Context, in *s3.HeadObjectInput, next func() (*s3.HeadObjectOutput, error)) (*s3.HeadObjectOutput, error) {
		out, err := next()
		if aws.ToString(in.Bucket) == s.in && aws.ToString(in.Key) == "x2/k.csv" && !fired.Swap(true) {
			// The merge saw A current. Now B arrives and is processed at once.
			s.put("x2/k.csv", "revision B, one line\n")
			s.deliverTo(s.worker, s.s3Event("x2/k.csv", s.etag("x2/k.csv"), "0000000000000000D2"))
			got, _, _ := s.output("x2/k.csv")
			require.Equal(t, "revision B, one line\n", got, "B is processed")
		}
		return out, err
	}
	eng := &job.Engine{Ledger: s.store, Objects: hooked, OutputBucket: s.out}
	require.NoError(t, eng.FinalizeJob(s.ctx, id, false))
	require.True(t, fired.Load())

	rec, _ := s.record("x2/k.csv", "")
	require.Equal(t, s.etag("x2/k.csv"), rec.ETag, "the key's record: B")
	got, rev, _ := s.output("x2/k.csv")
	assert.True(t, strings.HasPrefix(got, "revision B"), "the key's output must stay the newest revision's; it is %s's (%q…)", rev, got[:min(len(got), 30)])
}

// Finding R2-5 — a task is its content / effectively once, broken for archive members:
// two members of two archives share one ledger record.
//
// The first review's fix gives members their own scope and escapes "!" in OUTPUT names,
// but the member's ledger key is still the unescaped name "<zip>!/<entry>". '!' is legal
// in S3 keys and in entry names, so entry "b.zip!/c.txt" of m/a.zip and entry "c.txt"
// of m/a.zip!/b.zip are both "m/a.zip!/b.zip!/c.txt": one record. Each is an unordered
// revision of the other, current (each HEAD checks its own archive), so each replaces
// the other's record: a redelivery of the first is processed again (a GET, a PUT, a
// second success in the history) and its record is gone while the second's stands.
func TestReview2_MembersOfTwoArchivesShareOneRecord(t *testing.T) {
	s := newStack(t)
	m1 := s.zipOf("m2/a.zip", "b.zip!/c.txt", "member of a.zip")
	m2 := s.zipOf("m2/a.zip!/b.zip", "c.txt", "member of a.zip!/b.zip")
	require.NotEqual(t, m1.UniqueName(), m2.UniqueName(), "their outputs differ")
	s.deliverTo(s.worker, s.taskOf("member-1", m1))
	s.deliverTo(s.worker, s.taskOf("member-2", m2))

	var gets atomic.Int32
	counting := &s3Hooks{Client: s.s3}
	counting.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) == "m2/a.zip" {
			gets.Add(1)
		}
		return next()
	}
	s.deliverTo(s.workerOver(counting), s.taskOf("member-1-again", m1)) // a duplicate delivery
	s.drain()
	assert.Zero(t, gets.Load(), "a duplicate delivery of a committed member is skipped, not processed again")
	rec, _ := s.record(m2.UniqueName(), ledger.ScopeMember) // members are recorded under their unique names
	assert.Equal(t, m2.ETag, rec.ETag, "member 2's record is its own (it was replaced by member 1's)")
}

// Finding R2-6 — nothing lost / effectively once, broken by output suffixes: with the
// dev stage's own rules ({".gz": gunzip}, else copy) the objects g/a.txt and g/a.txt.gz
// both write s3://out/g/a.txt.
//
// The first review's escape ("so no object shares an archive member's output") works
// on names; OutputKey then trims ".gz" (gunzip) or adds it (gzip) AFTER escaping, so
// two inputs map to one output. Both records said SUCCEEDED with that output; it held
// only the last writer's bytes. (The same for members "x" and "x.gz" of one zip.)
func TestReview2_GunzippedObjectAndItsPlainTwinShareOneOutput(t *testing.T) {
	s := newStack(t)
	rules, err := process.ParseRules([]byte(`[{"suffix":".exe","reject":"executables are not accepted"},{"suffix":".gz","processors":["gunzip","checksum"]},{"processors":["checksum","detect","copy"]}]`), process.Builtins())
	require.NoError(t, err) // Pulumi.dev.yaml's fileflow:rules
	w := s.workerWith(s.s3, s.store, rules)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("the compressed log"))
	require.NoError(t, zw.Close())
	s.put("g/a.txt", "the plain log")
	s.put("g/a.txt.gz", gz.String())
	s.deliverTo(w, s.s3Event("g/a.txt", s.etag("g/a.txt"), "0000000000000000F1"))
	s.deliverTo(w, s.s3Event("g/a.txt.gz", s.etag("g/a.txt.gz"), "0000000000000000F1"))
	s.drain()

	// The fix: an output belongs to one input (the output's fileflow-input metadata,
	// checked by a conditional PUT). The second input whose output would land on the
	// first's fails for good, naming the conflict; nothing is overwritten silently.
	plain, _ := s.record("g/a.txt", "")
	packed, _ := s.record("g/a.txt.gz", "")
	require.Equal(t, ledger.StatusSucceeded, plain.Status)
	require.Equal(t, ledger.StatusFailed, packed.Status, "two inputs cannot share one output")
	assert.Contains(t, packed.Reason, "is already the output of")
	got, _, _ := s.output(strings.TrimPrefix(plain.Outputs[0], "s3://"+s.out+"/"))
	assert.Equal(t, "the plain log", got, "the SUCCEEDED input's output holds its own content")
}

// Finding R2-7 — the escape of a trailing "!" is undone by gunzip.
//
// OutputName doubles a trailing run of "!" so that no object's output is named
// "<zip>!" — on a POSIX-backed S3 server (versitygw, the local stack) an object "a.zip!"
// and the member outputs "a.zip!/…" cannot coexist (409 ObjectParentIsFile). The escape
// runs before the processors rename: "z/a.zip!.gz" keeps its name, gunzip drops ".gz",
// and the output is "z/a.zip!" — the parent "directory" of every member of z/a.zip.
// The member then fails for good (OutputConflict), under the dev stage's own rules.
func TestReview2_GunzipUndoesTheEscapeOfATrailingBang(t *testing.T) {
	s := newStack(t)
	rules, err := process.ParseRules([]byte(`[{"suffix":".gz","processors":["gunzip","checksum"]},{"processors":["checksum","detect","copy"]}]`), process.Builtins())
	require.NoError(t, err)
	w := s.workerWith(s.s3, s.store, rules)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("an object named like the members' folder"))
	require.NoError(t, zw.Close())
	s.put("zb/a.zip!.gz", gz.String())
	s.deliverTo(w, s.s3Event("zb/a.zip!.gz", s.etag("zb/a.zip!.gz"), "0000000000000000F1"))
	member := s.zipOf("zb/a.zip", "x.txt", "a member")
	s.deliverTo(w, s.taskOf("member", member))
	s.drain()

	obj, _ := s.record("zb/a.zip!.gz", "")
	require.Equal(t, ledger.StatusSucceeded, obj.Status, "%s", obj.Reason)
	rec, _ := s.record(member.Name(), ledger.ScopeMember)
	assert.Equal(t, ledger.StatusSucceeded, rec.Status, "the member is processed: %s", rec.Reason)
	assert.NotEqual(t, []string{"s3://" + s.out + "/zb/a.zip!"}, obj.Outputs, "no object's output is named like the members' folder")
}

// Finding R2-8 — every job finishes, broken when Fail itself fails on a fan-out task's
// last receive.
//
// The first review's finding 6 was fixed for a failed count (sent again, never to the
// DLQ). The other last-receive path is not: a fan-out task that cannot finish its work
// on its last receive fails its job (dispatch.Config.MaxReceiveCount: "instead of
// hanging it"); if that Fail errs (a throttle, a 500, or five lost snapshot races in
// finishWith) the action is RetryAfter — on the last receive: SQS moves the task to the
// DLQ and the job stays RUNNING with nothing to fail or finish it.
func TestReview2_FanoutTaskWhoseJobFailErrsOnItsLastReceiveIsDeadLettered(t *testing.T) {
	s := newStack(t)
	s.put("fl/a.txt", "a")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "fl/"})
	down := &s3Hooks{Client: s.s3}
	down.list = func(ctx context.Context, in *s3.ListObjectsV2Input, next func() (*s3.ListObjectsV2Output, error)) (*s3.ListObjectsV2Output, error) {
		return nil, errors.New("injected: 503 Slow Down")
	}
	d, err := dispatch.New(dispatch.Config{TasksQueueURL: tasksQueue, JobsQueueURL: jobsQueue, MaxReceiveCount: maxReceive},
		dispatch.Deps{Objects: down, Queue: s.q, Ledger: s.store, Jobs: s.engine, Metrics: io.Discard})
	require.NoError(t, err)
	s.dispatch = d
	root := s.q.pop(jobsQueue)
	// Since chaos run 9 a fan-out task fails its job only on the last receive of its
	// last round (dispatch.FanoutRounds); each earlier round ends in a copy sent again.
	for round := 1; round <= dispatch.FanoutRounds; round++ {
		for n := 1; n <= maxReceive; n++ {
			if round == dispatch.FanoutRounds && n == maxReceive {
				s.db.failStop.Store(1) // the job's stop fails once
			}
			s.deliver(jobsQueue, root)
			if sent := s.q.take(jobsQueue); n == maxReceive && round < dispatch.FanoutRounds {
				require.Len(t, sent, 1, "round %d ends in a copy sent again", round)
				root = sent[0]
			}
		}
	}
	assert.Zero(t, s.db.failStop.Load(), "the injected failure reached the job's stop")
	j := s.jobRecord(id)
	stuck := len(s.q.dlq[jobsQueue+"-dlq"])
	assert.False(t, j.Status == ledger.JobRunning && stuck > 0,
		"a fan-out task is never dead-lettered with its job RUNNING (status %s, %d in the jobs DLQ)", j.Status, stuck)
}

// Finding R2-9 — a counted task's copy "sent again to repeat the check" never checks.
//
// When a worker's task is counted but its job's check fails (CheckFailed), the message
// is sent again "so the check is repeated" (README, job.Action). The copy carries the
// sent-again attribute, so checkJobs asks TaskState first: Duplicate -> acknowledged,
// with no check. Only the dispatcher's Duplicate path checks. The job's last task's
// failed check is then repeated by nobody but the 5-minute reconciler.
//
// Interleaving: a one-file job; its task is counted, the check after it fails once;
// the copy is delivered (the check would succeed now). The job is still RUNNING.
func TestReview2_CopySentToRepeatTheCheckIsAcknowledgedUnchecked(t *testing.T) {
	s := newStack(t)
	db := &checkFailsDB{flakyDB: s.db}
	s.store = ledger.New(db, s.store.Table(), 0)
	s.rewire(t)
	s.put("ck/a.txt", "a")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "ck/"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue))
	tasks := s.q.take(tasksQueue)
	require.Len(t, tasks, 1)
	db.on = true
	s.deliver(tasksQueue, tasks[0]) // counted; its check fails
	db.on = false
	c, err := s.store.JobCounts(s.ctx, id, s.jobRecord(id).Shards)
	require.NoError(t, err)
	require.Zero(t, c.Outstanding(), "every task is counted")
	again := s.q.take(tasksQueue)
	require.Len(t, again, 1, "sent again to repeat the check")
	s.deliver(tasksQueue, again[0])
	s.drain()
	assert.Equal(t, ledger.JobComplete, s.jobRecord(id).Status, "the copy sent to repeat the check completes the job")
}

// Finding R2-13 — every job finishes, broken by a restore that can never succeed: the
// job's task goes to the dead-letter queue.
//
// supersede always restores (the first review's fix). When the output holds this
// superseded revision and the key's newest revision SUCCEEDED, restore processes the
// newest revision again — from its source. If that source is gone (deleted after it was
// processed: a drop-and-delete ingest, the ingest bucket's expiry) the GET fails for
// good, restore errs, and the item is left pending on every receive: no last-receive
// rule applies (giveUp covers only files never started), so the job's task message is
// dead-lettered and its job stays RUNNING — and the key's output stays the OLDER
// revision's under the newer record.
//
// Interleaving: a prefix job lists k at A; its task reads A; k is overwritten (B), B's
// event processed (record B, output B), and k deleted; the task's upload of A lands,
// its commit finds B: A is not current -> superseded -> restore -> GET B: NoSuchKey.
func TestReview2_RestoreThatCannotReadTheNewestRevisionDeadLettersTheJobsTask(t *testing.T) {
	s := newStack(t)
	s.put("rd/k.txt", "AAAA")
	etagA := s.etag("rd/k.txt")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "rd/"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue))
	tasks := s.q.take(tasksQueue)
	require.Len(t, tasks, 1)

	var fired atomic.Bool
	hooked := &s3Hooks{Client: s.s3}
	hooked.get = func(ctx context.Context, in *s3.GetObjectInput, next func() (*s3.GetObjectOutput, error)) (*s3.GetObjectOutput, error) {
		if aws.ToString(in.Key) != "rd/k.txt" || aws.ToString(in.IfMatch) != `"`+etagA+`"` || fired.Swap(true) {
			return next()
		}
		out, err := buffered(next())
		s.put("rd/k.txt", "BBBB")
		s.deliverTo(s.worker, s.s3Event("rd/k.txt", s.etag("rd/k.txt"), "0000000000000000E2"))
		s.del("rd/k.txt") // processed, then removed from the ingest bucket
		return out, err
	}
	w := s.workerOver(hooked)
	s.deliverTo(w, tasks[0])
	require.True(t, fired.Load())
	for m := s.q.pop(tasksQueue); m != nil; m = s.q.pop(tasksQueue) {
		s.deliverTo(w, m)
	}
	s.drain()
	j := s.jobRecord(id)
	stuck := len(s.q.dlq[tasksQueue+"-dlq"])
	got, rev, _ := s.output("rd/k.txt")
	t.Logf("the key's output: %q (revision %s); its record: B", got, rev)
	assert.False(t, j.Status == ledger.JobRunning && stuck > 0,
		"a job's task is never dead-lettered for a follow-up failure (status %s, %d in the tasks DLQ)", j.Status, stuck)
}

// zipWith stores a zip of the named entries at key.
func (s *stack) zipWith(key string, entries ...string) {
	s.t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i < len(entries); i += 2 {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: entries[i], Method: zip.Deflate})
		require.NoError(s.t, err)
		_, err = w.Write([]byte(entries[i+1]))
		require.NoError(s.t, err)
	}
	require.NoError(s.t, zw.Close())
	s.put(key, buf.String())
}

// Finding R2-14 — superseded counted apart assumes the newer revision "is processed on
// its own (its S3 event)"; an archive member has no event.
//
// An archive job's members are pinned to the archive's ETag. The archive is overwritten
// while the job runs: the members not yet processed fail their GET (If-Match) and are
// recorded SUPERSEDED, counted apart, not against the tolerance — and the job, even
// with tolerate 0, is COMPLETE. But nothing processes the newer archive's members (no
// S3 event names a member; the first review's "current content" fix excludes members):
// of the archive's two members one has an output of the old archive, the other none.
// README: "If the zip is overwritten while its members run, the newest archive's
// members win, as for any file".
func TestReview2_ArchiveOverwrittenMidJobCompletesWithMembersNeverProcessed(t *testing.T) {
	s := newStack(t)
	s.zipWith("za/a.zip", "x.txt", "x of archive A", "y.txt", "y of archive A")
	id := s.submit(job.Spec{Kind: job.KindArchive, Key: "za/a.zip", FilesPerTask: 1, Tolerate: "0"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue))
	tasks := s.q.take(tasksQueue)
	require.Len(t, tasks, 2)
	s.deliver(tasksQueue, tasks[0])
	s.zipWith("za/a.zip", "x.txt", "x of archive B", "y.txt", "y of archive B") // overwritten mid-job
	s.deliver(tasksQueue, tasks[1])
	s.drain()

	j := s.jobRecord(id)
	var missing []string
	for _, name := range []string{"x.txt", "y.txt"} {
		if _, _, ok := s.output("za/a.zip!/" + name); !ok {
			missing = append(missing, name)
		}
	}
	t.Logf("job %s (%d succeeded, %d failed, %d superseded); members without an output: %v", j.Status, j.Final.Succeeded, j.Final.Failed, j.Final.Superseded, missing)
	assert.False(t, j.Status == ledger.JobComplete && len(missing) > 0,
		"a COMPLETE archive job (tolerate 0) leaves no member of its archive unprocessed: %v have no output, and nothing will process them", missing)
}

// Finding R2-15 — nothing lost / tolerance, broken by record(): the CURRENT content of
// a key that fails for good is recorded SUPERSEDED by an older revision.
//
// commit() sorts out an OtherRevisionError with the conditional HEAD (current() ->
// Over). record(), for a permanent failure, does not: "Another revision holds the key;
// this one's failure is kept beside it" -> supersede(head). Where skipDone did not set
// Over — an unpinned manifest row (its revision comes from its GET), the
// FILEFLOW_DUPLICATE_CHECK=redelivery mode on a first receive, a head that appeared
// after the lookup — a current revision that is corrupt or rejected is recorded
// "superseded by revision <older one>", counted Superseded (not a failure, not against
// the tolerance), and the key's record keeps the older revision as SUCCEEDED.
//
// Interleaving (dev rules, default duplicate check): k.gz = X (valid gzip), processed
// by its event. k.gz = A (not gzip). A manifest job (tolerate 0) names "bucket,k.gz":
// its GET reads A, gunzip fails (CorruptContent, permanent), the FAILED write meets X's
// record: A is recorded SUPERSEDED by X, and the job is COMPLETE with no failure.
func TestReview2_CurrentContentThatFailsIsRecordedSupersededByAnOlderRevision(t *testing.T) {
	s := newStack(t)
	rules, err := process.ParseRules([]byte(`[{"suffix":".gz","processors":["gunzip","checksum"]},{"processors":["checksum","detect","copy"]}]`), process.Builtins())
	require.NoError(t, err)
	w := s.workerWith(s.s3, s.store, rules)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("revision X"))
	require.NoError(t, zw.Close())
	s.put("um/k.gz", gz.String())
	s.deliverTo(w, s.s3Event("um/k.gz", s.etag("um/k.gz"), "0000000000000000F1"))
	s.put("um/k.gz", "revision A is not gzip") // the current content: corrupt
	etagA := s.etag("um/k.gz")
	s.put("um/manifest.csv", s.in+",um/k.gz\n")
	id := s.submit(job.Spec{Kind: job.KindManifest, Key: "um/manifest.csv", Tolerate: "0"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue))
	for m := s.q.pop(tasksQueue); m != nil; m = s.q.pop(tasksQueue) {
		s.deliverTo(w, m)
	}
	s.drain()

	j := s.jobRecord(id)
	sup, ok := s.record("um/k.gz", "superseded#e:"+etagA)
	if ok {
		t.Logf("A is recorded %s: %s", sup.Status, sup.Reason)
	}
	assert.Equal(t, ledger.JobFailed, j.Status, "the current content failed for good: over a tolerance of 0 (counts %+v)", j.Final)
	rec, _ := s.record("um/k.gz", "")
	assert.Equal(t, etagA, rec.ETag, "the key's record must say its current content failed, not hold the older revision as SUCCEEDED")
}
