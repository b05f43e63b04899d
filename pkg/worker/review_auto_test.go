package worker

// Review of 74e8418 (DuplicateCheck "auto": an S3 event is not read from the ledger
// before its work on its first receive). The tests named TestReviewAuto_Found_* failed on
// the code they were written against (fixed since: a success on its own unfinished
// record checks the key's output; a changed source of a committed revision is a
// duplicate): the comment above each gives the sequence and what went wrong, and says
// whether "always" had the same break. The others are the
// scenarios that held, kept as regression tests of "auto".

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// versionedS3 is fakeS3 with object versions: a GET naming a version reads that
// version (fakeS3 alone ignores VersionId and reads the current object), as S3 does in
// a versioned bucket, also after the current object was overwritten or deleted. It can
// fail or hold GETs, and run a hook after each PUT.
type versionedS3 struct {
	*fakeS3
	vmu      sync.Mutex
	versions map[string]map[string]objVersion // bucket/key -> version id -> content
	// getErr, if set, fails a GET before it is answered; beforeGet, if set, runs first.
	getErr    func(in *s3.GetObjectInput) error
	beforeGet func(in *s3.GetObjectInput)
	afterPut  func(in *s3.PutObjectInput)
}

type objVersion struct {
	etag string
	data []byte
}

// putVersion uploads a new version: it is kept, and becomes the current object.
func (v *versionedS3) putVersion(bucket, key, version, etag string, data []byte) {
	v.vmu.Lock()
	if v.versions == nil {
		v.versions = map[string]map[string]objVersion{}
	}
	if v.versions[bucket+"/"+key] == nil {
		v.versions[bucket+"/"+key] = map[string]objVersion{}
	}
	v.versions[bucket+"/"+key][version] = objVersion{etag: etag, data: data}
	v.vmu.Unlock()
	v.fakeS3.overwrite(bucket, key, etag, data)
}

func (v *versionedS3) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	if v.beforeGet != nil {
		v.beforeGet(in)
	}
	if v.getErr != nil {
		if err := v.getErr(in); err != nil {
			return nil, err
		}
	}
	if in.VersionId == nil {
		return v.fakeS3.GetObject(ctx, in, o...)
	}
	v.vmu.Lock()
	ov, ok := v.versions[aws.ToString(in.Bucket)+"/"+aws.ToString(in.Key)][aws.ToString(in.VersionId)]
	v.vmu.Unlock()
	if !ok {
		return nil, &smithy.GenericAPIError{Code: "NoSuchVersion", Message: "The specified version does not exist."}
	}
	return &s3.GetObjectOutput{Body: io.NopCloser(bytes.NewReader(ov.data)), ContentLength: aws.Int64(int64(len(ov.data))),
		ETag: aws.String(`"` + ov.etag + `"`), VersionId: in.VersionId}, nil
}

func (v *versionedS3) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	out, err := v.fakeS3.PutObject(ctx, in, o...)
	if err == nil && v.afterPut != nil {
		v.afterPut(in)
	}
	return out, err
}

// autoEnv is newEnv with the duplicate check given ("" : the default, auto) and a
// versioned bucket store.
func autoEnv(t *testing.T, check string, jobs Jobs) (*env, *versionedS3) {
	t.Helper()
	var vs *versionedS3
	e := newEnv(t, func(c *Config, d *Deps) {
		c.DuplicateCheck = check
		vs = &versionedS3{fakeS3: d.Objects.(*fakeS3)}
		d.Objects = vs
		if jobs != nil {
			d.Jobs = jobs
		}
	})
	if check == "" {
		require.Equal(t, DuplicateCheckAuto, e.h.cfg.DuplicateCheck)
	}
	return e, vs
}

func handleAll(t *testing.T, e *env, msgs ...events.SQSMessage) events.SQSEventResponse {
	t.Helper()
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: msgs})
	require.NoError(t, err)
	return resp
}

func handleAcked(t *testing.T, e *env, msgs ...events.SQSMessage) {
	t.Helper()
	require.Empty(t, handleAll(t, e, msgs...).BatchItemFailures)
}

func withReceive(m events.SQSMessage, n int) events.SQSMessage {
	m.Attributes = map[string]string{"ApproximateReceiveCount": fmt.Sprint(n)}
	return m
}

// batchMetrics are the EMF documents written so far, one a batch.
func batchMetrics(t *testing.T, e *env) []map[string]any {
	t.Helper()
	var docs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(e.metrics.String()), "\n") {
		if line == "" {
			continue
		}
		var doc map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &doc))
		docs = append(docs, doc)
	}
	return docs
}

// metricSum is a metric summed over every batch so far.
func metricSum(t *testing.T, e *env, name string) int {
	t.Helper()
	n := 0
	for _, d := range batchMetrics(t, e) {
		f, _ := d[name].(float64)
		n += int(f)
	}
	return n
}

func reviewGzip(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, err := zw.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return b.Bytes()
}

var errConnReset = errors.New("read tcp: connection reset by peer")

// ---------------------------------------------------------------------------------
// Breaks
// ---------------------------------------------------------------------------------

// olderDuplicateInNewerRetryWindow (versioned bucket):
//
//  1. v1's event: committed, the output is v1's.
//  2. v2 is uploaded; its event's GET fails (transient): record v2 RETRYING (it replaced
//     v1's record; the output is still v1's). The message comes back.
//  3. v2's redelivery processes v2 and PUTs v2's output; its commit is still to come.
//  4. Meanwhile S3's second copy of v1's event arrives (a first receive). Under "auto" it
//     is not read: v1 (still readable by its version id) is processed and its output
//     PUT over v2's. Its commit is refused (v1 is older than v2 by sequencer), so it
//     calls restore(), which reads the record — v2 RETRYING, "in flight: its writer puts
//     its output" — and does nothing.
//  5. v2 commits. The record was v2 RETRYING, so the write appends to v2's own record
//     (replaced=false) and commit() checks nothing.
//
// End: record v2 SUCCEEDED, output v1's content and metadata, for good (every message
// acknowledged). Under "always" step 4 reads v2's RETRYING record first and supersedes
// v1 without any work, so nothing is written (TestReviewAuto_HeldUnderAlways_...).
func olderDuplicateInNewerRetryWindow(t *testing.T, check string) {
	e, vs := autoEnv(t, check, nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	vs.putVersion("in", "k.txt", "v1", "e1", []byte("version one"))
	handleAcked(t, e, versionEvent("m1", "in", "k.txt", "v1", "e1", "0A"))

	vs.putVersion("in", "k.txt", "v2", "e2", []byte("version two"))
	vs.getErr = func(in *s3.GetObjectInput) error {
		if aws.ToString(in.VersionId) == "v2" {
			return errConnReset
		}
		return nil
	}
	resp := handleAll(t, e, versionEvent("m2", "in", "k.txt", "v2", "e2", "0B"))
	require.Equal(t, []string{"m2"}, failedIDs(resp), "v2 comes back")
	require.Equal(t, ledger.StatusRetrying, e.ledger.status[k])
	require.Equal(t, "v2", e.ledger.revs[k].VersionID)
	vs.getErr = nil

	fired := false
	vs.afterPut = func(in *s3.PutObjectInput) {
		if fired || in.Metadata[MetaRevision] != "v:v2" {
			return
		}
		fired = true
		// v2's output is in place, its commit not yet made: v1's duplicate event.
		handleAcked(t, e, versionEvent("m1-dup", "in", "k.txt", "v1", "e1", "0A"))
	}
	handleAcked(t, e, withReceive(versionEvent("m2", "in", "k.txt", "v2", "e2", "0B"), 2))
	require.True(t, fired, "the interleaving ran")

	require.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
	require.Equal(t, "v2", e.ledger.revs[k].VersionID)
	out, meta, ok := e.s3.get("out", "processed/k.txt")
	require.True(t, ok)
	assert.Equal(t, "version two", string(out), "the key's record is v2 SUCCEEDED: its output must be v2's")
	assert.Equal(t, "v:v2", meta[MetaRevision])
}

func TestReviewAuto_Found_OlderDuplicateOverwritesNewerOutputInItsRetryWindow(t *testing.T) {
	olderDuplicateInNewerRetryWindow(t, "")
}

func TestReviewAuto_HeldUnderAlways_OlderDuplicateInNewerRetryWindow(t *testing.T) {
	olderDuplicateInNewerRetryWindow(t, DuplicateCheckAlways)
}

// olderDuplicateAfterDeadLetteredNewer (versioned bucket), the same hole ending in a
// lost output:
//
//  1. v1 committed, output v1's.
//  2. v2 fails on its last receive: record v2 DEAD_LETTERED (v1's output removed), the
//     message goes to the DLQ.
//  3. The DLQ is redriven (a new message: first receive): v2 now works; its output is
//     PUT, its commit still to come.
//  4. S3's second copy of v1's event (first receive, not read under "auto"): v1 PUTs its
//     output over v2's; its commit is refused (older); restore() finds the record v2
//     DEAD_LETTERED and the output v1's: "a leftover" — it DELETES the output.
//  5. v2 commits: it appends to its own DEAD_LETTERED record (replaced=false), no check.
//
// End: record v2 SUCCEEDED naming s3://out/processed/k.txt, which does not exist (lost
// output; every message acknowledged). Under "always" step 4 supersedes v1 without
// work, and restore() sees v2's own output: nothing is deleted.
func olderDuplicateAfterDeadLetteredNewer(t *testing.T, check string) {
	e, vs := autoEnv(t, check, nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	vs.putVersion("in", "k.txt", "v1", "e1", []byte("version one"))
	handleAcked(t, e, versionEvent("m1", "in", "k.txt", "v1", "e1", "0A"))

	vs.putVersion("in", "k.txt", "v2", "e2", []byte("version two"))
	vs.getErr = func(in *s3.GetObjectInput) error {
		if aws.ToString(in.VersionId) == "v2" {
			return errConnReset
		}
		return nil
	}
	resp := handleAll(t, e, withReceive(versionEvent("m2", "in", "k.txt", "v2", "e2", "0B"), 3))
	require.Equal(t, []string{"m2"}, failedIDs(resp), "to the DLQ")
	require.Equal(t, ledger.StatusDeadLettered, e.ledger.status[k])
	_, _, ok := e.s3.get("out", "processed/k.txt")
	require.False(t, ok, "v1's output removed: the newest revision failed")
	vs.getErr = nil

	fired := false
	vs.afterPut = func(in *s3.PutObjectInput) {
		if fired || in.Metadata[MetaRevision] != "v:v2" {
			return
		}
		fired = true
		handleAcked(t, e, versionEvent("m1-dup", "in", "k.txt", "v1", "e1", "0A"))
	}
	handleAcked(t, e, versionEvent("m2-redriven", "in", "k.txt", "v2", "e2", "0B"))
	require.True(t, fired, "the interleaving ran")

	require.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
	require.Equal(t, "v2", e.ledger.revs[k].VersionID)
	require.Equal(t, []string{"s3://out/processed/k.txt"}, e.ledger.outputs[k])
	out, meta, ok := e.s3.get("out", "processed/k.txt")
	require.True(t, ok, "the key's record is v2 SUCCEEDED naming processed/k.txt, but the output is gone")
	assert.Equal(t, "version two", string(out))
	assert.Equal(t, "v:v2", meta[MetaRevision])
}

func TestReviewAuto_Found_OlderDuplicateDeletesNewerOutputAfterRedrive(t *testing.T) {
	olderDuplicateAfterDeadLetteredNewer(t, "")
}

func TestReviewAuto_HeldUnderAlways_OlderDuplicateAfterRedrive(t *testing.T) {
	olderDuplicateAfterDeadLetteredNewer(t, DuplicateCheckAlways)
}

// PRE-EXISTING (fails under "always" too): the root of the two breaks above without
// any duplicate. v1's first delivery reads the ledger (nothing yet) and is slow; v2's
// event fails once (record v2 RETRYING), its redelivery PUTs v2's output; v1's output
// lands after it, v1's commit is refused and its restore() sees RETRYING and leaves it;
// v2's commit appends to its own record and checks nothing. End: record v2 SUCCEEDED,
// output v1's. "auto" widens the window: under "always" the older revision must be in
// flight across v2's retry; under "auto" any later copy of its event (S3 duplicates, a
// DLQ redrive of it) does the same.
func TestReviewAuto_Found_PreExisting_SlowOlderRevisionInNewerRetryWindow(t *testing.T) {
	e, vs := autoEnv(t, DuplicateCheckAlways, nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	vs.putVersion("in", "k.txt", "v1", "e1", []byte("version one"))

	entered, release := make(chan struct{}), make(chan struct{})
	held := false
	vs.beforeGet = func(in *s3.GetObjectInput) {
		if aws.ToString(in.VersionId) == "v1" && !held {
			held = true
			close(entered)
			<-release
		}
	}
	done := make(chan events.SQSEventResponse, 1)
	go func() {
		resp, _ := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m1", "in", "k.txt", "v1", "e1", "0A")}})
		done <- resp
	}()
	<-entered // v1 read the ledger (no record) and is reading its source

	vs.putVersion("in", "k.txt", "v2", "e2", []byte("version two"))
	vs.getErr = func(in *s3.GetObjectInput) error {
		if aws.ToString(in.VersionId) == "v2" {
			return errConnReset
		}
		return nil
	}
	resp := handleAll(t, e, versionEvent("m2", "in", "k.txt", "v2", "e2", "0B"))
	require.Equal(t, []string{"m2"}, failedIDs(resp))
	vs.getErr = nil

	var v1resp events.SQSEventResponse
	fired := false
	vs.afterPut = func(in *s3.PutObjectInput) {
		if fired || in.Metadata[MetaRevision] != "v:v2" {
			return
		}
		fired = true
		close(release) // v1 goes on: its output lands after v2's, its commit is refused
		v1resp = <-done
	}
	handleAcked(t, e, withReceive(versionEvent("m2", "in", "k.txt", "v2", "e2", "0B"), 2))
	require.True(t, fired)
	require.Empty(t, v1resp.BatchItemFailures)

	require.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
	require.Equal(t, "v2", e.ledger.revs[k].VersionID)
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "version two", string(out), "record v2 SUCCEEDED, output v1's")
	assert.Equal(t, "v:v2", meta[MetaRevision])
}

// Unversioned (ETag-only) key. v1 (e1) is committed; the object is overwritten with e2,
// whose event has not been handled yet; S3's second copy of v1's event arrives (first
// receive). Under "auto" it is processed: its GET (If-Match e1) fails, so it is recorded
// SUPERSEDED — a superseded#e:e1 record beside the key's record, which is that very
// revision SUCCEEDED — and counted in FilesSuperseded. Under "always" the same copy
// is read, found committed, and counted as a duplicate. So one revision now has two
// outcomes in the metrics (FilesSucceeded once, FilesSuperseded once) and in the
// ledger (SUCCEEDED and SUPERSEDED); FilesDuplicate misses it. Wrong metric, new with
// auto; outputs and the key's record stay right (v2 replaces v1 when its event comes).
func duplicateAfterOverwriteIsADuplicate(t *testing.T, check string) {
	e, _ := autoEnv(t, check, nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	e.s3.overwrite("in", "k.txt", "e1", []byte("one"))
	handleAcked(t, e, versionEvent("m1", "in", "k.txt", "", "e1", "0A"))
	e.s3.overwrite("in", "k.txt", "e2", []byte("two")) // its event is on its way

	handleAcked(t, e, versionEvent("m1-dup", "in", "k.txt", "", "e1", "0A"))
	docs := batchMetrics(t, e)
	last := docs[len(docs)-1]
	assert.EqualValues(t, 1, last["FilesDuplicate"], "a second copy of a committed revision's event")
	assert.EqualValues(t, 0, last["FilesSuperseded"])
	assert.NotContains(t, e.ledger.superseded, ledger.SupersededKey(k, ledger.Revision{ETag: "e1"}),
		"no SUPERSEDED record for the revision that the key's record holds as SUCCEEDED")

	handleAcked(t, e, versionEvent("m2", "in", "k.txt", "", "e2", "0B"))
	out, _, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "two", string(out))
	assert.Equal(t, 2, metricSum(t, e, "FilesSucceeded"))
	assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
	assert.Equal(t, 0, metricSum(t, e, "FilesSuperseded"), "every revision was processed; none was superseded unprocessed")
}

func TestReviewAuto_Found_DuplicateAfterOverwriteCountedSuperseded(t *testing.T) {
	duplicateAfterOverwriteIsADuplicate(t, "")
}

func TestReviewAuto_HeldUnderAlways_DuplicateAfterOverwrite(t *testing.T) {
	duplicateAfterOverwriteIsADuplicate(t, DuplicateCheckAlways)
}

// ---------------------------------------------------------------------------------
// Scenarios that held under "auto" (regression tests)
// ---------------------------------------------------------------------------------

// S3 sends one event three times, each a first receive in its own batch, and once a
// redelivery: one output, one success record with one attempt, one FilesSucceeded;
// the copies are FilesDuplicate.
func TestReviewAuto_DuplicateFirstReceivesCountOnce(t *testing.T) {
	e, _ := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "a.txt"}
	e.s3.put("in", "a.txt", []byte("once"))
	handleAcked(t, e, s3Message("m1", 1, "in", "a.txt"))
	handleAcked(t, e, s3Message("m2", 1, "in", "a.txt"))
	handleAcked(t, e, s3Message("m3", 1, "in", "a.txt"), s3Message("m4", 1, "in", "a.txt"))
	handleAcked(t, e, s3Message("m1", 2, "in", "a.txt"))
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
	assert.Equal(t, 1, e.ledger.attempts[k])
	assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
	assert.Equal(t, 4, metricSum(t, e, "FilesDuplicate"))
	out, _, _ := e.s3.get("out", "processed/a.txt")
	assert.Equal(t, "once", string(out))
}

// A duplicate mid-flight: the second copy runs (and commits) between the first's PUT and
// its commit. Neither reads a record (the same under "always": nothing is committed
// yet). One record, one success, one duplicate.
func TestReviewAuto_DuplicateWhileFirstInFlight(t *testing.T) {
	e, vs := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "a.txt"}
	e.s3.put("in", "a.txt", []byte("once"))
	fired := false
	vs.afterPut = func(*s3.PutObjectInput) {
		if !fired {
			fired = true
			handleAcked(t, e, s3Message("m2", 1, "in", "a.txt"))
		}
	}
	handleAcked(t, e, s3Message("m1", 1, "in", "a.txt"))
	require.True(t, fired)
	assert.Equal(t, 1, e.ledger.attempts[k])
	assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
	assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
}

// Out of order, versioned: v2's event is handled first, then v1's (first receive).
// Under "auto" v1 is processed (its version is still readable) and its output written;
// its commit is refused and restore() puts v2's output back.
func TestReviewAuto_OlderVersionAfterNewerEndsWithNewerOutput(t *testing.T) {
	e, vs := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	vs.putVersion("in", "k.txt", "v1", "e1", []byte("version one"))
	vs.putVersion("in", "k.txt", "v2", "e2", []byte("version two"))
	handleAcked(t, e, versionEvent("m2", "in", "k.txt", "v2", "e2", "0B"))
	handleAcked(t, e, versionEvent("m1", "in", "k.txt", "v1", "e1", "0A"))
	assert.Equal(t, "v2", e.ledger.revs[k].VersionID)
	assert.Equal(t, 1, e.ledger.attempts[k])
	assert.Contains(t, e.ledger.superseded, ledger.SupersededKey(k, ledger.Revision{VersionID: "v1"}))
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "version two", string(out))
	assert.Equal(t, "v:v2", meta[MetaRevision])
	assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
	assert.Equal(t, 1, metricSum(t, e, "FilesSuperseded"))
}

// Out of order, unversioned (ETag only): v1's GET is pinned to its ETag and fails, so
// it is superseded without an output written.
func TestReviewAuto_OlderETagAfterNewerIsSupersededWithoutOutput(t *testing.T) {
	e, _ := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	e.s3.overwrite("in", "k.txt", "e2", []byte("two"))
	handleAcked(t, e, versionEvent("m2", "in", "k.txt", "", "e2", "0B"))
	puts := e.s3.puts
	handleAcked(t, e, versionEvent("m1", "in", "k.txt", "", "e1", "0A"))
	assert.Equal(t, puts, e.s3.puts)
	assert.Equal(t, "e2", e.ledger.revs[k].ETag)
	assert.Contains(t, e.ledger.superseded, ledger.SupersededKey(k, ledger.Revision{ETag: "e1"}))
	out, _, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "two", string(out))
}

// A second copy of an older revision's event after the newer one committed (versioned):
// the output ends as v2's, each revision has one success at most.
func TestReviewAuto_OlderDuplicateAfterNewerCommitted(t *testing.T) {
	e, vs := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	vs.putVersion("in", "k.txt", "v1", "e1", []byte("version one"))
	handleAcked(t, e, versionEvent("m1", "in", "k.txt", "v1", "e1", "0A"))
	vs.putVersion("in", "k.txt", "v2", "e2", []byte("version two"))
	handleAcked(t, e, versionEvent("m2", "in", "k.txt", "v2", "e2", "0B"))
	handleAcked(t, e, versionEvent("m1-dup", "in", "k.txt", "v1", "e1", "0A"))
	handleAcked(t, e, versionEvent("m2-dup", "in", "k.txt", "v2", "e2", "0B"))
	assert.Equal(t, "v2", e.ledger.revs[k].VersionID)
	assert.Equal(t, 1, e.ledger.attempts[k])
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "version two", string(out))
	assert.Equal(t, "v:v2", meta[MetaRevision])
	assert.Equal(t, 2, metricSum(t, e, "FilesSucceeded"))
	assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
}

// Deletes: a committed file's source is deleted, then a second copy of its event comes.
// Unversioned: its GET finds no key (a permanent failure) and the failure's write finds
// the revision committed: a duplicate; the output stays. Versioned (a delete marker):
// the version is still read, processed again, and counted a duplicate.
func TestReviewAuto_DuplicateAfterSourceDeleted(t *testing.T) {
	t.Run("unversioned", func(t *testing.T) {
		e, _ := autoEnv(t, "", nil)
		k := ledger.Key{Bucket: "in", Key: "k.txt"}
		e.s3.overwrite("in", "k.txt", "e1", []byte("one"))
		handleAcked(t, e, versionEvent("m1", "in", "k.txt", "", "e1", "0A"))
		_, err := e.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String("in"), Key: aws.String("k.txt")})
		require.NoError(t, err)
		handleAcked(t, e, versionEvent("m1-dup", "in", "k.txt", "", "e1", "0A"))
		assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
		assert.Equal(t, 1, e.ledger.attempts[k])
		out, _, ok := e.s3.get("out", "processed/k.txt")
		require.True(t, ok)
		assert.Equal(t, "one", string(out))
		assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
		assert.Equal(t, 0, metricSum(t, e, "FilesFailed"))
	})
	t.Run("versioned", func(t *testing.T) {
		e, vs := autoEnv(t, "", nil)
		k := ledger.Key{Bucket: "in", Key: "k.txt"}
		vs.putVersion("in", "k.txt", "v1", "e1", []byte("one"))
		handleAcked(t, e, versionEvent("m1", "in", "k.txt", "v1", "e1", "0A"))
		_, err := e.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String("in"), Key: aws.String("k.txt")})
		require.NoError(t, err)
		handleAcked(t, e, versionEvent("m1-dup", "in", "k.txt", "v1", "e1", "0A"))
		assert.Equal(t, 1, e.ledger.attempts[k])
		out, meta, ok := e.s3.get("out", "processed/k.txt")
		require.True(t, ok)
		assert.Equal(t, "one", string(out))
		assert.Equal(t, "v:v1", meta[MetaRevision])
		assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
	})
}

// The newest revision fails for good (v1's output removed); then a second copy of v1's
// event is processed (versioned, so v1 is still readable) and writes its output again:
// its refused commit finds the key's record v2 FAILED and removes it. No output stands.
func TestReviewAuto_OlderDuplicateAfterNewestFailed(t *testing.T) {
	e, vs := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "k.log.gz"}
	vs.putVersion("in", "k.log.gz", "v1", "e1", reviewGzip(t, "version one"))
	handleAcked(t, e, versionEvent("m1", "in", "k.log.gz", "v1", "e1", "0A"))
	vs.putVersion("in", "k.log.gz", "v2", "e2", []byte("not gzip at all"))
	handleAcked(t, e, versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B"))
	require.Equal(t, ledger.StatusFailed, e.ledger.status[k])
	_, _, ok := e.s3.get("out", "processed/k.log")
	require.False(t, ok)

	handleAcked(t, e, versionEvent("m1-dup", "in", "k.log.gz", "v1", "e1", "0A"))
	assert.Equal(t, ledger.StatusFailed, e.ledger.status[k])
	assert.Equal(t, "v2", e.ledger.revs[k].VersionID)
	_, _, ok = e.s3.get("out", "processed/k.log")
	assert.False(t, ok, "no output for a key whose newest revision failed")
	assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
	assert.Equal(t, 1, metricSum(t, e, "FilesFailed"))
	assert.Equal(t, 1, metricSum(t, e, "FilesSuperseded"))
}

// A revision DEAD_LETTERED on its last receive (its message in the DLQ); a second copy
// of its event (first receive, not read) now works and commits; the DLQ copy, redriven
// later (a first receive again), is a duplicate. One success.
func TestReviewAuto_DeadLetteredThenDuplicateThenRedrive(t *testing.T) {
	e, vs := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	e.s3.overwrite("in", "k.txt", "e1", []byte("one"))
	vs.getErr = func(*s3.GetObjectInput) error { return errConnReset }
	resp := handleAll(t, e, withReceive(versionEvent("m1", "in", "k.txt", "", "e1", "0A"), 3))
	require.Equal(t, []string{"m1"}, failedIDs(resp))
	require.Equal(t, ledger.StatusDeadLettered, e.ledger.status[k])
	vs.getErr = nil

	handleAcked(t, e, versionEvent("m1-dup", "in", "k.txt", "", "e1", "0A"))
	handleAcked(t, e, versionEvent("m1-redriven", "in", "k.txt", "", "e1", "0A"))
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
	assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
	assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
	out, _, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "one", string(out))
}

// An S3 event and a job's task for the same key and content, both orders. The job's
// file is read first (no work when committed before); the S3 event after the job is
// processed again and loses the conditional commit. One record with one success; the
// job counts its file once.
func TestReviewAuto_S3EventAndJobTaskForTheSameKey(t *testing.T) {
	t.Run("event first", func(t *testing.T) {
		jobs := newFakeJobs()
		e, _ := autoEnv(t, "", jobs)
		k := ledger.Key{Bucket: "in", Key: "a.txt"}
		e.s3.put("in", "a.txt", []byte("a"))
		handleAcked(t, e, s3Message("m1", 1, "in", "a.txt"))
		puts := e.s3.puts
		handleAcked(t, e, jobMessage(t, "t1", "task-1", 1, task.File{Bucket: "in", Key: "a.txt", ETag: "e-a.txt"}))
		assert.Equal(t, puts, e.s3.puts, "the job's file is read: committed, no work")
		require.Len(t, jobs.reported, 1)
		assert.EqualValues(t, 1, jobs.reported[0].Succeeded)
		assert.Equal(t, 1, e.ledger.attempts[k])
	})
	t.Run("job first", func(t *testing.T) {
		jobs := newFakeJobs()
		e, _ := autoEnv(t, "", jobs)
		k := ledger.Key{Bucket: "in", Key: "a.txt"}
		e.s3.put("in", "a.txt", []byte("a"))
		handleAcked(t, e, jobMessage(t, "t1", "task-1", 1, task.File{Bucket: "in", Key: "a.txt", ETag: "e-a.txt"}))
		handleAcked(t, e, s3Message("m1", 1, "in", "a.txt"))
		require.Len(t, jobs.reported, 1)
		assert.EqualValues(t, 1, jobs.reported[0].Succeeded)
		assert.Equal(t, 1, e.ledger.attempts[k])
		assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
		assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
	})
	t.Run("both in one batch", func(t *testing.T) {
		jobs := newFakeJobs()
		e, _ := autoEnv(t, "", jobs)
		k := ledger.Key{Bucket: "in", Key: "a.txt"}
		e.s3.put("in", "a.txt", []byte("a"))
		handleAcked(t, e, s3Message("m1", 1, "in", "a.txt"),
			jobMessage(t, "t1", "task-1", 1, task.File{Bucket: "in", Key: "a.txt", ETag: "e-a.txt"}))
		require.Len(t, jobs.reported, 1)
		assert.EqualValues(t, 1, jobs.reported[0].Succeeded)
		assert.Equal(t, 1, e.ledger.attempts[k])
		assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
	})
}

// Job files that name no revision (a manifest row with only a key): a re-run of the job
// processes them again (nothing to compare with the record before the GET) and finds
// them committed. One record, each task counted once.
func TestReviewAuto_JobFileWithoutRevisionRerun(t *testing.T) {
	jobs := newFakeJobs()
	e, _ := autoEnv(t, "", jobs)
	k := ledger.Key{Bucket: "in", Key: "a.txt"}
	e.s3.put("in", "a.txt", []byte("a"))
	handleAcked(t, e, jobMessage(t, "t1", "task-1", 1, task.File{Bucket: "in", Key: "a.txt"}))
	handleAcked(t, e, jobMessage(t, "t2", "task-2", 1, task.File{Bucket: "in", Key: "a.txt"}))
	require.Len(t, jobs.reported, 2)
	assert.EqualValues(t, 1, jobs.reported[0].Succeeded)
	assert.EqualValues(t, 1, jobs.reported[1].Succeeded)
	assert.Equal(t, 1, e.ledger.attempts[k])
	assert.Equal(t, "e-a.txt", e.ledger.revs[k].ETag)
	assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
}

// The same content uploaded again as a new version (same ETag, later sequencer): under
// "auto" it is processed and finds the content committed; restore() writes the output
// again under the record's version. One success, the output the record's.
func TestReviewAuto_SameContentNewVersion(t *testing.T) {
	e, vs := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	vs.putVersion("in", "k.txt", "v1", "e1", []byte("same"))
	handleAcked(t, e, versionEvent("m1", "in", "k.txt", "v1", "e1", "0A"))
	vs.putVersion("in", "k.txt", "v3", "e1", []byte("same"))
	handleAcked(t, e, versionEvent("m3", "in", "k.txt", "v3", "e1", "0C"))
	assert.Equal(t, 1, e.ledger.attempts[k])
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "same", string(out))
	assert.Equal(t, "v:"+e.ledger.revs[k].VersionID, meta[MetaRevision], "the output names the record's revision")
	assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
	assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
}

// The commit fails (the ledger is down) after the output was written: the message is
// sent again (a first receive again, so not read under "auto"), processed again, and
// committed once.
func TestReviewAuto_SentAgainAfterCommitFailure(t *testing.T) {
	e, _ := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "a.txt"}
	e.s3.put("in", "a.txt", []byte("a"))
	e.ledger.failNext = errConnReset
	handleAcked(t, e, s3Message("m1", 1, "in", "a.txt"))
	require.Len(t, e.queue.sent, 1, "sent again, spending no receive")
	_, ok := e.ledger.status[k]
	require.False(t, ok)

	again := events.SQSMessage{MessageId: "m1-again", ReceiptHandle: "rh-m1-again", Body: e.queue.sent[0], EventSourceARN: queueARN,
		Attributes:        map[string]string{"ApproximateReceiveCount": "1"},
		MessageAttributes: map[string]events.SQSMessageAttribute{job.AttrSentAgain: {StringValue: aws.String("1"), DataType: "Number"}}}
	handleAcked(t, e, again)
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
	assert.Equal(t, 1, e.ledger.attempts[k])
	assert.Equal(t, 1, metricSum(t, e, "FilesSucceeded"))
}

// A second copy of v1's event is processed while v2 is RETRYING (its output PUT over
// nothing newer: v2 wrote none yet); v2 then fails for good on its redelivery and
// removes v1's output. No output stands for the key.
func TestReviewAuto_OlderDuplicateWhileNewerRetryingThenNewerFails(t *testing.T) {
	e, vs := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "k.log.gz"}
	vs.putVersion("in", "k.log.gz", "v1", "e1", reviewGzip(t, "version one"))
	handleAcked(t, e, versionEvent("m1", "in", "k.log.gz", "v1", "e1", "0A"))
	vs.putVersion("in", "k.log.gz", "v2", "e2", []byte("not gzip at all"))
	vs.getErr = func(in *s3.GetObjectInput) error {
		if aws.ToString(in.VersionId) == "v2" {
			return errConnReset
		}
		return nil
	}
	require.Equal(t, []string{"m2"}, failedIDs(handleAll(t, e, versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B"))))
	vs.getErr = nil

	handleAcked(t, e, versionEvent("m1-dup", "in", "k.log.gz", "v1", "e1", "0A"))
	handleAcked(t, e, withReceive(versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B"), 2))
	assert.Equal(t, ledger.StatusFailed, e.ledger.status[k])
	_, _, ok := e.s3.get("out", "processed/k.log")
	assert.False(t, ok, "no output for a key whose newest revision failed")
}

// A revision that failed for good, then a second copy of its event (first receive): it
// is processed again (as under "always", which does not settle FAILED records before
// the work either) and fails again. One record, no output; no success counted.
func TestReviewAuto_DuplicateOfFailedRevision(t *testing.T) {
	e, _ := autoEnv(t, "", nil)
	k := ledger.Key{Bucket: "in", Key: "k.log.gz"}
	e.s3.overwrite("in", "k.log.gz", "e1", []byte("not gzip at all"))
	handleAcked(t, e, versionEvent("m1", "in", "k.log.gz", "", "e1", "0A"))
	handleAcked(t, e, versionEvent("m1-dup", "in", "k.log.gz", "", "e1", "0A"))
	assert.Equal(t, ledger.StatusFailed, e.ledger.status[k])
	_, _, ok := e.s3.get("out", "processed/k.log")
	assert.False(t, ok)
	assert.Equal(t, 0, metricSum(t, e, "FilesSucceeded"))
}

// Chaos run 10 (seed 20261130, 100,000 files): a manifest job's task messages name no
// revision, so every redelivery did all of its files' work again (a GET, a PUT and a
// refused commit each) though a killed delivery had committed most of them. With a kill
// every few seconds, a batch of ten such messages never finished inside one life: five
// receives, the DLQ, redriven, the same again, and the job never finished. A key whose
// record is a success is now settled by one HEAD: its content is still the recorded
// one, so the file is a duplicate; only changed content is processed again.
func TestRedeliveredJobFilesWithoutRevisionAreNotRedone(t *testing.T) {
	jobs := newFakeJobs()
	e, _ := autoEnv(t, "", jobs)
	files := []task.File{{Bucket: "in", Key: "a.txt"}, {Bucket: "in", Key: "b.txt"}, {Bucket: "in", Key: "c.txt"}}
	for _, f := range files {
		e.s3.put("in", f.Key, []byte(f.Key))
	}
	handleAcked(t, e, jobMessage(t, "t1", "task-1", 1, files...)) // committed; then "killed" before its ack
	putsBefore := e.s3.puts
	e.s3.overwrite("in", "c.txt", "e-c2", []byte("c, changed"))
	gets := 0
	e.s3.getErr = func(string) error { gets++; return nil }

	handleAcked(t, e, jobMessage(t, "t1", "task-1", 2, files...))
	assert.Equal(t, 1, gets, "only the changed file is read again")
	assert.Equal(t, putsBefore+1, e.s3.puts, "only the changed file's output is written again")
	require.Len(t, jobs.reported, 2)
	assert.EqualValues(t, 3, jobs.reported[1].Succeeded)
	for _, f := range files[:2] {
		k := ledger.Key{Bucket: "in", Key: f.Key}
		assert.Equal(t, 1, e.ledger.attempts[k], f.Key)
		assert.Equal(t, "e-"+f.Key, e.ledger.revs[k].ETag, f.Key)
	}
	assert.Equal(t, "e-c2", e.ledger.revs[ledger.Key{Bucket: "in", Key: "c.txt"}].ETag, "the changed content is recorded")
	out, _, _ := e.s3.get("out", "processed/c.txt")
	assert.Equal(t, "c, changed", string(out))
	assert.Equal(t, 2, metricSum(t, e, "FilesDuplicate"))
}

// headsInFlight is the fake S3 with HEADs that take a moment, counting how many run at
// once.
type headsInFlight struct {
	*fakeS3
	now, most atomic.Int32
}

func (h *headsInFlight) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	n := h.now.Add(1)
	defer h.now.Add(-1)
	for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
	}
	time.Sleep(5 * time.Millisecond)
	return h.fakeS3.HeadObject(ctx, in, o...)
}

// Chaos run 12: the HEADs that settle key-only files ran one after another before the
// work, and a batch of 1,000 such files did not get past them between kills. They run
// with the work, as many files at once as the worker's concurrency.
func TestKeyOnlyFilesAreSettledInParallel(t *testing.T) {
	jobs := newFakeJobs()
	var heads *headsInFlight
	e := newEnv(t, func(_ *Config, d *Deps) {
		heads = &headsInFlight{fakeS3: d.Objects.(*fakeS3)}
		d.Objects, d.Jobs = heads, jobs
	})
	var files []task.File
	for i := range 16 {
		f := task.File{Bucket: "in", Key: fmt.Sprintf("p%02d.txt", i)}
		e.s3.put("in", f.Key, []byte(f.Key))
		files = append(files, f)
	}
	handleAcked(t, e, jobMessage(t, "t1", "task-1", 1, files...))
	puts := e.s3.puts
	heads.most.Store(0)
	handleAcked(t, e, jobMessage(t, "t1", "task-1", 2, files...))
	assert.Equal(t, puts, e.s3.puts, "nothing written again")
	assert.Greater(t, heads.most.Load(), int32(1), "the HEADs run in parallel")
	require.Len(t, jobs.reported, 2)
	assert.EqualValues(t, 16, jobs.reported[1].Succeeded)
}
