package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/task"
)

// review8Copy is rec as the queue delivers the n-th copy Apply sent of it (receive 1).
func review8Copy(rec events.SQSMessage, n int) events.SQSMessage {
	rec.Attributes = map[string]string{"ApproximateReceiveCount": "1"}
	rec.MessageAttributes = map[string]events.SQSMessageAttribute{
		job.AttrSentAgain: {DataType: "Number", StringValue: aws.String(fmt.Sprint(n))},
	}
	return rec
}

// review8Ends delivers rec (a redelivery), then each copy the worker sends of it, up to
// ten rounds, and says whether the message ever ends (acknowledged, no copy, no batch
// item failure).
func review8Ends(t *testing.T, e *env, rec events.SQSMessage) bool {
	t.Helper()
	for n := 1; n <= 10; n++ {
		sent := len(e.queue.sent)
		resp := handleAll(t, e, rec)
		if len(resp.BatchItemFailures) == 0 && len(e.queue.sent) == sent {
			return true
		}
		rec = review8Copy(rec, n)
	}
	return false
}

// The state chaos run 21 left, in a bucket without versioning: e3's record SUCCEEDED over
// e2's, and e2's output at the key (e2's writer put it back before e3's commit; e3's
// delivery was killed before its restore).
func review8ChaosLeftover(t *testing.T, e *env) events.SQSMessage {
	t.Helper()
	e.s3.overwrite("in", "k.txt", "e2", []byte("version two"))
	handleAcked(t, e, versionEvent("m2", "in", "k.txt", "", "e2", "0B"))
	v2Meta := e.s3.meta["out/processed/k.txt"]
	e.s3.overwrite("in", "k.txt", "e3", []byte("version three"))
	m3 := versionEvent("m3", "in", "k.txt", "", "e3", "0C")
	handleAcked(t, e, m3)
	e.s3.overwrite("out", "processed/k.txt", "late", []byte("version two"))
	e.s3.meta["out/processed/k.txt"] = v2Meta
	return m3
}

// Finding 1: a confirm whose restore fails for good never ends. After the chaos state,
// the source is deleted (a bucket without versioning: nothing can ever read e3 again).
// The redelivery of e3 confirms: the output is e2's -> restore -> GET NoSuchKey
// (permanent) -> it.wait (infra) -> the message is sent again, with a fresh receive
// count; every copy does the same (SentAgain > 0 -> confirm again), up to MaxSendAgain
// (720) copies, then its receives, then the DLQ: a message stuck for hours and
// dead-lettered for nothing an operator can fix, e2's output standing meanwhile.
// supersede handles the same failure (Permanent or last receive) by ending the file.
func TestReview8_ConfirmWithTheSourceDeletedIsSentAgainForEver(t *testing.T) {
	e := newEnv(t, nil)
	m3 := review8ChaosLeftover(t, e)
	e.s3.mu.Lock()
	delete(e.s3.objects, "in/k.txt")
	delete(e.s3.etags, "in/k.txt")
	e.s3.mu.Unlock()

	assert.True(t, review8Ends(t, e, withReceive(m3, 2)),
		"the newest revision's source is gone for good (NoSuchKey, permanent), yet its message is sent again on every delivery (%d copies)", len(e.queue.sent))
}

// Finding 2: a confirm on a job's file whose object changed since it was listed never
// ends, and puts the new content's bytes under the old revision's record. The job's
// task (file k.txt, ETag e3) committed e3; the output is not e3's (the chaos state);
// then the object is overwritten (e4: a job may read a bucket without events). The
// task is redelivered: confirm -> restore -> run(probe, f) with f == it.file (the
// record has no sequencer), so run's "a job's file changed since it was listed"
// branch reads e4 and writes e4's output (fileflow-revision e:e4), which is never the
// record's e3: restore goes round 3 times (3 full PUTs), fails "kept changing", the
// task is sent again, and every copy does the same. The task is never reported, so
// the job never finishes; each delivery costs three full reprocessings.
func TestReview8_ConfirmOfAJobFileChangedSinceListedNeverEnds(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.overwrite("in", "k.txt", "e3", []byte("version three"))
	f := task.File{Bucket: "in", Key: "k.txt", ETag: "e3"}
	handleAcked(t, e, jobMessage(t, "1", "t1", 1, f))
	require.Len(t, jobs.reported, 1)
	jobs.reported = nil
	e.s3.overwrite("out", "processed/k.txt", "late", []byte("version two"))
	e.s3.meta["out/processed/k.txt"] = map[string]string{MetaRevision: "e:e2", task.MetaInput: "in/k.txt"}
	e.s3.overwrite("in", "k.txt", "e4", []byte("version four"))
	puts := e.s3.puts

	ends := review8Ends(t, e, jobMessage(t, "1", "t1", 2, f))
	_, meta, _ := e.s3.get("out", "processed/k.txt")
	rec := e.ledger.revs[ledger.Key{Bucket: "in", Key: "k.txt"}]
	assert.True(t, ends && len(jobs.reported) == 1,
		"the task never ends (%d copies sent, %d reports, %d PUTs)", len(e.queue.sent), len(jobs.reported), e.s3.puts-puts)
	assert.Equal(t, task.MetaValue(rec.String()), meta[MetaRevision], "the output's revision is the record's")
}

// review8TextType answers every GET of the input bucket with Content-Type text/plain
// (the fake answers none).
type review8TextType struct{ *fakeS3 }

func (o review8TextType) GetObject(ctx context.Context, in *s3.GetObjectInput, opt ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := o.fakeS3.GetObject(ctx, in, opt...)
	if err == nil && aws.ToString(in.Bucket) == "in" {
		out.ContentType = aws.String("text/plain")
	}
	return out, err
}

// Finding 3: confirmOutput HEADs h.outputKey(it.file, job, it.pr) with it.pr nil, which
// matches the rules with no content type. Under a rule chosen by content type (here
// text/* is gzipped: the output is processed/k.txt.gz), that is another key
// (processed/k.txt, which does not exist): HEAD NotFound -> restore, whose record names
// no output there and which returns nil -> settled as a duplicate. The chaos state is
// left as it was: e2's output under e3's record, for good.
func TestReview8_ConfirmHeadsTheWrongKeyUnderAContentTypeRule(t *testing.T) {
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Objects = review8TextType{d.Objects.(*fakeS3)}
		c.Rules = process.Rules{{ContentType: "text/", Processors: []string{"checksum", "gzip"}}, {Processors: []string{"copy"}}}
	})
	e.s3.overwrite("in", "k.txt", "e2", []byte("version two"))
	handleAcked(t, e, versionEvent("m2", "in", "k.txt", "", "e2", "0B"))
	v2, v2Meta, ok := e.s3.get("out", "processed/k.txt.gz")
	require.True(t, ok, "the content-type rule's output")
	e.s3.overwrite("in", "k.txt", "e3", []byte("version three"))
	m3 := versionEvent("m3", "in", "k.txt", "", "e3", "0C")
	handleAcked(t, e, m3)
	_, m, _ := e.s3.get("out", "processed/k.txt.gz")
	require.Equal(t, "e:e3", m[MetaRevision], "e3's commit wrote its output")
	e.s3.overwrite("out", "processed/k.txt.gz", "late", v2)
	e.s3.meta["out/processed/k.txt.gz"] = v2Meta

	handleAcked(t, e, withReceive(m3, 2))
	_, meta, _ := e.s3.get("out", "processed/k.txt.gz")
	assert.Equal(t, "e:e3", meta[MetaRevision], "the redelivery confirmed a key that is not the output; e2's output stays under e3's record")
}

// review8NoMeta drops the user metadata of outputs: an output without labels, as upload
// left one over 5 GiB before multipart outputs were created with their metadata.
type review8NoMeta struct{ *fakeS3 }

func (o review8NoMeta) PutObject(ctx context.Context, in *s3.PutObjectInput, opt ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if aws.ToString(in.Bucket) == "out" {
		c := *in
		c.Metadata = nil
		in = &c
	}
	return o.fakeS3.PutObject(ctx, in, opt...)
}

// Finding 4: an output without fileflow-revision (over 5 GiB: upload cannot attach its
// metadata, and says so) is never "the record's revision's". Its redelivery (likely:
// such a file runs long) confirms: HEAD -> no revision -> restore -> reprocesses the
// whole file, which again has no metadata -> three times -> "kept changing" -> the file
// comes back (sent again), and every copy does the same: three full reprocessings of a
// > 5 GiB file per delivery, for ever; the message never ends.
func TestReview8_ConfirmOfAnOutputWithoutMetadataNeverEnds(t *testing.T) {
	e := newEnv(t, func(_ *Config, d *Deps) { d.Objects = review8NoMeta{d.Objects.(*fakeS3)} })
	e.s3.overwrite("in", "big.bin", "e1", []byte("a very large file"))
	m1 := versionEvent("m1", "in", "big.bin", "", "e1", "0A")
	handleAcked(t, e, m1)
	puts := e.s3.puts

	ends := review8Ends(t, e, withReceive(m1, 2))
	assert.True(t, ends, "the redelivery of a committed file whose output has no metadata never ends (%d copies, %d PUTs)", len(e.queue.sent), e.s3.puts-puts)
}

// review8HeadFails fails HEADs of the output key once armed (a 500, as make chaos injects).
type review8HeadFails struct {
	*fakeS3
	mu    sync.Mutex
	armed bool
}

func (o *review8HeadFails) HeadObject(ctx context.Context, in *s3.HeadObjectInput, opt ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	o.mu.Lock()
	armed := o.armed
	o.armed = false
	o.mu.Unlock()
	if armed && aws.ToString(in.Bucket) == "out" {
		return nil, &smithy.GenericAPIError{Code: "InternalError", Message: "We encountered an internal error. Please try again."}
	}
	return o.fakeS3.HeadObject(ctx, in, opt...)
}

// Finding 5 (the change's own scenario, without the kill): v3's commit replaces v2's
// record while v2's output is at the key (v2's writer put it back before v3's record
// was there); the output check after the commit (restore) meets one transient error
// (a 500 on its HEAD). commit only logs it: the item is succeeded, the message
// acknowledged, and nothing is ever delivered again to confirm. v2's output
// stays under v3's record for good — what the change fixes only for a kill.
func TestReview8_RestoreErrorAfterAReplacingCommitIsAcknowledged(t *testing.T) {
	e := newEnv(t, nil)
	heads := &review8HeadFails{fakeS3: e.s3}
	hook := &commitHook{fakeLedger: e.ledger, version: "v3"}
	deps := e.h.deps
	deps.Objects, deps.Ledger = heads, hook
	h, err := New(e.h.cfg, deps)
	require.NoError(t, err)
	e.h = h

	e.s3.overwrite("in", "k.txt", "e2", []byte("version two"))
	handleAcked(t, e, versionEvent("m2", "in", "k.txt", "v2", "e2", "0B"))
	v2, v2Meta, _ := e.s3.get("out", "processed/k.txt")
	hook.before = func() {
		e.s3.overwrite("out", "processed/k.txt", "late", v2) // v2's writer, before v3's record
		e.s3.meta["out/processed/k.txt"] = v2Meta
		heads.mu.Lock()
		heads.armed = true
		heads.mu.Unlock()
	}
	e.s3.overwrite("in", "k.txt", "e3", []byte("version three"))
	resp := handleAll(t, e, versionEvent("m3", "in", "k.txt", "v3", "e3", "0C"))
	require.True(t, hook.fired)

	_, meta, _ := e.s3.get("out", "processed/k.txt")
	comesBack := len(resp.BatchItemFailures) > 0 || len(e.queue.sent) > 0
	assert.True(t, meta[MetaRevision] == "v:v3" || comesBack,
		"the output is %s under v3's record, and the message was acknowledged: nothing will confirm it", meta[MetaRevision])
}
