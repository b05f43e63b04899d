package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// A job fans out as a tree of listing tasks and file batches, processed concurrently on
// 8 shards while every worker tries to complete the job after each write. As in the
// dispatcher, a listing enqueues its children *before* it settles, so children often
// arrive before their parent is counted (and must wait); every task is also delivered
// twice. The job completes exactly once, only after every task has finished, and each
// file is counted once.
func TestJobCompletesExactlyOnceNeverEarly(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	const shards = 8
	id := fmt.Sprintf("job-%d", time.Now().UnixNano())
	require.NoError(t, st.CreateJob(ctx, id, `{"kind":"prefix"}`, shards, t0))
	require.ErrorIs(t, st.CreateJob(ctx, id, `{}`, shards, t0), ledger.ErrJobExists, "a job is created once")

	type unit struct {
		id, parent string
		depth      int
		files      int // a file batch if > 0
	}
	const fanout, filesPerListing, batch = 4, 30, 10
	// Tree: root -> 4 listings -> 4 listings each (depth 2); every listing lists 30 files.
	listings := 1 + fanout + fanout*fanout
	totalTasks := int64(listings + listings*filesPerListing/batch)

	work := make(chan unit, 10000)
	var settled sync.Map // task id -> counted
	var finished atomic.Int64
	var completions, pendingParent, duplicates atomic.Int64
	var early atomic.Bool
	var pending sync.WaitGroup
	pending.Add(2)
	work <- unit{id: "root"}
	work <- unit{id: "root"} // delivered twice

	tryComplete := func() {
		ok, c, err := st.TryComplete(ctx, id, shards, time.Now())
		assert.NoError(t, err)
		assert.GreaterOrEqual(t, c.Outstanding(), int64(0), "done never exceeds expected")
		if ok {
			completions.Add(1)
			if finished.Load() != totalTasks {
				early.Store(true)
			}
		}
	}
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				s := ledger.Settlement{JobID: id, TaskID: u.id, Parent: u.parent, Shards: shards}
				var children []unit
				if u.files > 0 {
					s.Succeeded, s.Failed, s.Bytes = int64(u.files-1), 1, 100
				} else {
					if u.depth < 2 {
						for n := range fanout {
							children = append(children, unit{id: fmt.Sprintf("%s.l%d", u.id, n), parent: u.id, depth: u.depth + 1})
						}
					}
					for n := range filesPerListing / batch {
						children = append(children, unit{id: fmt.Sprintf("%s.m%d", u.id, n), parent: u.id, files: batch})
					}
					s.Children, s.Listed = int64(len(children)), filesPerListing
					// Enqueued before the settlement, each twice (duplicate delivery).
					pending.Add(2 * len(children))
					for _, c := range children {
						work <- c
						work <- c
					}
				}
				out, err := st.Settle(ctx, time.Now(), []ledger.Settlement{s})
				assert.NoError(t, err)
				switch out[0] {
				case ledger.Counted:
					_, again := settled.LoadOrStore(u.id, true)
					assert.False(t, again, "task %s counted twice", u.id)
					finished.Add(1)
				case ledger.Duplicate:
					duplicates.Add(1)
				case ledger.ParentPending:
					pendingParent.Add(1)
					pending.Add(1)
					work <- u // comes back later
				default:
					t.Errorf("task %s: outcome %v", u.id, out[0])
				}
				tryComplete()
				pending.Done()
			}
		}()
	}
	pending.Wait()
	close(work)
	wg.Wait()
	tryComplete() // a late caller changes nothing

	assert.Equal(t, int64(1), completions.Load(), "completes exactly once")
	assert.False(t, early.Load(), "never before all work finished")
	c, err := st.JobCounts(ctx, id, shards)
	require.NoError(t, err)
	files := int64(listings * filesPerListing)
	assert.Equal(t, ledger.Counts{Expected: totalTasks, Done: totalTasks, Listed: files,
		Succeeded: files - files/batch, Failed: files / batch, Bytes: 100 * files / batch}, c)
	// Every task came at least twice (a listing run twice sends its children again).
	assert.GreaterOrEqual(t, duplicates.Load(), totalTasks)
	j, ok, err := st.GetJob(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, ledger.JobComplete, j.Status)
	assert.Equal(t, c, j.Final)
	t.Logf("%d tasks (%d listings, %d files) on %d shards; %d duplicates, %d waited for their parent; counts %+v",
		totalTasks, listings, files, shards, duplicates.Load(), pendingParent.Load(), c)
}

// A batch may hold a task, its own child and the same task twice: the transaction must
// not name one item twice, and each is counted once. A child sent by a run of its
// parent that was not counted is an orphan.
func TestSettleBatchWithParentAndDuplicate(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	id := fmt.Sprintf("job-b-%d", time.Now().UnixNano())
	require.NoError(t, st.CreateJob(ctx, id, `{}`, 2, t0))
	out, err := st.Settle(ctx, t0, []ledger.Settlement{
		{JobID: id, TaskID: "root", Run: "r1", Shards: 2, Messages: 2, Listed: 3, Lines: 1},
		{JobID: id, TaskID: "m1", Parent: "root", ParentRun: "r1", Shards: 2, Succeeded: 2, Lines: 2},
		{JobID: id, TaskID: "m1", Parent: "root", ParentRun: "r1", Shards: 2, Succeeded: 2, Lines: 2},
		{JobID: id, TaskID: "x", Parent: "nope", Shards: 2, Succeeded: 5},
		{JobID: "no-such-job", TaskID: "root", Shards: 1},
		// A run of root that died before it was counted sent this one.
		{JobID: id, TaskID: "m-extra", Parent: "root", ParentRun: "r0", Shards: 2, Succeeded: 7},
	})
	require.NoError(t, err)
	assert.Equal(t, []ledger.Outcome{ledger.Counted, ledger.Counted, ledger.Duplicate, ledger.ParentPending, ledger.UnknownJob, ledger.Orphan}, out)
	out, err = st.Settle(ctx, t0, []ledger.Settlement{
		{JobID: id, TaskID: "m-late", Parent: "root", ParentRun: "r0", Shards: 2, Succeeded: 1},
		{JobID: id, TaskID: "m2", Parent: "root", ParentRun: "r1", Shards: 2},
	})
	require.NoError(t, err)
	assert.Equal(t, []ledger.Outcome{ledger.Orphan, ledger.Counted}, out, "another run's child does not hold back a good one")
	snap, err := st.JobSnapshot(ctx, id, 2)
	require.NoError(t, err)
	c := snap.Counts
	assert.Equal(t, ledger.Counts{Expected: 3, Done: 3, Listed: 3, Succeeded: 2}, c)
	counted, err := st.CountedTasks(ctx, id)
	require.NoError(t, err)
	require.Len(t, counted, 3)
	assert.Equal(t, []string{"m1", "m2", "root"}, []string{counted[0].TaskID, counted[1].TaskID, counted[2].TaskID})
	assert.Equal(t, []int64{2, 0, 1}, []int64{counted[0].Lines, counted[1].Lines, counted[2].Lines})

	// A task counted after the snapshot: the finish is refused, and decided again.
	out, err = st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "m3", Parent: "root", ParentRun: "r1", Shards: 2, Failed: 1}})
	require.NoError(t, err)
	require.Equal(t, []ledger.Outcome{ledger.Counted}, out)
	_, err = st.FinishJob(ctx, id, ledger.JobCancelled, "by test", snap, t0)
	require.ErrorIs(t, err, ledger.ErrCountsChanged)
	snap, err = st.JobSnapshot(ctx, id, 2)
	require.NoError(t, err)
	done, err := st.FinishJob(ctx, id, ledger.JobCancelled, "by test", snap, t0)
	require.NoError(t, err)
	assert.True(t, done)
	done, err = st.FinishJob(ctx, id, ledger.JobFailed, "late", snap, t0)
	require.NoError(t, err)
	assert.False(t, done, "a finished job stays finished")
	// …and counts nothing more: a late task is dropped, so the counts and the report stay.
	out, err = st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "m4", Parent: "root", ParentRun: "r1", Shards: 2, Succeeded: 1}})
	require.NoError(t, err)
	assert.Equal(t, []ledger.Outcome{ledger.JobStopped}, out)
	after, err := st.JobCounts(ctx, id, 2)
	require.NoError(t, err)
	assert.Equal(t, snap.Counts, after)
	j, _, err := st.GetJob(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, ledger.JobCancelled, j.Status)
	assert.Equal(t, "by test", j.Reason)
}

func TestCreateJobShardBounds(t *testing.T) {
	st, _ := newStore(t, 0)
	assert.ErrorContains(t, st.CreateJob(context.Background(), "j", "{}", 0, t0), "shards = 0: must be in 1..99")
	assert.ErrorContains(t, st.CreateJob(context.Background(), "j", "{}", 100, t0), "shards = 100")
}

// Cases reviews found: a task twice in one batch whose parent is not counted; a parent
// re-run (a duplicate) with its child in one call; a grandchild in the same call; copies
// of one task sent by two runs of its parent in one batch (in either order); children
// of two runs in one batch; a marker written before runs were recorded.
func TestSettleEdgeCases(t *testing.T) {
	st, db := newStore(t, 0)
	ctx := context.Background()
	id := fmt.Sprintf("job-e-%d", time.Now().UnixNano())
	require.NoError(t, st.CreateJob(ctx, id, `{}`, 2, t0))

	out, err := st.Settle(ctx, t0, []ledger.Settlement{
		{JobID: id, TaskID: "mZ", Parent: "root", ParentRun: "r1", Shards: 2},
		{JobID: id, TaskID: "mZ", Parent: "root", ParentRun: "r1", Shards: 2},
	})
	require.NoError(t, err)
	assert.Equal(t, []ledger.Outcome{ledger.ParentPending, ledger.ParentPending}, out, "a copy shares the first one's fate")

	out, err = st.Settle(ctx, t0, []ledger.Settlement{
		{JobID: id, TaskID: "root", Run: "r1", Shards: 2, Messages: 7, Plans: 1},
		{JobID: id, TaskID: "l0", Parent: "root", ParentRun: "r1", Run: "r2", Shards: 2, Messages: 1},
		{JobID: id, TaskID: "m0-of-l0", Parent: "l0", ParentRun: "r2", Shards: 2, Succeeded: 1},
	})
	require.NoError(t, err)
	assert.Equal(t, ledger.Counted, out[0])
	assert.Equal(t, ledger.Counted, out[1], "the child waits for its parent in the same call, then counts")
	assert.Contains(t, []ledger.Outcome{ledger.Counted, ledger.ParentPending}, out[2], "a grandchild counts or waits, never early")

	// The parent re-run (a duplicate) with its child: the counted run decides.
	out, err = st.Settle(ctx, t0, []ledger.Settlement{
		{JobID: id, TaskID: "root", Run: "r9", Shards: 2, Messages: 3},
		{JobID: id, TaskID: "m4", Parent: "root", ParentRun: "r1", Shards: 2},
	})
	require.NoError(t, err)
	assert.Equal(t, []ledger.Outcome{ledger.Duplicate, ledger.Counted}, out)

	// The same content sent by two runs (the same task id): only the counted run's copy
	// counts, whichever comes first in the batch; and children of both runs.
	out, err = st.Settle(ctx, t0, []ledger.Settlement{
		{JobID: id, TaskID: "mA", Parent: "root", ParentRun: "r9", Shards: 2, Succeeded: 1},
		{JobID: id, TaskID: "mA", Parent: "root", ParentRun: "r1", Shards: 2, Succeeded: 1},
		{JobID: id, TaskID: "mB", Parent: "root", ParentRun: "r1", Shards: 2, Succeeded: 1},
		{JobID: id, TaskID: "mB", Parent: "root", ParentRun: "r9", Shards: 2, Succeeded: 1},
		{JobID: id, TaskID: "mC", Parent: "root", ParentRun: "r9", Shards: 2, Succeeded: 1},
		{JobID: id, TaskID: "mD", Parent: "root", ParentRun: "r1", Shards: 2, Succeeded: 1},
	})
	require.NoError(t, err)
	assert.Equal(t, ledger.Orphan, out[0])
	assert.Equal(t, ledger.Counted, out[1])
	assert.Equal(t, ledger.Counted, out[2])
	assert.Contains(t, []ledger.Outcome{ledger.Duplicate, ledger.Orphan}, out[3], "never counted twice")
	assert.Equal(t, ledger.Orphan, out[4])
	assert.Equal(t, ledger.Counted, out[5])
	c, err := st.JobCounts(ctx, id, 2)
	require.NoError(t, err)
	assert.Equal(t, int64(3), c.Succeeded-1, "mA, mB and mD counted once each, beside m0-of-l0")

	// A marker from before runs were recorded: its children carry no run.
	_, err = db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(st.Table()), Item: map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "J#" + id}, "sk": &types.AttributeValueMemberS{Value: "t#old"},
	}})
	require.NoError(t, err)
	out, err = st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "m7", Parent: "old", Shards: 2}})
	require.NoError(t, err)
	assert.Equal(t, []ledger.Outcome{ledger.Counted}, out)
	state, err := st.TaskState(ctx, id, "l9", "old", "")
	require.NoError(t, err)
	assert.Zero(t, state, "go ahead")
	state, err = st.TaskState(ctx, id, "l9", "root", "r9")
	require.NoError(t, err)
	assert.Equal(t, ledger.Orphan, state)
	state, err = st.TaskState(ctx, id, "l0", "root", "r1")
	require.NoError(t, err)
	assert.Equal(t, ledger.Duplicate, state)
}
