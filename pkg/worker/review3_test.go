package worker

// Review 3: adversarial tests of the recent worker changes (infra failures sent again,
// removeLeftover). Each test FAILS on the code it was written against; the comment
// above it gives the interleaving.

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

func review3Gzip(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	require.NoError(t, zw.Close())
	return b.Bytes()
}

// beforeDelete runs before each DeleteObject reaches the store.
type beforeDelete struct {
	*fakeS3
	before func(key string)
}

func (b *beforeDelete) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, o ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	b.before(aws.ToString(in.Key))
	return b.fakeS3.DeleteObject(ctx, in, o...)
}

// F1 — removeLeftover's "only while the record is still this failure" is a read, not a
// condition of the delete; the If-Match only protects against the OUTPUT changing after
// the HEAD, not the RECORD changing after the Get. A newer revision's output that was
// PUT before the HEAD is taken for "an older revision's":
//
//  1. v1 succeeded: processed/k.log is v1's.
//  2. v3's worker PUTs its output (metadata v:v3, ETag o3); its commit is still to come.
//  3. v2 (corrupt gzip) fails for good: record = v2 FAILED. removeLeftover HEADs the
//     output: v:v3, this input's, not v2's -> Get: still v2 FAILED -> about to delete
//     If-Match o3.
//  4. v3 commits: WriteReplacing over v2's FAILED, replaced=true -> restore(): the
//     record names the output and the output is v3's -> nothing to do.
//  5. v2's DeleteObject(If-Match o3) lands: v3's output is gone.
//
// Consequence: record v3 SUCCEEDED naming s3://out/processed/k.log, no such object
// (lost output; the record and the output disagree for good: v3's messages are acked).
func TestReview3_LeftoverRemovalDeletesANewerRevisionCommittedMeanwhile(t *testing.T) {
	e := newEnv(t, nil)
	k := ledger.Key{Bucket: "in", Key: "k.log.gz"}
	e.s3.overwrite("in", "k.log.gz", "e1", review3Gzip(t, "version one"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m1", "in", "k.log.gz", "v1", "e1", "0A")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)

	// 2. v3's output is in place, its commit not yet made.
	e.s3.overwrite("out", "processed/k.log", "o3", []byte("version three"))
	e.s3.meta["out/processed/k.log"] = map[string]string{MetaRevision: "v:v3", MetaSourceETag: "e3", task.MetaInput: inputName(k)}
	v3 := ledger.Revision{VersionID: "v3", ETag: "e3", Sequencer: ledger.NormalizeSequencer("0C")}

	var restoreErr error
	committed := false
	objs := &beforeDelete{fakeS3: e.s3, before: func(key string) {
		if key != "processed/k.log" || committed {
			return
		}
		committed = true
		// 4. v3 (the object's content now) commits between v2's Get and v2's delete,
		// and checks its output.
		e.s3.overwrite("in", "k.log.gz", "e3", review3Gzip(t, "version three"))
		replaced, err := e.ledger.WriteReplacing(context.Background(), ledger.Write{Key: k, Rev: v3, Status: ledger.StatusSucceeded,
			Result: ledger.Result{Outputs: []string{"s3://out/processed/k.log"}}})
		require.NoError(t, err)
		require.True(t, replaced, "v3 replaced v2's failure")
		it := &item{msg: &message{}, file: task.File{Bucket: "in", Key: "k.log.gz", VersionID: "v3", ETag: "e3", Sequencer: "0C"}, key: k, rev: v3}
		restoreErr = e.h.restore(context.Background(), e.h.deps.Logger, it)
	}}
	deps := e.h.deps
	deps.Objects = objs
	h, err := New(e.h.cfg, deps)
	require.NoError(t, err)

	// 3. v2 fails for good.
	e.s3.overwrite("in", "k.log.gz", "e2", []byte("not gzip at all"))
	resp, err = h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)
	require.True(t, committed, "the interleaving ran")
	require.NoError(t, restoreErr, "v3's commit-time check found its output in place")

	rec, ok, err := e.ledger.Get(context.Background(), k)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ledger.StatusSucceeded, rec.Status)
	require.Equal(t, "v3", rec.VersionID)
	_, meta, ok := e.s3.get("out", "processed/k.log")
	assert.True(t, ok, "the key's record is v3 SUCCEEDED naming processed/k.log, but v2's leftover removal deleted v3's output")
	assert.Equal(t, "v:v3", meta[MetaRevision])
}

// commitHook runs before the first SUCCEEDED write of revision version.
type commitHook struct {
	*fakeLedger
	version string
	fired   bool
	before  func()
}

func (c *commitHook) WriteReplacing(ctx context.Context, w ledger.Write) (bool, error) {
	if !c.fired && w.Status == ledger.StatusSucceeded && w.Rev.VersionID == c.version {
		c.fired = true
		c.before()
	}
	return c.fakeLedger.WriteReplacing(ctx, w)
}

// F2 — removeLeftover decides "this revision's own" by comparing revision STRINGS
// ("v:<version>" or "e:<etag>"), while the ledger decides by CONTENT (Revision.Same:
// equal ETags). The same content under another version id (an identical re-upload in a
// versioned bucket; equally a job's listed file, ETag only, against a versioned event)
// is taken for an older revision and its output deleted; and the later commit of that
// content is not a replace (same revision: replaced=false), so nothing restores it:
//
//  1. v2 and v3 are two uploads of the same bytes (ETag e2), versions v2 and v3.
//  2. v2's delivery PUTs its output (v:v2); its commit is slow.
//  3. v3's delivery, on its last receive, fails its GET (connection reset):
//     DEAD_LETTERED {v3, e2} takes the record; removeLeftover: HEAD -> v:v2, not "v:v3"
//     nor "e:e2" -> record is this failure -> delete. v3's message goes to the DLQ.
//  4. v2's commit: the record {v3,e2} is Same -> appended as SUCCEEDED, replaced=false ->
//     no restore. Acked.
//  5. v3 redriven from the DLQ: the record is SUCCEEDED for e2 -> a duplicate, no work.
//
// Consequence: record SUCCEEDED naming processed/k.txt for good, no output (lost).
func TestReview3_LeftoverRemovalDeletesTheSameContentUnderAnotherVersion(t *testing.T) {
	e := newEnv(t, nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	e.s3.overwrite("in", "k.txt", "e2", []byte("the same bytes"))

	v3msg := versionEvent("m3", "in", "k.txt", "v3", "e2", "0C")
	v3msg.Attributes["ApproximateReceiveCount"] = "3" // the env's MaxReceiveCount: its last
	var v3resp events.SQSEventResponse
	hook := &commitHook{fakeLedger: e.ledger, version: "v2"}
	deps := e.h.deps
	deps.Ledger = hook
	h, err := New(e.h.cfg, deps)
	require.NoError(t, err)
	hook.before = func() {
		_, meta, ok := e.s3.get("out", "processed/k.txt")
		require.True(t, ok, "v2's output is in place before its commit")
		require.Equal(t, "v:v2", meta[MetaRevision])
		e.s3.getErr = func(string) error { return errors.New("connection reset") }
		var err error
		v3resp, err = h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{v3msg}})
		require.NoError(t, err)
		e.s3.getErr = nil
	}

	resp, err := h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m2", "in", "k.txt", "v2", "e2", "0B")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures, "v2 committed and acked")
	require.True(t, hook.fired)
	require.Equal(t, []string{"m3"}, failedIDs(v3resp), "v3 goes to the DLQ with its DEAD_LETTERED record")

	// 5. v3 redriven.
	v3msg.Attributes["ApproximateReceiveCount"] = "1"
	resp, err = h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{v3msg}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)

	rec, ok, err := e.ledger.Get(context.Background(), k)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ledger.StatusSucceeded, rec.Status)
	require.Equal(t, []string{"s3://out/processed/k.txt"}, rec.Outputs)
	_, _, ok = e.s3.get("out", "processed/k.txt")
	assert.True(t, ok, "the record is SUCCEEDED for content e2 naming processed/k.txt, but the output of that very content was removed as a 'leftover'")
}

// headFailsOnce fails the first HEAD of key with a 500.
type headFailsOnce struct {
	*fakeS3
	key    string
	failed bool
}

func (h *headFailsOnce) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	if !h.failed && aws.ToString(in.Key) == h.key {
		h.failed = true
		return nil, &smithy.GenericAPIError{Code: "InternalError", Message: "We encountered an internal error. Please try again."}
	}
	return h.fakeS3.HeadObject(ctx, in, o...)
}

// F6 — removeLeftover is best effort and its doc says "a leftover that survives an
// error here is removed when that older revision is next delivered". But the older
// revision succeeded and was acknowledged long ago: it is never delivered again. One
// transient S3 error (a 500, a throttle, a reset — what the chaos run injects) on the
// HEAD, the ledger Get or the DELETE, and the failed revision's message is acked with
// the older output still standing:
//
//  1. v1 succeeded: processed/k.log is v1's.
//  2. v2 (corrupt) fails for good: record v2 FAILED; removeLeftover's HEAD gets a 500
//     -> returns silently; the item is `failed`, the message acked.
//
// Consequence: record v2 FAILED, output v1's, for good (wrong output): nothing comes
// back to remove it.
func TestReview3_LeftoverSurvivesATransientError(t *testing.T) {
	e := newEnv(t, nil)
	k := ledger.Key{Bucket: "in", Key: "k.log.gz"}
	e.s3.overwrite("in", "k.log.gz", "e1", review3Gzip(t, "version one"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m1", "in", "k.log.gz", "v1", "e1", "0A")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)

	deps := e.h.deps
	deps.Objects = &headFailsOnce{fakeS3: e.s3, key: "processed/k.log"}
	h, err := New(e.h.cfg, deps)
	require.NoError(t, err)
	e.s3.overwrite("in", "k.log.gz", "e2", []byte("not gzip at all"))
	resp, err = h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B")}})
	require.NoError(t, err)

	rec, ok, err := e.ledger.Get(context.Background(), k)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ledger.StatusFailed, rec.Status)
	require.Equal(t, "v2", rec.VersionID)
	_, meta, stands := e.s3.get("out", "processed/k.log")
	comesBack := len(resp.BatchItemFailures) > 0 || len(e.queue.sent) > 0
	assert.True(t, !stands || comesBack,
		"the newest revision failed for good, v1's output (%s) still stands and nothing comes back to remove it", meta[MetaRevision])
}

// F3 — shareDuplicates copies state, class, err and pr to a duplicate of the same file
// in the batch, but not `infra`. A duplicate S3 notification (at least once: two
// messages, same body, same receive) whose first copy's commit hit a ledger outage:
//
//   - the first message: its item is infra-pending -> sent again (no receive used);
//   - the second message: its item shares `pending` but infra=false -> "failed in its
//     own processing" -> a batch item failure, using a receive; on the last receive SQS
//     moves it to the DLQ.
//
// Consequence: the DLQ (and its alarm) gets a message for a ledger outage — what the
// change set out to prevent; for a job's task duplicated in a batch the same copy
// burns its receives (the job still completes through the copy sent again).
func TestReview3_DuplicateInTheBatchOfAnInfraWaitGoesToTheDLQ(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "a.txt", []byte("a"))
	e.ledger.failNext = &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException"}
	m1 := s3Message("m1", 3, "in", "a.txt")
	m2 := s3Message("m2", 3, "in", "a.txt") // the same notification, delivered twice
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{m1, m2}})
	require.NoError(t, err)
	assert.Len(t, e.queue.sent, 2, "each copy is sent again: only the ledger failed (the ledger absorbs the duplicate later)")
	assert.Empty(t, failedIDs(resp), "the duplicate waits on the same ledger failure: never a batch item failure on its last receive (to the DLQ)")
}

// failingJobRead is the job engine while DynamoDB is unreachable: the job's record
// cannot be read.
type failingJobRead struct{ *fakeJobs }

func (failingJobRead) Job(context.Context, string) (ledger.Job, error) {
	return ledger.Job{}, errors.New("ledger: get job j1: dial tcp 127.0.0.1:8000: connect: connection refused")
}

// F4 — checkJobs: when the job's record cannot be read (the ledger is unreachable; the
// engine's cache lives 1 s), a job's task message is decided Retry with the backoff of
// its receive: it uses its receives, and on the last one SQS moves it to the DLQ. The
// change routes ledger outages to "send again", but this path was left out. A job's
// uncounted task in the DLQ holds its job RUNNING until an operator redrives it (the
// reconciler only reports it "stuck").
//
// Interleaving: a DynamoDB outage (the chaos run's restart: 12 s) spans a task's
// receives — with full jitter the backoffs of receives 1..4 can be a few seconds in all.
func TestReview3_JobReadFailureOnTheLastReceiveGoesToTheDLQ(t *testing.T) {
	jobs := failingJobRead{newFakeJobs()}
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 3, task.File{Bucket: "in", Key: "a.txt"}),
	}})
	require.NoError(t, err)
	assert.Empty(t, failedIDs(resp), "the ledger could not be read: the task should be sent again, not left to go to the DLQ on its last receive")
	assert.Len(t, e.queue.sent, 1)
}

// F3, job variant — the same file in two task messages of one job (a manifest naming
// it twice: different task ids), both on their last receive, in one batch; the first
// copy's commit is throttled by DynamoDB:
//
//   - m1: its item is infra-pending -> sent again (fresh receives);
//   - m2: its item shares `pending` without `infra` -> Retry on its last receive -> the
//     tasks DLQ. m2 is a task of its own, never counted: its job stays RUNNING until an
//     operator redrives it (the reconciler only reports it stuck).
//
// Consequence: stuck job.
func TestReview3_JobTaskWithACopyOfAnInfraWaitGoesToTheDLQ(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	e.ledger.failNext = &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException"}
	f := task.File{Bucket: "in", Key: "a.txt", ETag: "e-a.txt"}
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 3, f), jobMessage(t, "2", "m2", 3, f),
	}})
	require.NoError(t, err)
	require.Empty(t, jobs.reported, "neither task is counted yet")
	assert.Empty(t, failedIDs(resp), "task m2 only waits on the ledger like m1, yet it goes to the DLQ on its last receive, uncounted: its job never finishes")
}
