package worker

import (
	"context"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// Chaos run 13: a file recorded FAILED for a permanent reason (a corrupt gzip, a
// rejected suffix) was read and processed again on every redelivery of its message, and
// a manifest batch under kills every few seconds never finished. A redelivery of the
// same job's file, its content unchanged, settles it from its record: no GET, no new
// attempt, the same reason and code in the job's report.
func TestRedeliveredPermanentFailuresAreNotRedone(t *testing.T) {
	jobs := newFakeJobs()
	e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
	e.s3.put("in", "a.txt", []byte("fine"))
	e.s3.put("in", "bad.gz", []byte("not gzip at all"))
	e.s3.put("in", "tool.exe", []byte("MZ"))
	files := []task.File{{Bucket: "in", Key: "a.txt"}, {Bucket: "in", Key: "bad.gz"}, {Bucket: "in", Key: "tool.exe"}}
	handleAcked(t, e, jobMessage(t, "t1", "task-1", 1, files...)) // recorded; then "killed" before its ack
	require.Len(t, jobs.reported, 1)
	require.EqualValues(t, 2, jobs.reported[0].Failed)

	gets := 0
	e.s3.getErr = func(string) error { gets++; return nil }
	handleAcked(t, e, jobMessage(t, "t1", "task-1", 2, files...))
	assert.Zero(t, gets, "nothing is read again")
	require.Len(t, jobs.reported, 2)
	assert.EqualValues(t, 1, jobs.reported[1].Succeeded)
	assert.EqualValues(t, 2, jobs.reported[1].Failed)
	assert.ElementsMatch(t, failedLines(jobs.reported[0]), failedLines(jobs.reported[1]), "the same reasons and codes")
	for _, f := range files {
		assert.Equal(t, 1, e.ledger.attempts[ledger.Key{Bucket: "in", Key: f.Key}], f.Key)
	}
}

// The same for an S3 event's file, which names its revision.
func TestRedeliveredPermanentFailureOfAnEventIsNotRedone(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "broken.gz", []byte("not gzip at all"))
	handleAcked(t, e, s3Message("m1", 1, "in", "broken.gz"))
	k := ledger.Key{Bucket: "in", Key: "broken.gz"}
	require.Equal(t, ledger.StatusFailed, e.ledger.status[k])

	gets := 0
	e.s3.getErr = func(string) error { gets++; return nil }
	handleAcked(t, e, s3Message("m1", 2, "in", "broken.gz"))
	assert.Zero(t, gets, "not read again")
	assert.Equal(t, 1, e.ledger.attempts[k])
	assert.Equal(t, ledger.StatusFailed, e.ledger.status[k])
	assert.Equal(t, 1, metricSum(t, e, "FilesDuplicate"))
}

// What is not settled from a failure: new content under a key-only file, another job's
// failure, a replay; each is processed again.
func TestPermanentFailuresAreRedoneWhenSomethingChanged(t *testing.T) {
	t.Run("content changed", func(t *testing.T) {
		jobs := newFakeJobs()
		e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
		e.s3.put("in", "k.gz", []byte("not gzip at all"))
		f := task.File{Bucket: "in", Key: "k.gz"}
		handleAcked(t, e, jobMessage(t, "t1", "task-1", 1, f))
		e.s3.overwrite("in", "k.gz", "e2", review3Gzip(t, "now it is"))
		handleAcked(t, e, jobMessage(t, "t1", "task-1", 2, f))
		require.Len(t, jobs.reported, 2)
		assert.EqualValues(t, 1, jobs.reported[1].Succeeded)
		assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[ledger.Key{Bucket: "in", Key: "k.gz"}])
	})
	t.Run("another job", func(t *testing.T) {
		jobs := newFakeJobs()
		e := newEnv(t, func(_ *Config, d *Deps) { d.Jobs = jobs })
		e.s3.put("in", "k.gz", []byte("not gzip at all"))
		handleAcked(t, e, s3Message("m1", 1, "in", "k.gz")) // failed for good, outside any job
		gets := 0
		e.s3.getErr = func(string) error { gets++; return nil }
		handleAcked(t, e, jobMessage(t, "t1", "task-1", 1, task.File{Bucket: "in", Key: "k.gz"}))
		assert.Equal(t, 1, gets, "a job asked for the file: it is tried again")
		require.Len(t, jobs.reported, 1)
		assert.EqualValues(t, 1, jobs.reported[0].Failed)
	})
}

// A permanent failure whose removal of the older revision's output hit a transient error
// comes back (TestReview3_LeftoverSurvivesATransientError); that comeback must not be
// settled from the record while the leftover stands.
func TestRedeliveredFailureWithALeftoverStillRemovesIt(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.overwrite("in", "k.log.gz", "e1", review3Gzip(t, "version one"))
	handleAcked(t, e, versionEvent("m1", "in", "k.log.gz", "v1", "e1", "0A"))
	deps := e.h.deps
	deps.Objects = &headFailsOnce{fakeS3: e.s3, key: "processed/k.log"}
	h, err := New(e.h.cfg, deps)
	require.NoError(t, err)
	e.s3.overwrite("in", "k.log.gz", "e2", []byte("not gzip at all"))
	m2 := versionEvent("m2", "in", "k.log.gz", "v2", "e2", "0B")
	_, err = h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{m2}})
	require.NoError(t, err)
	_, _, stands := e.s3.get("out", "processed/k.log")
	require.True(t, stands, "the leftover survived the transient error")

	handleAll(t, e, withReceive(m2, 2))
	_, _, stands = e.s3.get("out", "processed/k.log")
	assert.False(t, stands, "the comeback removes v1's output")
}

func failedLines(r job.TaskResult) []string {
	var out []string
	for _, l := range r.Lines {
		if l.Status == job.Failed {
			out = append(out, l.Key+" "+l.ErrorCode+" "+l.Message)
		}
	}
	return out
}
