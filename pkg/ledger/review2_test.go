package ledger_test

// Second adversarial review (branch review2): ledger claims, against DynamoDB Local.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// recordingAPI records the items each TransactWriteItems names.
type recordingAPI struct {
	*dynamodb.Client
	mu  sync.Mutex
	txs [][]string
}

func itemName(k map[string]types.AttributeValue) string {
	pk, _ := k["pk"].(*types.AttributeValueMemberS)
	sk, _ := k["sk"].(*types.AttributeValueMemberS)
	return pk.Value + " " + sk.Value
}

func (r *recordingAPI) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	var names []string
	for _, it := range in.TransactItems {
		switch {
		case it.Put != nil:
			names = append(names, itemName(it.Put.Item))
		case it.Update != nil:
			names = append(names, itemName(it.Update.Key))
		case it.ConditionCheck != nil:
			names = append(names, itemName(it.ConditionCheck.Key))
		case it.Delete != nil:
			names = append(names, itemName(it.Delete.Key))
		}
	}
	r.mu.Lock()
	r.txs = append(r.txs, names)
	r.mu.Unlock()
	return r.Client.TransactWriteItems(ctx, in, o...)
}

// Finding R2-10 — "no single hot item caps throughput", broken by the first review's
// fix "a finished job counts nothing more".
//
// Every settlement's transaction now holds a ConditionCheck on the job record
// ("status = RUNNING"), whatever shard it adds to. Two settlements of one job on two
// different shards therefore name a common item: the job record. DynamoDB cancels a
// transaction whose item is part of another ongoing transaction (TransactionConflict,
// condition checks included) and charges a condition check as a write, so every worker
// batch of a job serializes on one item again, at the ~1,000 writes/s per item the
// shards were introduced to avoid (ledger/jobs.go's own doc).
//
// The fix could put the stop on the shards instead: FinishJob already names every
// shard; it could set "stopped" on each (condition done = :done), and a settlement's
// shard update require attribute_not_exists(stopped).
func TestReview2_SettlementsOnDifferentShardsShareTheJobRecord(t *testing.T) {
	_, db := newStore(t, 0)
	ctx := context.Background()
	table := fmt.Sprintf("ledger-review2-%d", time.Now().UnixNano())
	require.NoError(t, ledger.CreateTable(ctx, db, table))
	rec := &recordingAPI{Client: db}
	st := ledger.New(rec, table, 0)
	id := fmt.Sprintf("hot-%d", time.Now().UnixNano())
	const shards = 8
	require.NoError(t, st.CreateJob(ctx, id, `{"kind":"prefix"}`, shards, t0))
	rec.mu.Lock()
	rec.txs = nil
	rec.mu.Unlock()

	out, err := st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "root", Shards: shards, Messages: 2}})
	require.NoError(t, err)
	require.Equal(t, []ledger.Outcome{ledger.Counted}, out)
	a := rec.txs[len(rec.txs)-1]
	out, err = st.Settle(ctx, t0, []ledger.Settlement{{JobID: id, TaskID: "m1", Parent: "root", Shards: shards, Succeeded: 1}})
	require.NoError(t, err)
	require.Equal(t, []ledger.Outcome{ledger.Counted}, out)
	b := rec.txs[len(rec.txs)-1]

	// Items both settlements' transactions name, other than a counter shard (they pick
	// one at random, and may pick the same) and the parent marker (only the child
	// checks it).
	var common []string
	for _, x := range a {
		for _, y := range b {
			if x == y && !strings.Contains(x, " c#") && !strings.Contains(x, " t#") {
				common = append(common, x)
			}
		}
	}
	sort.Strings(common)
	assert.Empty(t, common, "settlements of one job on different shards must not share an item (a hot item); they share %v", common)

}

// Finding R2-11 — a replay is written "once per replay id" only while it is the last
// one: the record keeps one replay id, so a late redelivery of replay r1, after r2, is
// committed as a new success (its condition is "replay <> :replay").
func TestReview2_ReplayRedeliveredAfterTheNextReplayCommitsAgain(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	k := ledger.Key{Bucket: "in", Key: "replayed-twice.txt"}
	rev := ledger.Revision{ETag: "e"}
	require.NoError(t, st.Write(ctx, succeed(k, rev, ledger.Result{}, ledger.Attempt{At: t0})))
	w := succeed(k, rev, ledger.Result{}, ledger.Attempt{At: t0})
	w.Replay = "r1"
	require.NoError(t, st.Write(ctx, w))
	w.Replay = "r2"
	require.NoError(t, st.Write(ctx, w))
	w.Replay = "r1" // r1's message, delivered again (SQS is at-least-once)
	assert.ErrorIs(t, st.Write(ctx, w), ledger.ErrAlreadySucceeded, "replay r1 was written once already")
}

// Finding R2-12 — a replay of a record whose history is full never commits.
//
// A replay of a SUCCEEDED record appends (modeAppend) while the history has room; once
// it holds MaxHistory attempts, Write falls to modeTrim, whose condition requires
// "status <> SUCCEEDED" (and which never sets the replay id): it fails every time, and
// after six tries the write errs "the record kept changing". The worker retries the
// file until its message is dead-lettered. Replays themselves fill the history: the
// 20th replay of a file is the one that cannot land.
func TestReview2_ReplayOfARecordWithAFullHistoryNeverCommits(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	k := ledger.Key{Bucket: "in", Key: "replayed-often.txt"}
	rev := ledger.Revision{ETag: "e"}
	require.NoError(t, st.Write(ctx, succeed(k, rev, ledger.Result{}, ledger.Attempt{At: t0})))
	w := succeed(k, rev, ledger.Result{}, ledger.Attempt{At: t0})
	for n := 1; n < ledger.MaxHistory; n++ {
		w.Replay = fmt.Sprintf("r%d", n)
		require.NoError(t, st.Write(ctx, w), "replay %d", n)
	}
	rec, _, err := st.Get(ctx, k)
	require.NoError(t, err)
	require.Len(t, rec.History, ledger.MaxHistory)
	w.Replay = "one more"
	assert.NoError(t, st.Write(ctx, w), "a new replay id is written, also when the history is full")
}
