package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// A replay of a success whose history is full is written once (the history keeps its
// newest part); the same replay again is a duplicate.
func TestReplayWithAFullHistory(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, 0)
	k := ledger.Key{Bucket: "in", Key: "full.csv"}
	rev := ledger.Revision{ETag: "e"}
	for i := range ledger.MaxHistory - 1 {
		require.NoError(t, st.Write(ctx, fail(k, rev, ledger.StatusRetrying, "x", ledger.Attempt{At: t0.Add(time.Duration(i) * time.Second)})))
	}
	require.NoError(t, st.Write(ctx, succeed(k, rev, ledger.Result{}, ledger.Attempt{At: t0.Add(time.Minute)})))
	w := succeed(k, rev, ledger.Result{}, ledger.Attempt{At: t0.Add(2 * time.Minute)})
	w.Replay = "r1"
	require.NoError(t, st.Write(ctx, w))
	assert.ErrorIs(t, st.Write(ctx, w), ledger.ErrAlreadySucceeded)
	rec, _, err := st.Get(ctx, k)
	require.NoError(t, err)
	assert.Equal(t, ledger.MaxHistory+1, rec.Attempts)
	assert.Len(t, rec.History, ledger.MaxHistory)
	assert.Contains(t, rec.Replays, "r1")
	assert.True(t, rec.Last().At.Equal(t0.Add(2*time.Minute)))
}
