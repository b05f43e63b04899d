package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// slowJobs is the job engine with a realistic Report latency (a report part PUT, one
// DynamoDB settlement transaction, the job's check).
type slowJobs struct {
	*fakeJobs
	latency time.Duration
}

func (s slowJobs) Report(ctx context.Context, results []job.TaskResult) []job.Answer {
	time.Sleep(s.latency)
	return s.fakeJobs.Report(ctx, results)
}

// Review 6: the early completions run one at a time, each a Report (and a
// DeleteMessage), and nothing bounds them by the invocation's deadline: processAll
// waits for all of them, so a batch of many task messages whose files are done well
// within the invocation still overruns it. Lambda then kills the invocation before
// apply: its response is lost, and a task waiting for its parent (which must be sent
// again without using a receive) comes back as a redelivery using one instead.
func TestReview6EarlyCompletionsOverrunTheDeadline(t *testing.T) {
	for _, tc := range []struct {
		name          string
		completeAfter time.Duration
	}{{"only at the end of the batch", -1}, {"at once", time.Nanosecond}} {
		t.Run(tc.name, func(t *testing.T) {
			jobs := newFakeJobs()
			jobs.verdict["t-wait"] = job.WaitParent
			e := newEnv(t, func(c *Config, d *Deps) {
				d.Jobs = slowJobs{jobs, 100 * time.Millisecond}
				c.Concurrency = 16
				c.MinItemTime = 10 * time.Millisecond
				c.CompleteAfter = tc.completeAfter
			})
			var recs []events.SQSMessage
			for i := range 30 {
				key := fmt.Sprintf("f%02d.txt", i)
				e.s3.put("in", key, []byte("x"))
				recs = append(recs, jobMessage(t, fmt.Sprintf("m%02d", i), fmt.Sprintf("t%02d", i), 1, task.File{Bucket: "in", Key: key}))
			}
			e.s3.put("in", "w.txt", []byte("w"))
			recs = append(recs, jobMessage(t, "m-wait", "t-wait", 1, task.File{Bucket: "in", Key: "w.txt"}))

			ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
			defer cancel()
			deadline, _ := ctx.Deadline()
			resp, err := e.h.Handle(ctx, events.SQSEvent{Records: recs})
			returned := time.Now()
			require.NoError(t, err)
			assert.Empty(t, resp.BatchItemFailures)
			assert.True(t, returned.Before(deadline), "Handle returned %s after the invocation's deadline: Lambda kills it and its response is lost", returned.Sub(deadline))
			assert.Len(t, e.queue.sent, 1, "the task waiting for its parent is sent again")
		})
	}
}

// killPoint blocks the GET of key until the message with receipt handle rh is deleted
// (or wait passes), then records what a kill at that moment would leave: the handles
// deleted so far and the tasks counted so far.
type killPoint struct {
	deleted  []string
	reported int
}

func (e *env) killWhileReading(t *testing.T, jobs *fakeJobs, key, rh string, wait time.Duration) *killPoint {
	t.Helper()
	kp := &killPoint{}
	gone := make(chan struct{})
	e.queue.onDelete = func(h string) {
		if h == rh {
			close(gone)
		}
	}
	e.s3.getErr = func(k string) error {
		if k != key {
			return nil
		}
		select {
		case <-gone:
		case <-time.After(wait):
		}
		kp.deleted = e.queue.deletedHandles()
		jobs.mu.Lock()
		kp.reported = len(jobs.reported)
		jobs.mu.Unlock()
		return nil
	}
	return kp
}

// Review 6: Config.CompleteAfter says that once the invocation has run this long, each
// message whose files are all finished is completed at once. A message that finished
// before that moment never is: completer drops it (done is called only when its last
// file finishes). Here t1 finishes at once, the batch then runs on for over a second
// (CompleteAfter 300 ms), and a kill during t2's file would still bring t1 back,
// uncounted, using one of its receives (chaos run 16's stall).
func TestReview6MessageFinishedBeforeCompleteAfterIsNeverCompletedEarly(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Jobs = jobs
		c.Concurrency = 1
		c.CompleteAfter = 300 * time.Millisecond
	})
	e.s3.put("in", "a.txt", []byte("first"))
	e.s3.put("in", "b.txt", []byte("second"))
	kp := e.killWhileReading(t, jobs, "b.txt", "rh-m1", 1500*time.Millisecond)
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "m1", "t1", 1, task.File{Bucket: "in", Key: "a.txt"}),
		jobMessage(t, "m2", "t2", 1, task.File{Bucket: "in", Key: "b.txt"}),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Len(t, jobs.reported, 2, "both counted when the batch ends")
	assert.Equal(t, []string{"rh-m1"}, kp.deleted, "1.5 s into the batch (CompleteAfter 300 ms), t1's message, finished long before, is still there")
	assert.Equal(t, 1, kp.reported, "t1 counted before the kill")
}

// Review 6: a redelivered message whose files are all committed already (the killed
// delivery committed them, but was killed before its task was counted) is settled by
// skipDone and never goes through processAll, so it is never completed early: the next
// kill brings it back again, one more receive used each time, until the DLQ. This is
// exactly the message a kill leaves behind.
func TestReview6RedeliveredDuplicateMessageIsNeverCompletedEarly(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Jobs = jobs
		c.Concurrency = 1
		c.CompleteAfter = time.Nanosecond
	})
	e.s3.put("in", "a.txt", []byte("first"))
	e.s3.put("in", "b.txt", []byte("second"))
	a := task.File{Bucket: "in", Key: "a.txt", ETag: "e-a.txt"}
	// The first delivery of t1 committed a.txt; its invocation was killed before the count.
	k, rev := job.FileKey(a, "j1")
	_, err := e.ledger.WriteReplacing(context.Background(), ledger.Write{Key: k, Rev: rev, JobID: "j1", Status: ledger.StatusSucceeded,
		Result: ledger.Result{Outputs: []string{"s3://out/processed/a.txt"}}})
	require.NoError(t, err)

	kp := e.killWhileReading(t, jobs, "b.txt", "rh-m1", 1500*time.Millisecond)
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "m1", "t1", 2, a),
		jobMessage(t, "m2", "t2", 1, task.File{Bucket: "in", Key: "b.txt"}),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Len(t, jobs.reported, 2, "both counted when the batch ends")
	assert.Equal(t, []string{"rh-m1"}, kp.deleted, "t1's files were all done before the batch started, yet it is not completed while the batch runs")
	assert.Equal(t, 1, kp.reported, "t1 counted before the kill")
}
