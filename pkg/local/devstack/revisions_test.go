package devstack_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/bridge"
	"github.com/fileflow/fileflow/pkg/local/devstack"
)

// Overwrites on the local stack's versioned ingest bucket, as the component declares it.
// Both versions' events are handled side by side; version 1's read is held while
// version 2 is processed and committed: version 1's
// output lands last, its commit is refused (older by sequencer), and it restores the
// output to version 2's. Then version 1's event is delivered again (a late redelivery,
// a DLQ redrive): SUPERSEDED at once, no work. Throughout, the key's record is version
// 2's, and the output ends as version 2's bytes.
func TestOverwriteOrderEndToEnd(t *testing.T) {
	ctx := context.Background()
	fnLog, err := os.Create(t.TempDir() + "/functions.log")
	require.NoError(t, err)
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(fnLog.Name())
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "race/") || strings.Contains(l, "superseded") || strings.Contains(l, "ERROR") {
					t.Log(l)
				}
			}
		}
	}()
	var holdVersion atomic.Value
	holdVersion.Store("")
	st, err := devstack.Start(ctx, devstack.Options{
		Stage: "dev",
		S3Delay: func(r *http.Request) time.Duration {
			if v := holdVersion.Load().(string); v != "" && r.Method == http.MethodGet && r.URL.Query().Get("versionId") == v {
				return 4 * time.Second
			}
			return 0
		},
		Paused:       true, // both events in one batch: processed side by side
		Idle:         time.Second,
		Log:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		FunctionLogs: fnLog,
	})
	require.NoError(t, err)
	defer st.Stop()
	in, out := st.Resources.IngestBucket, st.Resources.OutputBucket
	prefix := ""
	for _, fn := range st.Resources.Functions {
		if fn.Handler == "worker" {
			prefix = fn.Env[fnenv.OutputPrefix]
		}
	}
	require.Contains(t, st.Resources.Versioned, in, "the ingest bucket is versioned, as declared")

	const key = "race/report.txt"
	v1, err := st.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(in), Key: aws.String(key), Body: strings.NewReader("version one")})
	require.NoError(t, err)
	holdVersion.Store(aws.ToString(v1.VersionId))
	v2, err := st.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(in), Key: aws.String(key), Body: strings.NewReader("version two")})
	require.NoError(t, err)
	require.NotEqual(t, aws.ToString(v1.VersionId), aws.ToString(v2.VersionId))
	st.Resume()

	db := ledger.New(st.DynamoDB, st.Resources.Table, 0)
	k := ledger.Key{Bucket: in, Key: key}
	v1Rev := ledger.Revision{VersionID: aws.ToString(v1.VersionId)}
	require.Eventually(t, func() bool {
		_, ok, err := db.Get(ctx, ledger.SupersededKey(k, v1Rev))
		return err == nil && ok
	}, 30*time.Second, 200*time.Millisecond, "version 1 is recorded superseded")

	rec, ok, err := db.Get(ctx, k)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, ledger.StatusSucceeded, rec.Status)
	assert.Equal(t, aws.ToString(v2.VersionId), rec.VersionID, "the key's record is version 2's")
	require.Eventually(t, func() bool { return outputIs(ctx, st, out, prefix+key, "version two") }, 10*time.Second, 100*time.Millisecond,
		"the output ends as version 2's bytes")
	head, err := st.S3Direct.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(out), Key: aws.String(prefix + key)})
	require.NoError(t, err)
	assert.Equal(t, "v:"+aws.ToString(v2.VersionId), head.Metadata["fileflow-revision"])

	// Version 1's event again, later: superseded. With the default duplicate check
	// ("auto") an S3 event's first delivery is not read first, so version 1 is processed
	// again and its output replaces version 2's until its refused commit puts version 2's
	// back; with "always" it is superseded without work. Either way the output ends as
	// version 2's.
	holdVersion.Store("")
	before := st.Metrics.Get("FilesSuperseded")
	ev, err := bridge.Record(local.Region, in, key, int64(len("version one")), aws.ToString(v1.ETag), v1.VersionId, "ObjectCreated:Put", "", "0000000000000000")
	require.NoError(t, err)
	tasks, err := st.TasksQueue()
	require.NoError(t, err)
	_, err = st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(tasks.URL), MessageBody: aws.String(ev)})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return st.Metrics.Get("FilesSuperseded") > before }, 20*time.Second, 100*time.Millisecond)
	assert.Eventually(t, func() bool { return outputIs(ctx, st, out, prefix+key, "version two") }, 10*time.Second, 100*time.Millisecond,
		"the output ends as version 2's bytes")
	rec, _, err = db.Get(ctx, k)
	require.NoError(t, err)
	assert.Equal(t, aws.ToString(v2.VersionId), rec.VersionID)
	assert.Equal(t, 1, rec.Attempts, "version 2 was processed once")
}

func outputIs(ctx context.Context, st *devstack.Stack, bucket, key, want string) bool {
	o, err := st.S3Direct.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return false
	}
	defer o.Body.Close()
	b, _ := io.ReadAll(o.Body)
	return string(b) == want
}
