package itest

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/bridge"
)

// A job spec under jobs/ is read at its event's version: an overwrite before the event
// is handled does not change what the first event submits; the second spec under the
// same id is recorded as poison with the reason, not retried into the dead-letter queue.
func TestSpecIsReadAtItsEventsVersion(t *testing.T) {
	s := newStack(t)
	_, err := s.s3.PutBucketVersioning(s.ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(s.in),
		VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}})
	require.NoError(t, err)
	s.put("data/one.txt", "one")
	event := func(body string) string {
		out, err := s.s3.PutObject(s.ctx, &s3.PutObjectInput{Bucket: aws.String(s.in), Key: aws.String("jobs/nightly.json"), Body: strings.NewReader(body)})
		require.NoError(t, err)
		ev, err := bridge.Record(local.Region, s.in, "jobs/nightly.json", int64(len(body)), aws.ToString(out.ETag), out.VersionId, "ObjectCreated:Put", "", "01")
		require.NoError(t, err)
		return ev
	}
	first := event(`{"id":"nightly","kind":"prefix","bucket":"` + s.in + `","key":"data/"}`)
	second := event(`{"id":"nightly","kind":"prefix","bucket":"` + s.in + `","key":"elsewhere/"}`)

	s.q.push(jobsQueue, first, nil)
	s.q.push(jobsQueue, second, nil)
	s.drain()
	j, found, err := s.store.GetJob(s.ctx, "nightly")
	require.NoError(t, err)
	require.True(t, found)
	spec, err := job.SpecOf(j)
	require.NoError(t, err)
	assert.Equal(t, "data/", spec.Key, "the first event submits the spec it named, not the newer one")
	assert.Equal(t, ledger.JobComplete, j.Status)
	assert.Empty(t, s.q.dlq[jobsQueue+"-dlq"], "the conflicting spec is not retried to the DLQ")
	reason, _, ok, err := s.store.GetPoison(s.ctx, "m2") // the second message sent
	require.NoError(t, err)
	require.True(t, ok, "the conflicting spec is recorded as poison")
	assert.Contains(t, reason, "exists with another spec")
}

// flakyParts fails the first write of a fan-out task's report part.
type flakyParts struct {
	job.Objects
	fail atomic.Int32
}

func (f *flakyParts) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if strings.Contains(aws.ToString(in.Key), "/parts/") && f.fail.Load() > 0 {
		f.fail.Add(-1)
		return nil, errInjected
	}
	return f.Objects.PutObject(ctx, in, o...)
}

// A manifest's bad rows are the fan-out task's report lines. If writing them fails,
// the task is not counted (lines come first), runs again and writes them: the report
// has each bad row once, whatever failed.
func TestBadEntryLinesOfAFanoutTaskAreNeverLost(t *testing.T) {
	s := newStack(t)
	s.put("m/a.txt", "a")
	s.put("m/b.txt", "b")
	s.put("m/manifest.csv", s.in+",m/a.txt\n"+s.in+",\n"+s.in+",m/b.txt\n")
	parts := &flakyParts{Objects: s.s3}
	parts.fail.Store(1)
	s.engine.Objects = parts
	id := s.submit(job.Spec{Kind: job.KindManifest, Key: "m/manifest.csv"})
	s.drain()
	j, _, err := s.store.GetJob(s.ctx, id)
	require.NoError(t, err)
	require.Equal(t, ledger.JobComplete, j.Status)
	assert.Zero(t, parts.fail.Load(), "the part write failed once")
	succeeded, failed := s.reported(id)
	assert.Len(t, succeeded, 2)
	assert.Equal(t, map[string]int{"m/manifest.csv": 1}, failed, "the bad row, once")
	assert.EqualValues(t, 1, j.Final.Failed)
}
