package worker

import (
	"bytes"
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// review9CompleteFails is S3 as an output without labels sees it (one written before
// multipart outputs were created with their metadata, when a CopyObject added it after
// the upload and could fail): CompleteMultipartUpload makes the object with no user
// metadata, then reports an error while onComplete says so (the object is there: a
// reply lost after the commit).
type review9CompleteFails struct {
	*fakeS3
	onComplete func() error
}

func (o *review9CompleteFails) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opt ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	out, err := o.fakeS3.CompleteMultipartUpload(ctx, in, opt...)
	if err != nil {
		return out, err
	}
	o.fakeS3.mu.Lock()
	delete(o.fakeS3.meta, aws.ToString(in.Bucket)+"/"+aws.ToString(in.Key))
	o.fakeS3.mu.Unlock()
	if f := o.onComplete; f != nil {
		if err := f(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Finding 1 (regression of review 8's fix 4): restore leaves ANY output without
// fileflow-revision alone, on every path, not only a confirm of the record's own
// revision. An older revision's writer that knows its own output just landed therefore
// leaves it under the newer record:
//
//  1. v2 (sequencer 0B) is committed, output v2's.
//  2. v1's late event (0A; duplicate check auto: an S3 event's first receive is not
//     read) is processed: its output is over a part, so multipart; CompleteMultipartUpload
//     lands v1's bytes with no metadata, and the CopyObject that would attach it fails
//     (a 500, as make chaos injects on 10% of calls). Since multipart outputs are created
//     with their labels, the test lands an unlabelled object and fails the completion.
//  3. run fails (retryable) -> record RETRYING -> SupersededError -> supersede -> restore:
//     the record is v2's and names the output, the output has no revision ->
//     "left alone" -> nil. v1 is acknowledged SUPERSEDED; v1's bytes stay at the key
//     under v2's record for good. Before c2c6c05 restore processed v2 again.
//
// The same holds for an older revision over 5 GiB (its output never gets metadata).
// Fix: leave an unlabelled output alone only when it can be the record's own (e.g. its
// Content-Length is the record's OutputSize and the record says its upload set no
// metadata), or only under it.confirm; otherwise process the newest revision again.
func TestReview9_UnlabelledOlderOutputLeftUnderNewerRecord(t *testing.T) {
	var w *review9CompleteFails
	e := newEnv(t, func(c *Config, d *Deps) {
		w = &review9CompleteFails{fakeS3: d.Objects.(*fakeS3)}
		d.Objects = w
		c.DuplicateCheck = DuplicateCheckAuto
	})
	e.s3.overwrite("in", "k.bin", "e2", []byte("version two"))
	handleAcked(t, e, versionEvent("m2", "in", "k.bin", "v2", "e2", "0B"))
	_, meta, _ := e.s3.get("out", "processed/k.bin")
	require.Equal(t, "v:v2", meta[MetaRevision])

	e.s3.overwrite("in", "k.bin", "e1", bytes.Repeat([]byte("1"), 5<<20+1))
	w.onComplete = func() error {
		w.onComplete = nil
		// The fake ignores version ids: from here a GET of v2 must read v2's bytes.
		e.s3.overwrite("in", "k.bin", "e2", []byte("version two"))
		return &smithy.GenericAPIError{Code: "InternalError", Message: "We encountered an internal error. Please try again."}
	}
	handleAll(t, e, versionEvent("m1", "in", "k.bin", "v1", "e1", "0A"))

	out, meta, _ := e.s3.get("out", "processed/k.bin")
	require.Equal(t, ledger.Revision{VersionID: "v2", ETag: "e2", Sequencer: ledger.NormalizeSequencer("0B")}, e.ledger.revs[ledger.Key{Bucket: "in", Key: "k.bin"}])
	assert.True(t, string(out) == "version two", "v1's bytes (%d) stand under v2's record (output revision %q)", len(out), meta[MetaRevision])
}

// review9Gets counts the ledger's Get calls (a strongly consistent GetItem of the whole
// record, its attempt history included).
type review9Gets struct {
	*fakeLedger
	gets int
}

func (l *review9Gets) Get(ctx context.Context, k ledger.Key) (ledger.Record, bool, error) {
	l.gets++
	return l.fakeLedger.Get(ctx, k)
}

// Finding 3 (cost, c2c6c05): a redelivered duplicate whose output is right was to cost
// "one output HeadObject" (docs/cost.md; c3b7f60 HEADed first and called restore only
// on a mismatch). c2c6c05 calls restore at once, which first reads the record again
// (ledger Get: a consistent GetItem of the full record, right after the batch's Lookup
// read it): every confirm costs a DynamoDB read plus the HEAD, on every redelivery and
// every copy sent again. TestRedeliveredDuplicateWithItsOutputCostsOneHead counts only
// the S3 calls. Fix: HEAD the output first (the derived key, or one Lookup projects the
// record's outputs), and call restore only when it is not the record's revision's.
func TestReview9_ConfirmReadsTheRecordAgain(t *testing.T) {
	var l *review9Gets
	e := newEnv(t, func(_ *Config, d *Deps) {
		l = &review9Gets{fakeLedger: d.Ledger.(*fakeLedger)}
		d.Ledger = l
	})
	e.s3.overwrite("in", "k.txt", "e1", []byte("version one"))
	ev := versionEvent("m1", "in", "k.txt", "v1", "e1", "0A")
	handleAcked(t, e, ev)
	gets := l.gets

	handleAcked(t, e, withReceive(ev, 2))
	assert.Equal(t, gets, l.gets, "the redelivered duplicate read its record again after the batch's Lookup")
}

// Finding 4 (cost on the normal path): a job's task whose parent is not counted yet
// (WaitParent: "usually one round" in every fan-out) is sent again after ParentWait. Its
// files all finished on the delivery before (reportJobs reports only finished messages,
// so every output check after a commit ran to its end), yet the copy is "delivered"
// (SentAgain > 0) and each of its files is confirmed: a ledger Get and an output HEAD per
// file, where it cost nothing before c3b7f60. Same for copies after NotCounted or
// CheckFailed. Fix: confirm only when the delivery before may have stopped between a
// commit and its check (a receive > 1, or a copy sent by backoff for a pending file),
// e.g. a message attribute on copies sent after the task's files all finished.
func TestReview9_ParentWaitCopyConfirmsEveryFile(t *testing.T) {
	jobs := newFakeJobs()
	var l *review9Gets
	e := newEnv(t, func(_ *Config, d *Deps) {
		d.Jobs = jobs
		l = &review9Gets{fakeLedger: d.Ledger.(*fakeLedger)}
		d.Ledger = l
	})
	e.s3.overwrite("in", "a.txt", "ea", []byte("a"))
	e.s3.overwrite("in", "b.txt", "eb", []byte("b"))
	files := []task.File{{Bucket: "in", Key: "a.txt", ETag: "ea"}, {Bucket: "in", Key: "b.txt", ETag: "eb"}}
	jobs.verdict["t1"] = job.WaitParent
	handleAcked(t, e, jobMessage(t, "1", "t1", 1, files...))
	require.Len(t, e.queue.sent, 1, "sent again: its parent is not counted yet")
	delete(jobs.verdict, "t1")
	heads, gets := e.s3.heads, l.gets

	handleAcked(t, e, e.queue.delivery(0, "copy-1"))
	require.Len(t, jobs.reported, 1)
	assert.Equal(t, [2]int{0, 0}, [2]int{e.s3.heads - heads, l.gets - gets},
		"the copy of a finished task paid [HEADs, ledger Gets] per file to confirm outputs its delivery before had checked")
}

// Finding 5 (stats): after a commit answered "already succeeded", checkAfterCommit's
// transient error leaves the item pending (it.wait) with it.dup still true: summarize
// counts it FilesDuplicate, not FilesRetrying, though its message comes back.
// Fix: clear it.dup in it.wait (or in checkAfterCommit's wait branch).
// review9ArmAfterPut arms review8HeadFails once an output PUT has landed: the HEAD that
// fails is the output check after the commit, not the upload's own owner check (the
// conditional PUT over an existing output HEADs it first).
type review9ArmAfterPut struct {
	*review8HeadFails
	arm bool
}

func (o *review9ArmAfterPut) PutObject(ctx context.Context, in *s3.PutObjectInput, opt ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	out, err := o.review8HeadFails.PutObject(ctx, in, opt...)
	if err == nil && o.arm && aws.ToString(in.Bucket) == "out" {
		o.arm = false
		o.mu.Lock()
		o.armed = true
		o.mu.Unlock()
	}
	return out, err
}

func TestReview9_WaitAfterAlreadySucceededCountsAsDuplicate(t *testing.T) {
	var heads *review9ArmAfterPut
	e := newEnv(t, func(c *Config, d *Deps) {
		heads = &review9ArmAfterPut{review8HeadFails: &review8HeadFails{fakeS3: d.Objects.(*fakeS3)}}
		d.Objects = heads
		c.DuplicateCheck = DuplicateCheckRedelivery
	})
	e.s3.overwrite("in", "k.txt", "e1", []byte("version one"))
	handleAcked(t, e, versionEvent("m1", "in", "k.txt", "v1", "e1", "0A"))

	heads.arm = true                                                              // the output check after the commit meets a 500
	resp := handleAll(t, e, versionEvent("m1b", "in", "k.txt", "v1", "e1", "0A")) // S3's event sent twice
	require.True(t, len(resp.BatchItemFailures) > 0 || len(e.queue.sent) > 0, "the file comes back")
	docs := batchMetrics(t, e)
	last := docs[len(docs)-1]
	assert.EqualValues(t, 1, last["FilesRetrying"], "retrying")
	assert.EqualValues(t, 0, last["FilesDuplicate"], "a file that comes back is not a settled duplicate")
}
