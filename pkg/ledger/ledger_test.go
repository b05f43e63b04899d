package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local/localtest"
)

// These tests run against DynamoDB Local, started for this test binary.
func TestMain(m *testing.M) { os.Exit(localtest.Main(m)) }

func newStore(t *testing.T, ttl time.Duration) (*ledger.Store, *dynamodb.Client) {
	t.Helper()
	st, db, _ := newStoreTable(t, ttl)
	return st, db
}

// newStoreTable is newStore, with the table's name.
func newStoreTable(t *testing.T, ttl time.Duration) (*ledger.Store, *dynamodb.Client, string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	require.NoError(t, err)
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("ledger-test-%d", time.Now().UnixNano())
	require.NoError(t, ledger.CreateTable(ctx, db, table))
	return ledger.New(db, table, ttl), db, table
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func succeed(k ledger.Key, rev ledger.Revision, res ledger.Result, att ledger.Attempt) ledger.Write {
	return ledger.Write{Key: k, Rev: rev, Status: ledger.StatusSucceeded, Result: res, Attempt: att}
}

func fail(k ledger.Key, rev ledger.Revision, status ledger.Status, reason string, att ledger.Attempt) ledger.Write {
	return ledger.Write{Key: k, Rev: rev, Status: status, Reason: reason, Attempt: att}
}

// Sixteen concurrent deliveries of the same file race to commit: exactly one wins, the
// others get ErrAlreadySucceeded, and the record shows one attempt.
func TestCommitRaceHasOneWinner(t *testing.T) {
	st, _ := newStore(t, 0)
	k := ledger.Key{Bucket: "in", Key: "race/a b+c.txt"}
	rev := ledger.Revision{ETag: "abc"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, dups := 0, 0
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := st.Write(context.Background(), succeed(k, rev, ledger.Result{Size: 3, SHA256: "s", Outputs: []string{"s3://out/x"}},
				ledger.Attempt{At: t0, Receive: 1, RequestID: fmt.Sprint(i)}))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ledger.ErrAlreadySucceeded):
				dups++
			default:
				t.Errorf("commit: %v", err)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, wins)
	assert.Equal(t, 15, dups)
	rec, ok, err := st.Get(context.Background(), k)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, 1, rec.Attempts)
	assert.Len(t, rec.History, 1)
	assert.Equal(t, "abc", rec.ETag)
}

// Failed attempts accumulate in the history; the success that follows keeps them, and a
// failure reported after the success is moot.
func TestHistoryAndStatuses(t *testing.T) {
	st, _ := newStore(t, 30*24*time.Hour)
	ctx := context.Background()
	k := ledger.Key{Bucket: "in", Key: "h.txt"}
	rev := ledger.Revision{VersionID: "1", ETag: "e1"}

	require.NoError(t, st.Write(ctx, ledger.Write{Key: k, Rev: rev, JobID: "job-1", Status: ledger.StatusRetrying, Reason: "timeout", Attempt: ledger.Attempt{At: t0, Receive: 1, Class: "retryable"}}))
	require.NoError(t, st.Write(ctx, ledger.Write{Key: k, Rev: rev, JobID: "job-1", Status: ledger.StatusRetrying, Reason: "throttled", Attempt: ledger.Attempt{At: t0.Add(time.Second), Receive: 2}}))
	require.NoError(t, st.Write(ctx, ledger.Write{Key: k, Rev: rev, JobID: "job-1", Status: ledger.StatusSucceeded,
		Result:  ledger.Result{Size: 10, SHA256: "abc", CRC32C: "01020304", Outputs: []string{"s3://o/h.txt"}, Processors: []string{"copy"}},
		Attempt: ledger.Attempt{At: t0.Add(2 * time.Second), Receive: 3, DurationMS: 5}}))
	err := st.Write(ctx, fail(k, rev, ledger.StatusFailed, "late duplicate failed", ledger.Attempt{At: t0.Add(3 * time.Second)}))
	assert.ErrorIs(t, err, ledger.ErrAlreadySucceeded)

	rec, ok, err := st.Get(ctx, k)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, ledger.StatusSucceeded, rec.Status)
	assert.Equal(t, 3, rec.Attempts)
	assert.Empty(t, rec.Reason, "a success clears the failure reason")
	assert.Equal(t, "job-1", rec.JobID)
	assert.Equal(t, []ledger.Status{ledger.StatusRetrying, ledger.StatusRetrying, ledger.StatusSucceeded},
		[]ledger.Status{rec.History[0].Outcome, rec.History[1].Outcome, rec.History[2].Outcome})
	assert.Equal(t, "timeout", rec.History[0].Error)
	assert.Equal(t, "v:1", rec.History[0].Revision)
	assert.Equal(t, []string{"s3://o/h.txt"}, rec.Outputs)

	states, err := st.Lookup(ctx, []ledger.Key{k, {Bucket: "in", Key: "none"}, k})
	require.NoError(t, err)
	assert.Equal(t, map[ledger.Key]ledger.State{k: {Status: ledger.StatusSucceeded, Rev: rev, Attempts: 3}}, states)
}

// The history keeps the last MaxHistory attempts; Attempts counts them all.
func TestHistoryIsBounded(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	for _, k := range []ledger.Key{{Bucket: "in", Key: "flaky"}, {Bucket: "in", Key: "flaky", Scope: "job:j1"}} {
		const n = ledger.MaxHistory + 7
		for i := range n {
			require.NoError(t, st.Write(ctx, fail(k, ledger.Revision{ETag: "e"}, ledger.StatusRetrying, fmt.Sprintf("try %d", i), ledger.Attempt{At: t0, Receive: i + 1})))
		}
		rec, ok, err := st.Get(ctx, k)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, n, rec.Attempts, k.String())
		require.Len(t, rec.History, ledger.MaxHistory, k.String())
		assert.Equal(t, fmt.Sprintf("try %d", n-1), rec.History[ledger.MaxHistory-1].Error, "the newest attempt is kept")
		assert.Equal(t, fmt.Sprintf("try %d", n-ledger.MaxHistory), rec.History[0].Error)
	}
}

// S3 events of one key arrive out of order: by sequencer, the newest revision holds
// the key's record and an older one is refused (SupersededError), whatever order the
// writes come in; a revision that has no sequencer (a job's file) replaces another only
// once the caller confirmed it is the object's current content (Over).
func TestNewestRevisionWins(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	k := ledger.Key{Bucket: "in", Key: "overwritten.txt"}
	seq := ledger.NormalizeSequencer
	v1 := ledger.Revision{VersionID: "v1", ETag: "e1", Sequencer: seq("0055AED6DCD90281E5")}
	v2 := ledger.Revision{VersionID: "v2", ETag: "e2", Sequencer: seq("0055AED6DCD90281F0")}
	v3 := ledger.Revision{VersionID: "v3", ETag: "e3", Sequencer: seq("0055AED6DCD9028200A1")} // longer, still later
	res := func(out string) ledger.Result { return ledger.Result{Outputs: []string{out}} }

	require.NoError(t, st.Write(ctx, succeed(k, v2, res("v2"), ledger.Attempt{At: t0})))
	var sup *ledger.SupersededError
	require.ErrorAs(t, st.Write(ctx, succeed(k, v1, res("v1"), ledger.Attempt{At: t0})), &sup, "v1 after v2")
	assert.Equal(t, v2, sup.Head.Rev)
	require.ErrorAs(t, st.Write(ctx, fail(k, v1, ledger.StatusFailed, "late", ledger.Attempt{At: t0})), &sup, "a failure of v1 is superseded too")
	require.NoError(t, st.Write(ctx, fail(k, v3, ledger.StatusRetrying, "slow", ledger.Attempt{At: t0})), "v3 replaces v2")
	require.NoError(t, st.Write(ctx, succeed(k, v3, res("v3"), ledger.Attempt{At: t0})))
	rec, _, err := st.Get(ctx, k)
	require.NoError(t, err)
	assert.Equal(t, v3, rec.Rev())
	assert.Equal(t, "e2", rec.PrevETag)
	assert.Equal(t, []string{"v3"}, rec.Outputs)
	assert.Equal(t, 2, rec.Attempts, "a new revision starts its own history")
	assert.ErrorIs(t, st.Write(ctx, succeed(k, v3, res("v3"), ledger.Attempt{At: t0})), ledger.ErrAlreadySucceeded)

	// A job's file (no sequencer) of other content: unordered until confirmed current.
	j := ledger.Revision{ETag: "ej"}
	var other *ledger.OtherRevisionError
	require.ErrorAs(t, st.Write(ctx, succeed(k, j, res("j"), ledger.Attempt{At: t0})), &other)
	assert.Equal(t, v3, other.Head.Rev)
	w := succeed(k, j, res("j"), ledger.Attempt{At: t0})
	stale := other.Head
	stale.Attempts-- // a reading of the record from before its last attempt
	w.Over = &stale
	require.ErrorAs(t, st.Write(ctx, w), &other, "the record changed since it was read: confirm again")
	w.Over = &other.Head
	require.NoError(t, st.Write(ctx, w))
	rec, _, err = st.Get(ctx, k)
	require.NoError(t, err)
	assert.Equal(t, ledger.Revision{ETag: "ej"}, rec.Rev(), "no sequencer, no version: placed by confirmation only")
	// Now even an event with a sequencer is unordered against it.
	v4 := ledger.Revision{VersionID: "v4", ETag: "e4", Sequencer: seq("0055AED6DCD9028300")}
	require.ErrorAs(t, st.Write(ctx, succeed(k, v4, res("v4"), ledger.Attempt{At: t0})), &other)

	// The same content uploaded again later raises the sequencer: an older event of
	// other content then loses.
	k2 := ledger.Key{Bucket: "in", Key: "again.txt"}
	a1 := ledger.Revision{VersionID: "a1", ETag: "same", Sequencer: seq("10")}
	b2 := ledger.Revision{VersionID: "b2", ETag: "other", Sequencer: seq("20")}
	a3 := ledger.Revision{VersionID: "a3", ETag: "same", Sequencer: seq("30")}
	require.NoError(t, st.Write(ctx, succeed(k2, a1, res("a"), ledger.Attempt{At: t0})))
	assert.ErrorIs(t, st.Write(ctx, succeed(k2, a3, res("a"), ledger.Attempt{At: t0})), ledger.ErrAlreadySucceeded)
	require.ErrorAs(t, st.Write(ctx, succeed(k2, b2, res("b"), ledger.Attempt{At: t0})), &sup)

	// A superseded revision is kept beside the record.
	require.NoError(t, st.RecordSuperseded(ctx, k, v1, v3, "superseded by v:v3", ledger.Attempt{At: t0}))
	old, ok, err := st.Get(ctx, ledger.SupersededKey(k, v1))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, ledger.StatusSuperseded, old.Status)
	assert.Equal(t, "v:v3", old.SupersededBy)
	assert.Equal(t, v1, old.Rev())
}

func TestNormalizeSequencer(t *testing.T) {
	a, b := ledger.NormalizeSequencer("0055aed6dcd90281e5"), ledger.NormalizeSequencer("0055AED6DCD90281E50A")
	assert.Less(t, a, b, "right-padded with zeros, then compared")
	assert.Equal(t, "", ledger.NormalizeSequencer(""))
}

// Lookup pages through BatchGetItem's 100-key limit.
func TestLookupManyKeys(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	var keys []ledger.Key
	for i := range 250 {
		k := ledger.Key{Bucket: "in", Key: fmt.Sprintf("many/%d", i)}
		keys = append(keys, k)
		if i%2 == 0 {
			require.NoError(t, st.Write(ctx, succeed(k, ledger.Revision{ETag: "e"}, ledger.Result{}, ledger.Attempt{At: t0})))
		}
	}
	states, err := st.Lookup(ctx, keys)
	require.NoError(t, err)
	assert.Len(t, states, 125)
}

// Failures and poison messages are listed per day from the sparse index; successes never
// enter it.
func TestFailuresIndex(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	e := ledger.Revision{ETag: "e"}
	require.NoError(t, st.Write(ctx, fail(ledger.Key{Bucket: "in", Key: "bad.gz"}, e, ledger.StatusFailed, "corrupt", ledger.Attempt{At: t0})))
	require.NoError(t, st.Write(ctx, fail(ledger.Key{Bucket: "in", Key: "slow"}, e, ledger.StatusRetrying, "timeout", ledger.Attempt{At: t0})))
	require.NoError(t, st.Write(ctx, succeed(ledger.Key{Bucket: "in", Key: "ok"}, e, ledger.Result{}, ledger.Attempt{At: t0})))
	p := ledger.Poison{MessageID: "m-1", Queue: "arn:aws:sqs:us-east-1:1:q", Body: "garbage", Reason: "malformed JSON", Receive: 1, At: t0}
	require.NoError(t, st.RecordPoison(ctx, p))
	require.NoError(t, st.RecordPoison(ctx, p), "a redelivered poison message is recorded once")

	fails, err := st.Failures(ctx, t0)
	require.NoError(t, err)
	require.Len(t, fails, 2)
	assert.Equal(t, "F#in/bad.gz", fails[0].PK)
	assert.Equal(t, "corrupt", fails[0].Reason)
	assert.Equal(t, "M#m-1", fails[1].PK)

	reason, body, ok, err := st.GetPoison(ctx, "m-1")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "malformed JSON", reason)
	assert.Equal(t, "garbage", body)
}

// A replay writes a success of the same revision again, once per replay id.
func TestReplayWritesOncePerID(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	k := ledger.Key{Bucket: "in", Key: "replayed.txt"}
	rev := ledger.Revision{ETag: "e"}
	require.NoError(t, st.Write(ctx, succeed(k, rev, ledger.Result{}, ledger.Attempt{At: t0})))
	require.ErrorIs(t, st.Write(ctx, succeed(k, rev, ledger.Result{}, ledger.Attempt{At: t0})), ledger.ErrAlreadySucceeded)
	w := succeed(k, rev, ledger.Result{Outputs: []string{"again"}}, ledger.Attempt{At: t0})
	w.Replay = "r1"
	require.NoError(t, st.Write(ctx, w), "the replay goes through")
	require.ErrorIs(t, st.Write(ctx, w), ledger.ErrAlreadySucceeded, "once")
	w.Replay = "r2"
	require.NoError(t, st.Write(ctx, w), "another replay goes through")
	rec, _, err := st.Get(ctx, k)
	require.NoError(t, err)
	assert.Equal(t, 3, rec.Attempts)
	assert.ElementsMatch(t, []string{"r1", "r2"}, rec.Replays)
}

// A success says its writer must check the key's output when it replaces another
// revision's record or lands on this revision's own unfinished record (an older
// revision's writer may have put or removed the output meanwhile); not when it is new.
// Against DynamoDB Local, which answers ReturnValues UPDATED_OLD as DynamoDB does.
func TestWriteReplacingSaysWhenTheOutputNeedsACheck(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	res := ledger.Result{Size: 1, SHA256: "s", Outputs: []string{"s3://out/k"}}
	v1 := ledger.Revision{VersionID: "v1", ETag: "e1", Sequencer: "0A"}
	v2 := ledger.Revision{VersionID: "v2", ETag: "e2", Sequencer: "0B"}

	k := ledger.Key{Bucket: "in", Key: "new.txt"}
	check, err := st.WriteReplacing(ctx, succeed(k, v1, res, ledger.Attempt{At: t0, Receive: 1}))
	require.NoError(t, err)
	assert.False(t, check, "a new record")

	k = ledger.Key{Bucket: "in", Key: "retried.txt"}
	_, err = st.WriteReplacing(ctx, fail(k, v2, ledger.StatusRetrying, "slow", ledger.Attempt{At: t0, Receive: 1}))
	require.NoError(t, err)
	check, err = st.WriteReplacing(ctx, succeed(k, v2, res, ledger.Attempt{At: t0, Receive: 2}))
	require.NoError(t, err)
	assert.True(t, check, "a success on its own RETRYING record")

	k = ledger.Key{Bucket: "in", Key: "replaced.txt"}
	_, err = st.WriteReplacing(ctx, succeed(k, v1, res, ledger.Attempt{At: t0, Receive: 1}))
	require.NoError(t, err)
	check, err = st.WriteReplacing(ctx, succeed(k, v2, res, ledger.Attempt{At: t0, Receive: 1}))
	require.NoError(t, err)
	assert.True(t, check, "a newer revision replacing the record")

	check, err = st.WriteReplacing(ctx, fail(k, v2, ledger.StatusRetrying, "x", ledger.Attempt{At: t0, Receive: 1}))
	require.ErrorIs(t, err, ledger.ErrAlreadySucceeded)
	assert.False(t, check)
}
