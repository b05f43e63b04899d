package worker

import (
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/fileflow/fileflow/pkg/job"
)

// Stats sums up one batch.
type Stats struct {
	Messages   int
	Files      int // files named by the batch's messages, duplicates included
	Succeeded  int // newly committed
	Duplicates int // already committed (or committed by a concurrent delivery)
	Failed     int // permanently, recorded with a reason
	Superseded int // a newer revision of the key was processed instead
	Retrying   int // will come back (or, on the last receive, go to the DLQ)
	// Skipped: files not processed because their message was acknowledged without them
	// (their job no longer runs, the task was counted before, an unknown job).
	Skipped int
	Poison  int // undecodable messages, recorded and acknowledged
	// CompletedEarly: messages acknowledged while the batch still ran (Config.CompleteAfter).
	CompletedEarly int
	Bytes          int64
	Duration       time.Duration
}

func summarize(msgs []*message) Stats {
	st := Stats{Messages: len(msgs)}
	for _, m := range msgs {
		if m.poison {
			st.Poison++
		}
		acked := m.decided != nil && m.decided.Kind == job.Ack
		if m.completed {
			st.CompletedEarly++
		}
		for _, it := range m.items {
			st.Files++
			switch {
			case it.dup:
				st.Duplicates++
			case it.state == succeeded:
				st.Succeeded++
				st.Bytes += it.bytes
			case it.state == failed || it.state == deadLettered:
				st.Failed++
			case it.state == superseded:
				st.Superseded++
			case it.state == skipped || it.state == pending && acked:
				st.Skipped++
			case it.state == pending:
				st.Retrying++
			}
		}
	}
	return st
}

// emf writes CloudWatch Embedded Metric Format lines: Lambda sends stdout to CloudWatch
// Logs, which turns these lines into metrics without any API call.
type emf struct {
	mu       sync.Mutex
	w        io.Writer
	function string
}

type emfMetric struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

func (e *emf) write(st Stats, now time.Time) {
	doc := map[string]any{
		"_aws": map[string]any{
			"Timestamp": now.UnixMilli(),
			"CloudWatchMetrics": []map[string]any{{
				"Namespace":  "fileflow",
				"Dimensions": [][]string{{"Function"}},
				"Metrics": []emfMetric{
					{"FilesSucceeded", "Count"}, {"FilesFailed", "Count"}, {"FilesRetrying", "Count"},
					{"FilesDuplicate", "Count"}, {"FilesSuperseded", "Count"}, {"FilesSkipped", "Count"}, {"PoisonMessages", "Count"},
					{"BytesProcessed", "Bytes"}, {"BatchDuration", "Milliseconds"},
				},
			}},
		},
		"Function":        e.function,
		"FilesSucceeded":  st.Succeeded,
		"FilesFailed":     st.Failed,
		"FilesRetrying":   st.Retrying,
		"FilesDuplicate":  st.Duplicates,
		"FilesSuperseded": st.Superseded,
		"FilesSkipped":    st.Skipped,
		"PoisonMessages":  st.Poison,
		"BytesProcessed":  st.Bytes,
		"BatchDuration":   st.Duration.Milliseconds(),
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return
	}
	b = append(b, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(b)
}
