package stack

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/plan"
)

func root(t *testing.T) string {
	t.Helper()
	r, err := ModuleRoot(".")
	require.NoError(t, err)
	return r
}

func stagePlan(t *testing.T, name string) *plan.Graph {
	t.Helper()
	g, violations, err := Plan(context.Background(), root(t), name)
	require.NoError(t, err)
	assert.Empty(t, violations, "stage %s passes every policy rule", name)
	return g
}

func input(t *testing.T, g *plan.Graph, typ, name, key string) any {
	t.Helper()
	r, ok := g.Named(typ, name)
	require.True(t, ok, "%s %s", typ, name)
	return r.Inputs[key]
}

// Both stages, from their real Pulumi.<stack>.yaml and the real function zip, under mocks.
func TestStagesDifferWhereRealStagesDiffer(t *testing.T) {
	dev, prod := stagePlan(t, "dev"), stagePlan(t, "prod")
	const fn, q, table = "aws:lambda/function:Function", "aws:sqs/queue:Queue", "aws:dynamodb/table:Table"

	assert.EqualValues(t, 512, input(t, dev, fn, "fileflow-worker", "memorySize"))
	assert.EqualValues(t, 1024, input(t, prod, fn, "fileflow-worker", "memorySize"))
	assert.EqualValues(t, 6*60, input(t, dev, q, "fileflow-tasks", "visibilityTimeoutSeconds"))
	assert.EqualValues(t, 6*120+1, input(t, prod, q, "fileflow-tasks", "visibilityTimeoutSeconds"), "6 x 120 s + 1 s window")
	assert.EqualValues(t, 7, input(t, dev, "aws:cloudwatch/logGroup:LogGroup", "fileflow-worker-logs", "retentionInDays"))
	assert.EqualValues(t, 90, input(t, prod, "aws:cloudwatch/logGroup:LogGroup", "fileflow-worker-logs", "retentionInDays"))
	assert.Equal(t, map[string]any{"enabled": false}, input(t, dev, table, "fileflow-ledger", "pointInTimeRecovery"))
	assert.Equal(t, map[string]any{"enabled": true}, input(t, prod, table, "fileflow-ledger", "pointInTimeRecovery"))
	assert.Equal(t, true, input(t, prod, table, "fileflow-ledger", "deletionProtectionEnabled"))
	assert.Equal(t, true, input(t, dev, "aws:s3/bucketV2:BucketV2", "fileflow-ingest", "forceDestroy"))
	assert.Equal(t, false, input(t, prod, "aws:s3/bucketV2:BucketV2", "fileflow-ingest", "forceDestroy"))

	// prod keeps warm environments (and so does not scale to zero); dev does.
	assert.Empty(t, dev.OfType("aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig"))
	pc := prod.OfType("aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig")
	require.Len(t, pc, 1)
	assert.EqualValues(t, 5, pc[0].Inputs["provisionedConcurrentExecutions"])
	_, ok := prod.Named("aws:sns/topicSubscription:TopicSubscription", "fileflow-alarms-email")
	assert.True(t, ok, "prod alarms go to the on-call address")
	_, ok = dev.Named("aws:sns/topicSubscription:TopicSubscription", "fileflow-alarms-email")
	assert.False(t, ok)

	// The function's code is the reproducible zip built from functions/worker.
	code := input(t, dev, fn, "fileflow-worker", "code").(string)
	assert.Equal(t, "archive:"+filepath.Join(root(t), "dist", "worker.zip"), code)
	assert.NotEmpty(t, input(t, dev, fn, "fileflow-worker", "sourceCodeHash"))
}

func TestUnknownStage(t *testing.T) {
	_, _, err := Plan(context.Background(), root(t), "staging")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no Pulumi.staging.yaml (stages here: dev, prod)")
}

// docs/architecture.md is generated from the plans; this fails when it is stale.
func TestArchitectureDocIsCurrent(t *testing.T) {
	doc, err := ArchitectureDoc(context.Background(), root(t))
	require.NoError(t, err)
	current, err := os.ReadFile(filepath.Join(root(t), "docs", "architecture.md"))
	require.NoError(t, err)
	assert.Equal(t, doc, string(current), "docs/architecture.md is stale: run `make docs`")
	assert.Contains(t, doc, "fileflow_tasks -- \"after 5 receives\" --> fileflow_tasks_dlq")
}

func TestPlanJSONShape(t *testing.T) {
	g := stagePlan(t, "dev")
	b, err := plan.JSON(g)
	require.NoError(t, err)
	var doc struct {
		Resources []struct {
			Type   string         `json:"type"`
			Name   string         `json:"name"`
			Inputs map[string]any `json:"inputs"`
		} `json:"resources"`
	}
	require.NoError(t, json.Unmarshal(b, &doc))
	assert.Len(t, doc.Resources, len(g.Resources))
}
