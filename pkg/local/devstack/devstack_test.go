package devstack_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/bridge"
	"github.com/fileflow/fileflow/pkg/local/demo"
	"github.com/fileflow/fileflow/pkg/local/devstack"
)

// End to end on the local stack: the dev stage's component provisioned on the local
// servers, the real worker binary behind the local Lambda runtime, a few hundred files
// with poison files, duplicate deliveries and two files whose S3 reads are slowed past
// the function's timeout (a slow dependency).
func TestPipelineEndToEnd(t *testing.T) {
	ctx := context.Background()
	fnLogs, err := os.Create(filepath.Join(t.TempDir(), "functions.log"))
	require.NoError(t, err)
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(fnLogs.Name())
			lines := strings.Split(string(b), "\n")
			var keep []string
			for _, l := range lines {
				if strings.Contains(l, "chaos") {
					keep = append(keep, l)
				}
			}
			t.Logf("function log lines about the slow files:\n%s", strings.Join(keep, "\n"))
		}
	}()
	st, err := devstack.Start(ctx, devstack.Options{
		Stage: "dev",
		// Short timeout and two receives, so the slow files reach the DLQ in seconds.
		Overrides: map[string]string{"fileflow:workerTimeoutSeconds": "5", "fileflow:maxReceiveCount": "2"},
		S3Delay: func(r *http.Request) time.Duration {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/"+demo.SlowPrefix) {
				return time.Minute // held until the worker's per-file deadline cancels it
			}
			return 0
		},
		Idle:         time.Second,
		Log:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		FunctionLogs: fnLogs,
		Record:       recording, // judged by TestIAMAllowsEveryRecordedCall
	})
	require.NoError(t, err)
	defer st.Stop()

	opts := demo.Options{Files: 300, PoisonEvery: 50, Duplicates: 25, Slow: 2, Seed: 7, Timeout: 60 * time.Second}
	files := demo.Generate(opts)
	sum, err := demo.Run(ctx, st, files, opts)
	require.NoError(t, err)
	t.Logf("summary: files=%d succeeded=%d failed=%d dlq=%d lost=%d files/s=%.0f p50=%.0fms p99=%.0fms envs=%d calls/file=%v",
		sum.Files, sum.Succeeded, sum.Failed, sum.DLQ, sum.Lost, sum.FilesPerSec, sum.P50ms, sum.P99ms, sum.MaxEnvironments, sum.CallsPerFile)

	var good, poison, slow []string
	dups := 0
	for _, f := range files {
		switch {
		case strings.HasPrefix(f.Key, demo.SlowPrefix):
			slow = append(slow, f.Key)
		case f.Poison != "":
			poison = append(poison, f.Key)
		default:
			good = append(good, f.Key)
		}
		if f.Duplicated {
			dups++
		}
	}
	require.Equal(t, 25, dups)
	assert.Zero(t, sum.Lost, "lost: %v", sum.LostKeys)
	assert.Equal(t, len(good), sum.Succeeded)
	assert.Equal(t, len(poison), sum.Failed)
	for _, f := range files {
		if f.Poison != "" && !strings.HasPrefix(f.Key, demo.SlowPrefix) {
			assert.Contains(t, sum.FailedReasons[f.Key], f.Poison, "reason for %s", f.Key)
		}
	}

	// Each good input has exactly one output, with the right bytes and checksum.
	assert.Equal(t, len(good), sum.OutputsChecked)
	assert.Empty(t, sum.OutputMismatches)
	list, err := listAll(ctx, st.S3, st.Resources.OutputBucket)
	require.NoError(t, err)
	assert.Len(t, list, len(good), "one output per good file, none for poison files, none twice")

	// Duplicate deliveries count once: the workers' own success metric never exceeds the
	// good files although 25 of them were delivered twice. It can fall short: an
	// invocation that times out (the slow files hold theirs to the 5 s limit; under load
	// others do too) has committed files but writes no metrics line, and their redelivery
	// finds them committed (a duplicate). So every good file is a success or a duplicate.
	// A batch writes its line after its commits and the stack reads the functions' output
	// as it comes, so the count is awaited.
	nGood := float64(len(good))
	assert.Eventually(t, func() bool {
		return st.Metrics.Get("FilesSucceeded")+st.Metrics.Get("FilesDuplicate") >= nGood
	}, 30*time.Second, 100*time.Millisecond)
	assert.LessOrEqual(t, st.Metrics.Get("FilesSucceeded"), nGood, "no file counted twice")
	assert.Greater(t, st.Metrics.Get("FilesDuplicate"), 0.0)

	// The DLQ holds exactly the slow files' messages.
	sort.Strings(sum.DLQKeys)
	assert.Equal(t, slow, sum.DLQKeys)
	assert.Equal(t, 2, sum.DLQ)

	// Environments scaled above one under load, and back to zero when idle.
	assert.Greater(t, sum.MaxEnvironments, 1)
	require.Eventually(t, func() bool { return st.Stats().Environments == 0 }, 20*time.Second, 100*time.Millisecond,
		"environments scale back to zero")

	// A message sent with a delay while the mapping is at zero is still received when the
	// delay ends, as Lambda's pollers do. fauxqs makes it visible only when a receive
	// looks, so the local mapping keeps a poller while messages are delayed (a 100,000-file
	// chaos run stalled on three such messages before).
	const late = "late/delayed.csv"
	up, err := st.S3Direct.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.Resources.IngestBucket), Key: aws.String(late), Body: strings.NewReader("a,b\n")})
	require.NoError(t, err)
	ev, err := bridge.Record(local.Region, st.Resources.IngestBucket, late, 4, aws.ToString(up.ETag), up.VersionId, "ObjectCreated:Put", "", "")
	require.NoError(t, err)
	tasks, err := st.TasksQueue()
	require.NoError(t, err)
	_, err = st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(tasks.URL), MessageBody: aws.String(ev), DelaySeconds: 2})
	require.NoError(t, err)
	db := ledger.New(st.DynamoDB, st.Resources.Table, 0)
	require.Eventually(t, func() bool {
		r, ok, err := db.Get(ctx, ledger.Key{Bucket: st.Resources.IngestBucket, Key: late})
		return err == nil && ok && r.Status == ledger.StatusSucceeded
	}, 30*time.Second, 200*time.Millisecond, "the delayed message is processed")
}

func listAll(ctx context.Context, c *s3.Client, bucket string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}
