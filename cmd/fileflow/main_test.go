package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := root()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// `fileflow plan --format json` works offline for both stages and has the documented shape.
func TestPlanJSON(t *testing.T) {
	for _, st := range []string{"dev", "prod"} {
		out, err := runCLI(t, "plan", "--stack", st, "--format", "json")
		require.NoError(t, err, st)
		var doc struct {
			Resources []struct {
				Type   string         `json:"type"`
				Name   string         `json:"name"`
				Inputs map[string]any `json:"inputs"`
			} `json:"resources"`
			Violations []any `json:"violations"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &doc), st)
		assert.Greater(t, len(doc.Resources), 30, st)
		assert.NotNil(t, doc.Violations, "violations is a list, even when empty")
		assert.Empty(t, doc.Violations, st)
	}
}

func TestPlanTableAndMermaid(t *testing.T) {
	out, err := runCLI(t, "plan", "--stack", "dev")
	require.NoError(t, err)
	assert.Contains(t, out, "aws:lambda/eventSourceMapping:EventSourceMapping")
	assert.Contains(t, out, "Policy: no violations.")

	assert.Contains(t, out, "account concurrency needed: 100 (reserved 0", "dev reserves nothing: it deploys on a new account")
	assert.Regexp(t, `\d+ IAM policy documents validated by @cloud-copilot/iam-policy [0-9.]+: 0 findings`, out)

	out, err = runCLI(t, "plan", "--stack", "prod")
	require.NoError(t, err)
	for _, want := range []string{"account concurrency needed: 350", "aws:lambda/functionRecursionConfig:FunctionRecursionConfig",
		"aws:kms/key:Key", "fileflow-reconcile", "fileflow-worker-spillover", "fileflow-tasks-dlq-age", "aws:sns/topicPolicy:TopicPolicy"} {
		assert.Contains(t, out, want)
	}

	out, err = runCLI(t, "plan", "--stack", "prod", "--format", "mermaid")
	require.NoError(t, err)
	assert.Contains(t, out, "flowchart LR")
	assert.Contains(t, out, "(alias live)")

	_, err = runCLI(t, "plan", "--format", "yaml")
	assert.ErrorContains(t, err, `--format "yaml"`)
	out, err = runCLI(t, "plan", "--keys")
	require.NoError(t, err)
	assert.Contains(t, out, "fileflow:workerBatchSize")
}
