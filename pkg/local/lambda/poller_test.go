package lambda

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"

	"github.com/fileflow/fileflow/pkg/local/provision"
)

// lazyQueue is a queue that, like fauxqs, returns a message whose visibility timeout
// ended to the visible ones only when a receive looks at the queue
// (fauxqs/dist/sqs/sqsStore.js: processTimers runs in dequeue, not in
// GetQueueAttributes). Until then it counts as not visible.
type lazyQueue struct {
	mu       sync.Mutex
	inflight map[string]time.Time // message id -> end of its visibility timeout
	received []string
}

func (q *lazyQueue) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
		string(types.QueueAttributeNameApproximateNumberOfMessages):           "0",
		string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible): strconv.Itoa(len(q.inflight)),
		string(types.QueueAttributeNameApproximateNumberOfMessagesDelayed):    "0",
	}}, nil
}

func (q *lazyQueue) ReceiveMessage(ctx context.Context, _ *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []types.Message
	for id, until := range q.inflight {
		if time.Now().After(until) {
			out = append(out, types.Message{MessageId: aws.String(id), ReceiptHandle: aws.String("rh-" + id), Body: aws.String("{}")})
			q.received = append(q.received, id)
			q.inflight[id] = time.Now().Add(time.Hour)
		}
	}
	return &sqs.ReceiveMessageOutput{Messages: out}, nil
}

func (q *lazyQueue) DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	return &sqs.DeleteMessageBatchOutput{}, nil
}

func (q *lazyQueue) receivedCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.received)
}

// testMapping is a mapping of the tasks queue q for a worker function that cannot start
// (every invocation fails): src's batch settings, a ReportItemFailure mapping.
func testMapping(q SQSAPI, src provision.Mapping, interval, idle time.Duration) *Mapping {
	src.Queue = &provision.Queue{Name: "tasks", URL: "http://127.0.0.1:1/tasks", ARN: "arn:aws:sqs:us-east-1:000000000000:tasks"}
	src.ReportItemFailure = true
	return &Mapping{
		Config: Config{Function: &provision.Function{Name: "fileflow-worker", Timeout: time.Second}, Binary: "/nonexistent/bootstrap"},
		Source: src, SQS: q, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Region: "us-east-1",
		Interval: interval, Idle: idle,
	}
}

// runMapping runs m until the test ends.
func runMapping(t *testing.T, m *Mapping) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// The first make bench at 19cff55 hung in its 1 KB drain: the queue held messages in
// flight, no environment was running, and none started. Every environment had stopped
// while those messages were invisible (two idle ones can each see the other and stop
// together), and the queue never reported them visible again: nothing received. Lambda's
// pollers never stop; the mapping keeps one environment polling while any message is in
// flight, as it does for delayed ones.
func TestMessagesInFlightWithNoEnvironmentAreReceivedWhenTheyReturn(t *testing.T) {
	q := &lazyQueue{inflight: map[string]time.Time{"m1": time.Now().Add(300 * time.Millisecond)}}
	m := testMapping(q, provision.Mapping{BatchSize: 10, MaxConcurrency: 4}, 20*time.Millisecond, 100*time.Millisecond)
	runMapping(t, m)
	assert.Eventually(t, func() bool { return q.receivedCount() > 0 }, 5*time.Second, 20*time.Millisecond,
		"the message in flight is received when its visibility timeout ends")
}

// busyQueue always has visible messages and hands one out on every receive.
type busyQueue struct {
	mu       sync.Mutex
	received int
}

func (q *busyQueue) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
		string(types.QueueAttributeNameApproximateNumberOfMessages):           "1000",
		string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible): "0",
		string(types.QueueAttributeNameApproximateNumberOfMessagesDelayed):    "0",
	}}, nil
}

func (q *busyQueue) ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.received++
	id := "m" + strconv.Itoa(q.received)
	return &sqs.ReceiveMessageOutput{Messages: []types.Message{{MessageId: aws.String(id), ReceiptHandle: aws.String("rh-" + id), Body: aws.String("{}")}}}, nil
}

func (q *busyQueue) DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	return &sqs.DeleteMessageBatchOutput{}, nil
}

func (q *busyQueue) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.received
}

// A paused mapping receives nothing and runs no environment, as a disabled event source
// mapping; resumed, it scales up to the maximum concurrency set while it runs; paused
// again, its environments stop and it receives nothing more.
func TestPauseAndMaxConcurrencyWhileRunning(t *testing.T) {
	q := &busyQueue{}
	m := testMapping(q, provision.Mapping{BatchSize: 1, MaxConcurrency: 16}, 10*time.Millisecond, 50*time.Millisecond)
	m.Pause()
	runMapping(t, m)

	time.Sleep(200 * time.Millisecond)
	assert.Zero(t, q.count(), "a paused mapping receives nothing")
	assert.Zero(t, m.Stats().MaxEnvironments, "and starts no environment")

	m.SetMaxConcurrency(2)
	m.Resume()
	assert.Eventually(t, func() bool { return q.count() > 0 && m.Stats().Environments == 2 }, 5*time.Second, 10*time.Millisecond, "resumed: it polls")
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, 2, m.Stats().MaxEnvironments, "never above the maximum set while it ran")

	m.Pause()
	assert.Eventually(t, func() bool { return m.Stats().Environments == 0 }, 5*time.Second, 10*time.Millisecond, "paused: every environment stops")
	n := q.count()
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, n, q.count(), "and nothing more is received")
}
