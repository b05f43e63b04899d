package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// fakeJobs is the job engine as the worker sees it: statuses, outcomes by task id, and
// what was written and checked.
type fakeJobs struct {
	mu       sync.Mutex
	status   ledger.JobStatus
	after    ledger.JobStatus // if set, the status from the second read on
	reads    int
	outcome  map[string]ledger.Outcome // by task id; default Counted
	settled  []ledger.Settlement
	parts    map[string][]job.Line
	checks   int
	checkErr error
}

func newFakeJobs() *fakeJobs {
	return &fakeJobs{status: ledger.JobRunning, outcome: map[string]ledger.Outcome{}, parts: map[string][]job.Line{}}
}

func (j *fakeJobs) Job(_ context.Context, id string) (ledger.Job, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.reads++
	if j.after != "" && j.reads > 1 {
		return ledger.Job{ID: id, Status: j.after, Shards: 4}, nil
	}
	return ledger.Job{ID: id, Status: j.status, Shards: 4}, nil
}

func (j *fakeJobs) WritePart(_ context.Context, _, taskID string, lines []job.Line) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.parts[taskID] = lines
	return nil
}

func (j *fakeJobs) HasPart(_ context.Context, _, taskID string) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.parts[taskID]
	return ok, nil
}

func (j *fakeJobs) Settle(_ context.Context, all []ledger.Settlement) ([]ledger.Outcome, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]ledger.Outcome, len(all))
	for i, s := range all {
		out[i] = j.outcome[s.TaskID]
		if out[i] == 0 {
			out[i] = ledger.Counted
			j.settled = append(j.settled, s)
		}
	}
	return out, nil
}

func (j *fakeJobs) Check(context.Context, string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.checks++
	return j.checkErr
}

func jobMessage(t *testing.T, id, taskID string, receive int, files ...task.File) events.SQSMessage {
	t.Helper()
	body, err := task.Message{JobID: "j1", TaskID: taskID, Parent: task.RootTask, Files: files}.Encode()
	require.NoError(t, err)
	return events.SQSMessage{MessageId: id, Body: string(body), ReceiptHandle: "rh-" + id, EventSourceARN: queueARN,
		Attributes: map[string]string{"ApproximateReceiveCount": fmt.Sprint(receive)}}
}

func TestJobTasksAreSettledOncePerBatch(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	e.s3.put("in", "b.exe", []byte("MZ"))
	e.s3.put("in", "c.txt", []byte("c"))
	jobs.outcome["m-pending"] = ledger.ParentPending
	jobs.outcome["m-orphan"] = ledger.Orphan
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m-ok", 1, task.File{Bucket: "in", Key: "a.txt", Size: 1}, task.File{Bucket: "in", Key: "b.exe", Size: 2}),
		jobMessage(t, "2", "m-pending", 1, task.File{Bucket: "in", Key: "c.txt", Size: 1}),
		jobMessage(t, "3", "m-orphan", 1, task.File{Bucket: "in", Key: "c.txt", Size: 1}),
	}})
	require.NoError(t, err)
	assert.Empty(t, failedIDs(resp), "the task whose parent is not counted is sent again, delayed, without using a receive")
	require.Len(t, e.queue.sent, 1)
	assert.Contains(t, e.queue.sent[0], `"task_id":"m-pending"`)
	require.Len(t, jobs.settled, 1)
	s := jobs.settled[0]
	assert.Equal(t, ledger.Settlement{JobID: "j1", TaskID: "m-ok", Parent: task.RootTask, Shards: 4, Succeeded: 1, Failed: 1, Bytes: 1}, s)
	lines := jobs.parts["m-ok"]
	require.Len(t, lines, 2)
	assert.Equal(t, job.Line{Bucket: "in", Key: "a.txt", Status: job.Succeeded, HTTPStatus: 200, Message: "s3://out/processed/a.txt"}, lines[0])
	assert.Equal(t, "Rejected", lines[1].ErrorCode)
	assert.Contains(t, lines[1].Message, "executables are not accepted")
	assert.NotContains(t, jobs.parts, "m-orphan", "an orphan writes no report lines")
	assert.NotContains(t, jobs.parts, "m-pending")
	assert.Equal(t, 1, jobs.checks, "one check per job per batch")
}

func TestJobTaskOfStoppedJobIsSkipped(t *testing.T) {
	jobs := newFakeJobs()
	jobs.status = ledger.JobCancelled
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 1, task.File{Bucket: "in", Key: "a.txt"}),
		s3Message("2", 1, "in", "a.txt"), // the same file from an S3 event: still processed
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Empty(t, jobs.settled)
	assert.Equal(t, 1, e.s3.puts, "the S3 event's copy is processed; the job's is not")
}

// A job cancelled while its batch runs: its files not yet started are skipped, and an
// S3 event for one of them in the same batch (which shared its processing) comes back
// rather than being acknowledged undone.
func TestJobCancelledMidBatch(t *testing.T) {
	jobs := newFakeJobs()
	jobs.after = ledger.JobCancelled
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 1, task.File{Bucket: "in", Key: "a.txt", ETag: "e-a.txt"}),
		s3Message("2", 1, "in", "a.txt"),
	}})
	require.NoError(t, err)
	assert.Equal(t, []string{"2"}, failedIDs(resp))
	assert.Zero(t, e.s3.puts)
	assert.Empty(t, jobs.settled)
}

func TestJobCheckFailureBringsTheTaskBack(t *testing.T) {
	jobs := newFakeJobs()
	jobs.checkErr = fmt.Errorf("throttled")
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 1, task.File{Bucket: "in", Key: "a.txt"}),
	}})
	require.NoError(t, err)
	assert.Equal(t, []string{"1"}, failedIDs(resp), "comes back to be counted as a duplicate and checked again")

	// Its redelivery is a duplicate: the part written by the counted delivery stays.
	jobs.checkErr = nil
	jobs.outcome["m1"] = ledger.Duplicate
	jobs.parts["m1"] = []job.Line{{Key: "kept"}}
	resp, err = e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 2, task.File{Bucket: "in", Key: "a.txt"}),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, []job.Line{{Key: "kept"}}, jobs.parts["m1"])
	assert.Equal(t, 2, jobs.checks)
}

// On the last receive a job's file that keeps failing is recorded DEAD_LETTERED and
// counted failed; its message is acknowledged instead of holding the job open in the DLQ.
func TestJobFileOnLastReceiveIsCountedFailed(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "flaky.txt", []byte("x"))
	e.s3.getErr = func(key string) error {
		if key == "flaky.txt" {
			return fmt.Errorf("connection reset")
		}
		return nil
	}
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 3, task.File{Bucket: "in", Key: "flaky.txt"}),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	require.Len(t, jobs.settled, 1)
	assert.EqualValues(t, 1, jobs.settled[0].Failed)
	assert.Equal(t, "RetriesExhausted", jobs.parts["m1"][0].ErrorCode)
}
