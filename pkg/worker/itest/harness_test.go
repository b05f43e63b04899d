// Package itest runs the file worker against the real local S3, SQS and DynamoDB-API
// servers (versitygw, fauxqs, DynamoDB Local), started once for this test binary.
package itest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/esm"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local/localtest"
	"github.com/fileflow/fileflow/pkg/meter"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/worker"
)

func TestMain(m *testing.M) { os.Exit(localtest.Main(m)) }

var seq atomic.Int64

// stack is one test's buckets, queues and table on the local servers, and a worker
// wired to them exactly as functions/worker wires it in Lambda.
type stack struct {
	t        *testing.T
	calls    *meter.Calls
	s3       *s3.Client
	sqs      *sqs.Client
	ddb      *dynamodb.Client
	store    *ledger.Store
	in, out  string // buckets
	table    string
	queueURL string
	queueARN string
	dlqURL   string
	handler  *worker.Handler
	mapping  esm.Mapping
}

type stackOptions struct {
	maxReceive int
	rules      process.Rules
	registry   process.Registry
	policy     retry.Policy
	partSize   int
	// duplicateCheck is the worker's DuplicateCheck ("" : the default, auto).
	duplicateCheck string
	// concurrency and completeAfter: the worker's (0: 8 and the default).
	concurrency   int
	completeAfter time.Duration
}

func newStack(t *testing.T, opt stackOptions) *stack {
	t.Helper()
	ctx := context.Background()
	if opt.maxReceive == 0 {
		opt.maxReceive = 3
	}
	if opt.policy.Base == 0 {
		opt.policy = retry.Policy{Base: time.Second, Cap: 8 * time.Second, Min: time.Second}
	}
	name := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	name = fmt.Sprintf("%s-%d", strings.Trim(name[:min(len(name), 40)], "-"), seq.Add(1))

	cfg, err := config.LoadDefaultConfig(ctx) // the AWS_ENDPOINT_URL_* variables, as in Lambda
	require.NoError(t, err)
	st := &stack{t: t, calls: &meter.Calls{}, table: name + "-ledger", in: name + "-in", out: name + "-out"}
	st.calls.Attach(&cfg)
	st.s3 = s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	st.sqs = sqs.NewFromConfig(cfg)
	st.ddb = dynamodb.NewFromConfig(cfg)

	for _, b := range []string{st.in, st.out} {
		_, err := st.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)})
		require.NoError(t, err, "create bucket %s", b)
	}
	require.NoError(t, ledger.CreateTable(ctx, st.ddb, st.table))

	dlq, err := st.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
	require.NoError(t, err)
	st.dlqURL = aws.ToString(dlq.QueueUrl)
	dlqARN := st.queueAttr(st.dlqURL, sqstypes.QueueAttributeNameQueueArn)
	redrive, err := json.Marshal(map[string]any{"deadLetterTargetArn": dlqARN, "maxReceiveCount": opt.maxReceive})
	require.NoError(t, err)
	q, err := st.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String(name + "-tasks"),
		Attributes: map[string]string{
			string(sqstypes.QueueAttributeNameRedrivePolicy):     string(redrive),
			string(sqstypes.QueueAttributeNameVisibilityTimeout): "30",
		},
	})
	require.NoError(t, err)
	st.queueURL = aws.ToString(q.QueueUrl)
	st.queueARN = st.queueAttr(st.queueURL, sqstypes.QueueAttributeNameQueueArn)

	st.store = ledger.New(st.ddb, st.table, 0)
	h, err := worker.New(worker.Config{
		Table: st.table, OutputBucket: st.out, Rules: opt.rules, Concurrency: cmp.Or(opt.concurrency, 8), CompleteAfter: opt.completeAfter,
		MaxReceiveCount: opt.maxReceive, Retry: opt.policy, PartSize: opt.partSize,
		MinItemTime: time.Second, Margin: time.Second, FunctionName: "worker-itest", DuplicateCheck: opt.duplicateCheck,
	}, worker.Deps{
		Objects: st.s3, Ledger: st.store, Queue: st.sqs, Registry: opt.registry,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: io.Discard,
	})
	require.NoError(t, err)
	st.handler = h
	st.mapping = esm.Mapping{API: st.sqs, QueueURL: st.queueURL, QueueARN: st.queueARN, Region: "us-east-1", BatchSize: 10, WaitTime: 1}
	return st
}

func (st *stack) queueAttr(u string, a sqstypes.QueueAttributeName) string {
	st.t.Helper()
	out, err := st.sqs.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(u), AttributeNames: []sqstypes.QueueAttributeName{a},
	})
	require.NoError(st.t, err)
	return out.Attributes[string(a)]
}

func (st *stack) put(key string, body string) {
	st.t.Helper()
	_, err := st.s3.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(st.in), Key: aws.String(key), Body: strings.NewReader(body),
	})
	require.NoError(st.t, err, "put %q", key)
}

// notify sends an S3 event notification for keys to the tasks queue, in AWS's shape:
// keys URL-encoded with '+' for a space.
func (st *stack) notify(keys ...string) {
	st.t.Helper()
	var recs []map[string]any
	for _, k := range keys {
		head, err := st.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(st.in), Key: aws.String(k)})
		require.NoError(st.t, err, "head %q", k)
		recs = append(recs, map[string]any{
			"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
			"eventTime": time.Now().UTC().Format(time.RFC3339Nano), "eventName": "ObjectCreated:Put",
			"s3": map[string]any{
				"s3SchemaVersion": "1.0", "configurationId": "fileflow-ingest",
				"bucket": map[string]any{"name": st.in, "arn": "arn:aws:s3:::" + st.in},
				"object": map[string]any{"key": url.QueryEscape(k), "size": aws.ToInt64(head.ContentLength),
					"eTag": strings.Trim(aws.ToString(head.ETag), `"`), "sequencer": "0055AED6DCD90281E5"},
			},
		})
	}
	body, err := json.Marshal(map[string]any{"Records": recs})
	require.NoError(st.t, err)
	st.send(string(body))
}

func (st *stack) send(body string) {
	st.t.Helper()
	_, err := st.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(st.queueURL), MessageBody: aws.String(body)})
	require.NoError(st.t, err)
}

// drain delivers batches until the queue has had nothing visible for one long poll.
func (st *stack) drain() esm.Result {
	st.t.Helper()
	var total esm.Result
	for {
		r, err := st.mapping.Once(context.Background(), st.handler.Handle)
		require.NoError(st.t, err)
		if r.Received == 0 {
			return total
		}
		total.Received += r.Received
		total.Failed += r.Failed
		total.Deleted += r.Deleted
	}
}

func (st *stack) record(key string) ledger.Record {
	st.t.Helper()
	head, err := st.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(st.in), Key: aws.String(key)})
	require.NoError(st.t, err)
	rec, ok, err := st.store.Get(context.Background(), ledger.Key{Bucket: st.in, Key: key})
	require.NoError(st.t, err)
	require.True(st.t, ok, "ledger record for %q", key)
	require.Equal(st.t, strings.Trim(aws.ToString(head.ETag), `"`), rec.ETag, "the record is the object's revision")
	return rec
}

func (st *stack) queueDepth(u string) int {
	st.t.Helper()
	out, err := st.sqs.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(u),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	require.NoError(st.t, err)
	var n int
	for _, v := range out.Attributes {
		var x int
		_, _ = fmt.Sscan(v, &x)
		n += x
	}
	return n
}

// flaky is a processor that fails with a retryable error the first `failures` times.
type flaky struct {
	failures int64
	calls    *atomic.Int64
}

func (f flaky) Name() string { return "flaky" }

func (f flaky) Wrap(in io.Reader, _ *process.Result) (io.Reader, error) {
	if f.calls.Add(1) <= f.failures {
		return nil, fmt.Errorf("downstream unavailable (call %d)", f.calls.Load())
	}
	return in, nil
}
