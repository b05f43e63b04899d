package devstack_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local/devstack"
	"github.com/fileflow/fileflow/pkg/task"
)

// jobEnv is the local stack with the real dispatcher and worker binaries, and the
// clients a job's submitter uses.
type jobEnv struct {
	st     *devstack.Stack
	db     *ledger.Store
	engine *job.Engine
	jobsQ  string
	ingest string

	mu            sync.Mutex
	notifications map[string][]job.Notification
}

// Held and slowed S3 requests of the functions (chaos injection).
var (
	heldListPrefix atomic.Value // string: ListObjectsV2 of this prefix waits for listGate
	listGate       atomic.Value // chan struct{}
	slowGetPrefix  atomic.Value // string: GETs under this prefix are slowed
)

func slowdown(r *http.Request) time.Duration {
	q := r.URL.Query()
	if p, _ := heldListPrefix.Load().(string); p != "" && q.Get("list-type") == "2" && q.Get("prefix") == p {
		select { // the proxy calls this on the request's goroutine: block it
		case <-listGate.Load().(chan struct{}):
		case <-time.After(2 * time.Minute):
		}
		return 0
	}
	if p, _ := slowGetPrefix.Load().(string); p != "" && r.Method == http.MethodGet && q.Get("list-type") == "" &&
		strings.Contains(r.URL.Path, "/"+p) {
		return 200 * time.Millisecond
	}
	return 0
}

func startJobEnv(t *testing.T, mutate func(*devstack.Options)) *jobEnv {
	t.Helper()
	ctx := context.Background()
	fnLogs, err := os.Create(filepath.Join(t.TempDir(), "functions.log"))
	require.NoError(t, err)
	opts := devstack.Options{
		Stage:        "dev",
		S3Delay:      slowdown,
		Idle:         2 * time.Second,
		Log:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		FunctionLogs: fnLogs,
		Record:       recording, // judged by TestIAMAllowsEveryRecordedCall
		// The reconciler runs during the jobs, as the component's schedule would.
		ReconcileEvery: 20 * time.Second,
	}
	if mutate != nil {
		mutate(&opts)
	}
	st, err := devstack.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		st.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(fnLogs.Name())
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				if (strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, "job finished")) && !strings.Contains(l, "rejected by rule") {
					keep = append(keep, l)
				}
			}
			if len(keep) > 60 {
				keep = keep[len(keep)-60:]
			}
			t.Logf("function warnings and errors (last %d):\n%s", len(keep), strings.Join(keep, "\n"))
		}
	})
	q, err := st.JobsQueue()
	require.NoError(t, err)
	e := &jobEnv{st: st, jobsQ: q.URL, ingest: st.Resources.IngestBucket, notifications: map[string][]job.Notification{}}
	e.db = ledger.New(st.DynamoDB, st.Resources.Table, 0)
	e.engine = &job.Engine{Ledger: e.db, Objects: st.S3Direct, Topic: st.SNS, TopicARN: st.CompletionTopic(),
		OutputBucket: st.Resources.OutputBucket, StatusTTL: time.Millisecond}
	require.NotEmpty(t, st.CompletionsQueueURL)
	go e.collectNotifications(t.Context())
	return e
}

// collectNotifications keeps every job notification the completion topic delivers.
func (e *jobEnv) collectNotifications(ctx context.Context) {
	e.st.CollectNotifications(ctx, func(n job.Notification) {
		e.mu.Lock()
		e.notifications[n.JobID] = append(e.notifications[n.JobID], n)
		e.mu.Unlock()
	})
}

func (e *jobEnv) notificationsOf(id string) []job.Notification {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]job.Notification(nil), e.notifications[id]...)
}

func (e *jobEnv) submit(t *testing.T, spec job.Spec) string {
	t.Helper()
	id, err := job.Submit(context.Background(), e.db, e.st.SQS, e.jobsQ, spec, time.Now())
	require.NoError(t, err)
	return id
}

// wait waits for the job to finish and be reported.
func (e *jobEnv) wait(t *testing.T, id string, timeout time.Duration) ledger.Job {
	t.Helper()
	var j ledger.Job
	require.Eventually(t, func() bool {
		var err error
		j, _, err = e.db.GetJob(context.Background(), id)
		return err == nil && j.Status != ledger.JobRunning && j.Notified
	}, timeout, 100*time.Millisecond, "job %s did not finish; last %+v", id, j)
	return j
}

// upload puts objects straight into the ingest bucket (no notification: files that
// are already there when a job is submitted).
func (e *jobEnv) upload(t *testing.T, objects map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	work := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				_, err := e.st.S3Direct.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.ingest), Key: aws.String(k), Body: bytes.NewReader(objects[k])})
				if err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	for k := range objects {
		work <- k
	}
	close(work)
	wg.Wait()
	require.Zero(t, failed.Load(), "uploads failed")
}

func (e *jobEnv) output(t *testing.T, key string) []byte {
	t.Helper()
	out, err := e.st.S3Direct.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(e.st.Resources.OutputBucket), Key: aws.String(key)})
	require.NoError(t, err, "output %s", key)
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	require.NoError(t, err)
	return b
}

// report reads a job's manifest.json and result CSVs.
func (e *jobEnv) report(t *testing.T, j ledger.Job) (m map[string]any, succeeded, failed [][]string) {
	t.Helper()
	require.NotEmpty(t, j.Report)
	_, key, err := job.ParseURI(j.Report)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(e.output(t, key), &m))
	read := func(status string) [][]string {
		recs, err := csv.NewReader(bytes.NewReader(e.output(t, strings.TrimSuffix(key, "manifest.json")+"results/"+status+".csv"))).ReadAll()
		require.NoError(t, err)
		return recs
	}
	return m, read(job.Succeeded), read(job.Failed)
}

func TestJobs(t *testing.T) {
	e := startJobEnv(t, nil)
	t.Run("PrefixOf10000NestedKeysCompletesOnceNeverEarly", e.testPrefix)
	t.Run("ManifestWithQuotedAndEncodedKeys", e.testManifest)
	t.Run("LargeManifestReadInParallelChunks", e.testManifestChunks)
	t.Run("ZipWithNestedFoldersAndTraversalEntry", e.testArchive)
	t.Run("SplitMergesInOrder", e.testSplit)
	t.Run("LargeSplitMergesByServerSideCopy", e.testSplitMergeByCopy)
	t.Run("DuplicateTaskDeliveriesCountOnce", e.testDuplicates)
	t.Run("OverToleranceFailsEarly", e.testTolerance)
	t.Run("CancelStops", e.testCancel)
	t.Run("SpecUploadedUnderJobsPrefix", e.testSpecUpload)
	t.Run("FanoutThatCannotSucceedFailsTheJob", e.testFanoutFails)
}

// A prefix of 10,000 keys in nested directories: listed as a parallel breadth-first
// traversal, processed, completed once. One directory's listing is held until files elsewhere have finished, so
// the first tasks finish while fan-out is still going on: the job must not complete
// before that directory's files are done.
func (e *jobEnv) testPrefix(t *testing.T) {
	objects := map[string][]byte{}
	for i := range 10_000 {
		k := fmt.Sprintf("tree/d%d/e%d/file-%05d.txt", i%3, i%4, i)
		if i%5 == 0 {
			k = fmt.Sprintf("tree/d%d/e%d/f%d/file-%05d.txt", i%3, i%4, i%2, i) // deeper
		}
		if i%10 == 0 {
			k = fmt.Sprintf("tree/late/file-%05d.txt", i) // its listing is held
		}
		objects[k] = fmt.Appendf(nil, "file %d\n", i)
	}
	e.upload(t, objects)
	gate := make(chan struct{})
	listGate.Store(gate)
	heldListPrefix.Store("tree/late/")
	defer heldListPrefix.Store("")

	e.st.Calls.Reset()
	start := time.Now()
	id := e.submit(t, job.Spec{Kind: job.KindPrefix, Bucket: e.ingest, Key: "tree/"})
	// While the late directory's listing is held, files elsewhere finish; the job must
	// go on running. Then the listing is released.
	var c ledger.Counts
	for c.Succeeded == 0 {
		require.Less(t, time.Since(start), 2*time.Minute, "no task finished")
		j, _, err := e.db.GetJob(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, ledger.JobRunning, j.Status, "finished while a listing was outstanding")
		c, err = e.db.JobCounts(context.Background(), id, j.Shards)
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
	}
	assert.Less(t, c.Listed, int64(10_000), "the held directory is not listed yet")
	t.Logf("while fan-out was held: %+v", c)
	time.Sleep(time.Second)
	j, _, err := e.db.GetJob(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, ledger.JobRunning, j.Status, "finished while a listing was outstanding")
	close(gate)
	j = e.wait(t, id, 3*time.Minute)
	elapsed := time.Since(start)
	assert.Equal(t, ledger.JobComplete, j.Status, j.Reason)
	assert.Equal(t, ledger.Counts{Expected: j.Final.Expected, Done: j.Final.Expected, Listed: 10_000, Succeeded: 10_000, Bytes: j.Final.Bytes}, j.Final)
	require.Eventually(t, func() bool { return len(e.notificationsOf(id)) >= 1 }, 10*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second)
	n := e.notificationsOf(id)
	require.Len(t, n, 1, "one notification")
	assert.Equal(t, "COMPLETE", n[0].Status)
	assert.EqualValues(t, 10_000, n[0].Counts.Succeeded)
	m, ok, failed := e.report(t, j)
	assert.Len(t, ok, 10_000)
	assert.Empty(t, failed)
	assert.Equal(t, "Report_CSV_20180820", m["Format"])
	assert.Equal(t, "COMPLETE", m["JobStatus"])
	assert.Equal(t, []byte("file 13\n"), e.output(t, "tree/d1/e1/file-00013.txt"))
	assert.Equal(t, []byte("file 15\n"), e.output(t, "tree/d0/e3/f1/file-00015.txt"))
	calls := e.st.Calls.Snapshot()
	var ops []string
	for op, n := range calls {
		if strings.HasPrefix(op, "DynamoDB.") {
			ops = append(ops, fmt.Sprintf("%s %.3f", op, float64(n)/10_000))
		}
	}
	sort.Strings(ops)
	t.Logf("DynamoDB calls per file (functions, whole job): %s", strings.Join(ops, ", "))
	t.Logf("prefix job: 10,000 files in %d tasks, %s (%.0f files/s end to end, incl. the held listing)",
		j.Final.Expected, elapsed.Round(time.Millisecond), 10_000/elapsed.Seconds())
}

// S3 Batch Operations CSV with quoted, URL-encoded keys (spaces, '+', commas, quotes,
// unicode, percent signs), one entry without a key, and a JSON-lines manifest.
func (e *jobEnv) testManifest(t *testing.T) {
	keys := []string{"m/plain.txt", "m/with space.txt", "m/plus+sign.txt", "m/comma,in,key.txt", `m/quote"d.txt`,
		"m/ünïcødé/€uro.txt", "m/percent%20literal.txt", "m/tilde~(x)!.txt", "m/a/b/c/deep.json"}
	objects := map[string][]byte{}
	var csvBody strings.Builder
	for i, k := range keys {
		objects[k] = fmt.Appendf(nil, "content of %q", k)
		enc := strings.ReplaceAll(url.QueryEscape(k), "%2F", "/")
		if i%2 == 0 {
			fmt.Fprintf(&csvBody, "%s,\"%s\"\n", e.ingest, enc)
		} else {
			fmt.Fprintf(&csvBody, "%s,%s\n", e.ingest, enc)
		}
	}
	csvBody.WriteString(e.ingest + ",\n") // no key
	objects["manifests/m.csv"] = []byte(csvBody.String())
	e.upload(t, objects)

	id := e.submit(t, job.Spec{Kind: job.KindManifest, Bucket: e.ingest, Key: "manifests/m.csv"})
	j := e.wait(t, id, time.Minute)
	assert.Equal(t, ledger.JobComplete, j.Status, j.Reason)
	assert.EqualValues(t, len(keys), j.Final.Succeeded)
	assert.EqualValues(t, 1, j.Final.Failed)
	assert.EqualValues(t, len(keys)+1, j.Final.Listed)
	for _, k := range keys {
		assert.Equal(t, objects[k], e.output(t, k), "output of %q", k)
	}
	_, ok, failed := e.report(t, j)
	assert.Len(t, ok, len(keys))
	require.Len(t, failed, 1)
	assert.Equal(t, "InvalidEntry", failed[0][4])
	assert.Contains(t, failed[0][6], "manifest entry 10")
}

// A JSON-lines manifest larger than the chunk size is read as byte-range chunks by
// parallel fan-out tasks: every entry exactly once, bad lines reported with the
// chunk they were in.
func (e *jobEnv) testManifestChunks(t *testing.T) {
	objects := map[string][]byte{}
	var body strings.Builder
	const n = 3000
	for i := range n {
		k := fmt.Sprintf("chunks/k%04d.txt", i)
		objects[k] = fmt.Appendf(nil, "%d", i)
		fmt.Fprintf(&body, `{"bucket":%q,"key":%q}`+"\n", e.ingest, k)
		if i == 1234 {
			body.WriteString("{not json\n")
		}
	}
	objects["manifests/big.jsonl"] = []byte(body.String())
	e.upload(t, objects)
	id := e.submit(t, job.Spec{Kind: job.KindManifest, Bucket: e.ingest, Key: "manifests/big.jsonl", ChunkBytes: 8 << 10})
	j := e.wait(t, id, 2*time.Minute)
	assert.Equal(t, ledger.JobComplete, j.Status, j.Reason)
	assert.EqualValues(t, n, j.Final.Succeeded)
	assert.EqualValues(t, 1, j.Final.Failed)
	chunks := (int64(body.Len()) + 8<<10 - 1) / (8 << 10)
	assert.Greater(t, j.Final.Expected, chunks, "the root, one task per chunk, and the chunks' task messages")
	_, ok, failed := e.report(t, j)
	assert.Len(t, ok, n)
	require.Len(t, failed, 1)
	assert.Contains(t, failed[0][6], "not a JSON object")
	assert.Contains(t, failed[0][6], "chunk at byte")
	t.Logf("manifest of %d bytes in %d chunks: %d tasks", body.Len(), chunks, j.Final.Expected)
}

// A zip with nested folders, a path-traversal entry, an absolute path and a zip bomb
// entry, uploaded normally (so it is processed as a file first: its output is named
// after its key) and then submitted as an archive job: the bad entries are rejected with
// their reason, the rest processed from ranged GETs, their outputs beside the zip's own
// ("<zip key>!/<entry>"), which a POSIX-backed S3 server can hold together.
func (e *jobEnv) testArchive(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	want := map[string][]byte{}
	for i := range 40 {
		name := fmt.Sprintf("top/sub%d/deeper/item-%02d.txt", i%4, i)
		want[name] = bytes.Repeat(fmt.Appendf(nil, "line %d\n", i), 50+i)
		method := zip.Deflate
		if i%3 == 0 {
			method = zip.Store
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
		require.NoError(t, err)
		_, err = w.Write(want[name])
		require.NoError(t, err)
	}
	for _, bad := range []string{"../../etc/evil.txt", "/abs/path.txt"} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: bad, Method: zip.Deflate})
		require.NoError(t, err)
		_, _ = w.Write([]byte("should never be written"))
	}
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "top/zeros.bin", Method: zip.Deflate})
	require.NoError(t, err)
	_, err = w.Write(make([]byte, 8<<20)) // expands ~1000 times
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	ctx := context.Background()
	_, err = e.st.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.ingest), Key: aws.String("archives/bundle.zip"), Body: bytes.NewReader(buf.Bytes())})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := e.st.S3Direct.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(e.st.Resources.OutputBucket), Key: aws.String("archives/bundle.zip")})
		return err == nil
	}, time.Minute, 100*time.Millisecond, "the zip is processed as a file first")

	id := e.submit(t, job.Spec{Kind: job.KindArchive, Bucket: e.ingest, Key: "archives/bundle.zip"})
	j := e.wait(t, id, time.Minute)
	assert.Equal(t, ledger.JobComplete, j.Status, j.Reason)
	assert.EqualValues(t, 40, j.Final.Succeeded)
	assert.EqualValues(t, 3, j.Final.Failed)
	assert.Equal(t, buf.Bytes(), e.output(t, "archives/bundle.zip"), "the zip's own output")
	for name, b := range want {
		assert.Equal(t, b, e.output(t, "archives/bundle.zip!/"+name), name)
	}
	_, _, failed := e.report(t, j)
	require.Len(t, failed, 3)
	reasons := failed[0][6] + " | " + failed[1][6] + " | " + failed[2][6]
	assert.Contains(t, reasons, "..")
	assert.Contains(t, reasons, "/abs/path.txt")
	assert.Contains(t, reasons, `entry "top/zeros.bin": expands`)
	assert.Contains(t, reasons, "(max_ratio)")
	keys, err := listAll(context.Background(), e.st.S3Direct, e.st.Resources.OutputBucket)
	require.NoError(t, err)
	for _, k := range keys {
		assert.NotContains(t, k, "evil", "a traversal entry was written")
	}
}

// One large JSON-lines file split into 6 line-aligned parts, processed in parallel and
// merged in order: the merged output equals the input byte for byte.
func (e *jobEnv) testSplit(t *testing.T) {
	var b bytes.Buffer
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; b.Len() < 3<<20; i++ {
		fmt.Fprintf(&b, `{"n":%d,"pad":"%s"}`+"\n", i, strings.Repeat("x", r.IntN(300)))
	}
	e.upload(t, map[string][]byte{"big/events.jsonl": b.Bytes()})
	// Twice: a second job over the same file writes and merges its own parts.
	for _, parts := range []int{6, 4} {
		id := e.submit(t, job.Spec{Kind: job.KindSplit, Bucket: e.ingest, Key: "big/events.jsonl", Parts: parts})
		j := e.wait(t, id, time.Minute)
		require.Equal(t, ledger.JobComplete, j.Status, j.Reason)
		assert.EqualValues(t, parts, j.Final.Succeeded)
		assert.EqualValues(t, b.Len(), j.Final.Bytes)
		merged := e.output(t, "big/events.jsonl")
		assert.Equal(t, len(b.Bytes()), len(merged))
		assert.True(t, bytes.Equal(b.Bytes(), merged), "merged output equals the input")
		n := e.notificationsOf(id)
		if assert.Len(t, n, 1) {
			assert.Equal(t, "s3://"+e.st.Resources.OutputBucket+"/big/events.jsonl", n[0].Merged)
		}
	}
}

// A split whose parts are large enough (≥ 5 MiB) is merged server-side with
// UploadPartCopy: no byte of it passes through the finalizing function.
func (e *jobEnv) testSplitMergeByCopy(t *testing.T) {
	var b bytes.Buffer
	for i := 0; b.Len() < 12<<20; i++ {
		fmt.Fprintf(&b, "%08d,%s\n", i, strings.Repeat("y", 90))
	}
	e.upload(t, map[string][]byte{"big/rows.csv": b.Bytes()})
	before := e.st.Calls.Count("S3.UploadPartCopy")
	id := e.submit(t, job.Spec{Kind: job.KindSplit, Bucket: e.ingest, Key: "big/rows.csv", Parts: 2})
	j := e.wait(t, id, 2*time.Minute)
	require.Equal(t, ledger.JobComplete, j.Status, j.Reason)
	merged := e.output(t, "big/rows.csv")
	assert.True(t, bytes.Equal(b.Bytes(), merged), "merged output equals the input (%d vs %d bytes)", len(merged), b.Len())
	assert.EqualValues(t, 2, e.st.Calls.Count("S3.UploadPartCopy")-before, "one copy per part")
}

// A fan-out task that can never succeed — the archive is not a zip, the manifest does
// not exist — fails its job with the reason instead of leaving it running.
func (e *jobEnv) testFanoutFails(t *testing.T) {
	e.upload(t, map[string][]byte{"archives/not-a.zip": []byte("this is not a zip archive, just text")})
	id := e.submit(t, job.Spec{Kind: job.KindArchive, Bucket: e.ingest, Key: "archives/not-a.zip"})
	j := e.wait(t, id, time.Minute)
	assert.Equal(t, ledger.JobFailed, j.Status)
	assert.Contains(t, j.Reason, "not a valid zip file")
	id = e.submit(t, job.Spec{Kind: job.KindManifest, Bucket: e.ingest, Key: "manifests/missing.csv"})
	j = e.wait(t, id, time.Minute)
	assert.Equal(t, ledger.JobFailed, j.Status)
	assert.Contains(t, j.Reason, "manifests/missing.csv")
	assert.Len(t, e.notificationsOf(id), 1)
}

// The same task message delivered three times (twice in one batch, once later): its
// files are counted once and the job completes once.
func (e *jobEnv) testDuplicates(t *testing.T) {
	ctx := context.Background()
	objects := map[string][]byte{}
	var files []task.File
	for i := range 25 {
		k := fmt.Sprintf("dup/f%02d.txt", i)
		objects[k] = fmt.Appendf(nil, "dup %d", i)
		files = append(files, task.File{Bucket: e.ingest, Key: k})
	}
	e.upload(t, objects)
	// Act as the dispatcher: a job whose root task enqueued one task message.
	id := job.NewID(time.Now())
	spec := job.Spec{ID: id, Kind: job.KindManifest, Bucket: e.ingest, Key: "dup/manifest.csv"}
	require.NoError(t, spec.Validate())
	sb, _ := json.Marshal(spec)
	require.NoError(t, e.db.CreateJob(ctx, id, string(sb), spec.Shards, time.Now()))
	msg := task.Message{JobID: id, TaskID: "m-dup", Parent: task.RootTask, ParentRun: "r1", Files: files}
	body, err := msg.Encode()
	require.NoError(t, err)
	tasksQ, err := e.st.TasksQueue()
	require.NoError(t, err)
	_, err = e.st.SQS.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(tasksQ.URL), Entries: []sqstypes.SendMessageBatchRequestEntry{
		{Id: aws.String("a"), MessageBody: aws.String(string(body))}, {Id: aws.String("b"), MessageBody: aws.String(string(body))},
	}})
	require.NoError(t, err)
	out, err := e.db.Settle(ctx, time.Now(), []ledger.Settlement{{JobID: id, TaskID: task.RootTask, Run: "r1", Shards: spec.Shards, Messages: 1, Listed: 25}})
	require.NoError(t, err)
	require.Equal(t, ledger.Counted, out[0])
	j := e.wait(t, id, time.Minute)
	assert.Equal(t, ledger.JobComplete, j.Status)
	// A late third copy changes nothing.
	_, err = e.st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(tasksQ.URL), MessageBody: aws.String(string(body))})
	require.NoError(t, err)
	time.Sleep(3 * time.Second)
	c, err := e.db.JobCounts(ctx, id, spec.Shards)
	require.NoError(t, err)
	assert.Equal(t, ledger.Counts{Expected: 2, Done: 2, Listed: 25, Succeeded: 25, Bytes: c.Bytes}, c)
	assert.Len(t, e.notificationsOf(id), 1)
}

// A job over its failure tolerance fails early: a third of the directories hold only
// rejected files (.exe); the job fails once 5% of 100+ finished files failed, and the
// tasks still queued are skipped.
func (e *jobEnv) testTolerance(t *testing.T) {
	objects := map[string][]byte{}
	for d := range 180 {
		for f := range 30 {
			ext := ".txt"
			if d%3 == 0 {
				ext = ".exe"
			}
			objects[fmt.Sprintf("tol/d%02d/f%02d%s", d, f, ext)] = []byte("x")
		}
	}
	e.upload(t, objects)
	slowGetPrefix.Store("tol/")
	defer slowGetPrefix.Store("")
	id := e.submit(t, job.Spec{Kind: job.KindPrefix, Bucket: e.ingest, Key: "tol/", Tolerate: "5%", FilesPerTask: 10})
	j := e.wait(t, id, 2*time.Minute)
	require.Equal(t, ledger.JobFailed, j.Status)
	assert.Contains(t, j.Reason, "over the tolerance of 5%")
	time.Sleep(3 * time.Second) // in-flight batches settle; nothing new starts
	c, err := e.db.JobCounts(context.Background(), id, j.Shards)
	require.NoError(t, err)
	assert.Less(t, c.Succeeded+c.Failed, int64(len(objects)/2), "most of the remaining tasks were skipped")
	assert.Positive(t, c.Outstanding(), "skipped tasks are never counted")
	n := e.notificationsOf(id)
	require.Len(t, n, 1)
	assert.Equal(t, "FAILED", n[0].Status)
	t.Logf("failed early: %d of %d files finished (%d failed) when stopped; %d at the end", j.Final.Succeeded+j.Final.Failed, len(objects), j.Final.Failed, c.Succeeded+c.Failed)
}

// Cancel stops a running job: it is CANCELLED at once, reported, and its remaining
// tasks are skipped.
func (e *jobEnv) testCancel(t *testing.T) {
	objects := map[string][]byte{}
	for d := range 200 {
		for f := range 30 {
			objects[fmt.Sprintf("cancel/d%02d/f%02d.txt", d, f)] = []byte("y")
		}
	}
	e.upload(t, objects)
	slowGetPrefix.Store("cancel/")
	defer slowGetPrefix.Store("")
	ctx := context.Background()
	id := e.submit(t, job.Spec{Kind: job.KindPrefix, Bucket: e.ingest, Key: "cancel/", FilesPerTask: 10})
	require.Eventually(t, func() bool {
		c, err := e.db.JobCounts(ctx, id, job.DefaultShards)
		return err == nil && c.Succeeded >= 100
	}, time.Minute, 50*time.Millisecond)
	j, err := e.engine.Cancel(ctx, id, "cancelled by test")
	require.NoError(t, err)
	assert.Equal(t, ledger.JobCancelled, j.Status)
	assert.True(t, j.Notified)
	time.Sleep(3 * time.Second) // in-flight batches finish
	c1, err := e.db.JobCounts(ctx, id, j.Shards)
	require.NoError(t, err)
	time.Sleep(2 * time.Second)
	c2, err := e.db.JobCounts(ctx, id, j.Shards)
	require.NoError(t, err)
	assert.Equal(t, c1, c2, "nothing runs after cancel")
	assert.Less(t, c2.Succeeded, int64(len(objects)/2), "most of the job never ran")
	_, err = e.engine.Cancel(ctx, id, "again")
	assert.ErrorContains(t, err, "already CANCELLED")
	t.Logf("cancelled with %d of %d files done; %d after in-flight batches", j.Final.Succeeded, len(objects), c2.Succeeded)
}

// A job spec uploaded under jobs/ submits the job (the dev stage's ingest filter
// overlaps jobs/, so the worker forwards the spec to the dispatcher); a bad spec is
// recorded with its reason.
func (e *jobEnv) testSpecUpload(t *testing.T) {
	ctx := context.Background()
	e.upload(t, map[string][]byte{"spec/a.txt": []byte("a"), "spec/b.txt": []byte("b")})
	_, err := e.st.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.ingest), Key: aws.String("jobs/spec-job.json"),
		Body: strings.NewReader(`{"id":"spec-job-1","kind":"prefix","bucket":"` + e.ingest + `","key":"spec/"}`)})
	require.NoError(t, err)
	j := e.wait(t, "spec-job-1", time.Minute)
	assert.Equal(t, ledger.JobComplete, j.Status)
	assert.EqualValues(t, 2, j.Final.Succeeded)
}
