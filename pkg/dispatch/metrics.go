package dispatch

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// The dispatcher's CloudWatch metrics, as Embedded Metric Format lines on stdout (Lambda
// sends stdout to CloudWatch Logs, which turns them into metrics without an API call):
// one line per batch, namespace "fileflow", dimension Function — what the component's
// dashboard shows for the dispatcher.
var (
	// MetricNames are the metrics each line carries, with their units.
	MetricNames = []struct{ Name, Unit string }{
		{"FanoutTasks", "Count"}, {"FanoutFailures", "Count"}, {"FilesListed", "Count"},
		{"TaskMessages", "Count"}, {"ChildTasks", "Count"}, {"BadEntries", "Count"}, {"BatchDuration", "Milliseconds"},
	}

	metricsMu sync.Mutex // one line at a time on a shared writer
)

// batchMetrics sums one batch's fan-out tasks.
type batchMetrics struct {
	w                              io.Writer
	function                       string
	files, messages, children, bad atomic.Int64
}

type metricsKey struct{}

// withBatchMetrics returns a context that collects the batch's fan-out results.
func withBatchMetrics(ctx context.Context, w io.Writer, function string) (context.Context, *batchMetrics) {
	m := &batchMetrics{w: w, function: function}
	return context.WithValue(ctx, metricsKey{}, m), m
}

// recordFanout adds one fan-out task's results to its batch's metrics.
func recordFanout(ctx context.Context, files, messages, children, bad int) {
	if m, ok := ctx.Value(metricsKey{}).(*batchMetrics); ok {
		m.files.Add(int64(files))
		m.messages.Add(int64(messages))
		m.children.Add(int64(children))
		m.bad.Add(int64(bad))
	}
}

// emit writes the batch's metrics line.
func (m *batchMetrics) emit(now time.Time, tasks, failures int, took time.Duration) {
	defs := make([]map[string]string, len(MetricNames))
	for i, n := range MetricNames {
		defs[i] = map[string]string{"Name": n.Name, "Unit": n.Unit}
	}
	doc := map[string]any{
		"_aws": map[string]any{
			"Timestamp": now.UnixMilli(),
			"CloudWatchMetrics": []map[string]any{{
				"Namespace": "fileflow", "Dimensions": [][]string{{"Function"}}, "Metrics": defs,
			}},
		},
		"Function":       m.function,
		"FanoutTasks":    tasks,
		"FanoutFailures": failures,
		"FilesListed":    m.files.Load(),
		"TaskMessages":   m.messages.Load(),
		"ChildTasks":     m.children.Load(),
		"BadEntries":     m.bad.Load(),
		"BatchDuration":  took.Milliseconds(),
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return
	}
	metricsMu.Lock()
	defer metricsMu.Unlock()
	_, _ = m.w.Write(append(b, '\n'))
}
