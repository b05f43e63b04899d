package lambda

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fileflow/fileflow/pkg/esm"
	"github.com/fileflow/fileflow/pkg/local/provision"
)

// SQSAPI is what a mapping calls.
type SQSAPI interface {
	ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// Stats describe a mapping's activity.
type Stats struct {
	Environments    int   // running now
	MaxEnvironments int   // most at once
	Invocations     int64 // batches delivered
	FunctionErrors  int64 // invocations that failed as a whole (timeout, crash, error)
	Messages        int64 // messages delivered (with redeliveries)
	ItemFailures    int64 // reported as batch item failures
	Deleted         int64
	ColdStarts      int64
	Kills           int64 // environments killed (Kill)
}

// Mapping runs one SQS event source mapping.
type Mapping struct {
	Config   Config // the function and its binary
	Source   provision.Mapping
	SQS      SQSAPI
	Log      *slog.Logger
	Region   string
	Idle     time.Duration // an environment with nothing to do this long is stopped; default 3 s
	Interval time.Duration // how often the queue depth is checked; default 200 ms

	mu                  sync.Mutex
	workers, maxWorkers int
	nextID              int
	inFlight            atomic.Int64 // messages received, not deleted: they come back
	invocations, fnErrs atomic.Int64
	messages, itemFails atomic.Int64
	deleted, coldStarts atomic.Int64
	envs                map[int]*Environment // running, by id
	kills               atomic.Int64
	paused              atomic.Bool
}

// Pause stops the mapping polling, as disabling an event source mapping does on AWS
// (UpdateEventSourceMapping, Enabled false): no environment starts, and each running
// one stops once its batch is done. Resume undoes it.
func (m *Mapping) Pause() { m.paused.Store(true) }

// Resume undoes Pause.
func (m *Mapping) Resume() { m.paused.Store(false) }

// SetMaxConcurrency changes the mapping's maximum concurrency while it runs, as
// UpdateEventSourceMapping's ScalingConfig does on AWS: environments above it are not
// stopped, none starts until they are fewer.
func (m *Mapping) SetMaxConcurrency(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Source.MaxConcurrency = n
}

// Stats returns the mapping's counters.
func (m *Mapping) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{
		Environments: m.workers, MaxEnvironments: m.maxWorkers,
		Invocations: m.invocations.Load(), FunctionErrors: m.fnErrs.Load(), Messages: m.messages.Load(),
		ItemFailures: m.itemFails.Load(), Deleted: m.deleted.Load(), ColdStarts: m.coldStarts.Load(), Kills: m.kills.Load(),
	}
}

// limit is the mapping's maximum concurrency, capped by the function's reserved
// concurrency.
func (m *Mapping) limit() int {
	n := m.Source.MaxConcurrency
	if r := m.Config.Function.Reserved; r > 0 && r < n {
		n = r
	}
	return max(n, 1)
}

// Run polls until ctx ends, scaling environments with the queue's depth.
func (m *Mapping) Run(ctx context.Context) {
	if m.Idle == 0 {
		m.Idle = 3 * time.Second
	}
	if m.Interval == 0 {
		m.Interval = 200 * time.Millisecond
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(m.Interval)
	defer tick.Stop()
	minWarm := m.Config.Function.Provisioned
	for {
		depth, delayed, err := m.depth(ctx)
		if err != nil && ctx.Err() == nil {
			m.Log.Warn("esm: queue depth", "queue", m.Source.Queue.Name, "error", err)
		}
		m.mu.Lock()
		want := m.workers
		if depth == 0 && (delayed > 0 || m.inFlight.Load() > 0) {
			// Lambda's pollers never stop, so a delayed message is received when its delay
			// ends, and one in flight when its visibility timeout does. fauxqs makes either
			// visible only when a receive looks at the queue (processTimers, in its
			// dequeue): without a poller it would wait for ever (a chaos run stalled on
			// three delayed messages; a make bench on messages in flight after every
			// environment had stopped). One environment keeps polling (no process starts
			// until a batch arrives).
			want = max(want, 1)
		}
		if depth > 0 {
			// Add environments for the visible backlog, a batch each, doubling at most per
			// tick (Lambda ramps up too), up to the limit.
			need := (depth + m.Source.BatchSize - 1) / m.Source.BatchSize
			want = min(m.limit(), max(m.workers, min(need, max(1, 2*m.workers))))
		}
		want = max(want, minWarm)
		if m.paused.Load() {
			want = m.workers // none starts; the running ones stop after their batch
		}
		start := want - m.workers
		for range start {
			m.workers++
			m.nextID++
			wg.Add(1)
			go func(id int) {
				defer wg.Done()
				m.worker(ctx, id)
			}(m.nextID)
		}
		if start > 0 {
			m.maxWorkers = max(m.maxWorkers, m.workers)
			m.Log.Info("esm: scaled up", "function", m.Config.Function.Name, "environments", m.workers, "queue_depth", depth)
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Kill ends, with SIGKILL, the process of one environment that is running an
// invocation — pick chooses among the n busy ones — as a crash or an out-of-memory kill
// would: the invocation fails and its batch comes back after the visibility timeout;
// the environment starts a new process for its next batch. It returns false when no
// environment is busy.
func (m *Mapping) Kill(pick func(n int) int) bool {
	m.mu.Lock()
	var busy []*Environment
	for _, e := range m.envs {
		if e.busy() {
			busy = append(busy, e)
		}
	}
	m.mu.Unlock()
	if len(busy) == 0 {
		return false
	}
	busy[pick(len(busy))].Stop()
	m.kills.Add(1)
	return true
}

// depth returns the visible and the delayed messages, and records the in-flight ones.
func (m *Mapping) depth(ctx context.Context) (visible, delayed int, err error) {
	out, err := m.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(m.Source.Queue.URL),
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
			types.QueueAttributeNameApproximateNumberOfMessagesDelayed,
		},
	})
	if err != nil {
		return 0, 0, err
	}
	inflight, _ := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	m.inFlight.Store(int64(inflight))
	delayed, _ = strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesDelayed)])
	visible, err = strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	return visible, delayed, err
}

// worker owns one execution environment: receive a batch, invoke, delete successes;
// after Idle with nothing received it stops, unless it is one of the warm ones.
func (m *Mapping) worker(ctx context.Context, id int) {
	cfg := m.Config
	cfg.ColdStart = func() { m.coldStarts.Add(1) }
	env := NewEnvironment(cfg, id)
	m.mu.Lock()
	if m.envs == nil {
		m.envs = map[int]*Environment{}
	}
	m.envs[id] = env
	m.mu.Unlock()
	counted := true // in m.workers
	defer func() {
		env.Close()
		m.mu.Lock()
		delete(m.envs, id)
		if counted {
			m.workers--
		}
		n := m.workers
		m.mu.Unlock()
		m.Log.Info("esm: scaled down", "function", m.Config.Function.Name, "environments", n)
	}()
	lastWork := time.Now()
	for ctx.Err() == nil {
		if m.paused.Load() {
			m.mu.Lock()
			m.workers--
			counted = false
			m.mu.Unlock()
			return
		}
		msgs, err := m.receive(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.Log.Warn("esm: receive", "queue", m.Source.Queue.Name, "error", err)
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		if len(msgs) == 0 {
			// Idle: stop, unless this is a warm (provisioned) environment, or the last
			// poller while messages are in flight (they come back after their visibility
			// timeout, like Lambda's pollers that keep polling at zero environments).
			// Decided and counted under the lock: two idle environments that each saw the
			// other would otherwise both stop, the last one with messages in flight.
			m.mu.Lock()
			warm := id <= m.Config.Function.Provisioned
			last := m.workers == 1
			stop := !warm && time.Since(lastWork) > m.Idle && (!last || m.inFlight.Load() == 0)
			if stop {
				m.workers--
				counted = false
			}
			m.mu.Unlock()
			if stop {
				return
			}
			continue
		}
		lastWork = time.Now()
		m.deliver(ctx, env, msgs)
	}
}

// receive gathers up to BatchSize messages, waiting up to the batching window to fill.
func (m *Mapping) receive(ctx context.Context) ([]types.Message, error) {
	var out []types.Message
	deadline := time.Now().Add(time.Duration(m.Source.BatchingWindowSec) * time.Second)
	for {
		want := min(10, m.Source.BatchSize-len(out))
		wait := int32(1)
		if m.Source.BatchingWindowSec > 0 {
			wait = int32(max(0, min(20, int(time.Until(deadline).Seconds()+0.999))))
		}
		if len(out) > 0 && m.Source.BatchingWindowSec == 0 {
			wait = 0
		}
		resp, err := m.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(m.Source.Queue.URL),
			MaxNumberOfMessages:         int32(want),
			WaitTimeSeconds:             wait,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
			MessageAttributeNames:       []string{"All"},
		})
		if err != nil {
			if len(out) > 0 {
				// The messages gathered so far are in flight: invoke with them (Lambda
				// invokes with what the window gathered), or they would come back only
				// after the visibility timeout (review 14).
				m.Log.Warn("esm: receive within the batching window", "queue", m.Source.Queue.Name, "messages", len(out), "error", err)
				return out, nil
			}
			return nil, err
		}
		out = append(out, resp.Messages...)
		full := len(out) >= m.Source.BatchSize
		if full || len(resp.Messages) == 0 || (m.Source.BatchingWindowSec == 0 && len(out) > 0) || time.Now().After(deadline) && m.Source.BatchingWindowSec > 0 {
			return out, nil
		}
	}
}

// deliver invokes the function with a batch and settles it as Lambda does.
func (m *Mapping) deliver(ctx context.Context, env *Environment, msgs []types.Message) {
	ev := esm.Event(msgs, m.Source.Queue.ARN, m.Region)
	m.messages.Add(int64(len(msgs)))
	m.invocations.Add(1)
	payload, err := json.Marshal(ev)
	if err != nil {
		m.Log.Error("esm: encode event", "error", err)
		return
	}
	var resp events.SQSEventResponse
	body, err := env.Invoke(ctx, payload)
	if err == nil && m.Source.ReportItemFailure && len(body) > 0 && string(body) != "null" {
		if uerr := json.Unmarshal(body, &resp); uerr != nil {
			err = fmt.Errorf("unreadable partial batch response: %w", uerr)
		}
	}
	if err != nil {
		// The whole batch comes back after the visibility timeout, as in Lambda.
		m.fnErrs.Add(1)
		if ctx.Err() == nil {
			m.Log.Warn("esm: invocation failed; batch returns after its visibility timeout",
				"function", m.Config.Function.Name, "messages", len(msgs), "error", err)
		}
	}
	res, serr := esm.Settle(ctx, m.SQS, m.Source.Queue.URL, ev, resp, err, m.Source.ReportItemFailure)
	if err == nil {
		m.itemFails.Add(int64(res.Failed))
	}
	m.deleted.Add(int64(res.Deleted))
	if serr != nil && ctx.Err() == nil {
		m.Log.Warn("esm: delete", "error", serr)
	}
}
