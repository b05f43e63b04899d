package itest

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/dispatch"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// connectionReset is the error chaos run 9 met: the SDK's retries used up on a reset
// connection (a transient error).
func connectionReset() error {
	return fmt.Errorf("operation error SQS: SendMessageBatch, exceeded maximum number of attempts, 3: %w",
		&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})
}

// Chaos run 9 (seed 20261130, 100,000 files): a prefix job's listing task met a
// connection reset on SendMessageBatch on its fifth and last receive, and failed its job
// with that reason, where the job was to fail "over the tolerance". A transient error on
// a fan-out task's last receive sends the task again, as the worker does with a file's.
func TestFanoutTaskWithATransientErrorOnItsLastReceiveIsSentAgain(t *testing.T) {
	s := newStack(t)
	s.put("tr/a.txt", "a")
	s.put("tr/b.txt", "b")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "tr/"})
	s.q.errBatch = connectionReset()
	s.q.failBatch.Store(maxReceive) // every receive of the first round fails to send its files
	s.drain()
	j := s.jobRecord(id)
	assert.Equal(t, ledger.JobComplete, j.Status, "a transient error is no reason to fail a job: %s", j.Reason)
	assert.Empty(t, s.q.dlq[jobsQueue+"-dlq"], "nothing in the jobs DLQ")
	for _, k := range []string{"tr/a.txt", "tr/b.txt"} {
		got, _, ok := s.output(k)
		assert.True(t, ok, k)
		assert.Equal(t, k[3:4], got, k)
	}
}

// The bound: a transient error that never passes fails the job after
// dispatch.FanoutRounds rounds of receives, with the error as its reason, rather than
// leave it RUNNING for ever or its task in the DLQ.
func TestFanoutTaskWhoseTransientErrorNeverPassesFailsItsJobAfterItsRounds(t *testing.T) {
	s := newStack(t)
	s.put("tn/a.txt", "a")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "tn/"})
	s.q.errBatch = connectionReset()
	s.q.failBatch.Store(1 << 30)
	s.drain()
	j := s.jobRecord(id)
	require.Equal(t, ledger.JobFailed, j.Status)
	assert.Contains(t, j.Reason, fmt.Sprintf("failed on receive %d of round %d", maxReceive, dispatch.FanoutRounds))
	assert.Contains(t, j.Reason, "connection reset by peer")
	assert.Empty(t, s.q.dlq[jobsQueue+"-dlq"], "nothing in the jobs DLQ")
}
