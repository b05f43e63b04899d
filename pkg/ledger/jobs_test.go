package ledger_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// A job fans out as a tree of listing tasks (each counting its children before itself)
// and file batches, processed concurrently on 8 shards while every worker tries to
// complete the job after each write. It completes exactly once, and only after every unit
// of work has finished.
func TestJobCompletesExactlyOnceNeverEarly(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	const shards = 8
	id := fmt.Sprintf("job-%d", time.Now().UnixNano())
	require.NoError(t, st.CreateJob(ctx, id, `{"kind":"prefix"}`, shards, t0))
	require.Error(t, st.CreateJob(ctx, id, `{}`, shards, t0), "a job is created once")

	type unit struct {
		depth int
		files int // a file batch if > 0
	}
	const fanout, filesPerListing, batch = 4, 30, 10
	// Tree: root -> 4 listings -> 4 listings each (depth 2); every listing lists 30 files.
	listings := 1 + fanout + fanout*fanout
	totalUnits := int64(listings + listings*filesPerListing)

	work := make(chan unit, 1000)
	var finished atomic.Int64 // units finished, counted before their Progress write
	var completions atomic.Int64
	var early atomic.Bool
	var pending sync.WaitGroup
	pending.Add(1)
	work <- unit{depth: 0}

	tryComplete := func() {
		// assert, not require: this runs on worker goroutines.
		ok, c, err := st.TryComplete(ctx, id, shards, time.Now())
		assert.NoError(t, err)
		assert.GreaterOrEqual(t, c.Outstanding(), int64(0), "done never exceeds expected")
		if ok {
			completions.Add(1)
			if finished.Load() != totalUnits {
				early.Store(true)
			}
		}
	}
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				shard := rand.IntN(shards)
				if u.files > 0 {
					finished.Add(int64(u.files))
					assert.NoError(t, st.Progress(ctx, id, shard, 0, int64(u.files), 1))
				} else {
					var children []unit
					if u.depth < 2 {
						for range fanout {
							children = append(children, unit{depth: u.depth + 1})
						}
					}
					for range filesPerListing / batch {
						children = append(children, unit{files: batch})
					}
					// Children are counted (expected) in the same write that counts this
					// task done, and only then enqueued.
					var expected int64
					for _, c := range children {
						expected += int64(max(c.files, 1))
					}
					finished.Add(1)
					assert.NoError(t, st.Progress(ctx, id, shard, expected, 1, 0))
					pending.Add(len(children))
					for _, c := range children {
						work <- c
					}
				}
				tryComplete()
				pending.Done()
			}
		}()
	}
	pending.Wait()
	close(work)
	wg.Wait()
	tryComplete() // a late caller changes nothing

	assert.Equal(t, int64(1), completions.Load(), "completes exactly once")
	assert.False(t, early.Load(), "never before all work finished")
	c, err := st.JobCounts(ctx, id, shards)
	require.NoError(t, err)
	assert.Equal(t, ledger.Counts{Expected: totalUnits, Done: totalUnits, Failed: int64(listings * filesPerListing / batch)}, c)
	t.Logf("%d units (%d listings, %d files) on %d shards; counts %+v", totalUnits, listings, listings*filesPerListing, shards, c)
}

func TestCreateJobShardBounds(t *testing.T) {
	st, _ := newStore(t, 0)
	assert.ErrorContains(t, st.CreateJob(context.Background(), "j", "{}", 0, t0), "shards = 0: must be in 1..99")
	assert.ErrorContains(t, st.CreateJob(context.Background(), "j", "{}", 100, t0), "shards = 100")
}
