package meter

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// faultEnv is a fake server behind a proxy that injects one fault into every request,
// and SDK clients with a single attempt (so the fault itself is what they see).
type faultEnv struct {
	hits  atomic.Int64
	proxy *Proxy
	cfg   aws.Config
}

func newFaultEnv(t *testing.T, service string, f Fault, answer string) *faultEnv {
	t.Helper()
	e := &faultEnv{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		_, _ = w.Write([]byte(answer))
	}))
	t.Cleanup(srv.Close)
	p, err := StartProxy(service, srv.URL, &Calls{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	p.Fault = func(*http.Request, string) Fault { return f }
	p.Hang, p.SlowBy = 200*time.Millisecond, 150*time.Millisecond
	e.proxy = p
	e.cfg = aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("a", "b", ""),
		Retryer: func() aws.Retryer { return retry.AddWithMaxAttempts(retry.NewStandard(), 1) }}
	return e
}

func (e *faultEnv) dynamo() *dynamodb.Client {
	return dynamodb.NewFromConfig(e.cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(e.proxy.URL) })
}

func code(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

func TestFaultsAsTheSDKSeesThem(t *testing.T) {
	ctx := context.Background()
	get := &dynamodb.DescribeTableInput{TableName: aws.String("t")}
	t.Run("Throttle", func(t *testing.T) {
		e := newFaultEnv(t, "DynamoDB", Throttle, `{}`)
		_, err := e.dynamo().DescribeTable(ctx, get)
		assert.Equal(t, "ProvisionedThroughputExceededException", code(err))
		assert.True(t, retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool(), "a throttle by the SDK's rules")
		assert.Zero(t, e.hits.Load(), "never forwarded")
	})
	t.Run("ServerError", func(t *testing.T) {
		e := newFaultEnv(t, "DynamoDB", ServerError, `{}`)
		_, err := e.dynamo().DescribeTable(ctx, get)
		assert.Equal(t, "InternalServerError", code(err))
		assert.True(t, retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err).Bool(), "retryable by the SDK's rules")
		assert.Zero(t, e.hits.Load())
	})
	t.Run("Reset", func(t *testing.T) {
		e := newFaultEnv(t, "DynamoDB", Reset, `{}`)
		_, err := e.dynamo().DescribeTable(ctx, get)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "connection reset")
		assert.Zero(t, e.hits.Load())
	})
	t.Run("LostResponse", func(t *testing.T) {
		e := newFaultEnv(t, "DynamoDB", LostResponse, `{}`)
		_, err := e.dynamo().DescribeTable(ctx, get)
		require.Error(t, err)
		assert.EqualValues(t, 1, e.hits.Load(), "the server did the work")
	})
	t.Run("Timeout", func(t *testing.T) {
		e := newFaultEnv(t, "DynamoDB", Timeout, `{}`)
		start := time.Now()
		_, err := e.dynamo().DescribeTable(ctx, get)
		require.Error(t, err)
		assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "held for Hang")
		assert.Zero(t, e.hits.Load())
	})
	t.Run("Slow", func(t *testing.T) {
		e := newFaultEnv(t, "DynamoDB", Slow, `{}`)
		start := time.Now()
		_, err := e.dynamo().DescribeTable(ctx, get)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
		assert.EqualValues(t, 1, e.hits.Load())
	})
	t.Run("DuplicateSend", func(t *testing.T) {
		e := newFaultEnv(t, "SQS", Duplicate, `{"MessageId":"m","MD5OfMessageBody":"`+md5Hex("hello")+`"}`)
		c := sqs.NewFromConfig(e.cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(e.proxy.URL) })
		_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(e.proxy.URL + "/000000000000/q"), MessageBody: aws.String("hello")})
		require.NoError(t, err)
		assert.EqualValues(t, 2, e.hits.Load(), "sent twice, answered once")
	})
	t.Run("SQSThrottle", func(t *testing.T) {
		e := newFaultEnv(t, "SQS", Throttle, `{}`)
		c := sqs.NewFromConfig(e.cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(e.proxy.URL) })
		_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(e.proxy.URL + "/000000000000/q"), MessageBody: aws.String("x")})
		assert.Equal(t, "RequestThrottled", code(err))
		assert.True(t, retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool())
	})
	t.Run("S3SlowDown", func(t *testing.T) {
		e := newFaultEnv(t, "S3", Throttle, ``)
		c := s3.NewFromConfig(e.cfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(e.proxy.URL); o.UsePathStyle = true })
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("x")})
		assert.Equal(t, "SlowDown", code(err))
		assert.True(t, retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool())
		e = newFaultEnv(t, "S3", Duplicate, ``)
		c = s3.NewFromConfig(e.cfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(e.proxy.URL); o.UsePathStyle = true })
		_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("x")})
		require.NoError(t, err)
		assert.EqualValues(t, 1, e.hits.Load(), "S3 bodies are not buffered: Duplicate passes")
	})
}

func TestFaultNames(t *testing.T) {
	var names []string
	for _, f := range Faults() {
		names = append(names, f.String())
	}
	assert.Equal(t, []string{"throttle", "server-error", "reset", "lost-response", "timeout", "slow", "duplicate"}, names)
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
