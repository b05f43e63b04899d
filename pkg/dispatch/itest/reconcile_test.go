package itest

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// checkFailsDB fails every read of a job's counter shards: each completion check fails.
type checkFailsDB struct {
	*flakyDB
	on bool
}

func (d *checkFailsDB) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	if d.on {
		for _, ka := range in.RequestItems {
			for _, k := range ka.Keys {
				if sk, ok := k["sk"]; ok && len(ledgerText(sk)) > 2 && ledgerText(sk)[:2] == "c#" {
					return nil, errInjected
				}
			}
		}
	}
	return d.flakyDB.BatchGetItem(ctx, in, opts...)
}

// No job stays RUNNING for ever: every check after the last task is counted fails, and
// the copies sent to repeat it are lost too. The job's work is done but it is still
// RUNNING — until the reconcile message (the component's schedule) arrives: the
// reconciler completes it, requests its finalize, and it is reported once.
func TestReconcilerFinishesAJobWhoseChecksWereLost(t *testing.T) {
	s := newStack(t)
	db := &checkFailsDB{flakyDB: s.db}
	s.store = ledger.New(db, s.store.Table(), 0)
	s.rewire(t)
	for _, k := range []string{"p/a.txt", "p/b.txt", "p/c.txt"} {
		s.put(k, "content of "+k)
	}
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "p/"})
	db.on = true
	s.q.dropAgain.Store(true)
	s.drain()
	j, _, err := s.store.GetJob(s.ctx, id)
	require.NoError(t, err)
	require.Equal(t, ledger.JobRunning, j.Status, "every check failed: the job is stuck")
	require.Positive(t, s.q.dropped.Load(), "and the copies sent to check again were lost")
	c, err := s.store.JobCounts(s.ctx, id, j.Shards)
	require.NoError(t, err)
	require.Zero(t, c.Outstanding(), "although its work is done")

	db.on = false
	s.q.dropAgain.Store(false)
	s.q.push(jobsQueue, fnenv.ReconcileBody, nil)
	s.drain()
	j, _, err = s.store.GetJob(s.ctx, id)
	require.NoError(t, err)
	assert.Equal(t, ledger.JobComplete, j.Status)
	assert.True(t, j.Notified, "reported once the reconciler requested its finalize")
	assert.EqualValues(t, 3, j.Final.Succeeded)
	assert.False(t, j.ReconciledAt.IsZero())
	succeeded, _ := s.reported(id)
	assert.Len(t, succeeded, 3)
}

// A job whose task sits in a dead-letter queue is reported by the reconciler: the job
// record says how many of its tasks are stuck (what `fileflow status` shows).
func TestReconcilerReportsTasksStuckInADeadLetterQueue(t *testing.T) {
	s := newStack(t)
	for _, k := range []string{"q/a.txt", "q/b.txt"} {
		s.put(k, "content of "+k)
	}
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "q/"})
	s.deliver(jobsQueue, s.q.pop(jobsQueue)) // the root: lists the files, sends a task message
	stuck := s.q.take(tasksQueue)
	require.Len(t, stuck, 1)
	s.q.mu.Lock()
	s.q.dlq[tasksQueue+"-dlq"] = stuck // it failed until SQS moved it to the DLQ
	s.q.mu.Unlock()

	s.q.push(jobsQueue, fnenv.ReconcileBody, nil)
	s.drain()
	j, _, err := s.store.GetJob(s.ctx, id)
	require.NoError(t, err)
	assert.Equal(t, ledger.JobRunning, j.Status, "it waits for the task (redrive it)")
	assert.Equal(t, 1, j.StuckTasks)

	// Redriven, the task runs and the job completes.
	s.q.mu.Lock()
	s.q.dlq[tasksQueue+"-dlq"] = nil
	s.q.mu.Unlock()
	for _, m := range stuck {
		m.receive = 0
		s.q.requeueFresh(tasksQueue, m)
	}
	s.drain()
	j, _, err = s.store.GetJob(s.ctx, id)
	require.NoError(t, err)
	assert.Equal(t, ledger.JobComplete, j.Status)
}
