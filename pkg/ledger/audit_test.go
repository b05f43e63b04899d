package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// FailedBetween reads the failure index across day partitions, from an instant to an
// instant, with each entry's whole item and its code; a file that succeeded since it
// failed is left out.
func TestFailedBetween(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, 0)
	day1 := time.Date(2026, 11, 25, 23, 50, 0, 0, time.UTC)
	day2 := day1.Add(20 * time.Minute) // the next UTC day
	w := func(key string, status ledger.Status, code string, at time.Time) {
		wr := fail(ledger.Key{Bucket: "in", Key: key}, ledger.Revision{ETag: "e-" + key}, status, "why "+key, ledger.Attempt{At: at, Receive: 1})
		wr.Code = code
		require.NoError(t, st.Write(ctx, wr))
	}
	w("early.csv", ledger.StatusFailed, "Rejected", day1.Add(-time.Hour))
	w("a.csv", ledger.StatusFailed, "CorruptContent", day1)
	w("b.csv", ledger.StatusDeadLettered, "RetriesExhausted", day2)
	w("later-ok.csv", ledger.StatusFailed, "CorruptContent", day2)
	require.NoError(t, st.Write(ctx, succeed(ledger.Key{Bucket: "in", Key: "later-ok.csv"}, ledger.Revision{ETag: "e-later-ok.csv"},
		ledger.Result{Outputs: []string{"s3://out/x"}}, ledger.Attempt{At: day2.Add(time.Minute)})))
	require.NoError(t, st.RecordPoison(ctx, ledger.Poison{MessageID: "m1", Queue: "arn:q", Body: "junk", Reason: "not JSON", Receive: 1, At: day2}))

	got, err := st.FailedBetween(ctx, day1.Add(-time.Minute), day2.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, got, 3, "early.csv is before the period; later-ok.csv succeeded since")
	assert.Equal(t, "a.csv", got[0].File.Key)
	assert.Equal(t, "CorruptContent", got[0].File.Code)
	assert.True(t, got[0].At.Equal(day1))
	var keys []string
	for _, f := range got[1:] {
		if f.File != nil {
			keys = append(keys, f.File.Key)
			assert.Equal(t, "RetriesExhausted", f.File.Code)
		} else {
			require.NotNil(t, f.Poison)
			assert.Equal(t, "m1", f.Poison.MessageID)
			assert.Equal(t, "not JSON", f.Poison.Reason)
			assert.Equal(t, "junk", f.Poison.Body)
		}
	}
	assert.Equal(t, []string{"b.csv"}, keys)

	// A success clears the code with the reason.
	rec, _, err := st.Get(ctx, ledger.Key{Bucket: "in", Key: "later-ok.csv"})
	require.NoError(t, err)
	assert.Empty(t, rec.Code)
	assert.Empty(t, rec.Reason)
}

// FileItems returns every record of a name: the key's own, its superseded revisions
// and the records kept beside it.
func TestFileItems(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, 0)
	k := ledger.Key{Bucket: "in", Key: "r/x.txt"}
	v2 := ledger.Revision{VersionID: "v2", ETag: "e2", Sequencer: ledger.NormalizeSequencer("20")}
	v1 := ledger.Revision{VersionID: "v1", ETag: "e1", Sequencer: ledger.NormalizeSequencer("10")}
	require.NoError(t, st.Write(ctx, succeed(k, v2, ledger.Result{Outputs: []string{"s3://out/r/x.txt"}}, ledger.Attempt{At: t0})))
	require.NoError(t, st.RecordSuperseded(ctx, k, v1, v2, "superseded by revision v:v2 of the key", ledger.Attempt{At: t0.Add(time.Second)}))
	require.NoError(t, st.Write(ctx, fail(ledger.Key{Bucket: "in", Key: "r/x.txt", Scope: ledger.JobScope("j1")}, ledger.Revision{},
		ledger.StatusFailed, "gone", ledger.Attempt{At: t0})))
	require.NoError(t, st.Write(ctx, succeed(ledger.Key{Bucket: "in", Key: "r/x.txt.other"}, v2, ledger.Result{}, ledger.Attempt{At: t0})))

	recs, err := st.FileItems(ctx, "in", "r/x.txt")
	require.NoError(t, err)
	require.Len(t, recs, 3, "not r/x.txt.other's")
	scopes := map[string]ledger.Record{}
	for _, r := range recs {
		scopes[r.Scope()] = r
	}
	assert.Equal(t, "v2", scopes[""].VersionID)
	assert.Equal(t, "v:v2", scopes["superseded#v:v1"].SupersededBy)
	assert.Equal(t, ledger.StatusFailed, scopes["job:j1"].Status)
	assert.Equal(t, ledger.StatusSucceeded, scopes[""].Last().Outcome)

	got, err := st.Records(ctx, []ledger.Key{k, k, {Bucket: "in", Key: "none"}})
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, []string{"s3://out/r/x.txt"}, got[k].Outputs)
}

// Redrive markers: one claim wins; a second sees the first's; a take-over and a mark
// hold only for the run that holds the marker.
func TestRedriveMarkers(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, 0)
	m := ledger.RedriveMark{MessageID: "msg-1", Queue: "https://q/dlq", Run: "run-a", At: t0, Attempts: map[string]int{"F#in/a file": 2}}
	got, claimed, err := st.ClaimRedrive(ctx, m)
	require.NoError(t, err)
	assert.True(t, claimed)
	assert.Equal(t, ledger.RedriveSending, got.State)

	m.Run = "run-b"
	got, claimed, err = st.ClaimRedrive(ctx, m)
	require.NoError(t, err)
	assert.False(t, claimed)
	assert.Equal(t, "run-a", got.Run, "the first claim's marker")
	assert.Equal(t, 2, got.Attempts["F#in/a file"])
	assert.Equal(t, "msg-1", got.MessageID)

	assert.ErrorIs(t, st.MarkRedriven(ctx, "msg-1", "run-b", "new-1", t0), ledger.ErrRedriveTaken)
	assert.ErrorIs(t, st.TakeOverRedrive(ctx, "msg-1", "run-x", "run-b", t0), ledger.ErrRedriveTaken)
	require.NoError(t, st.TakeOverRedrive(ctx, "msg-1", "run-a", "run-b", t0.Add(time.Minute)))
	assert.ErrorIs(t, st.TakeOverRedrive(ctx, "msg-1", "run-a", "run-c", t0), ledger.ErrRedriveTaken, "taken once")
	require.NoError(t, st.MarkRedriven(ctx, "msg-1", "run-b", "new-1", t0.Add(2*time.Minute)))
	got, ok, err := st.GetRedrive(ctx, "msg-1")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, ledger.RedriveSent, got.State)
	assert.Equal(t, "new-1", got.NewMessageID)
	assert.ErrorIs(t, st.TakeOverRedrive(ctx, "msg-1", "run-b", "run-c", t0), ledger.ErrRedriveTaken, "a sent marker is never taken over")
	_, ok, err = st.GetRedrive(ctx, "msg-2")
	require.NoError(t, err)
	assert.False(t, ok)
}
