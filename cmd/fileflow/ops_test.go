package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/audit"
	"github.com/fileflow/fileflow/pkg/dlq"
	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/jobctl"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/bridge"
	"github.com/fileflow/fileflow/pkg/local/devstack"
	"github.com/fileflow/fileflow/pkg/task"
)

// runCLIIn runs the CLI with stdin.
func runCLIIn(ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := root()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// The operator's commands against one local stack, as after `fileflow dev --keep`:
// failures, audit, dlq list/show/redrive (interrupted, crashed and resumed)/purge,
// replay. Files are made to fail for real: a corrupt gzip and a rejected .exe (FAILED),
// a poison message, a file whose first read times out (a retry, then success), two
// files whose reads time out on every receive (DEAD_LETTERED, in the DLQ), an
// overwritten key with a superseded revision.
func TestOperatorCommandsOnLocalStack(t *testing.T) {
	ctx := context.Background()
	t.Setenv("FILEFLOW_DEV_STATE", filepath.Join(t.TempDir(), "dev-stack.json"))
	fnLogs, err := os.Create(filepath.Join(t.TempDir(), "functions.log"))
	require.NoError(t, err)
	var slowOn atomic.Bool // reads under ops/slow/ time out while set
	slowOn.Store(true)
	var flaky sync.Map // keys under ops/flaky/ whose first read was held
	st, err := devstack.Start(ctx, devstack.Options{
		// Short timeout and two receives: a slow file reaches the DLQ in seconds.
		Overrides: map[string]string{"fileflow:workerTimeoutSeconds": "5", "fileflow:maxReceiveCount": "2"},
		S3Delay: func(r *http.Request) time.Duration {
			if r.Method != http.MethodGet {
				return 0
			}
			switch p := r.URL.Path; {
			case strings.Contains(p, "/ops/slow/") && slowOn.Load():
				return time.Minute // held until the worker's per-file deadline cancels it
			case strings.Contains(p, "/ops/flaky/"):
				if _, seen := flaky.LoadOrStore(p, true); !seen {
					return time.Minute
				}
			}
			return 0
		},
		Idle:           time.Second,
		ReconcileEvery: -1,
		FunctionLogs:   fnLogs,
	})
	require.NoError(t, err)
	defer st.Stop()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(fnLogs.Name())
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) {
					keep = append(keep, l)
				}
			}
			t.Logf("function warnings and errors (last 40):\n%s", strings.Join(keep[max(0, len(keep)-40):], "\n"))
		}
	}()
	path, err := jobctl.LocalStatePath()
	require.NoError(t, err)
	target := st.Target()
	require.NotEmpty(t, target.TasksDLQURL)
	require.NotEmpty(t, target.JobsDLQURL)
	require.NoError(t, target.SaveLocal(path))
	db := ledger.New(st.DynamoDB, st.Resources.Table, 0)
	in := st.Resources.IngestBucket
	tasks, err := st.TasksQueue()
	require.NoError(t, err)

	put := func(c *s3.Client, key, body string) *s3.PutObjectOutput {
		out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(in), Key: aws.String(key), Body: strings.NewReader(body)})
		require.NoError(t, err)
		return out
	}
	record := func(key string) ledger.Record {
		r, _, err := db.Get(ctx, ledger.Key{Bucket: in, Key: key})
		require.NoError(t, err)
		return r
	}
	statusIs := func(key string, want ledger.Status) func() bool {
		return func() bool {
			r, ok, err := db.Get(ctx, ledger.Key{Bucket: in, Key: key})
			return err == nil && ok && r.Status == want
		}
	}
	depth := func(url string) int {
		v, f, err := dlq.Depth(ctx, st.SQS, url)
		require.NoError(t, err)
		return v + f
	}
	visible := func(url string) int {
		v, _, err := dlq.Depth(ctx, st.SQS, url)
		require.NoError(t, err)
		return v
	}

	// Files that fail, for real (uploads are notified, as in AWS).
	put(st.S3, "ops/good/a.csv", "a,b\n1,2\n")
	put(st.S3, "ops/bad/broken.log.gz", "this is not gzip")
	put(st.S3, "ops/bad/setup.exe", "MZ\x90\x00")
	put(st.S3, "ops/flaky/retry.csv", "x,y\n3,4\n")
	put(st.S3, "ops/slow/s1.csv", "slow,1\n")
	put(st.S3, "ops/slow/s2.csv", "slow,2\n")
	_, err = st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(tasks.URL), MessageBody: aws.String("this is not a message")})
	require.NoError(t, err)
	// An overwritten key: version 1, then 2, then version 1's event again, late.
	const over = "ops/over/report.txt"
	v1 := put(st.S3, over, "version one")
	require.Eventually(t, statusIs(over, ledger.StatusSucceeded), 30*time.Second, 100*time.Millisecond)
	v2 := put(st.S3, over, "version two")
	require.Eventually(t, func() bool { return record(over).VersionID == aws.ToString(v2.VersionId) }, 30*time.Second, 100*time.Millisecond)
	late, err := bridge.Record(local.Region, in, over, int64(len("version one")), aws.ToString(v1.ETag), v1.VersionId, "ObjectCreated:Put", "", "0000000000000000")
	require.NoError(t, err)
	_, err = st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(tasks.URL), MessageBody: aws.String(late)})
	require.NoError(t, err)

	// Dead-letter messages beside the two real ones: files uploaded without an event
	// (straight to the server), their events and task messages put in the tasks DLQ, as
	// after an outage. 24 S3 events of one file, 3 task messages of two files.
	var dlqFiles []string
	for i := range 30 {
		k := fmt.Sprintf("ops/dlq/f%02d.csv", i)
		o := put(st.S3Direct, k, fmt.Sprintf("n,v\n%d,x\n", i))
		dlqFiles = append(dlqFiles, k)
		if i < 24 {
			ev, err := bridge.Record(local.Region, in, k, int64(len(fmt.Sprintf("n,v\n%d,x\n", i))), aws.ToString(o.ETag), o.VersionId, "ObjectCreated:Put", "", "")
			require.NoError(t, err)
			_, err = st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(target.TasksDLQURL), MessageBody: aws.String(ev)})
			require.NoError(t, err)
		}
	}
	for i := 24; i < 30; i += 2 {
		body, err := task.Message{Files: []task.File{{Bucket: in, Key: dlqFiles[i]}, {Bucket: in, Key: dlqFiles[i+1]}}}.Encode()
		require.NoError(t, err)
		_, err = st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(target.TasksDLQURL), MessageBody: aws.String(string(body))})
		require.NoError(t, err)
	}
	// A fan-out task of a job that is gone, in the jobs DLQ.
	_, err = st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(target.JobsDLQURL),
		MessageBody: aws.String(`{"v":1,"job_id":"ghost","task_id":"root","step":"root"}`)})
	require.NoError(t, err)

	// The slow files: two receives 30 s apart (6 × the 5 s timeout), then the DLQ: ~65 s
	// alone, more when other packages' stacks share the 2 cores (a CI run failed at 90 s).
	var seen string // what the last look found, for the failure message
	if !assert.Eventually(t, func() bool {
		var b strings.Builder
		for _, k := range []string{"ops/bad/setup.exe", "ops/bad/broken.log.gz", "ops/flaky/retry.csv", "ops/good/a.csv", "ops/slow/s1.csv", "ops/slow/s2.csv"} {
			r, _, err := db.Get(ctx, ledger.Key{Bucket: in, Key: k})
			fmt.Fprintf(&b, "%s=%s(receive %d, err %v) ", k, r.Status, r.Attempts, err)
		}
		fmt.Fprintf(&b, "tasks DLQ %d", depth(target.TasksDLQURL))
		seen = b.String()
		return statusIs("ops/bad/setup.exe", ledger.StatusFailed)() && statusIs("ops/bad/broken.log.gz", ledger.StatusFailed)() &&
			statusIs("ops/flaky/retry.csv", ledger.StatusSucceeded)() && statusIs("ops/good/a.csv", ledger.StatusSucceeded)() &&
			depth(target.TasksDLQURL) == 29
	}, 3*time.Minute, 250*time.Millisecond) {
		t.Fatalf("the slow files reach the DLQ (29 messages in all), the others an outcome; last seen: %s", seen)
	}
	_, ok, err := db.Get(ctx, ledger.SupersededKey(ledger.Key{Bucket: in, Key: over}, ledger.Revision{VersionID: aws.ToString(v1.VersionId)}))
	require.NoError(t, err)
	require.True(t, ok, "version 1 is recorded superseded")

	t.Run("failures", func(t *testing.T) {
		out, _, err := runCLIOut(ctx, "failures", "--local", "--json")
		require.NoError(t, err)
		var fs []audit.Failure
		require.NoError(t, json.Unmarshal([]byte(out), &fs))
		byKey := map[string]audit.Failure{}
		poison := 0
		for _, f := range fs {
			if f.Kind == "poison" {
				poison++
				assert.Equal(t, failure.InvalidEntry, f.Code)
				assert.Contains(t, f.Reason, "not a JSON object")
				continue
			}
			byKey[f.Key] = f
		}
		assert.Equal(t, 1, poison)
		assert.Len(t, byKey, 4, "corrupt, rejected and the two slow files: %v", fs)
		assert.Equal(t, failure.Corrupt, byKey["ops/bad/broken.log.gz"].Code)
		assert.Equal(t, failure.Rejected, byKey["ops/bad/setup.exe"].Code)
		assert.Equal(t, "FAILED", byKey["ops/bad/setup.exe"].Status)
		for _, k := range []string{"ops/slow/s1.csv", "ops/slow/s2.csv"} {
			assert.Equal(t, "DEAD_LETTERED", byKey[k].Status, k)
			assert.Equal(t, failure.RetriesExhausted, byKey[k].Code, k)
			assert.Equal(t, 2, byKey[k].Attempts, k)
			assert.WithinDuration(t, time.Now(), byKey[k].At, 2*time.Minute)
		}

		out, _, err = runCLIOut(ctx, "failures", "--local", "--reason", "EXECUTABLES", "--since", "1d")
		require.NoError(t, err)
		assert.Contains(t, out, "s3://"+in+"/ops/bad/setup.exe")
		assert.Contains(t, out, "Rejected")
		assert.NotContains(t, out, "broken.log.gz")
		assert.Contains(t, out, "1 failures since")
		_, _, err = runCLIOut(ctx, "failures", "--local", "--since", "yesterday")
		assert.ErrorContains(t, err, `--since "yesterday"`)
	})

	t.Run("audit", func(t *testing.T) {
		uri := "s3://" + in + "/ops/flaky/retry.csv"
		out, _, err := runCLIOut(ctx, "audit", "--local", uri, "--json")
		require.NoError(t, err)
		var tr audit.Trail
		require.NoError(t, json.Unmarshal([]byte(out), &tr))
		require.NotNil(t, tr.Record)
		assert.Equal(t, ledger.StatusSucceeded, tr.Record.Status)
		assert.Equal(t, 2, tr.Record.Attempts, "a retry, then the success")
		require.Len(t, tr.Record.History, 2)
		assert.Equal(t, ledger.StatusRetrying, tr.Record.History[0].Outcome)
		assert.NotEmpty(t, tr.Record.History[0].Error)
		assert.Equal(t, ledger.StatusSucceeded, tr.Record.History[1].Outcome)
		assert.NotEmpty(t, tr.Record.SHA256)
		assert.NotEmpty(t, tr.Record.ContentType)
		require.Len(t, tr.Outputs, 1)
		assert.True(t, tr.Outputs[0].Matches, "the output holds the record's revision")
		assert.False(t, tr.Newer)

		out, _, err = runCLIOut(ctx, "audit", "--local", uri)
		require.NoError(t, err)
		for _, want := range []string{"attempts: 2", "RETRYING", "SUCCEEDED", "sha256 ", "(the record's revision)"} {
			assert.Contains(t, out, want)
		}

		// The overwritten key: version 2 is the record, version 1 superseded by it.
		out, _, err = runCLIOut(ctx, "audit", "--local", "s3://"+in+"/"+over, "--version", aws.ToString(v1.VersionId), "--json")
		require.NoError(t, err)
		tr = audit.Trail{}
		require.NoError(t, json.Unmarshal([]byte(out), &tr))
		assert.Equal(t, aws.ToString(v2.VersionId), tr.Record.VersionID)
		assert.Equal(t, aws.ToString(v1.VersionId), tr.Record.PrevVersionID)
		require.Len(t, tr.Superseded, 1)
		require.NotNil(t, tr.Version)
		assert.Equal(t, "superseded", tr.Version.State)
		assert.Equal(t, "v:"+aws.ToString(v2.VersionId), tr.Version.By)
		out, _, err = runCLIOut(ctx, "audit", "--local", "s3://"+in+"/"+over)
		require.NoError(t, err)
		assert.Contains(t, out, "superseded revision v:"+aws.ToString(v1.VersionId))

		// A newer revision in S3 than the record's (its event not processed yet).
		put(st.S3Direct, "ops/good/a.csv", "a,b\n9,9\n")
		out, _, err = runCLIOut(ctx, "audit", "--local", "s3://"+in+"/ops/good/a.csv", "--json")
		require.NoError(t, err)
		tr = audit.Trail{}
		require.NoError(t, json.Unmarshal([]byte(out), &tr))
		assert.True(t, tr.Newer)
		_, _, err = runCLIOut(ctx, "audit", "--local", "s3://"+in)
		assert.ErrorContains(t, err, "names no key")
	})

	var slowMsgs []string
	t.Run("dlq list and show", func(t *testing.T) {
		for range 2 { // peeking consumes nothing: twice the same
			out, _, err := runCLIOut(ctx, "dlq", "list", "--local", "--json")
			require.NoError(t, err)
			var msgs []dlq.Message
			require.NoError(t, json.Unmarshal([]byte(out), &msgs))
			require.Len(t, msgs, 29)
			shapes := map[string]int{}
			files := 0
			slowMsgs = nil
			for _, m := range msgs {
				shapes[m.Shape]++
				files += len(m.Files)
				if len(m.Files) == 1 && strings.HasPrefix(m.Files[0].Key, "ops/slow/") {
					slowMsgs = append(slowMsgs, m.ID)
					assert.Contains(t, m.LastError(), "DEAD_LETTERED RetriesExhausted")
					assert.Equal(t, 2, m.Files[0].Attempts)
				}
			}
			assert.Equal(t, map[string]int{dlq.ShapeS3Event: 26, dlq.ShapeTask: 3}, shapes)
			assert.Equal(t, 32, files)
			assert.Len(t, slowMsgs, 2)
		}
		assert.Equal(t, 29, depth(target.TasksDLQURL))

		out, _, err := runCLIOut(ctx, "dlq", "list", "--local", "--reason", "retriesexhausted")
		require.NoError(t, err)
		assert.Contains(t, out, "2 messages in the tasks DLQ matching reason")
		assert.Contains(t, out, "ops/slow/s1.csv")

		out, _, err = runCLIOut(ctx, "dlq", "show", "--local", slowMsgs[0])
		require.NoError(t, err)
		assert.Contains(t, out, "message "+slowMsgs[0]+": s3-event")
		assert.Contains(t, out, "DEAD_LETTERED")
		assert.Contains(t, out, "RetriesExhausted")
		_, _, err = runCLIOut(ctx, "dlq", "show", "--local", "no-such-message")
		assert.ErrorContains(t, err, "no-such-message")

		out, _, err = runCLIOut(ctx, "dlq", "list", "--local", "--queue", "jobs", "--json")
		require.NoError(t, err)
		var fan []dlq.Message
		require.NoError(t, json.Unmarshal([]byte(out), &fan))
		require.Len(t, fan, 1)
		assert.Equal(t, dlq.ShapeFanout, fan[0].Shape)
		assert.Equal(t, "ghost", fan[0].JobID)
		assert.Equal(t, "UNKNOWN", fan[0].JobStatus)
	})

	dups := func() float64 { return st.Metrics.Get("FilesDuplicate") }
	t.Run("redrive by reason", func(t *testing.T) {
		slowOn.Store(false) // the cause is fixed
		before := dups()
		out, _, err := runCLIOut(ctx, "dlq", "redrive", "--local", "--reason", "RetriesExhausted", "--json")
		require.NoError(t, err)
		var res dlq.Result
		require.NoError(t, json.Unmarshal([]byte(out), &res))
		assert.Equal(t, 2, res.Moved)
		assert.Equal(t, 27, res.Skipped, "the others stay")
		assert.Equal(t, "receive-send-delete", res.Method, "a filter moves message by message")
		assert.Equal(t, 27, visible(target.TasksDLQURL), "the skipped ones are visible again")
		require.Eventually(t, func() bool {
			return statusIs("ops/slow/s1.csv", ledger.StatusSucceeded)() && statusIs("ops/slow/s2.csv", ledger.StatusSucceeded)()
		}, 30*time.Second, 200*time.Millisecond)
		assert.Equal(t, 3, record("ops/slow/s1.csv").Attempts, "two timeouts, then the redriven success")
		assert.Equal(t, before, dups())
	})

	t.Run("redrive interrupted, crashed and resumed", func(t *testing.T) {
		defer func() { testRedriver = nil }()
		beforeDups := dups()
		total := map[string]int{}
		add := func(res dlq.Result) {
			total[dlq.Moved] += res.Moved
			total[dlq.AlreadySent] += res.AlreadySent
			total[dlq.Confirmed] += res.Confirmed
			total[dlq.Resent] += res.Resent
		}
		run := func(rctx context.Context) (dlq.Result, error) {
			out, _, err := runCLIOut(rctx, "dlq", "redrive", "--local", "--rate", "20", "--json")
			var res dlq.Result
			require.NoError(t, json.Unmarshal([]byte(out), &res), out)
			add(res)
			return res, err
		}

		// 1. Interrupted (Ctrl-C) after 10 messages: the 10th finishes its steps.
		ictx, cancel := context.WithCancel(ctx)
		n := 0
		testRedriver = func(r *dlq.Redriver) {
			r.AfterMark = func(string) error {
				if n++; n == 10 {
					cancel()
				}
				return nil
			}
		}
		res, err := run(ictx)
		cancel()
		require.ErrorContains(t, err, "redrive interrupted after 10 messages")
		assert.True(t, res.Interrupted)
		assert.Equal(t, 10, res.Moved)
		assert.Contains(t, res.MoveTaskUnavailable, "InvalidAction", "fauxqs has no StartMessageMoveTask: the fallback")
		require.Eventually(t, func() bool { return visible(target.TasksDLQURL) == 17 }, 5*time.Second, 100*time.Millisecond,
			"the messages it held are visible again at once")

		// 2. A crash between a send and its record: the copy went out, the marker says
		// "sending", the message is still in the DLQ.
		var crashed string
		testRedriver = func(r *dlq.Redriver) {
			r.AfterSend = func(id string) error { crashed = id; return errors.New("simulated crash after send") }
		}
		res, err = run(ctx)
		require.ErrorContains(t, err, "simulated crash after send")
		assert.Zero(t, res.Done())
		mark, ok, err := db.GetRedrive(ctx, crashed)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, ledger.RedriveSending, mark.State)
		out, _, err := runCLIOut(ctx, "dlq", "show", "--local", crashed)
		require.NoError(t, err)
		assert.Contains(t, out, "claimed by a redrive that stopped before recording its send")
		// Its copy is processed meanwhile.
		out, _, err = runCLIOut(ctx, "dlq", "show", "--local", crashed, "--json")
		require.NoError(t, err)
		var shown []dlq.Message
		require.NoError(t, json.Unmarshal([]byte(out), &shown))
		require.Len(t, shown, 1)
		require.NotEmpty(t, shown[0].Files)
		require.Eventually(t, func() bool {
			for _, f := range shown[0].Files {
				if record(f.Key).Status != ledger.StatusSucceeded {
					return false
				}
			}
			return true
		}, 30*time.Second, 100*time.Millisecond, "the crashed run's copy is processed")

		// 3. A crash between a record and the delete: the marker says "sent".
		m := 0
		var sentNotDeleted string
		testRedriver = func(r *dlq.Redriver) {
			r.AfterMark = func(id string) error {
				if m++; m == 3 {
					sentNotDeleted = id
					return errors.New("simulated crash before delete")
				}
				return nil
			}
		}
		res, err = run(ctx)
		require.ErrorContains(t, err, "simulated crash before delete")
		mark, ok, err = db.GetRedrive(ctx, sentNotDeleted)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, ledger.RedriveSent, mark.State)

		// 4. Resumed: everything left moves; nothing is sent twice.
		testRedriver = nil
		res, err = run(ctx)
		require.NoError(t, err)
		assert.False(t, res.Interrupted)
		assert.Zero(t, res.Left)
		t.Logf("redrive of 27 messages over four runs: %v (interrupted after 10, a crash after a send, a crash before a delete)", total)
		assert.Equal(t, 27, total[dlq.Moved]+total[dlq.AlreadySent]+total[dlq.Confirmed]+total[dlq.Resent], "every message out of the DLQ once")
		assert.Equal(t, 1, total[dlq.AlreadySent], "the one sent before the crash is only deleted")
		assert.Equal(t, 1, total[dlq.Confirmed], "the one whose send was not recorded: the ledger shows its copy processed")
		assert.Zero(t, total[dlq.Resent], "no message sent twice")
		assert.Equal(t, 0, depth(target.TasksDLQURL))

		// Every file processed exactly once: one attempt, one output, no duplicate delivery.
		require.Eventually(t, func() bool {
			for _, k := range dlqFiles {
				if record(k).Status != ledger.StatusSucceeded {
					return false
				}
			}
			return true
		}, 60*time.Second, 200*time.Millisecond)
		for _, k := range dlqFiles {
			r := record(k)
			assert.Equal(t, 1, r.Attempts, k)
			require.Len(t, r.Outputs, 1, k)
			ob, _ := strings.CutPrefix(r.Outputs[0], "s3://")
			b, key, _ := strings.Cut(ob, "/")
			_, err := st.S3Direct.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b), Key: aws.String(key)})
			assert.NoError(t, err, "output of %s", k)
		}
		time.Sleep(time.Second) // a late duplicate would show in the metric
		assert.Equal(t, beforeDups, dups(), "no copy was delivered twice")
	})

	t.Run("purge", func(t *testing.T) {
		require.Equal(t, 1, depth(target.JobsDLQURL))
		_, prompt, err := runCLIIn(ctx, "", "dlq", "purge", "--local", "--queue", "jobs")
		require.ErrorIs(t, err, dlq.ErrNotConfirmed)
		assert.Contains(t, prompt, "Type jobs-dlq to confirm")
		_, _, err = runCLIIn(ctx, "yes\n", "dlq", "purge", "--local", "--queue", "jobs")
		require.ErrorIs(t, err, dlq.ErrNotConfirmed, "only the queue's name confirms")
		assert.Equal(t, 1, depth(target.JobsDLQURL), "nothing was deleted")
		out, _, err := runCLIIn(ctx, "jobs-dlq\n", "dlq", "purge", "--local", "--queue", "jobs")
		require.NoError(t, err)
		assert.Contains(t, out, "purged")
		assert.Equal(t, 0, depth(target.JobsDLQURL))
		out, _, err = runCLIIn(ctx, "", "dlq", "purge", "--local", "--yes", "--json")
		require.NoError(t, err)
		assert.Contains(t, out, `"purged_about": 0`)
	})

	t.Run("replay", func(t *testing.T) {
		const key = "ops/flaky/retry.csv"
		before := record(key)
		require.Len(t, before.Outputs, 1)
		outBucket, outKey, _ := strings.Cut(strings.TrimPrefix(before.Outputs[0], "s3://"), "/")
		h0, err := st.S3Direct.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(outBucket), Key: aws.String(outKey)})
		require.NoError(t, err)
		time.Sleep(1100 * time.Millisecond) // Last-Modified has one-second resolution

		out, _, err := runCLIOut(ctx, "replay", "--local", "s3://"+in+"/"+key, "--watch", "--json")
		require.NoError(t, err, out)
		var res replayResult
		require.NoError(t, json.Unmarshal([]byte(out), &res))
		require.Len(t, res.Outcomes, 1)
		assert.Equal(t, "SUCCEEDED", res.Outcomes[0].Status)
		after := record(key)
		assert.Equal(t, before.Attempts+1, after.Attempts, "the record gains an attempt")
		assert.Contains(t, after.Replays, res.ReplayID)
		h1, err := st.S3Direct.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(outBucket), Key: aws.String(outKey)})
		require.NoError(t, err)
		assert.True(t, h1.LastModified.After(*h0.LastModified), "the output is rewritten")

		// A job's failed files: the corrupt and the rejected file, again.
		out, _, _ = runCLIOut(ctx, "submit", "--local", "--prefix", "s3://"+in+"/ops/bad/", "--watch")
		id := strings.TrimSpace(strings.Split(out, "\n")[0])
		lines, err := (&job.Engine{Objects: st.S3Direct, OutputBucket: target.OutputBucket, OutputPrefix: target.OutputPrefix}).FailedLines(ctx, id)
		require.NoError(t, err, "the job's report is written: %s", out)
		require.Len(t, lines, 2)
		bad := map[string]int{"ops/bad/broken.log.gz": record("ops/bad/broken.log.gz").Attempts, "ops/bad/setup.exe": record("ops/bad/setup.exe").Attempts}
		out, _, err = runCLIOut(ctx, "replay", "--local", "--job", id, "--failed", "--watch", "--json")
		require.NoError(t, err, out)
		res = replayResult{}
		require.NoError(t, json.Unmarshal([]byte(out), &res))
		require.Len(t, res.Outcomes, 2)
		for _, o := range res.Outcomes {
			assert.Equal(t, "FAILED", o.Status, o.File)
		}
		for k, n := range bad {
			assert.Equal(t, n+1, record(k).Attempts, "%s processed once more", k)
		}
		_, _, err = runCLIOut(ctx, "replay", "--local", "--job", id)
		assert.ErrorContains(t, err, "add --failed")
		_, _, err = runCLIOut(ctx, "replay", "--local", "s3://"+in+"/ops/nope.csv")
		require.NoError(t, err, "a missing object is skipped, not an error")
	})
}

func TestParseSince(t *testing.T) {
	for in, want := range map[string]time.Duration{"90m": 90 * time.Minute, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour} {
		got, err := parseSince(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "d", "-1h", "2x", "1d-1h"} {
		_, err := parseSince(in)
		assert.Error(t, err, in)
	}
}
