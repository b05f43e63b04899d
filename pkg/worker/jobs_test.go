package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// fakeJobs is the job engine as the worker sees it: statuses, verdicts by task id, and
// what was reported and checked.
type fakeJobs struct {
	mu       sync.Mutex
	status   ledger.JobStatus
	after    ledger.JobStatus // if set, the status from the second read on
	reads    int
	verdict  map[string]job.Verdict // by task id; default Counted
	state    map[string]job.Verdict // TaskState by task id; default Go
	reported []job.TaskResult       // counted
	parts    map[string][]job.Line
	checks   int
	checkErr error
}

func newFakeJobs() *fakeJobs {
	return &fakeJobs{status: ledger.JobRunning, verdict: map[string]job.Verdict{}, state: map[string]job.Verdict{}, parts: map[string][]job.Line{}}
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

func (j *fakeJobs) Check(context.Context, string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.checks++
	return j.checkErr
}

func (j *fakeJobs) TaskState(_ context.Context, _, taskID, _, _ string) (job.Verdict, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.state[taskID], nil
}

// Report follows the engine's protocol: lines, count, one check per job.
func (j *fakeJobs) Report(_ context.Context, results []job.TaskResult) []job.Answer {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]job.Answer, len(results))
	checked := map[string]error{}
	for i, r := range results {
		j.parts[r.TaskID] = r.Lines
		v := j.verdict[r.TaskID]
		if v == job.Go {
			v = job.Counted
			j.reported = append(j.reported, r)
		}
		out[i] = job.Answer{Verdict: v}
		if v == job.Counted || v == job.Duplicate {
			err, ok := checked[r.JobID]
			if !ok {
				j.checks++
				err = j.checkErr
				checked[r.JobID] = err
			}
			if err != nil {
				out[i] = job.Answer{Verdict: job.CheckFailed, Err: err}
			}
		}
	}
	return out
}

func jobMessage(t *testing.T, id, taskID string, receive int, files ...task.File) events.SQSMessage {
	t.Helper()
	body, err := task.Message{JobID: "j1", TaskID: taskID, Parent: task.RootTask, ParentRun: "r1", Files: files}.Encode()
	require.NoError(t, err)
	return events.SQSMessage{MessageId: id, Body: string(body), ReceiptHandle: "rh-" + id, EventSourceARN: queueARN,
		Attributes: map[string]string{"ApproximateReceiveCount": fmt.Sprint(receive)}}
}

func TestJobTasksAreReportedOncePerBatch(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	e.s3.put("in", "b.exe", []byte("MZ"))
	e.s3.put("in", "c.txt", []byte("c"))
	jobs.verdict["m-pending"] = job.WaitParent
	jobs.verdict["m-orphan"] = job.Orphan
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m-ok", 1, task.File{Bucket: "in", Key: "a.txt", Size: 1}, task.File{Bucket: "in", Key: "b.exe", Size: 2}),
		jobMessage(t, "2", "m-pending", 1, task.File{Bucket: "in", Key: "c.txt", Size: 1}),
		jobMessage(t, "3", "m-orphan", 1, task.File{Bucket: "in", Key: "c.txt", Size: 1}),
	}})
	require.NoError(t, err)
	assert.Empty(t, failedIDs(resp), "the task whose parent is not counted is sent again, delayed, without using a receive")
	require.Len(t, e.queue.sent, 1)
	assert.Contains(t, e.queue.sent[0], `"task_id":"m-pending"`)
	require.Len(t, jobs.reported, 1)
	r := jobs.reported[0]
	assert.Equal(t, "m-ok", r.TaskID)
	assert.Equal(t, "r1", r.ParentRun)
	assert.Equal(t, [3]int64{1, 1, 1}, [3]int64{r.Succeeded, r.Failed, r.Bytes})
	lines := jobs.parts["m-ok"]
	require.Len(t, lines, 2)
	assert.Equal(t, job.Line{Bucket: "in", Key: "a.txt", Status: job.Succeeded, HTTPStatus: 200, Message: "s3://out/processed/a.txt"}, lines[0])
	assert.Equal(t, "Rejected", lines[1].ErrorCode)
	assert.Equal(t, 403, lines[1].HTTPStatus)
	assert.Contains(t, lines[1].Message, "executables are not accepted")
	assert.Equal(t, 1, jobs.checks, "one check per job per batch")
}

// One bad entry of a task message (a manifest row with "size": -1) fails on its own,
// reported InvalidEntry; the message's good files are processed and the task counted.
func TestBadEntryFailsAloneAndTheRestRuns(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	var files []task.File
	for i := range 99 {
		k := fmt.Sprintf("good/%02d.txt", i)
		e.s3.put("in", k, []byte(k))
		files = append(files, task.File{Bucket: "in", Key: k})
	}
	files = append(files[:50], append([]task.File{{Bucket: "in", Key: "bad.txt", Size: -1}}, files[50:]...)...)
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{jobMessage(t, "1", "m1", 1, files...)}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Empty(t, e.ledger.poison, "not poison: the message is counted")
	require.Len(t, jobs.reported, 1)
	assert.EqualValues(t, 99, jobs.reported[0].Succeeded)
	assert.EqualValues(t, 1, jobs.reported[0].Failed)
	assert.Equal(t, 99, e.s3.puts)
	bad := jobs.parts["m1"][99]
	assert.Equal(t, "InvalidEntry", bad.ErrorCode)
	assert.Equal(t, "bad.txt", bad.Key)
	assert.Contains(t, bad.Message, "negative size -1")

	// Outside a job the bad entry is kept as poison, and the good files still run.
	body := `{"v":1,"files":[{"bucket":"in","key":"good/00.txt"},{"bucket":"in","key":"x","size":-1}]}`
	resp, err = e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{{MessageId: "p", Body: body, EventSourceARN: queueARN}}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Contains(t, e.ledger.poison["p"], "negative size -1")
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
	assert.Empty(t, jobs.reported)
	assert.Equal(t, 1, e.s3.puts, "the S3 event's copy is processed; the job's is not")
	assertSkipped(t, e, 1)
}

// assertSkipped: the last batch's metrics count n files skipped and none retrying (files
// of an acknowledged message never come back).
func assertSkipped(t *testing.T, e *env, n int) {
	t.Helper()
	docs := batchMetrics(t, e)
	require.NotEmpty(t, docs)
	last := docs[len(docs)-1]
	assert.EqualValues(t, n, last["FilesSkipped"], "skipped")
	assert.EqualValues(t, 0, last["FilesRetrying"], "an acknowledged message's files are not retrying")
}

// A job cancelled while its batch runs: its files not yet started are skipped (the task
// acknowledged, never counted); an S3 event for the same file in the same batch is
// processed on its own — outcomes are never shared across jobs.
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
	assert.Empty(t, failedIDs(resp))
	assert.Equal(t, 1, e.s3.puts, "the S3 event's file is processed")
	assert.Empty(t, jobs.reported)
}

// Copies of a file in one batch share the outcome, status and error alike — but only
// within one job and one receive count.
func TestCopiesShareTheirOutcomeWithinAJobAndReceive(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "setup.exe", []byte("MZ"))
	f := task.File{Bucket: "in", Key: "setup.exe", ETag: "e-setup.exe"}
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 1, f), jobMessage(t, "2", "m2", 1, f),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	require.Len(t, jobs.reported, 2)
	for _, id := range []string{"m1", "m2"} {
		l := jobs.parts[id][0]
		assert.Equal(t, "Rejected", l.ErrorCode, id)
		assert.Contains(t, l.Message, "executables are not accepted", id+": the copy shares the error, not only the status")
	}
	assert.Equal(t, 1, e.ledger.attempts[ledger.Key{Bucket: "in", Key: "setup.exe"}], "processed once")
}

// A counted task whose job check failed is sent again (delayed, using no receive) so the
// check is repeated — never returned to count against its receives, even on the last.
func TestJobCheckFailureSendsTheTaskAgain(t *testing.T) {
	jobs := newFakeJobs()
	jobs.checkErr = fmt.Errorf("throttled")
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	for _, receive := range []int{1, 3} {
		e.queue.sent = nil
		resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
			jobMessage(t, "1", "m1", receive, task.File{Bucket: "in", Key: "a.txt"}),
		}})
		require.NoError(t, err)
		assert.Empty(t, failedIDs(resp), "receive %d: never towards the DLQ", receive)
		assert.Len(t, e.queue.sent, 1, "sent again to check once more")
	}
}

// A redelivered task that was counted already is acknowledged without redoing its files.
func TestCountedTaskRedeliveredIsNotRedone(t *testing.T) {
	jobs := newFakeJobs()
	jobs.state["m1"] = job.Duplicate
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("a"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 2, task.File{Bucket: "in", Key: "a.txt"}),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Zero(t, e.s3.puts)
	assert.Empty(t, jobs.reported)
	assertSkipped(t, e, 1)
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
	require.Len(t, jobs.reported, 1)
	assert.EqualValues(t, 1, jobs.reported[0].Failed)
	assert.Equal(t, "RetriesExhausted", jobs.parts["m1"][0].ErrorCode)
	assert.Equal(t, ledger.StatusDeadLettered, e.ledger.status[ledger.Key{Bucket: "in", Key: "flaky.txt", Scope: "job:j1"}])
}

// Files of a job's task not yet started on the last receive (the invocation ran out of
// time) are not failures: the task is sent again, nothing is recorded or counted.
func TestUnstartedJobFilesOnLastReceiveAreSentAgain(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(c *Config, d *Deps) { d.Jobs = jobs; c.MinItemTime = time.Hour })
	e.s3.put("in", "a.txt", []byte("a"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := e.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{
		jobMessage(t, "1", "m1", 3, task.File{Bucket: "in", Key: "a.txt", ETag: "e-a.txt"}),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Len(t, e.queue.sent, 1, "sent again")
	assert.NotContains(t, e.ledger.status, ledger.Key{Bucket: "in", Key: "a.txt"})
	assert.Empty(t, jobs.reported, "nothing counted")
}
