package chaos

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The small version of `make chaos`, in `make test`: a few hundred files (S3 events and
// jobs of every kind) under 10% transient faults, 1% poison, kills every 5 s, duplicate
// events and submissions, overwrites and deletions in flight, and a DynamoDB outage.
// FILEFLOW_CHAOS_SEED replays another seed; the seed is printed either way.
func TestChaosSmall(t *testing.T) {
	seed := uint64(20261130)
	if s := os.Getenv("FILEFLOW_CHAOS_SEED"); s != "" {
		var err error
		seed, err = strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "FILEFLOW_CHAOS_SEED")
	}
	fnLogs, err := os.Create(filepath.Join(t.TempDir(), "functions.log"))
	require.NoError(t, err)
	defer fnLogs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r, err := Run(ctx, Config{
		Seed: seed, Files: 300, KillEvery: 5 * time.Second, FunctionTimeout: 10 * time.Second,
		RestartDynamoDB: true, Timeout: 6 * time.Minute, Stall: 90 * time.Second,
		Log:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		FunctionLogs: fnLogs, Progress: testWriter{t},
	})
	require.NoError(t, err)
	t.Logf("\n%s", r.Text())
	assert.True(t, r.OK(), "seed %d broke a guarantee (FILEFLOW_CHAOS_SEED=%d go test ./pkg/chaos -run TestChaosSmall replays it)", seed, seed)
	// The run did what it claims to inject.
	assert.Positive(t, r.Kills, "environments killed")
	for _, kind := range []string{"throttle", "server-error", "reset", "lost-response", "slow"} {
		assert.Positive(t, r.Faults[kind], "faults of kind %s", kind)
	}
	assert.Positive(t, r.DuplicateEvents, "events delivered twice")
	assert.Positive(t, r.DuplicateSubmissions, "jobs submitted twice")
	assert.EqualValues(t, 1, r.ConflictsRefused, "the conflicting submission was refused")
	assert.Positive(t, r.Superseded, "versions overwritten")
	assert.Positive(t, r.FailedByCode["Rejected"]+r.FailedByCode["CorruptContent"], "poison failed")
	assert.Contains(t, r.DynamoDBRestart, "back after")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
