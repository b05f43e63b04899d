package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/task"
)

// Review 10: eight batches handled at once on one Handler (Lambda Managed Instances run
// several invocations in one environment; so do the itests):
// files and sweeps of different invocations share h.spare. Nothing lost, doubled or early.
func TestReview10_ConcurrentHandlesShareTheGoroutines(t *testing.T) {
	for round := range 10 {
		jobs := newFakeJobs()
		e := newEnv(t, func(c *Config, d *Deps) { d.Jobs = jobs; c.Concurrency = 3; c.CompleteAfter = time.Nanosecond })
		batches := make([][]events.SQSMessage, 8)
		for b := range batches {
			for i := range 5 {
				n := b*5 + i
				key := fmt.Sprintf("k%d.txt", n)
				e.s3.put("in", key, []byte(key))
				batches[b] = append(batches[b], jobMessage(t, fmt.Sprintf("r%dj%d", round, n), fmt.Sprintf("t%d", n), 1, task.File{Bucket: "in", Key: key}))
			}
		}
		resps := make([]events.SQSEventResponse, len(batches))
		var wg sync.WaitGroup
		for b := range batches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(2+b)*time.Second)
				defer cancel()
				resps[b], _ = e.h.Handle(ctx, events.SQSEvent{Records: batches[b]})
			}()
		}
		wg.Wait()
		for b, r := range resps {
			require.Empty(t, r.BatchItemFailures, "batch %d", b)
		}
		del := map[string]bool{}
		for _, h := range e.queue.deletedHandles() {
			require.False(t, del[h], "deleted twice: %s", h)
			del[h] = true
		}
		seen := map[string]bool{}
		for _, r := range jobs.reported {
			require.False(t, seen[r.TaskID], "counted twice: %s", r.TaskID)
			seen[r.TaskID] = true
		}
		require.Len(t, seen, 40)
	}
}
