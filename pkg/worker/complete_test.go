package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// A batch that runs long completes each message as soon as its files are finished: a
// kill later in the batch (here: while the second message's file is being read) finds
// the first task counted and its message deleted, so only the second comes back. Chaos
// run 16: batches of ten 100-file task messages came back whole after every kill.
func TestFinishedMessagesAreCompletedWhileTheBatchRuns(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Jobs = jobs
		c.Concurrency = 1
		c.CompleteAfter = time.Nanosecond
	})
	e.s3.put("in", "a.txt", []byte("first"))
	e.s3.put("in", "b.txt", []byte("second"))
	firstDone := make(chan struct{})
	e.queue.onDelete = func(rh string) {
		if rh == "rh-m1" {
			close(firstDone)
		}
	}
	var atKill struct {
		deleted  []string
		reported int
	}
	e.s3.getErr = func(key string) error {
		if key != "b.txt" {
			return nil
		}
		select {
		case <-firstDone:
		case <-time.After(5 * time.Second):
			return errors.New("the first message was not completed while the batch ran")
		}
		atKill.deleted = e.queue.deletedHandles()
		jobs.mu.Lock()
		atKill.reported = len(jobs.reported)
		jobs.mu.Unlock()
		return nil
	}
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "m1", "t1", 1, task.File{Bucket: "in", Key: "a.txt"}),
		jobMessage(t, "m2", "t2", 1, task.File{Bucket: "in", Key: "b.txt"}),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, []string{"rh-m1"}, atKill.deleted, "a kill here would bring back only m2")
	assert.Equal(t, 1, atKill.reported, "t1 counted before t2's file was read")
	assert.Equal(t, []string{"rh-m1"}, e.queue.deletedHandles(), "m2, finished last, is Lambda's to delete when the batch ends")
	require.Len(t, jobs.reported, 2, "each task counted once: the end of the batch does not report them again")
	assert.ElementsMatch(t, []string{"t1", "t2"}, []string{jobs.reported[0].TaskID, jobs.reported[1].TaskID})
}

// A batch that ends before CompleteAfter costs no extra call: Lambda deletes its
// messages, as before.
func TestShortBatchesDeleteNothingThemselves(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("first"))
	e.s3.put("in", "c.txt", []byte("third"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "m1", "t1", 1, task.File{Bucket: "in", Key: "a.txt"}),
		s3Message("m3", 1, "in", "c.txt"),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Empty(t, e.queue.deletedHandles())
	assert.Len(t, jobs.reported, 1)
}

// Only a message whose action is to acknowledge it is completed early: a task whose
// parent is not counted yet, or one with a file still pending, waits for the end of the
// batch and comes back as it did.
func TestOnlyAcknowledgedMessagesAreCompletedEarly(t *testing.T) {
	jobs := newFakeJobs()
	jobs.verdict["t1"] = job.WaitParent
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Jobs = jobs
		c.Concurrency = 1
		c.CompleteAfter = time.Nanosecond
	})
	for _, k := range []string{"a.txt", "gone.txt", "c.txt", "last.txt"} {
		e.s3.put("in", k, []byte(k))
	}
	swept := make(chan struct{})
	e.queue.onDelete = func(rh string) {
		if rh == "rh-m3" {
			close(swept)
		}
	}
	e.s3.getErr = func(key string) error {
		switch key {
		case "gone.txt":
			return errors.New("connection reset")
		case "last.txt": // held until a sweep has completed m3
			select {
			case <-swept:
			case <-time.After(5 * time.Second):
				return errors.New("m3 was not completed while the batch ran")
			}
		}
		return nil
	}
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "m1", "t1", 1, task.File{Bucket: "in", Key: "a.txt"}),
		s3Message("m2", 1, "in", "gone.txt"),
		s3Message("m3", 1, "in", "c.txt"),
		s3Message("m4", 1, "in", "last.txt"),
	}})
	require.NoError(t, err)
	assert.Equal(t, []string{"rh-m3"}, e.queue.deletedHandles(), "only the finished, acknowledged message")
	assert.Equal(t, []string{"m2"}, failedIDs(resp), "the pending file's message comes back")
	require.Len(t, e.queue.sent, 1, "the task waiting for its parent is sent again")
}

// hungLedger never answers a commit: it waits for its caller to give up.
type hungLedger struct{ Ledger }

func (hungLedger) WriteReplacing(ctx context.Context, _ ledger.Write) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

// A call that hangs until its context ends still lets the handler answer before the
// invocation's deadline (job.Deadlines): too late is a timeout, and the whole batch would
// come back, each message using a receive.
func TestHungCallStillAnswersBeforeTheDeadline(t *testing.T) {
	e := newEnv(t, func(_ *Config, d *Deps) { d.Ledger = hungLedger{d.Ledger} })
	e.s3.put("in", "a.txt", []byte("a"))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	deadline, _ := ctx.Deadline()
	resp, err := e.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{s3Message("m1", 1, "in", "a.txt")}})
	returned := time.Now()
	require.NoError(t, err)
	assert.True(t, returned.Before(deadline), "answered %s after the deadline", returned.Sub(deadline))
	assert.Len(t, append(failedIDs(resp), e.queue.sent...), 1, "the message whose commit hung comes back or is sent again")
}
