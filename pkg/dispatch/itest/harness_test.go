// Package itest runs the dispatcher and the worker together against the real local S3
// and DynamoDB servers, with an in-memory queue whose delivery order the test controls:
// the interleavings a real queue produces only by chance (a fan-out task that died
// before it was counted, its re-run over a changed listing, children of both runs
// delivered in any order) are replayed exactly.
package itest

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/dispatch"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local/localtest"
	"github.com/fileflow/fileflow/pkg/worker"
)

func TestMain(m *testing.M) { os.Exit(localtest.Main(m)) }

const (
	jobsQueue  = "jobs"
	tasksQueue = "tasks"
	maxReceive = 5
)

// msg is one message in the fake queue.
type msg struct {
	id      string
	body    string
	receive int
	attrs   map[string]sqstypes.MessageAttributeValue
	delay   int32 // DelaySeconds it was sent with
}

// queues is an in-memory SQS: every send appends; the test delivers.
type queues struct {
	mu   sync.Mutex
	n    int
	q    map[string][]*msg
	dlq  map[string][]*msg
	sent atomic.Int64
	// dropAgain loses every copy a function sends again (a send that failed).
	dropAgain atomic.Bool
	dropped   atomic.Int64
	// failBatch fails the next n SendMessageBatch calls with errBatch, sending nothing.
	failBatch atomic.Int32
	errBatch  error
}

func newQueues() *queues {
	return &queues{q: map[string][]*msg{}, dlq: map[string][]*msg{}}
}

func (f *queues) push(url, body string, attrs map[string]sqstypes.MessageAttributeValue) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.q[url] = append(f.q[url], &msg{id: fmt.Sprintf("m%d", f.n), body: body, attrs: attrs})
	f.sent.Add(1)
}

// take removes and returns every message now in url's queue.
func (f *queues) take(url string) []*msg {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.q[url]
	f.q[url] = nil
	return out
}

func (f *queues) pop(url string) *msg {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.q[url]) == 0 {
		return nil
	}
	m := f.q[url][0]
	f.q[url] = f.q[url][1:]
	return m
}

func (f *queues) requeue(url string, m *msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.receive >= maxReceive {
		f.dlq[url+"-dlq"] = append(f.dlq[url+"-dlq"], m)
		return
	}
	f.q[url] = append(f.q[url], m)
}

func (f *queues) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	if _, again := in.MessageAttributes[job.AttrSentAgain]; again && f.dropAgain.Load() {
		f.dropped.Add(1)
		return nil, errors.New("injected: the copy was never sent")
	}
	f.push(aws.ToString(in.QueueUrl), aws.ToString(in.MessageBody), in.MessageAttributes)
	f.mu.Lock()
	q := f.q[aws.ToString(in.QueueUrl)]
	q[len(q)-1].delay = in.DelaySeconds
	f.mu.Unlock()
	return &sqs.SendMessageOutput{MessageId: aws.String("x")}, nil
}

func (f *queues) SendMessageBatch(_ context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	if f.failBatch.Add(-1) >= 0 {
		return nil, f.errBatch
	}
	f.failBatch.Store(0) // (not below zero)
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		f.push(aws.ToString(in.QueueUrl), aws.ToString(e.MessageBody), e.MessageAttributes)
		out.Successful = append(out.Successful, sqstypes.SendMessageBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func (f *queues) ChangeMessageVisibility(context.Context, *sqs.ChangeMessageVisibilityInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

func (f *queues) ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	return &sqs.ChangeMessageVisibilityBatchOutput{}, nil
}

// ReceiveMessage reads a dead-letter queue (as the reconciler peeks at it).
func (f *queues) ReceiveMessage(_ context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &sqs.ReceiveMessageOutput{}
	for _, m := range f.dlq[aws.ToString(in.QueueUrl)] {
		out.Messages = append(out.Messages, sqstypes.Message{MessageId: aws.String(m.id), Body: aws.String(m.body), ReceiptHandle: aws.String(m.id)})
	}
	return out, nil
}

// DeleteMessageBatch: a message in flight is the deliverer's (deliver takes it off the
// queue and puts it back only for a batch item failure), so deleting it early changes
// nothing.
func (f *queues) DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	return &sqs.DeleteMessageBatchOutput{}, nil
}

func (f *queues) GetQueueUrl(_ context.Context, in *sqs.GetQueueUrlInput, _ ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error) {
	return &sqs.GetQueueUrlOutput{QueueUrl: in.QueueName}, nil
}

// flakyDB fails the next n TransactWriteItems calls (failTx): a function that died
// before its transaction landed; and the next n stops of a job's shard (failStop).
type flakyDB struct {
	*dynamodb.Client
	failTx   atomic.Int32
	failStop atomic.Int32
}

func (d *flakyDB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if strings.Contains(aws.ToString(in.UpdateExpression), "stop_reason") && d.failStop.Load() > 0 {
		d.failStop.Add(-1)
		return nil, errInjected
	}
	return d.Client.UpdateItem(ctx, in, opts...)
}

var errInjected = errors.New("injected: the function died before its transaction landed")

func (d *flakyDB) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	if d.failTx.Load() > 0 {
		d.failTx.Add(-1)
		return nil, errInjected
	}
	return d.Client.TransactWriteItems(ctx, in, opts...)
}

// stack is one pipeline: servers' clients, a fresh table and buckets, both handlers.
type stack struct {
	t        *testing.T
	ctx      context.Context
	s3       *s3.Client
	db       *flakyDB
	store    *ledger.Store
	engine   *job.Engine
	q        *queues
	dispatch *dispatch.Handler
	worker   *worker.Handler
	in, out  string
}

var stackN atomic.Int64

func newStack(t *testing.T) *stack {
	t.Helper()
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	require.NoError(t, err)
	n := stackN.Add(1)
	suffix := fmt.Sprintf("%d-%d", time.Now().UnixNano()%1e9, n)
	s := &stack{t: t, ctx: ctx, q: newQueues(), in: "rerun-in-" + suffix, out: "rerun-out-" + suffix}
	s.s3 = s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	for _, b := range []string{s.in, s.out} {
		_, err := s.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)})
		require.NoError(t, err)
	}
	s.db = &flakyDB{Client: dynamodb.NewFromConfig(cfg)}
	table := "rerun-" + suffix
	require.NoError(t, ledger.CreateTable(ctx, s.db.Client, table))
	s.store = ledger.New(s.db, table, 0)
	s.rewire(t)
	return s
}

// rewire builds the engine and both handlers over the stack's store.
func (s *stack) rewire(t *testing.T) {
	var err error
	s.engine = &job.Engine{Ledger: s.store, Objects: s.s3, OutputBucket: s.out, Queue: s.q, JobsQueueURL: jobsQueue}
	s.dispatch, err = dispatch.New(dispatch.Config{TasksQueueURL: tasksQueue, JobsQueueURL: jobsQueue, MaxReceiveCount: maxReceive,
		DeadLetterQueues: []string{tasksQueue + "-dlq", jobsQueue + "-dlq"}},
		dispatch.Deps{Objects: s.s3, Queue: s.q, Ledger: s.store, Jobs: s.engine, Metrics: io.Discard})
	require.NoError(t, err)
	s.worker, err = worker.New(worker.Config{Table: s.store.Table(), OutputBucket: s.out, MaxReceiveCount: maxReceive, MinItemTime: time.Millisecond},
		worker.Deps{Objects: s.s3, Ledger: s.store, Queue: s.q, Jobs: s.engine, Metrics: io.Discard})
	require.NoError(t, err)
}

func ledgerText(v types.AttributeValue) string {
	s, _ := v.(*types.AttributeValueMemberS)
	if s == nil {
		return ""
	}
	return s.Value
}

func (s *stack) put(key, body string) {
	_, err := s.s3.PutObject(s.ctx, &s3.PutObjectInput{Bucket: aws.String(s.in), Key: aws.String(key), Body: strings.NewReader(body)})
	require.NoError(s.t, err)
}

func (s *stack) del(key string) {
	_, err := s.s3.DeleteObject(s.ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.in), Key: aws.String(key)})
	require.NoError(s.t, err)
}

func (s *stack) submit(spec job.Spec) string {
	spec.Bucket = s.in
	id, err := job.Submit(s.ctx, s.store, s.q, jobsQueue, spec, time.Now())
	require.NoError(s.t, err)
	return id
}

// deliver hands one message to the queue's function; a batch item failure puts it back
// (or in the DLQ after maxReceive receives).
func (s *stack) deliver(queue string, m *msg) {
	m.receive++
	rec := events.SQSMessage{MessageId: m.id, ReceiptHandle: m.id + "-" + strconv.Itoa(m.receive), Body: m.body,
		EventSourceARN: "arn:aws:sqs:us-east-1:000000000000:" + queue,
		Attributes:     map[string]string{"ApproximateReceiveCount": strconv.Itoa(m.receive)}}
	if len(m.attrs) > 0 {
		rec.MessageAttributes = map[string]events.SQSMessageAttribute{}
		for k, v := range m.attrs {
			rec.MessageAttributes[k] = events.SQSMessageAttribute{DataType: aws.ToString(v.DataType), StringValue: v.StringValue}
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	var resp events.SQSEventResponse
	var err error
	if queue == jobsQueue {
		resp, err = s.dispatch.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{rec}})
	} else {
		resp, err = s.worker.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{rec}})
	}
	require.NoError(s.t, err)
	if len(resp.BatchItemFailures) > 0 {
		s.q.requeue(queue, m)
	}
}

// drain delivers messages, jobs queue first, until both queues are empty.
func (s *stack) drain() {
	for i := 0; i < 5000; i++ {
		if m := s.q.pop(jobsQueue); m != nil {
			s.deliver(jobsQueue, m)
			continue
		}
		if m := s.q.pop(tasksQueue); m != nil {
			s.deliver(tasksQueue, m)
			continue
		}
		return
	}
	s.t.Fatal("queues did not drain in 5000 deliveries")
}

// reported reads the finished job's report: how often each key appears as succeeded
// and as failed.
func (s *stack) reported(id string) (succeeded, failed map[string]int) {
	read := func(name string) map[string]int {
		out, err := s.s3.GetObject(s.ctx, &s3.GetObjectInput{Bucket: aws.String(s.out), Key: aws.String("reports/" + id + "/results/" + name)})
		require.NoError(s.t, err)
		defer out.Body.Close()
		recs, err := csv.NewReader(out.Body).ReadAll()
		require.NoError(s.t, err)
		m := map[string]int{}
		for _, r := range recs {
			k, err := url.QueryUnescape(r[1])
			require.NoError(s.t, err)
			m[k]++
		}
		return m
	}
	return read("succeeded.csv"), read("failed.csv")
}

// account compares a finished job's report with the keys that should be in it: how
// many were lost (never reported) and doubled (reported more than once).
func account(want []string, reported map[string]int) (lost, doubled int, detail []string) {
	seen := map[string]bool{}
	for _, k := range want {
		seen[k] = true
		switch n := reported[k]; {
		case n == 0:
			lost++
			detail = append(detail, "lost "+k)
		case n > 1:
			doubled++
			detail = append(detail, fmt.Sprintf("%s reported %d times", k, n))
		}
	}
	for k, n := range reported {
		if !seen[k] {
			detail = append(detail, fmt.Sprintf("%s reported %d times but not in the listing", k, n))
		}
	}
	return lost, doubled, detail
}
