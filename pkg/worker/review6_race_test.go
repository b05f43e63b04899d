package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

func TestReview6RaceStress(t *testing.T) {
	for round := range 20 {
		jobs := newFakeJobs()
		if round%2 == 0 {
			jobs.after = ledger.JobCancelled
		}
		e := newEnv(t, func(c *Config, d *Deps) {
			d.Jobs = jobs
			c.Concurrency = 4
			c.CompleteAfter = time.Nanosecond
		})
		e.s3.getErr = func(key string) error {
			if key == "bad.txt" {
				return errors.New("connection reset")
			}
			return nil
		}
		var recs []events.SQSMessage
		for i := range 12 {
			k := fmt.Sprintf("k%d.txt", i%5)
			e.s3.put("in", k, []byte("x"))
			if i%3 == 0 {
				recs = append(recs, s3Message(fmt.Sprintf("s%d", i), 1, "in", k, "bad.txt"))
			} else if i%3 == 1 {
				recs = append(recs, s3Message(fmt.Sprintf("s%d", i), 1, "in", k))
			} else {
				recs = append(recs, jobMessage(t, fmt.Sprintf("j%d", i), fmt.Sprintf("t%d", i), 1, task.File{Bucket: "in", Key: k}, task.File{Bucket: "in", Key: "k1.txt"}))
			}
		}
		e.s3.put("in", "bad.txt", []byte("x"))
		resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: recs})
		require.NoError(t, err)
		del := map[string]bool{}
		for _, h := range e.queue.deletedHandles() {
			require.False(t, del[h], "deleted twice")
			del[h] = true
		}
		for _, f := range resp.BatchItemFailures {
			require.False(t, del["rh-"+f.ItemIdentifier], "deleted early, yet a batch item failure: %s", f.ItemIdentifier)
		}
		seen := map[string]bool{}
		for _, r := range jobs.reported {
			require.False(t, seen[r.TaskID], "counted twice")
			seen[r.TaskID] = true
		}
		for _, b := range e.queue.sent {
			for _, r := range recs {
				if r.Body == b {
					require.False(t, del[r.ReceiptHandle], "deleted early and sent again")
				}
			}
		}
		t.Logf("round %d: deleted %d failures %d sent %d", round, len(del), len(resp.BatchItemFailures), len(e.queue.sent))
	}
}
