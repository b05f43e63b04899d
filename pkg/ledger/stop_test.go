package ledger_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

type sentFinalize struct{ n atomic.Int64 }

func (s *sentFinalize) SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	s.n.Add(1)
	return &sqs.SendMessageOutput{}, nil
}

// CI at d0ba022 failed TestJobs/CancelStops with "job counts changed since the
// snapshot": a cancel took a snapshot and finished the job only if no task had been
// counted since, five times, and on a busy job a task was counted every time. A cancel
// (or a failure) must win however busy the job is: its final counts are still exactly
// the tasks counted, and nothing is counted after it.
func TestCancelWinsOverSettlementsThatNeverPause(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	b := startBusyJob(t, st, 16)
	require.Eventually(t, func() bool { return b.counted.Load() >= 200 }, time.Minute, 10*time.Millisecond)
	sent := &sentFinalize{}
	e := &job.Engine{Ledger: st, Queue: sent, JobsQueueURL: "jobs", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	j, err := e.Cancel(ctx, b.id, "cancelled by test")
	require.NoError(t, err, "a cancel wins over settlements that never pause")
	assert.Equal(t, ledger.JobCancelled, j.Status)
	assert.Equal(t, "cancelled by test", j.Reason)
	assert.EqualValues(t, 1, sent.n.Load(), "its finalize is requested once")
	require.Eventually(t, func() bool { return b.stopped.Load() >= 20 }, time.Minute, 10*time.Millisecond,
		"settlements after the cancel are refused")
	b.halt()
	assert.Zero(t, b.other.Load(), "every settlement is counted or refused")
	c, err := st.JobCounts(ctx, b.id, b.shards)
	require.NoError(t, err)
	assert.Equal(t, c, j.Final, "the final counts are exactly the tasks counted")
	assert.Equal(t, b.counted.Load(), c.Succeeded, "every task counted is in the final counts, and only those")
	assert.EqualValues(t, b.counted.Load()+1, c.Done)
	t.Logf("cancelled with %d tasks counted; %d refused after", c.Succeeded, b.stopped.Load())
}

// busyJob is a running job on job.DefaultShards shards whose root was counted with room
// for a million children, and writers that settle one child after another until halt.
type busyJob struct {
	id                      string
	shards                  int
	counted, stopped, other atomic.Int64 // outcomes: Counted, JobStopped, any other
	stop                    chan struct{}
	wg                      sync.WaitGroup
}

func startBusyJob(t *testing.T, st *ledger.Store, writers int) *busyJob {
	t.Helper()
	ctx := context.Background()
	b := &busyJob{id: fmt.Sprintf("job-%d", time.Now().UnixNano()), shards: job.DefaultShards, stop: make(chan struct{})}
	require.NoError(t, st.CreateJob(ctx, b.id, `{"kind":"prefix","bucket":"in","key":"p/"}`, b.shards, t0))
	out, err := st.Settle(ctx, t0, []ledger.Settlement{{JobID: b.id, TaskID: "root", Shards: b.shards, Children: 1_000_000}})
	require.NoError(t, err)
	require.Equal(t, ledger.Counted, out[0])
	for w := range writers {
		b.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-b.stop:
					return
				default:
				}
				out, err := st.Settle(ctx, time.Now(), []ledger.Settlement{{JobID: b.id, TaskID: fmt.Sprintf("t%d-%d", w, n),
					Parent: "root", Shards: b.shards, Succeeded: 1, Bytes: 10}})
				if !assert.NoError(t, err) {
					return
				}
				switch out[0] {
				case ledger.Counted:
					b.counted.Add(1)
				case ledger.JobStopped:
					b.stopped.Add(1)
				default:
					b.other.Add(1)
				}
			}
		})
	}
	t.Cleanup(b.halt)
	return b
}

// halt stops the writers and waits for them (once).
func (b *busyJob) halt() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	b.wg.Wait()
}

// A stopper that dies after stopping some shards, before it finishes the job's record,
// leaves a running job that counts on its other shards only: a check of the job (each
// settled task's, the reconciler's) a minute later sees the stop in the shards and
// finishes it, with the stopper's status and reason and the counts of every shard.
func TestAStopCutShortIsFinishedByTheNextCheck(t *testing.T) {
	st, db, table := newStoreTable(t, 0)
	ctx := context.Background()
	const shards = 4
	id := fmt.Sprintf("job-%d", time.Now().UnixNano())
	require.NoError(t, st.CreateJob(ctx, id, `{"kind":"prefix","bucket":"in","key":"p/"}`, shards, t0))
	var all []ledger.Settlement
	all = append(all, ledger.Settlement{JobID: id, TaskID: "root", Shards: shards, Children: 100})
	for n := range 20 {
		all = append(all, ledger.Settlement{JobID: id, TaskID: fmt.Sprintf("t%d", n), Parent: "root", Shards: shards, Succeeded: 1, Bytes: 10})
	}
	for _, s := range all {
		out, err := st.Settle(ctx, t0, []ledger.Settlement{s})
		require.NoError(t, err)
		require.Equal(t, ledger.Counted, out[0])
	}
	// The dead stopper's work: shards 0 and 1 stopped, the job's record untouched.
	stoppedAt := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for n := range 2 {
		_, err := db.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table),
			Key: map[string]types.AttributeValue{
				ledger.AttrPK: &types.AttributeValueMemberS{Value: "J#" + id},
				ledger.AttrSK: &types.AttributeValueMemberS{Value: fmt.Sprintf("c#%d", n)},
			},
			UpdateExpression: aws.String("SET stopped = :s, stop_reason = :r, stop_at = :at"),
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":s": &types.AttributeValueMemberS{Value: string(ledger.JobCancelled)}, ":r": &types.AttributeValueMemberS{Value: "cancelled by a stopper that died"},
				":at": &types.AttributeValueMemberS{Value: stoppedAt.Add(time.Duration(n) * time.Millisecond).Format(time.RFC3339Nano)},
			}})
		require.NoError(t, err)
	}
	peek, err := st.PeekCounts(ctx, id, shards)
	require.NoError(t, err)
	assert.Equal(t, ledger.Stop{Status: ledger.JobCancelled, Reason: "cancelled by a stopper that died", At: stoppedAt}, peek.Stop)
	j, _, err := st.GetJob(ctx, id)
	require.NoError(t, err)
	require.Equal(t, ledger.JobRunning, j.Status, "the record was not reached")

	sent := &sentFinalize{}
	clock := stoppedAt.Add(time.Second)
	e := &job.Engine{Ledger: st, Queue: sent, JobsQueueURL: "jobs", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return clock }}
	require.NoError(t, e.Check(ctx, id))
	j, _, err = st.GetJob(ctx, id)
	require.NoError(t, err)
	require.Equal(t, ledger.JobRunning, j.Status, "a stop a second old is left to its stopper (a cancel under way)")
	clock = stoppedAt.Add(job.StopTakeover)
	require.NoError(t, e.Check(ctx, id))
	j, _, err = st.GetJob(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, ledger.JobCancelled, j.Status)
	assert.Equal(t, "cancelled by a stopper that died", j.Reason)
	assert.Equal(t, ledger.Counts{Expected: 101, Done: 21, Succeeded: 20, Bytes: 200}, j.Final)
	assert.EqualValues(t, 1, sent.n.Load(), "its finalize is requested")
	out, err := st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "late", Parent: "root", Shards: shards, Succeeded: 1}})
	require.NoError(t, err)
	assert.Equal(t, ledger.JobStopped, out[0], "nothing is counted after")
	require.NoError(t, e.Check(ctx, id), "a second check changes nothing")
	assert.EqualValues(t, 1, sent.n.Load())
}

// conflictingDB refuses the first n shard stops with TransactionConflictException, as
// DynamoDB does while a settlement's transaction holds the shard (DynamoDB Local does
// not).
type conflictingDB struct {
	*dynamodb.Client
	n atomic.Int32
}

func (d *conflictingDB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if strings.Contains(aws.ToString(in.UpdateExpression), "stop_reason") && d.n.Add(-1) >= 0 {
		return nil, &types.TransactionConflictException{Message: aws.String("Transaction is ongoing for the item")}
	}
	return d.Client.UpdateItem(ctx, in, opts...)
}

// A shard inside a settlement's transaction refuses the stop for a moment: the stop
// tries it again, and the job is cancelled with every shard's counts.
func TestAStopRetriesAShardInATransaction(t *testing.T) {
	_, client, table := newStoreTable(t, 0)
	db := &conflictingDB{Client: client}
	db.n.Store(5)
	st := ledger.New(db, table, 0)
	ctx := context.Background()
	id := fmt.Sprintf("job-%d", time.Now().UnixNano())
	require.NoError(t, st.CreateJob(ctx, id, `{"kind":"prefix","bucket":"in","key":"p/"}`, 2, t0))
	out, err := st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "root", Shards: 2, Children: 10, Listed: 10}})
	require.NoError(t, err)
	require.Equal(t, ledger.Counted, out[0])
	finished, snap, err := st.StopJob(ctx, id, 2, ledger.JobCancelled, "by test", t0)
	require.NoError(t, err)
	assert.True(t, finished)
	assert.Less(t, db.n.Load(), int32(0), "every injected conflict was met")
	assert.Equal(t, ledger.Counts{Expected: 11, Done: 1, Listed: 10}, snap.Counts)
	j, _, err := st.GetJob(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, ledger.JobCancelled, j.Status)
	assert.Equal(t, snap.Counts, j.Final)
}
