package itest

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// A job's report holds the lines of exactly the tasks the ledger counted: a part of a
// task never counted (an orphan, a late task of a stopped job) does not stand in for a
// counted task's missing part, and a report written without one names the task.
func TestReportIsByCountedTask(t *testing.T) {
	s := newStack(t)
	for _, k := range []string{"r/a.txt", "r/b.txt", "r/c.txt"} {
		s.put(k, "content of "+k)
	}
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "r/", FilesPerTask: 1})
	s.drain()
	j, _, err := s.store.GetJob(s.ctx, id)
	require.NoError(t, err)
	require.Equal(t, ledger.JobComplete, j.Status)
	m := s.manifest(id)
	assert.Equal(t, 4, m.TasksCounted, "the root and three task messages")
	assert.Empty(t, m.TasksMissingLines)

	counted, err := s.store.CountedTasks(s.ctx, id)
	require.NoError(t, err)
	var lost, lostPart string
	for _, c := range counted {
		if c.Lines > 0 {
			lost, lostPart = c.TaskID, c.Part
			break
		}
	}
	require.NotEmpty(t, lostPart, "the marker names the counted delivery's part")
	prefix := "reports/" + id + "/parts/"
	_, err = s.s3.DeleteObject(s.ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.out), Key: aws.String(prefix + lostPart + ".csv")})
	require.NoError(t, err)
	_, err = s.s3.PutObject(s.ctx, &s3.PutObjectInput{Bucket: aws.String(s.out), Key: aws.String(prefix + "m-never-counted.csv"),
		Body: strings.NewReader(s.in + ",r/stray.txt,,succeeded,,200,s3://out/stray\n")})
	require.NoError(t, err)

	err = s.engine.Finalize(s.ctx, j, false)
	require.ErrorIs(t, err, job.ErrReportIncomplete, "a counted task's lines are missing")
	assert.ErrorContains(t, err, lost)
	require.NoError(t, s.engine.Finalize(s.ctx, j, true), "the last attempt writes what there is")
	m = s.manifest(id)
	assert.Equal(t, []string{lost}, m.TasksMissingLines)
	assert.EqualValues(t, 1, m.LinesMissing)
	succeeded, _ := s.reported(id)
	assert.Len(t, succeeded, 2)
	assert.NotContains(t, succeeded, "r/stray.txt", "an uncounted task's part is left out")
}

type manifestDoc struct {
	TasksCounted      int      `json:"TasksCounted"`
	TasksMissingLines []string `json:"TasksMissingLines"`
	LinesMissing      int64    `json:"LinesMissing"`
}

func (s *stack) manifest(id string) manifestDoc {
	out, err := s.s3.GetObject(s.ctx, &s3.GetObjectInput{Bucket: aws.String(s.out), Key: aws.String("reports/" + id + "/manifest.json")})
	require.NoError(s.t, err)
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	require.NoError(s.t, err)
	var m manifestDoc
	require.NoError(s.t, json.Unmarshal(b, &m))
	return m
}
