package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBatchMetricsLine(t *testing.T) {
	var buf bytes.Buffer
	ctx, m := withBatchMetrics(context.Background(), &buf, "fileflow-dispatch")
	recordFanout(ctx, 120, 2, 3, 1)
	recordFanout(ctx, 5, 1, 0, 0)
	m.emit(time.UnixMilli(1000), 4, 1, 250*time.Millisecond)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &doc))
	cw := doc["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)
	assert.Equal(t, "fileflow", cw["Namespace"])
	assert.Equal(t, []any{[]any{"Function"}}, cw["Dimensions"])
	assert.Len(t, cw["Metrics"], len(MetricNames))
	for _, n := range MetricNames {
		assert.Contains(t, doc, n.Name)
	}
	assert.EqualValues(t, 125, doc["FilesListed"])
	assert.EqualValues(t, 3, doc["TaskMessages"])
	assert.EqualValues(t, 3, doc["ChildTasks"])
	assert.EqualValues(t, 1, doc["BadEntries"])
	assert.EqualValues(t, 4, doc["FanoutTasks"])
	assert.EqualValues(t, 1, doc["FanoutFailures"])
	assert.EqualValues(t, 250, doc["BatchDuration"])
	assert.Equal(t, "fileflow-dispatch", doc["Function"])
}
