package lambda

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/local/provision"
)

// windowQueue hands out three messages on the first receive, fails the second (a
// connection reset, a 500 the SDK gave up on, a cancelled context), and is empty after.
type windowQueue struct {
	mu    sync.Mutex
	calls int
	got   int // messages handed out (now in flight on a real queue)
}

func (q *windowQueue) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	visible := 0
	if q.calls == 0 {
		visible = 3
	}
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
		string(types.QueueAttributeNameApproximateNumberOfMessages):           strconv.Itoa(visible),
		string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible): strconv.Itoa(q.got),
		string(types.QueueAttributeNameApproximateNumberOfMessagesDelayed):    "0",
	}}, nil
}

func (q *windowQueue) ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls++
	switch q.calls {
	case 1:
		var out []types.Message
		for i := range 3 {
			id := "m" + strconv.Itoa(i)
			out = append(out, types.Message{MessageId: aws.String(id), ReceiptHandle: aws.String("rh-" + id), Body: aws.String("{}")})
		}
		q.got += len(out)
		return &sqs.ReceiveMessageOutput{Messages: out}, nil
	case 2:
		return nil, errors.New("read tcp 127.0.0.1:50000->127.0.0.1:4566: read: connection reset by peer")
	}
	return &sqs.ReceiveMessageOutput{}, nil
}

func (q *windowQueue) DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	return &sqs.DeleteMessageBatchOutput{}, nil
}

// With a batching window, receive() gathers a batch over several ReceiveMessage calls.
// When a later call fails, it returns the messages gathered so far with the error, and
// worker() drops them ("continue" on any error): they were received — in flight on the
// queue — but never invoked nor deleted, so they come back only after the queue's
// visibility timeout (6 × the function timeout + the window; 726 s for prod's worker).
// Lambda invokes with what the window gathered. Fails on 3194a5b: Messages stays 0.
func TestReceiveErrorInsideTheBatchingWindowDoesNotDropTheMessagesGathered(t *testing.T) {
	q := &windowQueue{}
	m := testMapping(q, provision.Mapping{BatchSize: 10, BatchingWindowSec: 1, MaxConcurrency: 1}, 20*time.Millisecond, time.Minute)
	runMapping(t, m)
	require.Eventually(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return q.calls >= 3 }, 5*time.Second, 10*time.Millisecond)
	// The invocation itself fails here (no binary); what matters is that the three
	// messages were handed to one, not silently left in flight.
	assert.Eventually(t, func() bool { return m.Stats().Messages == 3 }, 2*time.Second, 10*time.Millisecond,
		"the 3 messages received before the failed receive are delivered (got %d delivered)", m.Stats().Messages)
}

// countingQueue has n visible messages; each receive takes a few milliseconds and hands
// out up to its MaxNumberOfMessages of them. It counts what it handed out.
type countingQueue struct {
	mu      sync.Mutex
	visible int
	handed  int
	seq     int
}

func (q *countingQueue) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
		string(types.QueueAttributeNameApproximateNumberOfMessages):           strconv.Itoa(q.visible),
		string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible): "0",
		string(types.QueueAttributeNameApproximateNumberOfMessagesDelayed):    "0",
	}}, nil
}

func (q *countingQueue) ReceiveMessage(_ context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	time.Sleep(3 * time.Millisecond) // a receive in progress while the mapping pauses
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(int(in.MaxNumberOfMessages), q.visible)
	var out []types.Message
	for range n {
		q.seq++
		id := "m" + strconv.Itoa(q.seq)
		out = append(out, types.Message{MessageId: aws.String(id), ReceiptHandle: aws.String("rh-" + id), Body: aws.String("{}")})
	}
	q.visible -= n
	q.handed += n
	return &sqs.ReceiveMessageOutput{Messages: out}, nil
}

func (q *countingQueue) DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	return &sqs.DeleteMessageBatchOutput{}, nil
}

// Guard (passes on 3194a5b): pausing, resuming and changing the maximum concurrency
// while environments receive never leaves a received message undelivered, and a pause
// ends with no environment.
func TestPauseResumeNeverDropsAReceivedBatch(t *testing.T) {
	q := &countingQueue{visible: 2000}
	m := testMapping(q, provision.Mapping{BatchSize: 3, MaxConcurrency: 8}, 2*time.Millisecond, 5*time.Millisecond)
	runMapping(t, m)
	for i := range 40 {
		m.SetMaxConcurrency(2 << (i % 3))
		time.Sleep(time.Duration(i%7) * time.Millisecond)
		m.Pause()
		if i%4 == 0 {
			require.Eventually(t, func() bool { return m.Stats().Environments == 0 }, 2*time.Second, time.Millisecond)
			q.mu.Lock()
			handed := q.handed
			q.mu.Unlock()
			require.Equal(t, int64(handed), m.Stats().Messages, "pause %d: every message received was delivered", i)
		}
		m.Resume()
	}
	m.Pause()
	require.Eventually(t, func() bool { return m.Stats().Environments == 0 }, 2*time.Second, time.Millisecond)
	q.mu.Lock()
	handed := q.handed
	q.mu.Unlock()
	assert.Positive(t, handed)
	assert.Equal(t, int64(handed), m.Stats().Messages, "every message received was delivered")
}
