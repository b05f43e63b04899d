package worker

// Review 4: adversarial tests of 9ed16e3 (a job file that names no revision, whose
// key's record is SUCCEEDED, is settled by one HEAD If-Match the record's ETag as a
// duplicate). Each test named TestReview4_Found_* FAILS on the code it was written
// against; the comment above it gives the interleaving and the consequence.

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// r4Objects is fakeS3 with a hook after a GET is answered (its body already taken)
// and one after a PUT.
type r4Objects struct {
	*fakeS3
	afterGet func(in *s3.GetObjectInput)
	afterPut func(in *s3.PutObjectInput)
}

func (o *r4Objects) GetObject(ctx context.Context, in *s3.GetObjectInput, opt ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := o.fakeS3.GetObject(ctx, in, opt...)
	if err == nil && o.afterGet != nil {
		o.afterGet(in)
	}
	return out, err
}

func (o *r4Objects) PutObject(ctx context.Context, in *s3.PutObjectInput, opt ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	out, err := o.fakeS3.PutObject(ctx, in, opt...)
	if err == nil && o.afterPut != nil {
		o.afterPut(in)
	}
	return out, err
}

// r4Ledger is fakeLedger with an outage: while down, writes and reads of records fail
// (a DynamoDB restart).
type r4Ledger struct {
	*fakeLedger
	down atomic.Bool
}

func (l *r4Ledger) WriteReplacing(ctx context.Context, w ledger.Write) (bool, error) {
	if l.down.Load() {
		return false, errConnReset
	}
	return l.fakeLedger.WriteReplacing(ctx, w)
}

func (l *r4Ledger) Get(ctx context.Context, k ledger.Key) (ledger.Record, bool, error) {
	if l.down.Load() {
		return ledger.Record{}, false, errConnReset
	}
	return l.fakeLedger.Get(ctx, k)
}

// Found (wrong output): the HEAD-only duplicate skips the output check that the
// duplicate of the commit path (ErrAlreadySucceeded -> restore) runs, and the
// redelivery that used to overwrite a stale output no longer writes anything.
//
//  1. Key in/k.txt holds e1. Job j1's task (a manifest row naming only the key), first
//     delivery J1: reads the ledger (nothing), GETs e1.
//  2. The object is overwritten with e2; its S3 event is processed at once: output
//     "two", record e2 SUCCEEDED.
//  3. J1 PUTs its output "one" (e1) over it. DynamoDB restarts: J1's commit fails, and
//     so does verifyOutput's Get (it returns quietly), so nothing restores the output.
//     The file waits on the infrastructure: its message is sent again.
//  4. J1's copy: the key's record is e2 SUCCEEDED, and HEAD If-Match e2 on the input
//     matches, so the new branch in skipDone counts the file a duplicate — no GET, no
//     PUT, no commit, and no restore. The job counts it SUCCEEDED.
//
// Consequence: the key's record says e2 SUCCEEDED, its output holds e1's bytes (and
// metadata e:e1), for good: every message is acknowledged and the e2 event is done.
// Before 9ed16e3 step 4 processed the file again (GET e2, PUT "two", commit ->
// ErrAlreadySucceeded -> restore), which repaired it. The same happens without an
// outage when J1's invocation is killed (timeout, chaos) between its PUT and its
// commit, or between a replacing commit and its restore.
//
// Fix: on the HEAD-matched duplicate, run the same output check as the commit path's
// duplicate (restore with it.rev = head.Rev: it is one ledger Get and one output HEAD,
// still far cheaper than GET+PUT), and if it fails leave the file pending rather than
// a duplicate; or only take the shortcut when the output's fileflow revision metadata
// (one HEAD of the output) already names the record's revision.
func TestReview4_Found_HeadDuplicateLeavesStaleOutputOfItsOwnEarlierDelivery(t *testing.T) {
	jobs := newFakeJobs()
	var objs *r4Objects
	var led *r4Ledger
	e := newEnv(t, func(c *Config, d *Deps) {
		c.DuplicateCheck = "" // the default (auto): a job's task message is read
		objs = &r4Objects{fakeS3: d.Objects.(*fakeS3)}
		led = &r4Ledger{fakeLedger: d.Ledger.(*fakeLedger)}
		d.Objects, d.Ledger, d.Jobs = objs, led, jobs
	})
	k := ledger.Key{Bucket: "in", Key: "k.txt"}
	e.s3.overwrite("in", "k.txt", "e1", []byte("one"))

	var gotE2 bool
	objs.afterGet = func(in *s3.GetObjectInput) {
		if gotE2 || aws.ToString(in.Key) != "k.txt" || in.IfMatch != nil {
			return
		}
		gotE2 = true
		// J1 has read e1. e2 is uploaded and its event handled.
		e.s3.overwrite("in", "k.txt", "e2", []byte("two"))
		handleAcked(t, e, versionEvent("m2", "in", "k.txt", "", "e2", "0B"))
		require.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
		out, _, _ := e.s3.get("out", "processed/k.txt")
		require.Equal(t, "two", string(out))
	}
	objs.afterPut = func(in *s3.PutObjectInput) {
		if in.Metadata[MetaRevision] == "e:e1" {
			led.down.Store(true) // J1's output is in place: DynamoDB restarts
		}
	}
	j1 := jobMessage(t, "t1", "task-1", 1, task.File{Bucket: "in", Key: "k.txt"})
	handleAcked(t, e, j1) // sent again: waits on the ledger
	require.True(t, gotE2, "the interleaving ran")
	require.Len(t, e.queue.sent, 1, "J1 is sent again")
	require.Empty(t, jobs.reported)
	led.down.Store(false)
	objs.afterGet, objs.afterPut = nil, nil

	again := events.SQSMessage{MessageId: "t1-again", ReceiptHandle: "rh-t1-again", Body: e.queue.sent[0], EventSourceARN: queueARN,
		Attributes:        map[string]string{"ApproximateReceiveCount": "1"},
		MessageAttributes: map[string]events.SQSMessageAttribute{job.AttrSentAgain: {StringValue: aws.String("1"), DataType: "Number"}}}
	handleAcked(t, e, again)
	require.Len(t, jobs.reported, 1)
	assert.EqualValues(t, 1, jobs.reported[0].Succeeded)

	require.Equal(t, ledger.StatusSucceeded, e.ledger.status[k])
	require.Equal(t, "e2", e.ledger.revs[k].ETag)
	out, meta, ok := e.s3.get("out", "processed/k.txt")
	require.True(t, ok)
	assert.Equal(t, "two", string(out), "the key's record is e2 SUCCEEDED: its output must hold e2's bytes")
	assert.Equal(t, "e:e2", meta[MetaRevision])
}
