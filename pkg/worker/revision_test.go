package worker

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// versionEvent is an S3 event for one version of a key, with its sequencer.
func versionEvent(id, bucket, key, version, etag, seq string) events.SQSMessage {
	body, _ := json.Marshal(map[string]any{"Records": []any{map[string]any{
		"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
		"s3": map[string]any{"bucket": map[string]any{"name": bucket}, "object": map[string]any{
			"key": url.QueryEscape(key), "size": 1, "eTag": etag, "versionId": version, "sequencer": seq}},
	}}})
	return events.SQSMessage{MessageId: id, ReceiptHandle: "rh-" + id, Body: string(body), EventSourceARN: queueARN,
		Attributes: map[string]string{"ApproximateReceiveCount": "1"}}
}

// v1's event is handled after v2 was committed (reordered, backed off, redriven): it is
// recorded SUPERSEDED without any work and the output stays v2's.
func TestOlderRevisionAfterNewerIsSuperseded(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.overwrite("in", "k.txt", "e2", []byte("version two"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m2", "in", "k.txt", "v2", "e2", "0A0000000000000002")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	puts := e.s3.puts

	resp, err = e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m1", "in", "k.txt", "v1", "e1", "0A0000000000000001")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures, "acknowledged")
	assert.Equal(t, puts, e.s3.puts, "no work for the older revision")
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	assert.Equal(t, ledger.Revision{VersionID: "v2", ETag: "e2", Sequencer: ledger.NormalizeSequencer("0A0000000000000002")}, e.ledger.revs[k])
	assert.Contains(t, e.ledger.superseded[ledger.SupersededKey(k, ledger.Revision{VersionID: "v1"})], "superseded by revision v:v2")
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "version two", string(out))
	assert.Equal(t, "v:v2", meta[MetaRevision])
}

// raceLedger commits the newer revision (and its output) just before the older one's
// write: the older one's output landed last, over the newer's.
type raceLedger struct {
	*fakeLedger
	s3    *fakeS3
	newer ledger.Write
	done  bool
}

func (r *raceLedger) WriteReplacing(ctx context.Context, w ledger.Write) (bool, error) {
	if !r.done && w.Rev.VersionID == "v1" {
		r.done = true
		if err := r.fakeLedger.Write(ctx, r.newer); err != nil {
			return false, err
		}
	}
	return r.fakeLedger.WriteReplacing(ctx, w)
}

// v1 and v2 race: v2 commits first, v1's output lands last. v1's write is refused
// (older by sequencer), and v1 restores the output to v2's before it is acknowledged.
func TestRaceRestoresTheNewestOutput(t *testing.T) {
	e := newEnv(t, nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	v2 := ledger.Revision{VersionID: "v2", ETag: "e2", Sequencer: ledger.NormalizeSequencer("0B")}
	e.s3.overwrite("in", "k.txt", "e1", []byte("version one")) // what v1's worker reads
	rl := &raceLedger{fakeLedger: e.ledger, s3: e.s3, newer: ledger.Write{Key: k, Rev: v2, Status: ledger.StatusSucceeded,
		Result: ledger.Result{Outputs: []string{"s3://out/processed/k.txt"}}}}
	e.h.deps.Ledger = rl
	// Once v1's output is written, the object is v2 (the newest version).
	e.s3.getErr = nil
	origPuts := 0
	e.h.deps.Objects = &afterPut{fakeS3: e.s3, after: func() {
		if origPuts++; origPuts == 1 {
			e.s3.overwrite("in", "k.txt", "e2", []byte("version two"))
		}
	}}
	h, err := New(e.h.cfg, e.h.deps)
	require.NoError(t, err)
	resp, err := h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m1", "in", "k.txt", "v1", "e1", "0A")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "version two", string(out), "the output is the newest revision's again")
	assert.Equal(t, "v:v2", meta[MetaRevision])
	assert.Equal(t, v2, e.ledger.revs[k])
	assert.Contains(t, e.ledger.superseded[ledger.SupersededKey(k, ledger.Revision{VersionID: "v1"})], "superseded by revision v:v2")
}

// afterPut calls after once each PutObject has landed.
type afterPut struct {
	*fakeS3
	after func()
}

func (a *afterPut) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	out, err := a.fakeS3.PutObject(ctx, in, o...)
	a.after()
	return out, err
}

// A job's file (no sequencer) of other content than the key's record: it replaces the
// record only if it is still the object's content, checked with a conditional HEAD.
func TestUnorderedRevisionIsCheckedAgainstTheObject(t *testing.T) {
	e := newEnv(t, nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	e.s3.overwrite("in", "k.txt", "e1", []byte("one"))
	_, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m1", "in", "k.txt", "v1", "e1", "0A")}})
	require.NoError(t, err)

	// The object is now e2, and a task names e2: current, so it replaces e1.
	e.s3.overwrite("in", "k.txt", "e2", []byte("two"))
	body, _ := task.Message{Files: []task.File{{Bucket: "in", Key: "k.txt", ETag: "e2"}}}.Encode()
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{{MessageId: "t2", Body: string(body), EventSourceARN: queueARN}}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, "e2", e.ledger.revs[k].ETag)
	out, _, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "two", string(out))

	// A task naming e1 again: no longer current, superseded without work.
	puts := e.s3.puts
	body, _ = task.Message{Files: []task.File{{Bucket: "in", Key: "k.txt", ETag: "e1"}}}.Encode()
	resp, err = e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{{MessageId: "t1", Body: string(body), EventSourceARN: queueARN}}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, puts, e.s3.puts)
	assert.Equal(t, "e2", e.ledger.revs[k].ETag)
	assert.Contains(t, e.ledger.superseded[ledger.SupersededKey(k, ledger.Revision{ETag: "e1"})], "superseded")
}

// A replay processes a committed file again, once per replay id.
func TestReplayProcessesOncePerID(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "r.txt", []byte("r"))
	handle := func(id string, f task.File) {
		body, _ := task.Message{Files: []task.File{f}}.Encode()
		resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{{MessageId: id, Body: string(body), EventSourceARN: queueARN}}})
		require.NoError(t, err)
		require.Empty(t, resp.BatchItemFailures)
	}
	f := task.File{Bucket: "in", Key: "r.txt", ETag: "e-r.txt"}
	handle("first", f)
	handle("dup", f)
	assert.Equal(t, 1, e.s3.puts, "a duplicate does nothing")
	f.Replay = "replay-1"
	handle("replay", f)
	assert.Equal(t, 2, e.s3.puts, "the replay is processed")
	handle("replay-again", f)
	assert.Equal(t, 3, e.s3.puts, "its redelivery is processed (the ledger counts it once)")
	assert.Equal(t, 2, e.ledger.attempts[ledger.Key{Bucket: "in", Key: "r.txt"}])
}

// v1 of k.log.gz succeeded; v2, a corrupt gzip stream, fails for good and takes the
// key's record. No output may then stand for the key: v1's is removed (found by the
// chaos harness, seed 7 at 5,000 files: the output of an overwritten key's first
// version outlived its newest version's failure).
func TestNewerRevisionFailingRemovesTheOlderOutput(t *testing.T) {
	e := newEnv(t, nil)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("version one"))
	require.NoError(t, zw.Close())
	e.s3.overwrite("in", "k.log.gz", "e1", gz.Bytes())
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m1", "in", "k.log.gz", "v1", "e1", "0A")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)
	_, meta, ok := e.s3.get("out", "processed/k.log")
	require.True(t, ok, "v1's output")
	require.Equal(t, "v:v1", meta[MetaRevision])

	e.s3.overwrite("in", "k.log.gz", "e2", []byte("not gzip at all"))
	resp, err = e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures, "a permanent failure is acknowledged")
	rec, ok, err := e.ledger.Get(context.Background(), ledger.Key{Bucket: "in", Key: "k.log.gz"})
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, ledger.StatusFailed, rec.Status)
	assert.Equal(t, "v2", rec.Rev().VersionID)
	_, _, ok = e.s3.get("out", "processed/k.log")
	assert.False(t, ok, "v1's output is gone: the key's newest revision failed")
}

// The same, but v1's output is rewritten between the failure's HEAD and its delete (a
// newer writer at work): the delete is conditional on the ETag it saw, so the new
// output stays.
func TestLeftoverRemovalIsConditional(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("out", "processed/k.log", []byte("v1's output"))
	e.s3.meta["out/processed/k.log"] = map[string]string{MetaRevision: "v:v1", task.MetaInput: inputName(ledger.Key{Bucket: "in", Key: "k.log.gz"})}
	e.s3.overwrite("in", "k.log.gz", "e2", []byte("not gzip at all"))
	e.h.deps.Objects = &afterHead{fakeS3: e.s3, after: func(key string) {
		if key == "processed/k.log" {
			e.s3.overwrite("out", "processed/k.log", "newer", []byte("a newer writer's output"))
		}
	}}
	h, err := New(e.h.cfg, e.h.deps)
	require.NoError(t, err)
	resp, err := h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	out, _, ok := e.s3.get("out", "processed/k.log")
	require.True(t, ok, "the rewritten output is kept")
	assert.Equal(t, "a newer writer's output", string(out))
}

// afterHead calls after once each HeadObject has answered.
type afterHead struct {
	*fakeS3
	after func(key string)
}

func (a *afterHead) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	out, err := a.fakeS3.HeadObject(ctx, in, o...)
	a.after(aws.ToString(in.Key))
	return out, err
}

// lostCommit applies the first success of revision version and answers as the SDK's
// retry would after the response was lost: ErrAlreadySucceeded, the replace unknown.
type lostCommit struct {
	*fakeLedger
	version string
	done    bool
}

func (l *lostCommit) WriteReplacing(ctx context.Context, w ledger.Write) (bool, error) {
	if !l.done && w.Rev.VersionID == l.version && w.Status == ledger.StatusSucceeded {
		l.done = true
		if _, err := l.fakeLedger.WriteReplacing(ctx, w); err != nil {
			return false, err
		}
		return false, ledger.ErrAlreadySucceeded
	}
	return l.fakeLedger.WriteReplacing(ctx, w)
}

// v1 committed; v2's output is written, then v1's output lands over it (v1 putting its
// own output back, late); v2's commit replaces v1's record but its response is lost and
// the SDK's retry answers "already succeeded". v2 must still check the output: before,
// only a commit known to have replaced another revision did, and v1's output stood
// for good under v2's record (make chaos, 100,000 files: 2 keys).
func TestCommitWhoseResponseWasLostChecksTheOutput(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.overwrite("in", "k.txt", "e1", []byte("version one"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m1", "in", "k.txt", "v1", "e1", "0A")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)
	v1Meta := e.s3.meta["out/processed/k.txt"]

	e.s3.overwrite("in", "k.txt", "e2", []byte("version two"))
	lc := &lostCommit{fakeLedger: e.ledger, version: "v2"}
	deps := e.h.deps
	deps.Ledger = lc
	deps.Objects = &afterPut{fakeS3: e.s3, after: func() {
		if !lc.done { // v2's upload has landed: v1's late put-back lands over it
			e.s3.overwrite("out", "processed/k.txt", "late", []byte("version one"))
			e.s3.meta["out/processed/k.txt"] = v1Meta
		}
	}}
	h, err := New(e.h.cfg, deps)
	require.NoError(t, err)
	resp, err = h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m2", "in", "k.txt", "v2", "e2", "0B")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)
	require.True(t, lc.done)
	assert.Equal(t, "v2", e.ledger.revs[ledger.Key{Bucket: "in", Key: "k.txt"}].VersionID)
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "version two", string(out), "the output is the record's revision's")
	assert.Equal(t, "v:v2", meta[MetaRevision])
}
