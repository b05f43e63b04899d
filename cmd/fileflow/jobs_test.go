package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/jobctl"
	"github.com/fileflow/fileflow/pkg/local/devstack"
)

// runCLIOut runs the CLI and returns stdout and stderr apart.
func runCLIOut(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	cmd := root()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// The job commands against the local stack, as a user runs them after
// `fileflow dev --keep`: submit --watch, status --json, cancel.
func TestJobCommandsOnLocalStack(t *testing.T) {
	ctx := context.Background()
	t.Setenv("FILEFLOW_DEV_STATE", t.TempDir()+"/dev-stack.json")
	_, _, err := runCLIOut(ctx, "status", "--local", "nope")
	require.ErrorContains(t, err, "no local stack is running")

	st, err := devstack.Start(ctx, devstack.Options{Idle: time.Second})
	require.NoError(t, err)
	defer st.Stop()
	path, err := jobctl.LocalStatePath()
	require.NoError(t, err)
	require.NoError(t, st.Target().SaveLocal(path))

	for i := range 40 {
		_, err := st.S3Direct.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.Resources.IngestBucket),
			Key: aws.String(fmt.Sprintf("cli/part-%d/f%02d.csv", i%4, i)), Body: strings.NewReader(fmt.Sprintf("a,b\n%d,x\n", i))})
		require.NoError(t, err)
	}
	prefix := "s3://" + st.Resources.IngestBucket + "/cli/"
	out, progress, err := runCLIOut(ctx, "submit", "--local", "--prefix", prefix, "--tolerate", "1%", "--watch")
	require.NoError(t, err, out+progress)
	id := strings.TrimSpace(strings.Split(out, "\n")[0])
	assert.Contains(t, out, id+" COMPLETE: 40 succeeded, 0 failed of 40")
	assert.Contains(t, progress, "listed 40", "the live progress line")

	out, _, err = runCLIOut(ctx, "status", "--local", id, "--json")
	require.NoError(t, err)
	var s jobctl.Status
	require.NoError(t, json.Unmarshal([]byte(out), &s))
	assert.Equal(t, "COMPLETE", s.Status)
	assert.EqualValues(t, 40, s.Counts.Succeeded)
	assert.Equal(t, "prefix", s.Kind)
	assert.Equal(t, prefix, s.Source)
	assert.Positive(t, s.Counts.Bytes)
	assert.Contains(t, s.Report, "/reports/"+id+"/manifest.json")

	out, _, err = runCLIOut(ctx, "status", "--local", id)
	require.NoError(t, err)
	assert.Contains(t, out, "files     listed 40, succeeded 40, failed 0")

	_, _, err = runCLIOut(ctx, "cancel", "--local", id)
	assert.ErrorContains(t, err, "already COMPLETE")

	_, _, err = runCLIOut(ctx, "submit", "--local", "--prefix", prefix, "--archive", prefix+"a.zip")
	assert.ErrorContains(t, err, "exactly one of")
	_, _, err = runCLIOut(ctx, "submit", "--local", "--split", prefix+"big.jsonl")
	assert.ErrorContains(t, err, "a split job needs 1..10000 parts")
	_, _, err = runCLIOut(ctx, "submit", "--prefix", prefix)
	assert.ErrorContains(t, err, "which stack?")

	// Cancel a job just submitted (it may also have finished first: 40 files are quick).
	out, _, err = runCLIOut(ctx, "submit", "--local", "--prefix", prefix, "--id", "to-cancel")
	require.NoError(t, err)
	assert.Equal(t, "to-cancel\n", out)
	_, _, err = runCLIOut(ctx, "submit", "--local", "--prefix", prefix, "--id", "to-cancel")
	require.NoError(t, err, "a retried submission is accepted")
	_, _, err = runCLIOut(ctx, "submit", "--local", "--prefix", prefix+"other/", "--id", "to-cancel")
	assert.ErrorContains(t, err, "job to-cancel exists with another spec")
	out, _, err = runCLIOut(ctx, "cancel", "--local", "to-cancel")
	if err == nil {
		assert.Contains(t, out, "to-cancel CANCELLED")
	} else {
		assert.ErrorContains(t, err, "already COMPLETE", "it may have finished first")
	}
}

func TestStackOutputsTarget(t *testing.T) {
	tg, err := jobctl.FromStackOutputs([]byte(`{"ingestBucket":"in","outputBucket":"out","outputPrefix":"p/","tableName":"t",
		"queueUrls":{"tasks":"https://q/tasks","jobs":"https://q/jobs"},"completionTopicArn":"arn:aws:sns:r:1:c"}`))
	require.NoError(t, err)
	assert.Equal(t, jobctl.Target{Table: "t", JobsQueueURL: "https://q/jobs", IngestBucket: "in", OutputBucket: "out", OutputPrefix: "p/",
		CompletionTopicARN: "arn:aws:sns:r:1:c", TasksQueueURL: "https://q/tasks"}, tg)
	_, err = jobctl.FromStackOutputs([]byte(`{"tableName":"t","outputBucket":"o","queueUrls":{"tasks":"x"}}`))
	assert.ErrorContains(t, err, "queueUrls.jobs (is functions/dispatch deployed?)")
}
