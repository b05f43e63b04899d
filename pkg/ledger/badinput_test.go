package ledger_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// A key as long as S3 allows (1,024 bytes of UTF-8) is recorded like any other: its
// success, and its failure — whose failures-index sort key (the time and the record's
// key) would be over DynamoDB's 1,024-byte limit for a sort key, and refused, if the key
// were not hashed there — so `fileflow failures` lists it with its reason.
func TestLongestKeyIsRecordedAndIndexed(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	long := strings.Repeat("é", 500) + strings.Repeat("k", 24) // 1,024 bytes
	require.Len(t, long, 1024)
	e := ledger.Revision{ETag: "e"}
	ok := ledger.Key{Bucket: "fileflow-ingest", Key: "ok/" + long[4:]}
	require.NoError(t, st.Write(ctx, succeed(ok, e, ledger.Result{Size: 1, Outputs: []string{"s3://out/x"}}, ledger.Attempt{At: t0})))
	bad := ledger.Key{Bucket: "fileflow-ingest", Key: long}
	require.NoError(t, st.Write(ctx, fail(bad, e, ledger.StatusFailed, "rejected by rule: executables are not accepted", ledger.Attempt{At: t0})))
	dead := ledger.Key{Bucket: "fileflow-ingest", Key: "d" + long[2:]}
	require.NoError(t, st.Write(ctx, fail(dead, e, ledger.StatusDeadLettered, "retries exhausted", ledger.Attempt{At: t0})))

	fails, err := st.Failures(ctx, t0)
	require.NoError(t, err)
	require.Len(t, fails, 2)
	for _, f := range fails {
		assert.True(t, f.PK == "F#fileflow-ingest/"+bad.Key || f.PK == "F#fileflow-ingest/"+dead.Key, f.PK[:40])
		assert.NotEmpty(t, f.Reason)
	}
	rec, found, err := st.Get(ctx, ok)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, ledger.StatusSucceeded, rec.Status)
}
