package devstack_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local/devstack"
)

// The dispatcher is stopped (its 3 s timeout) between sending a fan-out task's children
// and counting the task: its counting transaction is held at the DynamoDB endpoint until
// the function is gone, so it never lands. The children run meanwhile and wait for their
// parent; the fan-out task comes back after the jobs queue's visibility timeout, runs
// again, sends the same children again and is counted. The job still completes once, with
// every file counted once.
func TestJobSurvivesDispatcherStoppedBeforeCounting(t *testing.T) {
	var held atomic.Int64
	var jobID atomic.Value
	e := startJobEnv(t, func(o *devstack.Options) {
		o.Overrides = map[string]string{"fileflow:dispatchTimeoutSeconds": "3"}
		o.DynamoDBDelay = func(r *http.Request, body []byte) time.Duration {
			id, _ := jobID.Load().(string)
			if id == "" || !strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".TransactWriteItems") ||
				!bytes.Contains(body, []byte(`"t#root"`)) || !bytes.Contains(body, []byte(id)) || !held.CompareAndSwap(0, 1) {
				return 0
			}
			return time.Minute // longer than the function lives
		}
	})
	objects := map[string][]byte{}
	for i := range 2500 {
		objects[fmt.Sprintf("chaos-job/d%d/f%04d.txt", i%3, i)] = fmt.Appendf(nil, "%d", i)
	}
	for i := range 500 {
		objects[fmt.Sprintf("chaos-job/top-%04d.txt", i)] = fmt.Appendf(nil, "top %d", i)
	}
	e.upload(t, objects)

	id := job.NewID(time.Now())
	jobID.Store(id)
	start := time.Now()
	e.submit(t, job.Spec{ID: id, Kind: job.KindPrefix, Bucket: e.ingest, Key: "chaos-job/"})
	j := e.wait(t, id, 3*time.Minute)
	require.EqualValues(t, 1, held.Load(), "the root's counting transaction was held")
	assert.Equal(t, ledger.JobComplete, j.Status, j.Reason)
	assert.Equal(t, ledger.Counts{Expected: j.Final.Expected, Done: j.Final.Expected, Listed: 3000, Succeeded: 3000, Bytes: j.Final.Bytes}, j.Final)
	time.Sleep(2 * time.Second)
	assert.Len(t, e.notificationsOf(id), 1)
	_, ok, failed := e.report(t, j)
	assert.Len(t, ok, 3000)
	assert.Empty(t, failed)
	c, err := e.db.JobCounts(context.Background(), id, j.Shards)
	require.NoError(t, err)
	assert.Equal(t, j.Final, c, "nothing counted after completion")
	t.Logf("completed in %s despite the stopped dispatcher: %+v", time.Since(start).Round(time.Millisecond), j.Final)
}
