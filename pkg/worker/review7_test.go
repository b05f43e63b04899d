package worker

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/task"
)

// ctxQueue is fakeQueue with the SDK's behaviour for a context that has ended: the
// call fails at once (the real client never sends it). hangDelete makes
// DeleteMessageBatch hang until its context ends (make chaos's hung SQS call), after
// closing deleting.
type ctxQueue struct {
	*fakeQueue
	hangDelete bool
	deleting   chan struct{}
}

func (q *ctxQueue) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, o ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if q.hangDelete {
		close(q.deleting)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return q.fakeQueue.DeleteMessageBatch(ctx, in, o...)
}

func (q *ctxQueue) SendMessage(ctx context.Context, in *sqs.SendMessageInput, o ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return q.fakeQueue.SendMessage(ctx, in, o...)
}

func (q *ctxQueue) ChangeMessageVisibilityBatch(ctx context.Context, in *sqs.ChangeMessageVisibilityBatchInput, o ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return q.fakeQueue.ChangeMessageVisibilityBatch(ctx, in, o...)
}

// ctxJobs is fakeJobs whose Report fails, as the engine's does (its report-part PUT),
// once its context has ended: nothing is counted.
type ctxJobs struct{ *fakeJobs }

func (j ctxJobs) Report(ctx context.Context, results []job.TaskResult) []job.Answer {
	if err := ctx.Err(); err != nil {
		out := make([]job.Answer, len(results))
		for i := range out {
			out[i] = job.Answer{Verdict: job.NotCounted, Err: err}
		}
		return out
	}
	return j.fakeJobs.Report(ctx, results)
}

// Review 7: the sweep's calls (a Report, a DeleteMessageBatch) run on the handler's
// whole context, and processAll waits for the sweep when its files are done. One early
// delete that hangs (an SQS call that hangs: make chaos) therefore holds the batch
// until the work's deadline (then one for everything: ReturnBy), and the end of the batch then runs with a context that has
// ended: the tasks not completed early are not counted, their copies are not sent, and
// they come back as batch item failures, each using a receive (on the last, to the
// DLQ), although every file was done with a second and a half to spare. Before the
// sweep, the same batch was counted and acknowledged whole. A best-effort call eats
// the margin kept for the final writes.
func TestReview7HungEarlyDeleteCostsTheRestOfTheBatch(t *testing.T) {
	jobs := newFakeJobs()
	q := &ctxQueue{fakeQueue: &fakeQueue{}, hangDelete: true, deleting: make(chan struct{})}
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Jobs = ctxJobs{jobs}
		d.Queue = q
		c.Concurrency = 1
		c.CompleteAfter = time.Nanosecond
		c.MinItemTime = 10 * time.Millisecond
	})
	e.s3.put("in", "a.txt", []byte("first"))
	e.s3.put("in", "b.txt", []byte("second"))
	e.s3.getErr = func(key string) error {
		if key == "b.txt" { // read once the sweep is deleting m1
			select {
			case <-q.deleting:
			case <-time.After(3 * time.Second):
			}
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := e.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "m1", "t1", 1, task.File{Bucket: "in", Key: "a.txt"}),
		jobMessage(t, "m2", "t2", 1, task.File{Bucket: "in", Key: "b.txt"}),
	}})
	require.NoError(t, err)
	var counted []string
	for _, r := range jobs.reported {
		counted = append(counted, r.TaskID)
	}
	assert.ElementsMatch(t, []string{"t1", "t2"}, counted, "t2's file was done 2 s before the deadline")
	assert.Empty(t, failedIDs(resp), "nothing needed to come back")
}

// Review 7: ReturnBy (now job.Deadlines) gave the whole handler one deadline, so whatever hangs until its
// context ends — here the commit, which runs on ctx by design — leaves job.Apply a
// context that has ended: the action the handler chose (Again: the file waits for the
// ledger and is sent again, using none of its receives) cannot be carried out, and the
// message comes back as a batch item failure instead, using a receive (on its last, to
// the DLQ), after the queue's own visibility timeout (the visibility change fails too).
// TestHungCallStillAnswersBeforeTheDeadline passes only because fakeQueue ignores its
// context.
func TestReview7ReturnByLeavesApplyNoTime(t *testing.T) {
	q := &ctxQueue{fakeQueue: &fakeQueue{}}
	e := newEnv(t, func(_ *Config, d *Deps) {
		d.Ledger = hungLedger{d.Ledger}
		d.Queue = q
	})
	e.s3.put("in", "a.txt", []byte("a"))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	resp, err := e.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{s3Message("m1", 1, "in", "a.txt")}})
	require.NoError(t, err)
	assert.Empty(t, failedIDs(resp), "a file that waits for the ledger uses none of its receives")
	assert.Len(t, q.sent, 1, "it is sent again")
}
