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
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	require.NoError(t, err)
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("ledger-test-%d", time.Now().UnixNano())
	require.NoError(t, ledger.CreateTable(ctx, db, table))
	return ledger.New(db, table, ttl), db
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// Sixteen concurrent deliveries of the same file race to commit: exactly one wins, the
// others get ErrAlreadySucceeded, and the record shows one attempt.
func TestCommitRaceHasOneWinner(t *testing.T) {
	st, _ := newStore(t, 0)
	k := ledger.Key{Bucket: "in", Key: "race/a b+c.txt", Revision: "e:abc"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, dups := 0, 0
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := st.Commit(context.Background(), k, "", ledger.Result{Size: 3, SHA256: "s", Outputs: []string{"s3://out/x"}},
				ledger.Attempt{At: t0, Receive: 1, RequestID: fmt.Sprint(i)})
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
}

// Failed attempts accumulate in the history; the success that follows keeps them, and a
// failure reported after the success is moot.
func TestHistoryAndStatuses(t *testing.T) {
	st, _ := newStore(t, 30*24*time.Hour)
	ctx := context.Background()
	k := ledger.Key{Bucket: "in", Key: "h.txt", Revision: "v:1"}

	require.NoError(t, st.RecordFailure(ctx, k, "job-1", ledger.StatusRetrying, "timeout", ledger.Attempt{At: t0, Receive: 1, Class: "retryable"}))
	require.NoError(t, st.RecordFailure(ctx, k, "job-1", ledger.StatusRetrying, "throttled", ledger.Attempt{At: t0.Add(time.Second), Receive: 2}))
	require.NoError(t, st.Commit(ctx, k, "job-1", ledger.Result{Size: 10, SHA256: "abc", CRC32C: "01020304", Outputs: []string{"s3://o/h.txt"}, Processors: []string{"copy"}},
		ledger.Attempt{At: t0.Add(2 * time.Second), Receive: 3, DurationMS: 5}))
	err := st.RecordFailure(ctx, k, "job-1", ledger.StatusFailed, "late duplicate failed", ledger.Attempt{At: t0.Add(3 * time.Second)})
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
	assert.Equal(t, []string{"s3://o/h.txt"}, rec.Outputs)

	statuses, err := st.Lookup(ctx, []ledger.Key{k, {Bucket: "in", Key: "none", Revision: "latest"}, k})
	require.NoError(t, err)
	assert.Equal(t, map[ledger.Key]ledger.Status{k: ledger.StatusSucceeded}, statuses)
}

// Lookup pages through BatchGetItem's 100-key limit.
func TestLookupManyKeys(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	var keys []ledger.Key
	for i := range 250 {
		k := ledger.Key{Bucket: "in", Key: fmt.Sprintf("many/%d", i), Revision: "latest"}
		keys = append(keys, k)
		if i%2 == 0 {
			require.NoError(t, st.Commit(ctx, k, "", ledger.Result{}, ledger.Attempt{At: t0}))
		}
	}
	statuses, err := st.Lookup(ctx, keys)
	require.NoError(t, err)
	assert.Len(t, statuses, 125)
}

// Failures and poison messages are listed per day from the sparse index; successes never
// enter it.
func TestFailuresIndex(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	require.NoError(t, st.RecordFailure(ctx, ledger.Key{Bucket: "in", Key: "bad.gz", Revision: "latest"}, "", ledger.StatusFailed, "corrupt", ledger.Attempt{At: t0}))
	require.NoError(t, st.RecordFailure(ctx, ledger.Key{Bucket: "in", Key: "slow", Revision: "latest"}, "", ledger.StatusRetrying, "timeout", ledger.Attempt{At: t0}))
	require.NoError(t, st.Commit(ctx, ledger.Key{Bucket: "in", Key: "ok", Revision: "latest"}, "", ledger.Result{}, ledger.Attempt{At: t0}))
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
