package worker

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fileflow/fileflow/pkg/fnenv"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

const queueARN = "arn:aws:sqs:us-east-1:123456789012:fileflow-test-tasks"

type env struct {
	s3      *fakeS3
	ledger  *fakeLedger
	queue   *fakeQueue
	h       *Handler
	metrics *bytes.Buffer
}

func newEnv(t testing.TB, mutate func(*Config, *Deps)) *env {
	t.Helper()
	e := &env{s3: newFakeS3(), ledger: newFakeLedger(), queue: &fakeQueue{}, metrics: &bytes.Buffer{}}
	cfg := Config{
		OutputBucket: "out", OutputPrefix: "processed/", Concurrency: 4, MaxReceiveCount: 3,
		Retry:    retry.Policy{Base: 2 * time.Second, Cap: time.Minute, Min: time.Second, Rand: func() float64 { return 0.999 }},
		PartSize: 5 << 20, MinItemTime: time.Second, Margin: 100 * time.Millisecond, FunctionName: "worker",
		// The unit tests read the ledger before every first delivery, so that the check's
		// own logic is what they exercise; TestAutoReadsJobsAndRedeliveries the default.
		DuplicateCheck: DuplicateCheckAlways,
		Rules: process.Rules{
			{Suffix: ".exe", Reject: "executables are not accepted"},
			{Suffix: ".gz", Processors: []string{"gunzip", "checksum"}},
			{Processors: []string{"checksum", "detect", "copy"}},
		},
	}
	deps := Deps{Objects: e.s3, Ledger: e.ledger, Queue: e.queue, Metrics: e.metrics, Now: fixedNow,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	if mutate != nil {
		mutate(&cfg, &deps)
	}
	h, err := New(cfg, deps)
	require.NoError(t, err)
	e.h = h
	return e
}

// s3Message is an SQS message carrying an S3 event for the given keys, in AWS's shape.
func s3Message(id string, receive int, bucket string, keys ...string) events.SQSMessage {
	type obj struct {
		Key  string `json:"key"`
		Size int    `json:"size"`
		ETag string `json:"eTag"`
	}
	var recs []map[string]any
	for _, k := range keys {
		recs = append(recs, map[string]any{
			"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventName": "ObjectCreated:Put",
			"s3": map[string]any{"s3SchemaVersion": "1.0", "bucket": map[string]any{"name": bucket, "arn": "arn:aws:s3:::" + bucket},
				"object": obj{Key: url.QueryEscape(k), Size: 1, ETag: "e-" + k}},
		})
	}
	body, _ := json.Marshal(map[string]any{"Records": recs})
	return events.SQSMessage{MessageId: id, ReceiptHandle: "rh-" + id, Body: string(body), EventSourceARN: queueARN,
		Attributes: map[string]string{"ApproximateReceiveCount": fmt.Sprint(receive)}}
}

func failedIDs(r events.SQSEventResponse) []string {
	var ids []string
	for _, f := range r.BatchItemFailures {
		ids = append(ids, f.ItemIdentifier)
	}
	return ids
}

func TestHandleProcessesFiles(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "a b+c/ü.txt", []byte("hello, world"))
	e.s3.put("in", "b.csv", []byte("x,y\n1,2\n"))

	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		s3Message("m1", 1, "in", "a b+c/ü.txt", "b.csv"),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)

	out, meta, ok := e.s3.get("out", "processed/a b+c/ü.txt")
	require.True(t, ok, "output under the deterministic key")
	assert.Equal(t, "hello, world", string(out))
	sum := sha256.Sum256([]byte("hello, world"))
	assert.Equal(t, hex.EncodeToString(sum[:]), meta[MetaSHA256])
	assert.Equal(t, "in/a b+c/%C3%BC.txt", meta[MetaSource], "non-ASCII metadata is percent-encoded")
	assert.Equal(t, "text/csv; charset=utf-8", e.s3.ctype["out/processed/b.csv"])
	assert.Equal(t, 2, e.ledger.writes, "one ledger write per file")

	var doc map[string]any
	require.NoError(t, json.Unmarshal(e.metrics.Bytes(), &doc))
	assert.EqualValues(t, 2, doc["FilesSucceeded"])
	assert.Equal(t, "worker", doc["Function"])
}

func TestDuplicateDeliveryCountsOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "dup.txt", []byte("once"))
	ctx := context.Background()
	// Twice in one batch, then once more in a later batch.
	resp, err := e.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{
		s3Message("m1", 1, "in", "dup.txt"), s3Message("m2", 1, "in", "dup.txt"),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	resp, err = e.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{s3Message("m3", 1, "in", "dup.txt")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, 1, e.s3.puts, "one output")
	assert.Equal(t, 1, e.ledger.writes, "one success record")
}

func TestPermanentFailuresAreRecordedAndAcked(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "setup.exe", []byte("MZ"))
	e.s3.put("in", "broken.gz", []byte("not gzip at all"))
	e.s3.getErr = func(key string) error {
		if key == "denied.txt" {
			return &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"}
		}
		return nil
	}
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		s3Message("m1", 1, "in", "setup.exe", "broken.gz", "denied.txt"),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures, "permanent failures burn no retries")
	assert.Empty(t, e.queue.visibility)
	for key, want := range map[string]string{
		"setup.exe":  "executables are not accepted",
		"broken.gz":  "corrupt gzip stream",
		"denied.txt": "AccessDenied",
	} {
		k := ledger.Key{Bucket: "in", Key: key}
		assert.Equal(t, ledger.StatusFailed, e.ledger.status[k], key)
		assert.Contains(t, e.ledger.reasons[k], want, key)
	}
}

func TestRetryableFailureBacksOff(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "ok.txt", []byte("fine"))
	e.s3.getErr = func(key string) error {
		if key == "flaky.txt" {
			return errors.New("connection reset by peer")
		}
		return nil
	}
	var vis []int32
	for receive := 1; receive <= 3; receive++ {
		resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
			s3Message("ok", 1, "in", "ok.txt"), s3Message("flaky", receive, "in", "flaky.txt"),
		}})
		require.NoError(t, err)
		assert.Equal(t, []string{"flaky"}, failedIDs(resp), "only the failing message comes back")
		vis = append(vis, e.queue.visibility["rh-flaky"])
	}
	assert.Equal(t, []int32{2, 4, 8}, vis, "visibility grows with the receive count")
	assert.Equal(t, 1, e.queue.urlCalls, "queue URL resolved once")
	k := ledger.Key{Bucket: "in", Key: "flaky.txt"}
	assert.Equal(t, ledger.StatusDeadLettered, e.ledger.status[k], "on the last receive it is headed for the DLQ")
	assert.Equal(t, 3, e.ledger.attempts[k])
}

// S3 reads are strongly consistent: an object missing when its event is handled was
// deleted since. It fails at once with the reason (no retries burnt).
func TestMissingObjectFailsAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", 1, "in", "gone.txt")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	k := ledger.Key{Bucket: "in", Key: "gone.txt"}
	assert.Equal(t, ledger.StatusFailed, e.ledger.status[k])
	assert.Contains(t, e.ledger.reasons[k], "deleted before it was processed")
}

func TestMalformedMessagesDoNotCrashTheBatch(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "good.txt", []byte("good"))
	test := events.SQSMessage{MessageId: "test", Body: `{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"in"}`, EventSourceARN: queueARN}
	bad := events.SQSMessage{MessageId: "bad", Body: `{"Records":[`, EventSourceARN: queueARN}
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{bad, test, s3Message("good", 1, "in", "good.txt")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Contains(t, e.ledger.poison["bad"], "malformed JSON")
	assert.NotContains(t, e.ledger.poison, "test", "a test event is not poison")
	_, _, ok := e.s3.get("out", "processed/good.txt")
	assert.True(t, ok)
}

func TestPoisonThatCannotBeRecordedComesBack(t *testing.T) {
	e := newEnv(t, func(_ *Config, d *Deps) { d.Ledger = poisonFails{d.Ledger} })
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{{MessageId: "bad", Body: "nope", EventSourceARN: queueARN}}})
	require.NoError(t, err)
	assert.Equal(t, []string{"bad"}, failedIDs(resp))
}

type poisonFails struct{ Ledger }

func (poisonFails) RecordPoison(context.Context, ledger.Poison) error {
	return errors.New("dynamodb unavailable")
}

// A commit the ledger refuses (throttled, unreachable) is not the file's fault: its
// message is sent again with the backoff, using none of its receives — on the last
// receive too, where coming back would send it to the dead-letter queue (as the chaos
// run's DynamoDB restart did).
func TestCommitFailureIsSentAgain(t *testing.T) {
	for _, receive := range []int{1, 5} {
		e := newEnv(t, nil)
		e.s3.put("in", "a.txt", []byte("a"))
		e.ledger.failNext = &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException"}
		resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", receive, "in", "a.txt")}})
		require.NoError(t, err)
		assert.Empty(t, failedIDs(resp), "receive %d: not a batch item failure", receive)
		require.Len(t, e.queue.sent, 1, "receive %d: sent again", receive)
		if receive == 1 {
			assert.Equal(t, int32(8), e.queue.delays[0], "throttles back off from 4 x base")
		}
		assert.NotContains(t, e.queue.visibility, "rh-m")
		_, ok := e.ledger.status[ledger.Key{Bucket: "in", Key: "a.txt"}]
		assert.False(t, ok, "nothing recorded: the ledger refused")
	}
}

func TestPanickingProcessorIsPermanent(t *testing.T) {
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Registry = process.Builtins()
		d.Registry.Register(panicky{})
		c.Rules = process.Rules{{Processors: []string{"panicky"}}}
	})
	e.s3.put("in", "p.txt", []byte("p"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", 1, "in", "p.txt")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Contains(t, e.ledger.reasons[ledger.Key{Bucket: "in", Key: "p.txt"}], "processor panicked: boom")
}

type panicky struct{}

func (panicky) Name() string { return "panicky" }
func (panicky) Wrap(io.Reader, *process.Result) (io.Reader, error) {
	panic("boom")
}

// Files not started because the invocation ran out of time are not the files'
// failures: their message is sent again (spending none of its receives), on its last
// receive too — never recorded DEAD_LETTERED nor sent to the DLQ for the batch's size.
func TestDeadlineLeavesItemsForLater(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.MinItemTime = time.Hour })
	e.s3.put("in", "a.txt", []byte("a"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, receive := range []int{1, 3} { // 3 is the last
		resp, err := e.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{s3Message("m", receive, "in", "a.txt")}})
		require.NoError(t, err)
		assert.Empty(t, failedIDs(resp), "receive %d: acknowledged, its copy sent again", receive)
		assert.Len(t, e.queue.sent, i+1, "receive %d: sent again", receive)
		assert.Zero(t, e.s3.puts)
		assert.NotContains(t, e.ledger.status, ledger.Key{Bucket: "in", Key: "a.txt"}, "nothing recorded: it was never started")
	}
}

func TestTaskMessageWithManyFiles(t *testing.T) {
	e := newEnv(t, nil)
	var files []task.File
	for i := range 50 {
		k := fmt.Sprintf("bulk/%03d.json", i)
		e.s3.put("in", k, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		files = append(files, task.File{Bucket: "in", Key: k})
	}
	body, err := task.Message{Files: files}.Encode()
	require.NoError(t, err)
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{{MessageId: "t", Body: string(body), EventSourceARN: queueARN}}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, 50, e.s3.puts)
	assert.Equal(t, "application/json", e.s3.ctype["out/processed/bulk/007.json"])
}

// An output over one part is a multipart upload created with its labels (source,
// revision, input), so it is never unlabelled; its checksums, known only at the end, are
// in the ledger's record and not copied onto it.
func TestLargeFileIsMultipartWithItsLabels(t *testing.T) {
	e := newEnv(t, nil)
	data := bytes.Repeat([]byte("0123456789abcdef"), (12<<20)/16) // 12 MiB: 3 parts of 5 MiB
	e.s3.put("in", "big.bin", data)
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", 1, "in", "big.bin")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	out, meta, ok := e.s3.get("out", "processed/big.bin")
	require.True(t, ok)
	assert.True(t, bytes.Equal(data, out))
	assert.Equal(t, "in/big.bin", meta[MetaSource])
	assert.Equal(t, "e:e-big.bin", meta[MetaRevision])
	assert.Equal(t, "in/big.bin", meta[task.MetaInput])
	assert.NotContains(t, meta, MetaSHA256, "the object is not copied to add its checksums")
	sum := sha256.Sum256(data)
	assert.Equal(t, hex.EncodeToString(sum[:]), e.ledger.sums[ledger.Key{Bucket: "in", Key: "big.bin"}], "the checksum is in the record")
}

func TestConfigFromEnv(t *testing.T) {
	good := map[string]string{fnenv.Table: "t", fnenv.OutputBucket: "o", fnenv.Concurrency: "16", fnenv.BackoffBase: "3s",
		fnenv.Rules: `[{"suffix":".log","processors":["checksum","gzip"]},{"processors":["copy"]}]`}
	cfg, err := ConfigFromEnv(func(k string) string { return good[k] }, process.Builtins())
	require.NoError(t, err)
	assert.Equal(t, 16, cfg.Concurrency)
	assert.Equal(t, 3*time.Second, cfg.Retry.Base)
	assert.Len(t, cfg.Rules, 2)
	assert.Equal(t, 8<<20, cfg.withDefaults().PartSize)

	bad := map[string]string{fnenv.Concurrency: "zero", fnenv.PartSizeMB: "1", fnenv.BackoffBase: "fast", fnenv.Rules: `[{"processors":["x"]}]`}
	_, err = ConfigFromEnv(func(k string) string { return bad[k] }, process.Builtins())
	require.Error(t, err)
	for _, want := range []string{fnenv.Table + " is required", fnenv.OutputBucket + " is required", fnenv.Concurrency + `="zero"`,
		fnenv.PartSizeMB + `="1"`, fnenv.BackoffBase + `="fast"`, `unknown processor "x"`} {
		assert.Contains(t, err.Error(), want)
	}
}

// BenchmarkHandlePerFile measures the worker's own per-file overhead (decode, lookup,
// processors, upload, commit, response) with in-memory fakes: 10 messages of one 1 KiB
// file each per batch, reported per file.
func BenchmarkHandlePerFile(b *testing.B) {
	e := newEnv(b, nil)
	data := bytes.Repeat([]byte("a"), 1024)
	const batch = 10
	var msgs [][]events.SQSMessage
	for i := range 64 {
		var recs []events.SQSMessage
		for j := range batch {
			k := fmt.Sprintf("f/%d/%d.txt", i, j)
			e.s3.put("in", k, data)
			recs = append(recs, s3Message(fmt.Sprintf("m%d-%d", i, j), 1, "in", k))
		}
		msgs = append(msgs, recs)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.ledger.mu.Lock()
		clear(e.ledger.status) // every batch does the full work, not the duplicate shortcut
		e.ledger.mu.Unlock()
		e.metrics.Reset()
		resp, _ := e.h.Handle(ctx, events.SQSEvent{Records: msgs[i%len(msgs)]})
		if len(resp.BatchItemFailures) > 0 {
			b.Fatal("unexpected failures")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/file")
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "files/s")

}

// An event for an older revision of an overwritten object (unversioned: the GET is
// pinned to its ETag) is not processed with the newer bytes: S3 answers the If-Match
// with 412 and the old revision is recorded superseded at once, acknowledged.
func TestSupersededSourceIsRecordedAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.overwrite("in", "v.txt", "e-newer", []byte("new"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", 1, "in", "v.txt")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Contains(t, e.ledger.superseded[ledger.SupersededKey(ledger.Key{Bucket: "in", Key: "v.txt"}, ledger.Revision{ETag: "e-v.txt"})], "superseded")
	assert.NotContains(t, e.ledger.status, ledger.Key{Bucket: "in", Key: "v.txt"}, "the key's record is the newer revision's to write")
	assert.Zero(t, e.s3.puts)
}

// A source body shorter than its Content-Length is retried, never committed truncated,
// and not mistaken for a corrupt file by gunzip.
func TestTruncatedSourceIsRetried(t *testing.T) {
	for _, key := range []string{"short.txt", "short.gz"} {
		e := newEnv(t, func(_ *Config, d *Deps) { d.Objects = shortBodies{d.Objects.(*fakeS3)} })
		var data bytes.Buffer
		zw := gzip.NewWriter(&data)
		_, _ = zw.Write(bytes.Repeat([]byte("x"), 1000))
		require.NoError(t, zw.Close())
		if key == "short.txt" {
			data.Reset()
			data.Write(bytes.Repeat([]byte("x"), 100))
		}
		e.s3.put("in", key, data.Bytes())
		n := data.Len()
		resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", 1, "in", key)}})
		require.NoError(t, err)
		assert.Equal(t, []string{"m"}, failedIDs(resp), key)
		k := ledger.Key{Bucket: "in", Key: key}
		assert.Equal(t, ledger.StatusRetrying, e.ledger.status[k], key)
		assert.Contains(t, e.ledger.reasons[k], fmt.Sprintf("ended after %d of %d bytes", n, 2*n), key)
		assert.Zero(t, e.s3.puts, key)
	}
}

// shortBodies claims every object is twice as long as the bytes it returns.
type shortBodies struct{ *fakeS3 }

func (s shortBodies) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := s.fakeS3.GetObject(ctx, in, o...)
	if err == nil {
		out.ContentLength = aws.Int64(2 * aws.ToInt64(out.ContentLength))
	}
	return out, err
}

// With DuplicateCheck "redelivery", a first receive skips the ledger read; a duplicate is
// then processed again but loses the conditional commit: still one success.
func TestDuplicateCheckOnRedeliveryOnly(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.DuplicateCheck = DuplicateCheckRedelivery })
	e.s3.put("in", "d.txt", []byte("d"))
	lookups := &countingLedger{Ledger: e.ledger}
	e.h.deps.Ledger = lookups
	for _, receive := range []int{1, 1, 2} {
		resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", receive, "in", "d.txt")}})
		require.NoError(t, err)
		assert.Empty(t, resp.BatchItemFailures)
	}
	assert.Equal(t, 1, lookups.lookups, "only the redelivery reads the ledger first")
	assert.Equal(t, 2, e.s3.puts, "the first-receive duplicate did the work again (same key)")
	assert.Equal(t, 2, e.ledger.writes, "and lost the conditional commit")
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[ledger.Key{Bucket: "in", Key: "d.txt"}])
}

type countingLedger struct {
	Ledger
	lookups int
}

func (c *countingLedger) Lookup(ctx context.Context, keys []ledger.Key) (map[ledger.Key]ledger.State, error) {
	c.lookups++
	return c.Ledger.Lookup(ctx, keys)
}

// The default duplicate check ("auto"): a job's files are read before their work on a
// first receive too (a re-run finds them committed: no work); an S3 event only when it
// is redelivered. An S3 event delivered twice as two first receives is processed twice
// — the same output written again — and still counted once: the second loses the
// conditional commit.
func TestAutoReadsJobsAndRedeliveries(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.DuplicateCheck = "" })
	require.Equal(t, DuplicateCheckAuto, e.h.cfg.DuplicateCheck, "the default")
	e.s3.put("in", "a.txt", []byte("once"))
	ctx := context.Background()
	handle := func(m events.SQSMessage) {
		t.Helper()
		resp, err := e.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{m}})
		require.NoError(t, err)
		require.Empty(t, resp.BatchItemFailures)
	}
	handle(s3Message("m1", 1, "in", "a.txt"))
	require.Equal(t, 1, e.s3.puts)
	require.Equal(t, 1, e.ledger.writes)

	handle(s3Message("m2", 1, "in", "a.txt")) // S3 sent the event twice: not read first
	assert.Equal(t, 2, e.s3.puts, "processed again, the same output")
	assert.Equal(t, 2, e.ledger.writes, "its commit is refused by the condition: one success record")

	handle(s3Message("m3", 2, "in", "a.txt")) // a redelivery is read: no work
	assert.Equal(t, 2, e.s3.puts)

	handle(jobMessage(t, "job-1", "t1", 1, task.File{Bucket: "in", Key: "a.txt", ETag: "e-a.txt"})) // a job's file is read: no work
	assert.Equal(t, 2, e.s3.puts, "a job's file committed before is not processed again")
}
