package worker

// Review 5: adversarial tests of c2ef13d (failedBefore: a redelivered file whose record
// is the same job's permanent failure of the same content is settled from the record,
// nothing read or written). Each test FAILS on the code it was written against; the
// comment above it gives the steps and the consequence.

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// review5Versioned is a versioned bucket: a GET naming a version id reads that
// version's bytes; everything else (HEAD If-Match, the output bucket) is the current
// object's, as in fakeS3.
type review5Versioned struct {
	*fakeS3
	versions map[string]review5Version // bucket/key#version
}

type review5Version struct {
	etag string
	data []byte
}

func (v *review5Versioned) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	if id := aws.ToString(in.VersionId); id != "" {
		ver, ok := v.versions[aws.ToString(in.Bucket)+"/"+aws.ToString(in.Key)+"#"+id]
		if !ok {
			return nil, &types.NoSuchKey{Message: aws.String("no such version")}
		}
		return &s3.GetObjectOutput{Body: io.NopCloser(bytes.NewReader(ver.data)), ContentLength: aws.Int64(int64(len(ver.data))), ETag: aws.String(`"` + ver.etag + `"`)}, nil
	}
	return v.fakeS3.GetObject(ctx, in, o...)
}

// F1 — a settled failure does not raise the record's sequencer, so a late event of an
// older revision replaces the newest revision's failure (newest wins broken).
//
// In a versioned bucket, k.log.gz gets three uploads: v1 (corrupt gzip, ETag e1,
// sequencer 0A), v2 (good gzip, e2, 0B), v3 (the very bytes of v1 again: ETag e1, 0C).
// The object is now v3 — corrupt.
//  1. v1's event: FAILED {v1, e1, 0A}.
//  2. v3's event, redelivered (its first delivery was killed before its record; with
//     DuplicateCheck "always" its first delivery does the same): the record is a FAILED
//     of the Same content (e1), outside any job, no leftover output → failedBefore
//     settles it. Nothing is written: the record keeps sequencer 0A. (The success path
//     calls Ledger.Advance for exactly this; processing it, as before c2ef13d, appends
//     the failure with sequencer 0C.)
//  3. v2's event arrives late (reordered, backed off): 0A < 0B, so it is the "newer"
//     revision: processed, its output PUT, its commit replaces the record.
//
// Consequence: the ledger says the key's newest revision is v2 SUCCEEDED and its output
// stands, while the object is v3, which failed: a stale output left standing, and v3's
// failure lost from the ledger. Before c2ef13d, step 2 wrote 0C and v2 was SUPERSEDED,
// its output removed.
func TestReview5_SettledFailureDoesNotAdvanceTheSequencer(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.DuplicateCheck = DuplicateCheckAuto })
	bad := []byte("not gzip at all")
	good := review3Gzip(t, "version two is fine")
	vs := &review5Versioned{fakeS3: e.s3, versions: map[string]review5Version{
		"in/k.log.gz#v1": {"e1", bad}, "in/k.log.gz#v2": {"e2", good}, "in/k.log.gz#v3": {"e1", bad},
	}}
	deps := e.h.deps
	deps.Objects = vs
	h, err := New(e.h.cfg, deps)
	require.NoError(t, err)
	e.h = h
	e.s3.overwrite("in", "k.log.gz", "e1", bad) // v3 is current

	handleAcked(t, e, versionEvent("m1", "in", "k.log.gz", "v1", "e1", "0A"))
	k := ledger.Key{Bucket: "in", Key: "k.log.gz"}
	require.Equal(t, ledger.StatusFailed, e.ledger.status[k])

	handleAcked(t, e, withReceive(versionEvent("m3", "in", "k.log.gz", "v3", "e1", "0C"), 2))
	handleAcked(t, e, versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B"))

	assert.Equal(t, ledger.StatusFailed, e.ledger.status[k], "the newest revision (v3) failed; v2 is older")
	assert.NotEqual(t, "v2", e.ledger.revs[k].VersionID, "an older revision replaced the newest one's record")
	_, _, stands := e.s3.get("out", "processed/k.log")
	assert.False(t, stands, "v2's output stands though the object is v3, which failed")
}

// F2 — for a split part (a job's own record, not ordered), failedBefore compares the
// record with itself, never with the item's revision: a part of new content is settled
// with the old content's failure.
//
// A split job's fan-out task runs, sends part 0 of big.log.gz pinned to ETag e1, and is
// killed before it counts itself. Part 0 (e1: corrupt) is processed: its job-scope
// record (in/big.log.gz#bytes=0-N, job:j1) is FAILED, its report an orphan (dropped). The
// object is overwritten (e2: good gzip, same size). The fan-out task's rerun HEADs e2 and
// sends part 0 pinned to e2 (another task id: a task is its content).
//  1. part 0 @e2: a job's task, so the ledger is read first; the key is not ordered, so
//     skipDone takes the FAILED record as the item's without comparing revisions
//     (it.recorded), and failedBefore checks rec.Rev().Same(head.Rev) — the record
//     against itself — and, the item naming an ETag, nothing else.
//  2. settled FAILED with e1's reason and code; nothing is read.
//
// Consequence: the job counts the part failed (CorruptContent, e1's message) although
// the content it was planned on (e2) is fine and was never read; the merged output is
// missing a part. Before c2ef13d it was processed and SUCCEEDED.
func TestReview5_SplitPartOfNewContentIsSettledWithTheOldFailure(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(c *Config, d *Deps) { d.Jobs = jobs; c.DuplicateCheck = DuplicateCheckAuto })
	good := review3Gzip(t, "line one\nline two\n")
	bad := bytes.Repeat([]byte("x"), len(good))
	n := int64(len(good))
	e.s3.overwrite("in", "big.log.gz", "e1", bad)
	part := func(etag string) task.File {
		return task.File{Bucket: "in", Key: "big.log.gz", ETag: etag, Size: n, Range: &task.Range{Start: 0, End: n, Part: 0}}
	}

	jobs.verdict["split-run1-p0"] = job.Orphan // its fan-out run was never counted
	handleAcked(t, e, jobMessage(t, "m1", "split-run1-p0", 1, part("e1")))
	require.Empty(t, jobs.reported)

	e.s3.overwrite("in", "big.log.gz", "e2", good)
	gets := 0
	e.s3.getErr = func(string) error { gets++; return nil }
	handleAcked(t, e, jobMessage(t, "m2", "split-run2-p0", 1, part("e2")))

	require.Len(t, jobs.reported, 1)
	assert.Equal(t, 1, gets, "the part of e2 is read")
	assert.EqualValues(t, 1, jobs.reported[0].Succeeded, "the part of e2 is fine: %+v", jobs.reported[0].Lines)
	assert.EqualValues(t, 0, jobs.reported[0].Failed)
}

// F3 (metric) — a copy of a settled failure in the same batch is counted a new failure.
//
// S3 sent a corrupt file's event twice (two messages, same object); both come back
// together after the failure was recorded (say the batch was killed before its acks).
//  1. the first copy is settled by failedBefore: dup, counted FilesDuplicate;
//  2. the second shares its outcome (dupOf) and shareDuplicates sets dup only for a
//     success: counted FilesFailed.
//
// Consequence: a batch that did no work and recorded nothing reports a new failure
// (FilesFailed 1, FilesDuplicate 1 for two copies of one recorded failure), and the
// count changes with how SQS happens to batch the copies (apart: 2 duplicates).
func TestReview5_CopyOfASettledFailureIsCountedFailed(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "broken.gz", []byte("not gzip at all"))
	handleAcked(t, e, s3Message("m1", 1, "in", "broken.gz"))
	before := metricSum(t, e, "FilesFailed")
	require.Equal(t, 1, before)

	_, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		s3Message("m1", 2, "in", "broken.gz"), s3Message("m1-copy", 2, "in", "broken.gz"),
	}})
	require.NoError(t, err)
	assert.Equal(t, 1, e.ledger.attempts[ledger.Key{Bucket: "in", Key: "broken.gz"}], "nothing recorded")
	assert.Equal(t, before, metricSum(t, e, "FilesFailed"), "no new failure")
	assert.Equal(t, 2, metricSum(t, e, "FilesDuplicate"))
}
