package dispatch

// Review 4: adversarial tests of e1339f0 (a transient error on a fan-out task's last
// receive sends it again for a new round, job.NextRound). Each test named
// TestReview4_Found_* FAILS on the code it was written against; the comment above it
// gives the interleaving and the consequence.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

func r4ConnReset(op string) error {
	return fmt.Errorf("operation error %s, exceeded maximum number of attempts, 3: %w", op,
		&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})
}

// r4Objects: every listing meets a connection reset (the fan-out task's own work fails
// transiently).
type r4Objects struct{ Objects }

func (r4Objects) ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	return nil, r4ConnReset("S3: ListObjectsV2")
}

// r4Queue: SQS is having the same trouble: SendMessage (the copy for the next round)
// is reset too.
type r4Queue struct {
	Queue
	sends int
}

func (q *r4Queue) SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	q.sends++
	return nil, r4ConnReset("SQS: SendMessage")
}

func (q *r4Queue) ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	return &sqs.ChangeMessageVisibilityBatchOutput{}, nil
}

// r4Jobs: a RUNNING prefix job whose root task is not counted; Fail is recorded.
type r4Jobs struct {
	Jobs
	failed []string
}

func (j *r4Jobs) TaskState(context.Context, string, string, string, string) (job.Verdict, error) {
	return job.Go, nil
}

func (j *r4Jobs) Job(_ context.Context, id string) (ledger.Job, error) {
	return ledger.Job{ID: id, Status: ledger.JobRunning, Shards: 1, Spec: `{"id":"` + id + `","kind":"prefix","bucket":"in","key":"p/"}`}, nil
}

func (j *r4Jobs) Fail(_ context.Context, _ string, reason string) error {
	j.failed = append(j.failed, reason)
	return nil
}

// Found (stuck): the next round depends on one SQS SendMessage, and nothing catches
// it when that send fails.
//
//  1. A prefix job's root task is on its 5th (last) receive of round 1; its listing
//     (or its SendMessageBatch, chaos run 9's case) meets a connection reset.
//  2. handleOne: not permanent, round 1 < FanoutRounds, so retryAfter -> job.NextRound.
//  3. job.Apply: the copy's SendMessage meets the same SQS trouble (the error that
//     started all this is an SQS connection reset) -> Else: RetryAfter -> a batch item
//     failure on the message's last receive: SQS moves it to the jobs DLQ.
//
// Consequence: the job stays RUNNING with its root task in the DLQ (the reconciler only
// reports "stuck 1"; an operator must redrive). Before e1339f0 the same receive called
// jobs.Fail (DynamoDB, not SQS), so the job ended FAILED with the reason; and the
// dispatcher's own rule is "never to the DLQ on the last receive, where its job would
// wait for it". Fix: a Round action whose copy cannot be sent must not fall back to a
// retry on the last receive — e.g. let handleOne send the next-round copy itself and,
// if that fails, jobs.Fail the job (as before), or give NextRound an Else that fails
// the job (a callback / a distinct ActionKind Apply reports back to the handler).
func TestReview4_Found_NextRoundCopyNotSentSendsTheTaskToTheDLQ(t *testing.T) {
	jobs := &r4Jobs{}
	q := &r4Queue{}
	h, err := New(Config{TasksQueueURL: "tasks", JobsQueueURL: "jobs"}, Deps{Objects: r4Objects{}, Queue: q, Ledger: r3Ledger{}, Jobs: jobs,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: io.Discard, Now: time.Now})
	require.NoError(t, err)

	rec := events.SQSMessage{MessageId: "m", ReceiptHandle: "rh", EventSourceARN: "arn:aws:sqs:us-east-1:1:jobs",
		Body:       `{"v":1,"job_id":"j1","task_id":"root","step":"root"}`,
		Attributes: map[string]string{"ApproximateReceiveCount": fmt.Sprint(h.cfg.MaxReceiveCount)}}
	resp, err := h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{rec}})
	require.NoError(t, err)
	t.Logf("copies attempted: %d, job failed: %v, batch item failures: %d", q.sends, jobs.failed, len(resp.BatchItemFailures))

	toDLQ := len(resp.BatchItemFailures) > 0 // a batch item failure on the last receive
	assert.False(t, toDLQ && len(jobs.failed) == 0,
		"the root task went to the jobs DLQ on its last receive and its job was not failed: the job stays RUNNING (stuck)")
}
