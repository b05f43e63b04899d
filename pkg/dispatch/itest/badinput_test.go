package itest

import (
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/bridge"
)

// What the jobs queue receives that is not a job the dispatcher can run — a body that is
// no fan-out task, a fan-out task it could not run, a job spec that is not JSON or not
// valid, a file under jobs/ that is not a .json — is recorded as poison with the reason
// and acknowledged, never retried into the dead-letter queue; a fan-out task of a job
// the ledger does not know is dropped. Nothing is submitted.
func TestBadJobMessagesAreRecordedNeverRetried(t *testing.T) {
	s := newStack(t)
	specEvent := func(key, body string) string {
		out, err := s.s3.PutObject(s.ctx, &s3.PutObjectInput{Bucket: aws.String(s.in), Key: aws.String(key), Body: strings.NewReader(body)})
		require.NoError(t, err)
		ev, err := bridge.Record(local.Region, s.in, key, int64(len(body)), aws.ToString(out.ETag), out.VersionId, "ObjectCreated:Put", "", "01")
		require.NoError(t, err)
		return ev
	}
	want := map[string]string{}
	push := func(body, reason string) {
		s.q.push(jobsQueue, body, nil)
		want["m"+strconv.Itoa(len(want)+1)] = reason
	}
	push("not json at all", "fan-out task: invalid character 'o' in literal null")
	push(`{"v":2,"step":"root","job_id":"j","task_id":"root"}`, "fan-out task: version 2 is not supported")
	push(`{"v":1,"job_id":"j","task_id":"c1","step":"chunk","chunk":{"start":9,"end":2},"format":1}`, "fan-out task: chunk [9, 2) part 0 is not a range of the manifest")
	push(specEvent("jobs/readme.txt", "how to submit"), "job spec s3://"+s.in+"/jobs/readme.txt: not a .json file")
	push(specEvent("jobs/broken.json", `{"kind":"prefix","bucket":`), "job spec s3://"+s.in+"/jobs/broken.json")
	push(specEvent("jobs/typo.json", `{"kind":"prefix","bucket":"`+s.in+`","prefx":"data/"}`), `job spec: json: unknown field "prefx"`)
	push(specEvent("jobs/invalid.json", `{"kind":"split","bucket":"`+s.in+`","key":"big.log","parts":0,"tolerate":"lots"}`),
		`parts = 0: a split job needs 1..10000 parts; tolerate "lots": must be a count (25) or a percentage (1%)`)
	push(specEvent("jobs/two.json", `{"kind":"prefix","bucket":"`+s.in+`"}{"kind":"prefix","bucket":"`+s.in+`","key":"x/"}`),
		"job spec: more after the spec's JSON object")
	s.q.push(jobsQueue, `{"v":1,"job_id":"no-such-job","task_id":"root","step":"root"}`, nil) // dropped, not poison
	s.drain()

	assert.Empty(t, s.q.dlq[jobsQueue+"-dlq"], "nothing is retried into the dead-letter queue")
	assert.Zero(t, len(s.q.take(tasksQueue)), "nothing is submitted")
	for id, reason := range want {
		got, body, ok, err := s.store.GetPoison(s.ctx, id)
		require.NoError(t, err)
		if assert.True(t, ok, "%s is recorded as poison (%s)", id, reason) {
			assert.Contains(t, got, reason, id)
			assert.NotEmpty(t, body, "the body is kept, so the message is not lost")
		}
	}
	_, _, ok, err := s.store.GetPoison(s.ctx, "m"+strconv.Itoa(len(want)+1))
	require.NoError(t, err)
	assert.False(t, ok, "a task of an unknown job is dropped, not poison")
}

// A manifest job whose manifest has bad rows completes: each bad row is a failed line of
// the report (InvalidEntry) naming the manifest, its line and why, and the good rows are
// processed. A manifest that cannot be read past a point — a JSON array broken mid-way —
// or that is gone fails its job at once, on the first receive, with the reason; an
// empty manifest completes with no files.
func TestManifestJobsWithBadRowsAndBadManifests(t *testing.T) {
	s := newStack(t)
	s.put("m/a.txt", "a")
	s.put("m/b.txt", "b")
	s.put("m/rows.csv", "\ufeff"+s.in+",m/a.txt\n\n"+s.in+",m/caf%E9.txt\nonly-one-field\n"+s.in+",bad%zz\n"+s.in+"/x,k\n"+s.in+",m/b.txt\n")
	id := s.submit(job.Spec{Kind: job.KindManifest, Key: "m/rows.csv"})
	s.drain()
	j, _, err := s.store.GetJob(s.ctx, id)
	require.NoError(t, err)
	require.Equal(t, ledger.JobComplete, j.Status, j.Reason)
	assert.EqualValues(t, 2, j.Final.Succeeded)
	assert.EqualValues(t, 4, j.Final.Failed)
	lines, err := s.engine.FailedLines(s.ctx, id)
	require.NoError(t, err)
	var msgs []string
	for _, l := range lines {
		assert.Equal(t, "InvalidEntry", l.ErrorCode)
		assert.Equal(t, 400, l.HTTPStatus)
		msgs = append(msgs, l.Message)
	}
	joined := strings.Join(msgs, "\n")
	for _, want := range []string{
		"m/rows.csv: manifest entry 3: key \"m/caf\\xe9.txt\" is not valid UTF-8",
		"m/rows.csv: manifest entry 4: want bucket,key[,versionId], got 1 field(s)",
		"m/rows.csv: manifest entry 5: key \"bad%zz\" is not URL-encoded",
		"m/rows.csv: manifest entry 6: bucket name \"" + s.in + "/x\" has '/'",
	} {
		assert.Contains(t, joined, want)
	}

	s.put("m/broken.json", `[{"key":"m/a.txt"} {"key":"m/b.txt"}]`)
	s.put("m/empty.csv", "")
	s.put("m/gone.csv", s.in+",m/a.txt\n")
	gone := s.submit(job.Spec{Kind: job.KindManifest, Key: "m/gone.csv"})
	s.del("m/gone.csv")
	broken := s.submit(job.Spec{Kind: job.KindManifest, Key: "m/broken.json"})
	empty := s.submit(job.Spec{Kind: job.KindManifest, Key: "m/empty.csv"})
	s.drain()
	for id, want := range map[string]string{
		broken: "fanout: read manifest: element 2, at byte 19: expected comma after array element",
		gone:   "head s3://" + s.in + "/m/gone.csv: operation error S3: HeadObject, https response error StatusCode: 404",
	} {
		j, _, err := s.store.GetJob(s.ctx, id)
		require.NoError(t, err)
		assert.Equal(t, ledger.JobFailed, j.Status, id)
		assert.Contains(t, j.Reason, "fan-out task root (root) failed on receive 1: ", id)
		assert.Contains(t, j.Reason, want, id)
	}
	j, _, err = s.store.GetJob(s.ctx, empty)
	require.NoError(t, err)
	assert.Equal(t, ledger.JobComplete, j.Status, j.Reason)
	assert.Zero(t, j.Final.Succeeded+j.Final.Failed)
	assert.Empty(t, s.q.dlq[jobsQueue+"-dlq"])
}
