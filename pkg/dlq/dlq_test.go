package dlq

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// fakeSQS serves queue attributes and a move task; the rest is not called here.
type fakeSQS struct {
	SQS
	mu         sync.Mutex
	moveErr    error // StartMessageMoveTask's answer
	polls      int
	doneAfter  int // polls until COMPLETED (0: never)
	cancelled  string
	startedArn [2]string
}

func (f *fakeSQS) GetQueueAttributes(_ context.Context, in *sqs.GetQueueAttributesInput, _ ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
		"QueueArn": "arn:aws:sqs:r:1:" + aws.ToString(in.QueueUrl), "ApproximateNumberOfMessages": "5", "ApproximateNumberOfMessagesNotVisible": "0"}}, nil
}

func (f *fakeSQS) StartMessageMoveTask(_ context.Context, in *sqs.StartMessageMoveTaskInput, _ ...func(*sqs.Options)) (*sqs.StartMessageMoveTaskOutput, error) {
	if f.moveErr != nil {
		return nil, f.moveErr
	}
	f.startedArn = [2]string{aws.ToString(in.SourceArn), aws.ToString(in.DestinationArn)}
	return &sqs.StartMessageMoveTaskOutput{TaskHandle: aws.String("h1")}, nil
}

func (f *fakeSQS) ListMessageMoveTasks(context.Context, *sqs.ListMessageMoveTasksInput, ...func(*sqs.Options)) (*sqs.ListMessageMoveTasksOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	st := "RUNNING"
	if f.doneAfter > 0 && f.polls >= f.doneAfter {
		st = "COMPLETED"
	}
	return &sqs.ListMessageMoveTasksOutput{Results: []types.ListMessageMoveTasksResultEntry{{
		TaskHandle: aws.String("h1"), Status: aws.String(st), ApproximateNumberOfMessagesMoved: int64(2 * f.polls), ApproximateNumberOfMessagesToMove: aws.Int64(5)}}}, nil
}

func (f *fakeSQS) CancelMessageMoveTask(_ context.Context, in *sqs.CancelMessageMoveTaskInput, _ ...func(*sqs.Options)) (*sqs.CancelMessageMoveTaskOutput, error) {
	f.cancelled = aws.ToString(in.TaskHandle)
	return &sqs.CancelMessageMoveTaskOutput{}, nil
}

func (f *fakeSQS) ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	return &sqs.ReceiveMessageOutput{}, nil
}

func (f *fakeSQS) ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	return &sqs.ChangeMessageVisibilityBatchOutput{}, nil
}

var q = Queue{Name: Tasks, URL: "tasks", DLQURL: "tasks-dlq"}

// Where SQS has a move task, an unfiltered redrive uses it and follows it to the end.
func TestRedriveUsesTheMoveTask(t *testing.T) {
	f := &fakeSQS{doneAfter: 3}
	r := &Redriver{SQS: f, pollEvery: time.Millisecond}
	var seen []int
	res, err := r.Redrive(context.Background(), Options{Queue: q, MoveTask: true, Progress: func(p Result) { seen = append(seen, p.Moved) }})
	require.NoError(t, err)
	assert.Equal(t, "StartMessageMoveTask", res.Method)
	assert.Equal(t, [2]string{"arn:aws:sqs:r:1:tasks-dlq", "arn:aws:sqs:r:1:tasks"}, f.startedArn, "from the DLQ to its source")
	assert.Equal(t, []int{2, 4, 6}, seen)
	assert.Equal(t, 6, res.Moved)

	// Interrupted: the move task is cancelled (what it moved stays moved).
	f = &fakeSQS{}
	r = &Redriver{SQS: f, pollEvery: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	res, err = r.Redrive(ctx, Options{Queue: q, MoveTask: true, Progress: func(p Result) {
		if p.Moved >= 4 {
			cancel()
		}
	}})
	assert.ErrorIs(t, err, context.Canceled)
	assert.True(t, res.Interrupted)
	assert.Equal(t, "h1", f.cancelled)

	// Where it is not supported, and whenever a filter is given: message by message.
	f = &fakeSQS{moveErr: &smithy.GenericAPIError{Code: "InvalidAction", Message: "Unknown action: StartMessageMoveTask"}}
	r = &Redriver{SQS: f, pollEvery: time.Millisecond}
	res, err = r.Redrive(context.Background(), Options{Queue: q, MoveTask: true})
	require.NoError(t, err)
	assert.Equal(t, "receive-send-delete", res.Method)
	assert.Equal(t, "InvalidAction: Unknown action: StartMessageMoveTask", res.MoveTaskUnavailable)
	f = &fakeSQS{doneAfter: 1}
	res, err = (&Redriver{SQS: f}).Redrive(context.Background(), Options{Queue: q, MoveTask: true, Filter: Filter{JobID: "j"}})
	require.NoError(t, err)
	assert.Equal(t, "receive-send-delete", res.Method)
	assert.Equal(t, [2]string{}, f.startedArn, "not asked")
}

// After a run stopped between its claim and its mark, the ledger decides whether the
// copy went out: every file final or attempted since, or the fan-out task counted.
func TestProcessedSince(t *testing.T) {
	k := ledger.Key{Bucket: "in", Key: "a"}
	file := func(status string, attempts int) File {
		return File{Status: status, Attempts: attempts, primary: k, record: k}
	}
	mark := ledger.RedriveMark{Attempts: map[string]int{k.ID(): 2}}
	r := &Redriver{}
	for _, c := range []struct {
		name string
		m    Message
		mark ledger.RedriveMark
		want bool
	}{
		{"attempted since", Message{Files: []File{file("DEAD_LETTERED", 3)}}, mark, true},
		{"not attempted since", Message{Files: []File{file("DEAD_LETTERED", 2)}}, mark, false},
		{"succeeded", Message{Files: []File{file("SUCCEEDED", 2)}}, mark, true},
		{"no record then, one now", Message{Files: []File{file("RETRYING", 1)}}, ledger.RedriveMark{Attempts: map[string]int{k.ID(): 0}}, true},
		{"no record then or now", Message{Files: []File{file("", 0)}}, ledger.RedriveMark{Attempts: map[string]int{k.ID(): 0}}, false},
		{"no files: sent again", Message{Shape: ShapeUndecodable}, mark, false},
		{"fan-out counted", Message{Shape: ShapeFanout, JobStatus: "RUNNING", Counted: true}, mark, true},
		{"fan-out, job finished", Message{Shape: ShapeFanout, JobStatus: "FAILED"}, mark, true},
		{"fan-out pending", Message{Shape: ShapeFanout, JobStatus: "RUNNING"}, mark, false},
	} {
		got, err := r.processedSince(context.Background(), q, c.m, c.mark)
		require.NoError(t, err)
		assert.Equal(t, c.want, got, c.name)
	}
}

func TestFilterAndLastError(t *testing.T) {
	m := Message{Shape: ShapeTask, JobID: "j1", Files: []File{
		{Status: "SUCCEEDED"},
		{Status: "DEAD_LETTERED", Code: "RetriesExhausted", Reason: "get s3://in/a: context deadline exceeded"},
	}}
	assert.Equal(t, "DEAD_LETTERED RetriesExhausted: get s3://in/a: context deadline exceeded", m.LastError())
	assert.True(t, Filter{}.Match(m))
	assert.True(t, Filter{JobID: "j1", Reason: "DEADLINE"}.Match(m))
	assert.True(t, Filter{Reason: "retriesexhausted"}.Match(m))
	assert.False(t, Filter{JobID: "j2"}.Match(m))
	assert.False(t, Filter{Reason: "corrupt"}.Match(m))
	assert.Equal(t, "SUCCEEDED since (nothing left to do)", Message{Files: []File{{Status: "SUCCEEDED"}}}.LastError())
	assert.Equal(t, "no ledger record", Message{Files: []File{{}}}.LastError())
	assert.True(t, Filter{Reason: "json"}.Match(Message{Shape: ShapeUndecodable, DecodeError: "malformed JSON"}))
	assert.Equal(t, 61, int(visibility(50)))
	assert.Equal(t, 160, int(visibility(0.1)), "a slow rate keeps a batch hidden long enough")
}
