package itest

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// A fan-out task runs (run A), sends its children and dies before it is counted; the
// listing changes; it runs again (run B) and is counted. Then the children of both runs
// are delivered, run A's first. Whatever changed, every file of run B's listing is
// reported exactly once and the job completes once: a child's id is its content, and
// only the counted run's children count (run A's are orphans).
func TestRerunOverChangedListing(t *testing.T) {
	type step struct {
		name         string
		before       []string // keys in place for run A
		change       func(s *stack)
		after        []string // keys run B lists: the report must hold each once
		filesPerTask int
	}
	keys := func(dirs string, n int) []string {
		var out []string
		for _, d := range strings.Split(dirs, ",") {
			for i := range n {
				out = append(out, fmt.Sprintf("p/%s/f%d.txt", d, i))
			}
		}
		return out
	}
	cases := []step{{
		name:   "a prefix emptied between runs",
		before: keys("a,b,c", 3),
		change: func(s *stack) {
			for _, k := range keys("b", 3) {
				s.del(k)
			}
		},
		after: keys("a,c", 3),
	}, {
		name:   "a prefix added before an existing one",
		before: keys("a,c", 3),
		change: func(s *stack) {
			for _, k := range keys("b", 3) {
				s.put(k, "new "+k)
			}
		},
		after: keys("a,b,c", 3),
	}, {
		name:   "task messages over a page whose contents shifted",
		before: []string{"p/f1.txt", "p/f2.txt", "p/f3.txt", "p/f4.txt", "p/f5.txt", "p/f6.txt"},
		change: func(s *stack) { s.put("p/f0.txt", "new") },
		after:  []string{"p/f0.txt", "p/f1.txt", "p/f2.txt", "p/f3.txt", "p/f4.txt", "p/f5.txt", "p/f6.txt"},
		// two files a message: run A packs [f1 f2] [f3 f4] [f5 f6], run B [f0 f1] [f2 f3] [f4 f5] [f6]
		filesPerTask: 2,
	}}
	totalLost, totalDoubled := 0, 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStack(t)
			for _, k := range c.before {
				s.put(k, "content of "+k)
			}
			id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "p/", FilesPerTask: c.filesPerTask})

			// Run A sends its children and dies before its transaction lands.
			s.db.failTx.Store(1)
			root := s.q.pop(jobsQueue)
			require.NotNil(t, root)
			s.deliver(jobsQueue, root)
			require.Zero(t, s.db.failTx.Load(), "run A reached its count")
			runA := append(s.q.take(jobsQueue), s.q.take(tasksQueue)...)
			var retried *msgInQueue
			var childrenA []msgInQueue
			for _, m := range runA {
				if m.body == root.body {
					retried = &msgInQueue{jobsQueue, m}
					continue
				}
				childrenA = append(childrenA, msgInQueue{queueOf(m), m})
			}
			require.NotNil(t, retried, "run A's root comes back")
			require.NotEmpty(t, childrenA)

			// The listing changes; run B is counted.
			c.change(s)
			s.deliver(jobsQueue, retried.m)
			childrenB := append(s.q.take(jobsQueue), s.q.take(tasksQueue)...)
			require.NotEmpty(t, childrenB)

			// Run A's children first, then run B's, then everything they lead to.
			for _, m := range childrenA {
				s.q.requeueFresh(m.queue, m.m)
			}
			for _, m := range childrenB {
				s.q.requeueFresh(queueOf(m), m)
			}
			s.drain()

			j, found, err := s.store.GetJob(s.ctx, id)
			require.NoError(t, err)
			require.True(t, found)
			require.Equal(t, ledger.JobComplete, j.Status, "the job completes: %s", j.Reason)
			require.True(t, j.Notified, "the job is reported")
			succeeded, failed := s.reported(id)
			lost, doubled, detail := account(c.after, succeeded)
			totalLost += lost
			totalDoubled += doubled
			sort.Strings(detail)
			assert.Zero(t, lost, "files lost: %v", detail)
			assert.Zero(t, doubled, "files doubled: %v", detail)
			assert.Empty(t, detail)
			assert.Empty(t, failed, "nothing failed")
			assert.Equal(t, int64(len(c.after)), j.Final.Succeeded, "counted once each")
			assert.Equal(t, j.Final.Expected, j.Final.Done)
		})
	}
	t.Logf("re-runs over changed listings: %d files lost, %d doubled", totalLost, totalDoubled)
}

type msgInQueue struct {
	queue string
	m     *msg
}

// queueOf tells a task message of files from a fan-out task by its body.
func queueOf(m *msg) string {
	if strings.Contains(m.body, `"files"`) {
		return tasksQueue
	}
	return jobsQueue
}

// requeueFresh puts a taken message back at the end of a queue as sent (no receive yet).
func (f *queues) requeueFresh(url string, m *msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.q[url] = append(f.q[url], m)
}
