package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// Peeker is the part of the SQS client the reconciler reads dead-letter queues with.
type Peeker interface {
	ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error)
}

// Reconciliation is what one [Engine.Reconcile] found.
type Reconciliation struct {
	Open      int            // jobs not yet reported
	Finished  int            // jobs it finished (their work was done, or past their tolerance)
	Requested int            // finished jobs whose lost finalize it requested again
	Stuck     map[string]int // job id -> its tasks found in a dead-letter queue
	Errors    int            // jobs it could not check (tried again next time)
}

// MaxPeek bounds the dead-letter messages one reconciliation reads per queue.
const MaxPeek = 200

// Reconcile re-checks every open job — the periodic safety net under the accounting
// protocol, so that no job stays RUNNING for ever: a job whose last check failed is
// completed, a finished job whose finalize request was lost gets it again, and a job
// with tasks in a dead-letter queue (dlqs, peeked without taking the messages) is
// marked with how many, for `fileflow status` and the operator to redrive. It stops at
// the context's deadline; the next run continues.
func (e *Engine) Reconcile(ctx context.Context, peek Peeker, dlqs []string) (Reconciliation, error) {
	rec := Reconciliation{Stuck: map[string]int{}}
	ids, err := e.Ledger.OpenJobs(ctx)
	if err != nil {
		return rec, err
	}
	rec.Open = len(ids)
	if len(ids) == 0 {
		return rec, nil
	}
	if peek != nil {
		for _, q := range dlqs {
			if q == "" {
				continue
			}
			if err := stuckTasks(ctx, peek, q, rec.Stuck); err != nil {
				e.log().WarnContext(ctx, "reconcile: cannot read a dead-letter queue", "queue", q, "error", err)
			}
		}
	}
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		before, found, err := e.Ledger.GetJob(ctx, id)
		if err != nil || !found {
			rec.Errors++
			errs = append(errs, err)
			continue
		}
		requested := before.FinalizeRequested
		if err := e.Check(ctx, id); err != nil {
			rec.Errors++
			errs = append(errs, fmt.Errorf("job %s: %w", id, err))
			continue
		}
		after, _, err := e.Ledger.GetJob(ctx, id)
		if err != nil {
			rec.Errors++
			continue
		}
		switch {
		case before.Status == ledger.JobRunning && after.Status != ledger.JobRunning:
			rec.Finished++
			e.log().WarnContext(ctx, "reconcile: job finished by the reconciler (its last check had failed)", "job_id", id, "status", after.Status)
		case before.Status != ledger.JobRunning && !after.FinalizeRequested.Equal(requested):
			rec.Requested++
		}
		if n := rec.Stuck[id]; n > 0 || after.StuckTasks > 0 {
			e.log().WarnContext(ctx, "reconcile: job has tasks in a dead-letter queue: redrive them (fileflow dlq redrive)", "job_id", id, "tasks", n)
		}
		if err := e.Ledger.MarkReconciled(ctx, id, rec.Stuck[id], e.now()); err != nil {
			rec.Errors++
			errs = append(errs, err)
		}
	}
	return rec, errors.Join(errs...)
}

// stuckTasks counts the job tasks in a dead-letter queue by job, reading up to MaxPeek
// messages and making them visible again at once.
func stuckTasks(ctx context.Context, q Peeker, url string, by map[string]int) error {
	var handles []sqstypes.ChangeMessageVisibilityBatchRequestEntry
	seen := map[string]bool{}
	defer func() {
		actx, cancel := Afterwards(ctx)
		defer cancel()
		for start := 0; start < len(handles); start += 10 {
			_, _ = q.ChangeMessageVisibilityBatch(actx, &sqs.ChangeMessageVisibilityBatchInput{
				QueueUrl: aws.String(url), Entries: handles[start:min(start+10, len(handles))]})
		}
	}()
	for len(seen) < MaxPeek {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10,
			VisibilityTimeout: 30, WaitTimeSeconds: 0})
		if err != nil {
			return err
		}
		fresh := 0
		for _, m := range out.Messages {
			id := aws.ToString(m.MessageId)
			if seen[id] {
				continue
			}
			seen[id], fresh = true, fresh+1
			handles = append(handles, sqstypes.ChangeMessageVisibilityBatchRequestEntry{
				Id: aws.String(strconv.Itoa(len(handles))), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0})
			var body struct {
				JobID string `json:"job_id"`
			}
			if json.Unmarshal([]byte(aws.ToString(m.Body)), &body) == nil && body.JobID != "" {
				by[body.JobID]++
			}
		}
		if fresh == 0 {
			return nil
		}
	}
	return nil
}

// ReconcileEvery is how often the component's schedule sends the reconcile message.
const ReconcileEvery = 5 * time.Minute
