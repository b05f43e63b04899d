package itest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/esm"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/meter"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/upload"
	"github.com/fileflow/fileflow/pkg/worker"
)

func sha(s []byte) string {
	sum := sha256.Sum256(s)
	return hex.EncodeToString(sum[:])
}

// Keys with spaces, '+', unicode and URL-special characters survive the S3 event's
// URL-encoding and come out under the same key with correct checksum metadata.
func TestTrickyKeysProcessedWithChecksums(t *testing.T) {
	st := newStack(t, stackOptions{})
	keys := []string{
		"uploads/Quarterly Report (2026).pdf",
		"uploads/1+1=2 & more.txt",
		"uploads/café/résumé ü €.txt",
		"uploads/odd ;,&?#%~()!'*.csv",
	}
	for i, k := range keys {
		st.put(k, fmt.Sprintf("content of file %d: %s", i, k))
	}
	st.notify(keys...)
	r := st.drain()
	assert.Equal(t, 1, r.Deleted)

	for i, k := range keys {
		want := []byte(fmt.Sprintf("content of file %d: %s", i, k))
		obj, err := st.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(st.out), Key: aws.String(k)})
		require.NoError(t, err, "output for %q", k)
		got, err := io.ReadAll(obj.Body)
		require.NoError(t, err)
		obj.Body.Close()
		assert.Equal(t, want, got, k)
		assert.Equal(t, sha(want), obj.Metadata[worker.MetaSHA256], "sha256 metadata of %q", k)
		assert.Len(t, obj.Metadata[worker.MetaCRC32C], 8)

		rec := st.record(k)
		assert.Equal(t, ledger.StatusSucceeded, rec.Status)
		assert.Equal(t, sha(want), rec.SHA256)
		assert.Equal(t, []string{"s3://" + st.out + "/" + k}, rec.Outputs)
		assert.Equal(t, 1, rec.Attempts)
		require.Len(t, rec.History, 1)
		assert.Equal(t, ledger.StatusSucceeded, rec.History[0].Outcome)
	}
	assert.Equal(t, 0, st.queueDepth(st.queueURL))
}

// The same S3 event delivered twice (S3 and SQS are at-least-once) gives one output and
// one success record: with the duplicate check reading first deliveries ("always"), one
// ledger write; with the default ("auto", S3 events read only when redelivered), the
// later first delivery is processed again and its commit refused.
func TestDuplicateEventOneOutputOneRecord(t *testing.T) {
	for _, check := range []string{worker.DuplicateCheckAlways, ""} {
		t.Run("check="+check, func(t *testing.T) { duplicateEventOneOutputOneRecord(t, check) })
	}
}

func duplicateEventOneOutputOneRecord(t *testing.T, check string) {
	st := newStack(t, stackOptions{duplicateCheck: check})
	st.put("dup/report.csv", "a,b\n1,2\n")
	st.notify("dup/report.csv")
	st.notify("dup/report.csv")
	st.drain()
	st.notify("dup/report.csv") // and once more, later
	st.drain()

	list, err := st.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(st.out)})
	require.NoError(t, err)
	require.Len(t, list.Contents, 1)
	rec := st.record("dup/report.csv")
	assert.Equal(t, ledger.StatusSucceeded, rec.Status)
	assert.Equal(t, 1, rec.Attempts, "one success, however often delivered")
	if check == worker.DuplicateCheckAlways {
		assert.Equal(t, int64(1), st.calls.Count("DynamoDB.UpdateItem"))
	} else {
		assert.GreaterOrEqual(t, st.calls.Count("DynamoDB.UpdateItem"), int64(2), "the later delivery's commit, refused")
	}
}

// A transient failure comes back with a visibility timeout that grows with the receive
// count, observed on the real queue, and then succeeds.
func TestTransientFailureRetriedWithGrowingVisibility(t *testing.T) {
	calls := &atomic.Int64{}
	reg := process.Builtins()
	reg.Register(flaky{failures: 3, calls: calls})
	st := newStack(t, stackOptions{
		maxReceive: 6,
		registry:   reg,
		rules:      process.Rules{{Processors: []string{"flaky", "checksum", "copy"}}},
		// Upper bound every time (rand ~1): 1 s, 2 s, 4 s.
		policy: retry.Policy{Base: time.Second, Cap: 8 * time.Second, Min: time.Second, Rand: func() float64 { return 0.999 }},
	})
	st.put("t/flaky.txt", "eventually")
	st.notify("t/flaky.txt")

	var seen []time.Time
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		r, err := st.mapping.Once(context.Background(), func(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
			seen = append(seen, time.Now())
			require.Equal(t, fmt.Sprint(len(seen)), ev.Records[0].Attributes["ApproximateReceiveCount"])
			return st.handler.Handle(ctx, ev)
		})
		require.NoError(t, err)
		if r.Deleted == 1 {
			break
		}
	}
	require.Len(t, seen, 4, "three failures, then success")
	var gaps []time.Duration
	for i := 1; i < len(seen); i++ {
		gaps = append(gaps, seen[i].Sub(seen[i-1]))
	}
	t.Logf("redelivery gaps: %v", gaps)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		assert.GreaterOrEqual(t, gaps[i], want-100*time.Millisecond, "gap %d", i)
	}
	assert.Greater(t, gaps[2], gaps[0]+time.Second, "visibility grows")

	rec := st.record("t/flaky.txt")
	assert.Equal(t, ledger.StatusSucceeded, rec.Status)
	assert.Equal(t, 4, rec.Attempts)
	require.Len(t, rec.History, 4)
	for i := range 3 {
		assert.Equal(t, ledger.StatusRetrying, rec.History[i].Outcome)
		assert.Contains(t, rec.History[i].Error, "downstream unavailable")
		assert.Equal(t, i+1, rec.History[i].Receive)
	}
}

// A message that keeps failing lands in the real DLQ after maxReceiveCount receives, and
// the ledger says so.
func TestKeepsFailingLandsInDLQ(t *testing.T) {
	reg := process.Builtins()
	reg.Register(flaky{failures: 1 << 30, calls: &atomic.Int64{}})
	st := newStack(t, stackOptions{
		maxReceive: 2,
		registry:   reg,
		rules:      process.Rules{{Processors: []string{"flaky"}}},
		policy:     retry.Policy{Base: time.Second, Cap: time.Second, Min: time.Second},
	})
	st.put("d/never.txt", "never")
	st.notify("d/never.txt")

	var dlq []sqstypes.Message
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && len(dlq) == 0 {
		_, err := st.mapping.Once(context.Background(), st.handler.Handle)
		require.NoError(t, err)
		out, err := st.sqs.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(st.dlqURL), MaxNumberOfMessages: 10})
		require.NoError(t, err)
		dlq = out.Messages
	}
	require.Len(t, dlq, 1, "in the DLQ")
	assert.Contains(t, aws.ToString(dlq[0].Body), "d%2Fnever.txt")
	assert.Equal(t, 0, st.queueDepth(st.queueURL), "gone from the tasks queue")
	rec := st.record("d/never.txt")
	assert.Equal(t, ledger.StatusDeadLettered, rec.Status)
	assert.Equal(t, 2, rec.Attempts)

	fails, err := st.store.Failures(context.Background(), time.Now())
	require.NoError(t, err)
	assert.Contains(t, failurePKs(fails), "F#"+st.in+"/d/never.txt")
}

func failurePKs(fs []ledger.Failure) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.PK)
	}
	return out
}

// A permanent failure (a corrupt gzip file) is recorded FAILED with its reason and
// acknowledged on the first receive: no retries, nothing in the DLQ.
func TestPermanentFailureRecordedNotRetried(t *testing.T) {
	st := newStack(t, stackOptions{rules: process.Rules{
		{Suffix: ".gz", Processors: []string{"gunzip", "checksum"}},
		{Processors: []string{"checksum", "copy"}},
	}})
	var good bytes.Buffer
	zw := gzip.NewWriter(&good)
	_, _ = zw.Write([]byte("line 1\nline 2\n"))
	require.NoError(t, zw.Close())
	st.put("p/good.log.gz", good.String())
	st.put("p/corrupt.log.gz", "this is not gzip")
	st.notify("p/good.log.gz", "p/corrupt.log.gz")
	r := st.drain()
	assert.Equal(t, esm.Result{Received: 1, Deleted: 1}, r, "acknowledged on the first receive")

	rec := st.record("p/corrupt.log.gz")
	assert.Equal(t, ledger.StatusFailed, rec.Status)
	assert.Contains(t, rec.Reason, "corrupt gzip stream")
	assert.Equal(t, 1, rec.Attempts)
	assert.Equal(t, "permanent", rec.History[0].Class)
	assert.Equal(t, 0, st.queueDepth(st.dlqURL))

	obj, err := st.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(st.out), Key: aws.String("p/good.log")})
	require.NoError(t, err, "the good file of the same message is processed")
	got, _ := io.ReadAll(obj.Body)
	assert.Equal(t, "line 1\nline 2\n", string(got))
}

// A permanent failure delivered again (S3 sends an event twice; a killed delivery's
// message comes back) is settled from its record, on the real servers: no GET, no new
// attempt, nothing in the DLQ.
func TestPermanentFailureDeliveredAgainIsNotRedone(t *testing.T) {
	st := newStack(t, stackOptions{duplicateCheck: worker.DuplicateCheckAlways, rules: process.Rules{
		{Suffix: ".gz", Processors: []string{"gunzip", "checksum"}},
		{Processors: []string{"checksum", "copy"}},
	}})
	st.put("p/corrupt.log.gz", "this is not gzip")
	st.notify("p/corrupt.log.gz")
	st.drain()
	require.Equal(t, ledger.StatusFailed, st.record("p/corrupt.log.gz").Status)
	gets := st.calls.Count("S3.GetObject")

	st.notify("p/corrupt.log.gz")
	assert.Equal(t, esm.Result{Received: 1, Deleted: 1}, st.drain())
	rec := st.record("p/corrupt.log.gz")
	assert.Equal(t, ledger.StatusFailed, rec.Status)
	assert.Contains(t, rec.Reason, "corrupt gzip stream")
	assert.Equal(t, 1, rec.Attempts, "settled from its record")
	assert.Equal(t, gets, st.calls.Count("S3.GetObject"), "not read again")
	assert.Equal(t, 0, st.queueDepth(st.dlqURL))
}

// A malformed message does not crash the batch: it is recorded as poison with its
// reason and body, and the other messages of the batch are processed.
func TestMalformedMessageDoesNotCrashBatch(t *testing.T) {
	st := newStack(t, stackOptions{})
	st.put("m/ok.txt", "ok")
	st.send("this is not json")
	st.send(`{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"x"}`)
	st.send(`{"v":99,"files":[]}`)
	st.notify("m/ok.txt")
	r := st.drain()
	assert.Equal(t, 4, r.Deleted)
	assert.Equal(t, 0, r.Failed)
	assert.Equal(t, ledger.StatusSucceeded, st.record("m/ok.txt").Status)

	fails, err := st.store.Failures(context.Background(), time.Now())
	require.NoError(t, err)
	var reasons []string
	for _, f := range fails {
		if f.Status == ledger.StatusFailed && len(f.PK) > 2 && f.PK[:2] == "M#" {
			reasons = append(reasons, f.Reason)
		}
	}
	assert.Len(t, reasons, 2, "two poison messages (the test event is not one)")
	assert.Contains(t, fmt.Sprint(reasons), "not a JSON object")
	assert.Contains(t, fmt.Sprint(reasons), "version 99 is not supported")
}

// A file much larger than the memory budget is streamed: the worker's heap grows by
// about one part buffer, not by the file.
func TestLargeFileBoundedMemory(t *testing.T) {
	const size = 256 << 20
	st := newStack(t, stackOptions{partSize: 8 << 20})
	ctx := context.Background()

	// Upload a 256 MiB pseudo-random file with the same streaming uploader.
	up, err := upload.New(st.s3, 16<<20)
	require.NoError(t, err)
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{7}), size), h)
	_, err = up.Upload(ctx, upload.Object{Bucket: st.in, Key: "big/data.bin"}, src)
	require.NoError(t, err)
	want := hex.EncodeToString(h.Sum(nil))
	st.notify("big/data.bin")

	peak := meter.PeakHeapGrowth(func() { st.drain() })
	t.Logf("file %d MiB, part size 8 MiB, heap growth while processing: %.1f MiB", size>>20, float64(peak)/(1<<20))
	assert.Less(t, peak, uint64(64<<20), "memory bounded by part buffers, not file size")

	head, err := st.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.out), Key: aws.String("big/data.bin")})
	require.NoError(t, err)
	assert.Equal(t, int64(size), aws.ToInt64(head.ContentLength))
	assert.NotEmpty(t, head.Metadata[worker.MetaRevision], "a multipart output is created with its labels")
	assert.Empty(t, head.Metadata[worker.MetaSHA256], "and is not copied again to add its checksums")
	rec := st.record("big/data.bin")
	assert.Equal(t, want, rec.SHA256)
	assert.Equal(t, int64(size), rec.Size)
}

// Ledger writes per successfully processed file on the happy path, counted by an SDK
// middleware on the real DynamoDB API. Target: <= 1.1.
func TestDynamoDBWritesPerFile(t *testing.T) {
	st := newStack(t, stackOptions{})
	const files = 200
	for i := range files {
		k := fmt.Sprintf("w/%03d.txt", i)
		st.put(k, fmt.Sprintf("file %d", i))
	}
	for i := 0; i < files; i += 5 { // 5 records per S3 event message
		var keys []string
		for j := i; j < i+5; j++ {
			keys = append(keys, fmt.Sprintf("w/%03d.txt", j))
		}
		st.notify(keys...)
	}
	st.calls.Reset() // count only the worker's calls (and the poller's)
	st.drain()
	writes := st.calls.DynamoDBWrites()
	perFile := float64(writes) / files
	t.Logf("files=%d dynamodb_writes=%d writes/file=%.3f reads/file=%.3f calls: %s",
		files, writes, perFile, float64(st.calls.Count("DynamoDB.BatchGetItem"))/files, st.calls.String())
	assert.LessOrEqual(t, perFile, 1.1)
	list, err := st.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(st.out)})
	require.NoError(t, err)
	assert.Len(t, list.Contents, files)
}

// gate is a processor that holds the file it wraps until released, after saying so.
type gate struct{ reached, release chan struct{} }

func (g gate) Name() string { return "gate" }

func (g gate) Wrap(in io.Reader, _ *process.Result) (io.Reader, error) {
	close(g.reached)
	<-g.release
	return in, nil
}

// On the real SQS API (fauxqs): a message whose file is finished is deleted while its
// batch still runs, so a crash from then on would bring back only the other one; and
// the mapping's own delete of it at the end succeeds, as SQS answers for a receipt
// handle whose message is gone (SQS API reference, DeleteMessage).
func TestFinishedMessageLeavesTheQueueWhileItsBatchRuns(t *testing.T) {
	g := gate{reached: make(chan struct{}), release: make(chan struct{})}
	reg := process.Builtins()
	reg.Register(g)
	st := newStack(t, stackOptions{
		registry:    reg,
		rules:       process.Rules{{Suffix: ".gate", Processors: []string{"gate", "copy"}}, {Processors: []string{"checksum", "copy"}}},
		concurrency: 1, completeAfter: time.Nanosecond,
	})
	st.put("c/first.txt", "first")
	st.put("c/second.gate", "second")
	st.notify("c/first.txt")
	st.notify("c/second.gate")

	type once struct {
		r   esm.Result
		err error
	}
	done := make(chan once, 1)
	go func() {
		r, err := st.mapping.Once(context.Background(), st.handler.Handle)
		done <- once{r, err}
	}()
	select {
	case <-g.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the second file was never processed")
	}
	// The completion runs beside the next file: wait for it while the file is held.
	var inFlight string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if inFlight = st.queueAttr(st.queueURL, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible); inFlight == "1" {
			break
		}
	}
	close(g.release)
	res := <-done
	require.NoError(t, res.err)
	assert.Equal(t, 2, res.r.Received, "one batch of both messages")
	assert.Equal(t, "1", inFlight, "while the second file was held, the first message was gone")
	assert.Equal(t, 2, res.r.Deleted, "the mapping's delete of the completed message succeeds too")
	assert.Zero(t, res.r.Failed)
	assert.Zero(t, st.queueDepth(st.queueURL), "nothing comes back")
	assert.Equal(t, ledger.StatusSucceeded, st.record("c/first.txt").Status)
	assert.Equal(t, ledger.StatusSucceeded, st.record("c/second.gate").Status)
}
