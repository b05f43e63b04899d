package ledger_test

// Review 11, of 51a6d0c (a job's stop): a fresh session's tests. R1 (a FAILED decision
// finished with a later snapshot's counts) and R2 (the stopper's record update landed,
// its response lost: no finalize requested) failed at 51a6d0c; the two probes passed
// and are kept.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// hookLedger runs once a function right after the first JobSnapshot returns: a
// settlement landing between the engine's decision and its StopJob.
type hookLedger struct {
	*ledger.Store
	once  sync.Once
	after func()
}

func (h *hookLedger) JobSnapshot(ctx context.Context, id string, shards int) (ledger.Snapshot, error) {
	s, err := h.Store.JobSnapshot(ctx, id, shards)
	if h.after != nil {
		h.once.Do(h.after)
	}
	return s, err
}

// R1: the FAILED decision is taken on one snapshot, the final counts on another.
func TestReviewFailDecidedOnStaleSnapshot(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	const shards = 4
	id := fmt.Sprintf("job-%d", time.Now().UnixNano())
	require.NoError(t, st.CreateJob(ctx, id, `{"kind":"prefix","bucket":"in","key":"p/","tolerate":"5%"}`, shards, t0))
	for _, s := range []ledger.Settlement{
		{JobID: id, TaskID: "root", Shards: shards, Children: 2},
		{JobID: id, TaskID: "t1", Parent: "root", Shards: shards, Succeeded: 94, Failed: 6},
	} {
		out, err := st.Settle(ctx, t0, []ledger.Settlement{s})
		require.NoError(t, err)
		require.Equal(t, ledger.Counted, out[0])
	}
	h := &hookLedger{Store: st, after: func() {
		// The last task is counted after the snapshot, before the shards are stopped.
		out, err := st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "t2", Parent: "root", Shards: shards, Succeeded: 100}})
		require.NoError(t, err)
		require.Equal(t, ledger.Counted, out[0])
	}}
	sent := &sentFinalize{}
	e := &job.Engine{Ledger: h, Queue: sent, JobsQueueURL: "jobs", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	require.NoError(t, e.Check(ctx, id))
	j, _, err := st.GetJob(ctx, id)
	require.NoError(t, err)
	t.Logf("status %s reason %q final %+v outstanding %d", j.Status, j.Reason, j.Final, j.Final.Outstanding())
	tol, _ := job.ParseTolerance("5%")
	assert.False(t, tol.Exceeded(j.Final.Failed, j.Final.Finished(), true), "final counts are within the tolerance")
	assert.Equal(t, ledger.JobComplete, j.Status, "every task done within the tolerance: COMPLETE (old code re-snapshotted and completed)")
}

// dropOnce forwards the first UpdateItem that finishes a job's record, then reports a
// connection reset (the response is lost): the SDK retries the UpdateItem.
type dropOnce struct {
	dropped atomic.Bool
}

func (d *dropOnce) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("X-Amz-Target") != "DynamoDB_20120810.UpdateItem" || r.Body == nil {
		return http.DefaultTransport.RoundTrip(r)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	if !strings.Contains(string(b), "finished_at") || !d.dropped.CompareAndSwap(false, true) {
		return http.DefaultTransport.RoundTrip(r)
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return nil, errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer")
}

// R2: the stopper's record update is applied, its response lost; the SDK's retry fails
// the condition (status is no longer RUNNING) and the stopper believes another caller
// won: nobody requests the finalize.
func TestReviewStopRecordResponseLost(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	require.NoError(t, err)
	drop := &dropOnce{}
	db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.HTTPClient = &http.Client{Transport: drop} })
	table := fmt.Sprintf("ledger-review-%d", time.Now().UnixNano())
	require.NoError(t, ledger.CreateTable(ctx, db, table))
	st := ledger.New(db, table, 0)
	const shards = 4
	id := fmt.Sprintf("job-%d", time.Now().UnixNano())
	require.NoError(t, st.CreateJob(ctx, id, `{"kind":"prefix","bucket":"in","key":"p/"}`, shards, t0))
	out, err := st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "root", Shards: shards, Children: 10}})
	require.NoError(t, err)
	require.Equal(t, ledger.Counted, out[0])

	sent := &sentFinalize{}
	e := &job.Engine{Ledger: st, Queue: sent, JobsQueueURL: "jobs", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	j, err := e.Cancel(ctx, id, "cancelled by review")
	require.NoError(t, err)
	require.True(t, drop.dropped.Load(), "the record update's response was dropped")
	t.Logf("after Cancel: status %s, finalize requests %d, FinalizeRequested %v", j.Status, sent.n.Load(), j.FinalizeRequested)
	assert.Equal(t, ledger.JobCancelled, j.Status)
	assert.EqualValues(t, 1, sent.n.Load(), "the cancel that finished the job requests its finalize")
}

// Soundness probe: a FAILED and a CANCELLED stopper race on a busy job.
func TestReviewFailAndCancelRaceOnBusyJob(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	b := startBusyJob(t, st, 8)
	require.Eventually(t, func() bool { return b.counted.Load() >= 100 }, time.Minute, 10*time.Millisecond)
	sent := &sentFinalize{}
	e := &job.Engine{Ledger: st, Queue: sent, JobsQueueURL: "jobs", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var sw sync.WaitGroup
	var cerr, ferr error
	sw.Go(func() { _, cerr = e.Cancel(ctx, b.id, "cancel") })
	sw.Go(func() { ferr = e.Fail(ctx, b.id, "fail") })
	sw.Wait()
	time.Sleep(200 * time.Millisecond)
	b.halt()
	require.NoError(t, cerr)
	require.NoError(t, ferr)
	j, _, err := st.GetJob(ctx, b.id)
	require.NoError(t, err)
	c, err := st.JobCounts(ctx, b.id, b.shards)
	require.NoError(t, err)
	t.Logf("status %s final %+v counted %d finalize requests %d", j.Status, j.Final, b.counted.Load(), sent.n.Load())
	assert.Equal(t, c, j.Final)
	assert.Equal(t, b.counted.Load(), c.Succeeded)
	assert.EqualValues(t, 1, sent.n.Load())
}

// Soundness probe: COMPLETE decided on a snapshot, then a full cancel lands before the
// FinishJob transaction, and the reverse (the cancel's StopJob after a COMPLETE).
func TestReviewCompleteVsCancel(t *testing.T) {
	for _, cancelFirst := range []bool{true, false} {
		t.Run(fmt.Sprint("cancelFirst=", cancelFirst), func(t *testing.T) {
			st, _ := newStore(t, 0)
			ctx := context.Background()
			const shards = 4
			id := fmt.Sprintf("job-%d", time.Now().UnixNano())
			require.NoError(t, st.CreateJob(ctx, id, `{"kind":"prefix","bucket":"in","key":"p/"}`, shards, t0))
			for _, s := range []ledger.Settlement{
				{JobID: id, TaskID: "root", Shards: shards, Children: 1},
				{JobID: id, TaskID: "t1", Parent: "root", Shards: shards, Succeeded: 5},
			} {
				out, err := st.Settle(ctx, t0, []ledger.Settlement{s})
				require.NoError(t, err)
				require.Equal(t, ledger.Counted, out[0])
			}
			sent := &sentFinalize{}
			other := &job.Engine{Ledger: st, Queue: sent, JobsQueueURL: "jobs", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			h := &hookLedger{Store: st}
			if cancelFirst {
				h.after = func() { _, err := other.Cancel(ctx, id, "cancel"); require.NoError(t, err) }
			}
			e := &job.Engine{Ledger: h, Queue: sent, JobsQueueURL: "jobs", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			require.NoError(t, e.Check(ctx, id))
			if !cancelFirst {
				_, err := other.Cancel(ctx, id, "cancel")
				t.Logf("late cancel: %v", err)
			}
			j, _, err := st.GetJob(ctx, id)
			require.NoError(t, err)
			c, err := st.JobCounts(ctx, id, shards)
			require.NoError(t, err)
			t.Logf("status %s final %+v finalize requests %d", j.Status, j.Final, sent.n.Load())
			assert.Equal(t, c, j.Final)
			assert.EqualValues(t, 1, sent.n.Load())
		})
	}
}
