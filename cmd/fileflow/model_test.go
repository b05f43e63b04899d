package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fileflow cost reads the stage files, plans them under mocks and prices both designs;
// the arithmetic is pkg/cost's (tested there by hand), this checks the wiring.
func TestCostCommand(t *testing.T) {
	out, err := runCLI(t, "cost", "--stack", "prod", "--files", "1e6", "--size", "100KB", "--json")
	require.NoError(t, err, out)
	var r costReport
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.Equal(t, "prod", r.Stage)
	assert.EqualValues(t, 1_000_000, r.Files)
	assert.EqualValues(t, 100_000, r.SizeBytes)
	assert.Equal(t, "naive", r.Naive.Design)
	assert.Greater(t, r.Naive.Orchestration, r.Estimate.Orchestration)
	assert.False(t, r.ScalesToZero)
	assert.Contains(t, r.BreaksScaleToZero, "provisioned concurrency (worker)")
	assert.Contains(t, r.BreaksScaleToZero, "CloudWatch alarms", "counted from the plan")

	out, err = runCLI(t, "cost", "--stack", "dev")
	require.NoError(t, err, out)
	for _, want := range []string{"stage dev, 1,000,000 files of 100 KB", "naive design", "orchestration per million files",
		"S3 PUTs of the outputs", "idle: what stage dev costs per month", "CloudWatch alarms", "scale to zero: no"} {
		assert.Contains(t, out, want)
	}

	summary := filepath.Join(t.TempDir(), "summary.json")
	require.NoError(t, os.WriteFile(summary, []byte(`{"files": 100, "operation_calls": {"S3.GetObject": 100, "S3.PutObject": 100, "DynamoDB.UpdateItem": 100}}`), 0o644))
	out, err = runCLI(t, "cost", "--from", summary, "--json")
	require.NoError(t, err, out)
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.Contains(t, r.CallsSource, "summary.json (100 files)")

	_, err = runCLI(t, "cost", "--size", "big")
	assert.ErrorContains(t, err, "--size")
	_, err = runCLI(t, "cost", "--path", "ftp")
	assert.ErrorContains(t, err, `path = "ftp"`)
	_, err = runCLI(t, "cost", "--stack", "nope")
	assert.ErrorContains(t, err, `stack "nope"`)
}

func TestCapacityCommand(t *testing.T) {
	out, err := runCLI(t, "capacity", "--stack", "prod", "--burst", "1e6")
	require.NoError(t, err, out)
	assert.Contains(t, out, "binding: S3 PUTs per prefix (outputs) at 3,500 files/s")
	assert.Contains(t, out, "burst: 1,000,000 files queued at once drain in 4m48s") // no duplicate-check read on S3 events by default (auto)

	out, err = runCLI(t, "capacity", "--stack", "dev", "--json")
	require.NoError(t, err, out)
	var r struct {
		Binding struct{ Name string } `json:"binding"`
		Burst   any                   `json:"burst"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.Equal(t, "Lambda: concurrency × batch ÷ batch time", r.Binding.Name)
	assert.Nil(t, r.Burst)
}
