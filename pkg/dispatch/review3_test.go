package dispatch

// Review 3: adversarial tests of the dispatcher's retryAfter / busyWait changes. Each
// test FAILS on the code it was written against; the comment gives the interleaving.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
)

type r3Objects struct{ Objects }
type r3Ledger struct{ Ledger }

type r3Queue struct {
	Queue
	sent []*sqs.SendMessageInput
}

func (q *r3Queue) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	q.sent = append(q.sent, in)
	return &sqs.SendMessageOutput{MessageId: aws.String("copy")}, nil
}

func (q *r3Queue) ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	return &sqs.ChangeMessageVisibilityBatchOutput{}, nil
}

// r3Jobs: finalizing the job fails the same way every time.
type r3Jobs struct {
	Jobs
	err   error
	calls int
}

func (j *r3Jobs) FinalizeJob(context.Context, string, bool) error {
	j.calls++
	return j.err
}

// F5 — retryAfter sends a message again on its last receive whatever the error's
// class: a PERMANENT error too. The finalize task of a job whose report can never be
// written (the output bucket denies the role: AccessDenied; equally a spec that does not
// decode, a submit DynamoDB refuses with ValidationException) no longer reaches the
// jobs DLQ after maxReceiveCount receives: each copy uses its 5 receives and is sent
// again, MaxSendAgain (720) times, delays capped at 15 min — ~3,600 attempts over
// roughly 2–4 weeks before the DLQ and its alarm see anything. Meanwhile the
// reconciler's Check finds the job finished-but-unreported every RequeueAfter and sends
// one more finalize task, each looping the same way.
//
// Consequence: stuck, silently (the DLQ-depth alarm that says "inspect, fix, redrive"
// never fires for weeks); the bound exists but is far beyond any retention an operator
// expects.
func TestReview3_PermanentFinalizeErrorNeverReachesTheDLQ(t *testing.T) {
	jobs := &r3Jobs{err: fmt.Errorf("job j1: write report: %w", &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"})}
	q := &r3Queue{}
	h, err := New(Config{TasksQueueURL: "tasks", JobsQueueURL: "jobs"}, Deps{Objects: r3Objects{}, Queue: q, Ledger: r3Ledger{}, Jobs: jobs,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: io.Discard, Now: time.Now})
	require.NoError(t, err)

	body := `{"v":1,"job_id":"j1","task_id":"finalize","step":"finalize"}`
	receive, sentAgain, deliveries, dlq := 1, 0, 0, false
	for deliveries < 10_000 && !dlq {
		deliveries++
		rec := events.SQSMessage{MessageId: "m", ReceiptHandle: "rh", Body: body, EventSourceARN: "arn:aws:sqs:us-east-1:1:jobs",
			Attributes: map[string]string{"ApproximateReceiveCount": strconv.Itoa(receive)}}
		if sentAgain > 0 {
			rec.MessageAttributes = map[string]events.SQSMessageAttribute{job.AttrSentAgain: {DataType: "Number", StringValue: aws.String(strconv.Itoa(sentAgain))}}
		}
		before := len(q.sent)
		resp, err := h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{rec}})
		require.NoError(t, err)
		switch {
		case len(resp.BatchItemFailures) > 0 && receive >= h.cfg.MaxReceiveCount:
			dlq = true // SQS moves it to the DLQ
		case len(resp.BatchItemFailures) > 0:
			receive++
		case len(q.sent) > before:
			in := q.sent[len(q.sent)-1]
			sentAgain, _ = strconv.Atoi(aws.ToString(in.MessageAttributes[job.AttrSentAgain].StringValue))
			receive = 1 // a new message
		default:
			t.Fatalf("delivery %d: acknowledged without being finalized", deliveries)
		}
	}
	require.True(t, dlq, "it reached the DLQ at all")
	t.Logf("a finalize task failing with AccessDenied reached the DLQ after %d deliveries (%d copies sent)", deliveries, len(q.sent))
	assert.LessOrEqual(t, deliveries, h.cfg.MaxReceiveCount,
		"a permanent error should reach the DLQ after maxReceiveCount receives, not after %d deliveries", deliveries)
}
