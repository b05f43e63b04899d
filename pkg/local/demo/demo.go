// Package demo drives the local pipeline end to end: it generates files (mixed sizes
// and types, a few poison files), uploads them through the S3 API, shows progress, and
// accounts for every file at the end from the ledger, the output bucket and the DLQ.
package demo

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/bridge"
	"github.com/fileflow/fileflow/pkg/local/devstack"
	"github.com/fileflow/fileflow/pkg/progress"
	"github.com/fileflow/fileflow/pkg/task"
)

// File is one generated input and what should become of it.
type File struct {
	Key        string
	Body       []byte
	Poison     string // why it must fail ("" for a good file)
	OutputKey  string // where its output goes (good files)
	OutputSHA  string // SHA-256 of the expected output bytes
	ETag       string // from the upload
	Uploaded   time.Time
	Duplicated bool // its S3 event is delivered a second time
}

// Options configure [Run].
type Options struct {
	Files       int    // how many files (default 1000)
	PoisonEvery int    // every n-th file is poison (default 50; 0 disables)
	Duplicates  int    // this many files get their S3 event delivered twice
	Slow        int    // this many files are slowed past the function timeout (needs devstack S3Delay on SlowPrefix)
	Seed        uint64 // file contents
	Prefix      string // key prefix (default "demo/")
	Concurrency int    // upload concurrency (default 16)
	Timeout     time.Duration
	Progress    io.Writer // a live progress bar (plain lines if not a terminal); nil: none
	// Logs, if set, are printed above the progress bar while it runs.
	Logs *progress.Logs
	// Burst uploads everything first, then resumes the stack's (paused) mappings and
	// measures the drain: the orchestration's throughput without the uploader's limits.
	Burst bool
	// DrainStarts and Drained, if set, are called in a Burst run when the mappings are
	// resumed and when the queue is first empty — every batch processed and deleted —
	// before the run's own ledger reads: a benchmark measures the CPU between them.
	DrainStarts, Drained func()
	// Size, if set, makes every file exactly Size random bytes (`.bin`, no poison): the
	// benchmarks' fixed-size runs.
	Size int
}

// SlowPrefix is the key prefix of files the chaos option slows down.
const SlowPrefix = "chaos/slow/"

// Summary is the end-of-run account. Its JSON form is the `fileflow dev --json` output.
type Summary struct {
	Files        int                `json:"files"`
	Succeeded    int                `json:"succeeded"`
	Failed       int                `json:"failed"`
	DLQ          int                `json:"dlq"`
	Lost         int                `json:"lost"`
	FilesPerSec  float64            `json:"files_per_sec"`
	P50ms        float64            `json:"p50_ms"`
	P99ms        float64            `json:"p99_ms"`
	CallsPerFile map[string]float64 `json:"calls_per_file"`
	// Detail beyond the documented fields.
	Seconds float64 `json:"seconds"`
	// ProcessingPerSec is files / (last commit − first commit): the pipeline's own rate,
	// whatever the upload rate.
	ProcessingPerSec float64 `json:"processing_files_per_sec"`
	// WorkP50ms and WorkP99ms are the succeeded files' own times in the worker, from its
	// start of the file to the commit (the ledger's duration), without the time queued.
	WorkP50ms float64 `json:"work_p50_ms"`
	// DrainSeconds (a Burst run) is from the mappings' resume to the last commit: the
	// drain without the time the run takes to notice it ended.
	DrainSeconds     float64           `json:"drain_seconds,omitempty"`
	lastCommit       time.Time         // the latest final record
	WorkP99ms        float64           `json:"work_p99_ms"`
	UploadSeconds    float64           `json:"upload_seconds"`
	MaxEnvironments  int               `json:"max_environments"`
	Invocations      int64             `json:"invocations"`
	ColdStarts       int64             `json:"cold_starts"`
	FailedReasons    map[string]string `json:"failed_reasons,omitempty"`
	OutputsChecked   int               `json:"outputs_checked"`
	OutputMismatches []string          `json:"output_mismatches,omitempty"`
	LostKeys         []string          `json:"lost_keys,omitempty"`
	DLQKeys          []string          `json:"dlq_keys,omitempty"`
	OperationCalls   map[string]int64  `json:"operation_calls"`
}

// Generate makes the files: mostly small text/CSV/JSON/log files, some binaries and
// gzip files, a few larger ones, and every PoisonEvery-th a corrupt gzip or a rejected
// executable.
func Generate(o Options) []*File {
	o = defaults(o)
	r := rand.New(rand.NewPCG(o.Seed, 42))
	files := make([]*File, 0, o.Files)
	if o.Size > 0 {
		for i := range o.Files {
			body := randomBytes(r, o.Size)
			k := fmt.Sprintf("%s%05d-fixed.bin", o.Prefix, i)
			files = append(files, &File{Key: k, Body: body, OutputKey: k, OutputSHA: sha(body)})
		}
		return files
	}
	for i := range o.Files {
		size := 256 + r.IntN(4<<10)
		switch p := r.IntN(100); {
		case p >= 98:
			size = 256<<10 + r.IntN(768<<10)
		case p >= 85:
			size = 16<<10 + r.IntN(48<<10)
		}
		var f *File
		switch {
		case o.PoisonEvery > 0 && i%o.PoisonEvery == o.PoisonEvery-1 && (i/o.PoisonEvery)%2 == 0:
			f = &File{Key: fmt.Sprintf("%s%05d-corrupt.log.gz", o.Prefix, i), Body: randomText(r, 512), Poison: "corrupt gzip stream"}
		case o.PoisonEvery > 0 && i%o.PoisonEvery == o.PoisonEvery-1:
			f = &File{Key: fmt.Sprintf("%s%05d-setup.exe", o.Prefix, i), Body: append([]byte("MZ"), randomBytes(r, 1024)...), Poison: "executables are not accepted"}
		default:
			f = goodFile(r, o.Prefix, i, size)
		}
		files = append(files, f)
	}
	for i := 0; i < o.Slow && i < len(files); i++ {
		f := goodFile(r, SlowPrefix+o.Prefix, i, 1024)
		f.Poison = "slow: times out on every receive"
		files = append(files, f)
	}
	// Duplicates: the S3 event of every k-th good file is delivered twice.
	if o.Duplicates > 0 {
		step := max(1, o.Files/o.Duplicates)
		n := 0
		for i := 0; i < o.Files && n < o.Duplicates; i += step {
			if files[i].Poison == "" {
				files[i].Duplicated = true
				n++
			}
		}
	}
	return files
}

func goodFile(r *rand.Rand, prefix string, i, size int) *File {
	kinds := []string{"csv", "json", "txt", "log", "bin", "gz", "html"}
	kind := kinds[r.IntN(len(kinds))]
	f := &File{Key: fmt.Sprintf("%s%05d-data.%s", prefix, i, kind)}
	switch kind {
	case "csv":
		f.Body = csv(r, size)
	case "json":
		f.Body = jsonLines(r, size)
	case "bin":
		f.Body = randomBytes(r, size)
	case "html":
		f.Body = append([]byte("<!DOCTYPE html><html><body>"), randomText(r, size)...)
	case "gz":
		plain := randomText(r, size)
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write(plain)
		_ = zw.Close()
		f.Key = fmt.Sprintf("%s%05d-archive.log.gz", prefix, i)
		f.Body = zb.Bytes()
		f.OutputKey = strings.TrimSuffix(f.Key, ".gz")
		f.OutputSHA = sha(plain)
		return f
	default:
		f.Body = randomText(r, size)
	}
	f.OutputKey, f.OutputSHA = f.Key, sha(f.Body)
	return f
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := i; j < min(i+8, n); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	return b
}

func randomText(r *rand.Rand, n int) []byte {
	words := []string{"file", "flow", "lambda", "queue", "bucket", "ledger", "retry", "batch", "s3", "event", "commit", "jitter"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

func csv(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	b.WriteString("id,name,amount\n")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%d,item-%d,%d.%02d\n", i, r.IntN(1000), r.IntN(10000), r.IntN(100))
	}
	return b.Bytes()
}

func jsonLines(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	b.WriteString("[")
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":%d,"v":%d}`, i, r.IntN(1_000_000))
	}
	b.WriteString("]")
	return b.Bytes()
}

func defaults(o Options) Options {
	if o.Files == 0 {
		o.Files = 1000
	}
	if o.PoisonEvery == 0 {
		o.PoisonEvery = 50
	}
	if o.PoisonEvery < 0 {
		o.PoisonEvery = 0
	}
	if o.Prefix == "" {
		o.Prefix = "demo/"
	}
	if o.Concurrency == 0 {
		o.Concurrency = 16
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	return o
}

// UploadOnly uploads files to bucket and returns their keys (to the ingest bucket, the
// pipeline is notified; to another bucket, it is not).
func UploadOnly(ctx context.Context, st *devstack.Stack, bucket string, files []*File, concurrency int) ([]string, error) {
	keys := make([]string, len(files))
	sem := make(chan struct{}, max(1, concurrency))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i, f := range files {
		keys[i] = f.Key
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := st.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(f.Key), Body: bytes.NewReader(f.Body)}); err != nil {
				mu.Lock()
				firstErr = fmt.Errorf("demo: upload %s: %w", f.Key, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return keys, firstErr
}

// Run uploads the files to the stack's ingest bucket, waits until every file is
// accounted for (or the timeout), and returns the summary.
func Run(ctx context.Context, st *devstack.Stack, files []*File, o Options) (Summary, error) {
	o = defaults(o)
	ingest := st.Resources.IngestBucket
	tasks, err := st.TasksQueue()
	if err != nil {
		return Summary{}, err
	}
	st.Calls.Reset()
	start := time.Now()
	var uploaded atomic.Int64
	stopProgress := showProgress(o.Progress, o.Logs, st, len(files), &uploaded)
	defer stopProgress()

	// Upload with bounded concurrency.
	var wg sync.WaitGroup
	var upErr error
	var errMu sync.Mutex
	sem := make(chan struct{}, o.Concurrency)
	for _, f := range files {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out, err := st.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(ingest), Key: aws.String(f.Key), Body: bytes.NewReader(f.Body)})
			if err != nil {
				errMu.Lock()
				upErr = fmt.Errorf("demo: upload %s: %w", f.Key, err)
				errMu.Unlock()
				return
			}
			f.ETag = strings.Trim(aws.ToString(out.ETag), `"`)
			f.Uploaded = time.Now()
			uploaded.Add(1)
		}()
	}
	wg.Wait()
	if upErr != nil {
		return Summary{}, upErr
	}
	uploadSeconds := time.Since(start).Seconds()
	if o.Burst {
		if o.DrainStarts != nil {
			o.DrainStarts()
		}
		start = time.Now()
		st.Resume()
	}
	// Duplicate deliveries: the same S3 event again, as S3 and SQS may do.
	for _, f := range files {
		if !f.Duplicated {
			continue
		}
		body, err := bridge.Record(local.Region, ingest, f.Key, int64(len(f.Body)), f.ETag, nil, "ObjectCreated:Put", "", "dup")
		if err != nil {
			return Summary{}, err
		}
		if _, err := st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(tasks.URL), MessageBody: aws.String(body)}); err != nil {
			return Summary{}, fmt.Errorf("demo: duplicate event: %w", err)
		}
	}

	// Wait until the queue has drained and every file has a final record, or nothing has
	// changed for a while with the queue empty (what is left is then in the DLQ or lost,
	// and the summary says which), or the timeout passes.
	deadline := time.Now().Add(o.Timeout)
	const stall = 30 * time.Second
	var records map[string]ledger.Record
	lastFinal, lastChange := -1, time.Now()
	for {
		depth, err := queueDepth(ctx, st.SQS, tasks.URL)
		if err != nil {
			return Summary{}, err
		}
		if depth == 0 {
			if o.Burst && o.Drained != nil {
				o.Drained()
				o.Drained = nil
			}
			records, err = readLedger(ctx, st.DynamoDB, st.Resources.Table, ingest, files)
			if err != nil {
				return Summary{}, err
			}
			n := finalCount(files, records)
			if n == len(files) {
				break
			}
			if n != lastFinal {
				lastFinal, lastChange = n, time.Now()
			} else if time.Since(lastChange) > stall {
				break
			}
		} else {
			lastChange = time.Now()
		}
		if time.Now().After(deadline) {
			if records == nil {
				if records, err = readLedger(ctx, st.DynamoDB, st.Resources.Table, ingest, files); err != nil {
					return Summary{}, err
				}
			}
			break
		}
		wait := 250 * time.Millisecond
		if depth == 0 {
			wait = time.Second // reading the whole ledger is not free
		}
		select {
		case <-ctx.Done():
			return Summary{}, ctx.Err()
		case <-time.After(wait):
		}
	}
	elapsed := time.Since(start)
	if o.Burst && o.Drained != nil {
		o.Drained() // the queue was never seen empty (a timeout)
	}
	stopProgress()
	sum, err := summarize(ctx, st, files, records, elapsed, tasks.DLQ.URL)
	sum.UploadSeconds = uploadSeconds
	if o.Burst && sum.lastCommit.After(start) {
		sum.DrainSeconds = sum.lastCommit.Sub(start).Seconds()
	}
	return sum, err
}

// finalCount is how many files have a final record (succeeded, failed, dead-lettered).
func finalCount(files []*File, recs map[string]ledger.Record) int {
	n := 0
	for _, f := range files {
		switch recs[f.Key].Status {
		case ledger.StatusSucceeded, ledger.StatusFailed, ledger.StatusDeadLettered:
			n++
		}
	}
	return n
}

func queueDepth(ctx context.Context, c *sqs.Client, url string) (int, error) {
	out, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		return 0, fmt.Errorf("demo: queue depth: %w", err)
	}
	n := 0
	for _, v := range out.Attributes {
		var x int
		_, _ = fmt.Sscan(v, &x)
		n += x
	}
	return n, nil
}

// readLedger reads every file's record (BatchGetItem, 100 at a time).
func readLedger(ctx context.Context, db *dynamodb.Client, table, bucket string, files []*File) (map[string]ledger.Record, error) {
	out := map[string]ledger.Record{}
	for start := 0; start < len(files); start += 100 {
		var keys []map[string]ddbtypes.AttributeValue
		for _, f := range files[start:min(start+100, len(files))] {
			keys = append(keys, ledger.Key{Bucket: bucket, Key: f.Key}.Attributes())
		}
		req := map[string]ddbtypes.KeysAndAttributes{table: {Keys: keys, ConsistentRead: aws.Bool(true)}}
		for len(req) > 0 {
			resp, err := db.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: req})
			if err != nil {
				return nil, fmt.Errorf("demo: read ledger: %w", err)
			}
			for _, item := range resp.Responses[table] {
				var r ledger.Record
				if err := unmarshal(item, &r); err != nil {
					return nil, err
				}
				out[r.Key] = r
			}
			req = resp.UnprocessedKeys
		}
	}
	return out, nil
}

func summarize(ctx context.Context, st *devstack.Stack, files []*File, recs map[string]ledger.Record, elapsed time.Duration, dlqURL string) (Summary, error) {
	s := Summary{Files: len(files), Seconds: elapsed.Seconds(), FailedReasons: map[string]string{}, CallsPerFile: map[string]float64{}}
	dlqKeys, err := drainKeys(ctx, st.SQS, dlqURL)
	if err != nil {
		return s, err
	}
	var latencies, work []float64
	var first, last time.Time
	for _, r := range recs {
		if r.Status != ledger.StatusSucceeded && r.Status != ledger.StatusFailed {
			continue
		}
		if first.IsZero() || r.UpdatedAt.Before(first) {
			first = r.UpdatedAt
		}
		if r.UpdatedAt.After(last) {
			last = r.UpdatedAt
		}
	}
	for _, f := range files {
		r, ok := recs[f.Key]
		switch {
		case ok && r.Status == ledger.StatusSucceeded:
			s.Succeeded++
			latencies = append(latencies, float64(r.UpdatedAt.Sub(f.Uploaded).Milliseconds()))
			work = append(work, float64(r.DurationMS))
			if f.OutputKey != "" {
				s.OutputsChecked++
				if mismatch := checkOutput(ctx, st, f, r); mismatch != "" {
					s.OutputMismatches = append(s.OutputMismatches, mismatch)
				}
			}
		case ok && r.Status == ledger.StatusFailed:
			s.Failed++
			s.FailedReasons[f.Key] = r.Reason
		case dlqKeys[f.Key]:
			s.DLQ++
			s.DLQKeys = append(s.DLQKeys, f.Key)
		default:
			s.Lost++
			s.LostKeys = append(s.LostKeys, f.Key)
		}
	}
	sort.Float64s(latencies)
	s.P50ms, s.P99ms = percentile(latencies, 0.50), percentile(latencies, 0.99)
	sort.Float64s(work)
	s.WorkP50ms, s.WorkP99ms = percentile(work, 0.50), percentile(work, 0.99)
	if elapsed > 0 {
		s.FilesPerSec = float64(s.Succeeded+s.Failed) / elapsed.Seconds()
	}
	s.lastCommit = last
	if d := last.Sub(first).Seconds(); d > 0 {
		s.ProcessingPerSec = float64(s.Succeeded+s.Failed) / d
	}
	s.OperationCalls = st.Calls.Snapshot()
	for svc, n := range st.Calls.PerService() {
		s.CallsPerFile[svc] = round3(float64(n) / float64(len(files)))
	}
	stats := st.Stats()
	s.MaxEnvironments, s.Invocations, s.ColdStarts = stats.MaxEnvironments, stats.Invocations, stats.ColdStarts
	return s, nil
}

func round3(f float64) float64 { return float64(int(f*1000+0.5)) / 1000 }

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

// checkOutput verifies that the file's output exists under its key with the right bytes
// and its revision's label, and that the record holds its checksum, as does the output's
// metadata unless it is a multipart object (an ETag "<md5>-<parts>"), created before its
// checksum was known.
func checkOutput(ctx context.Context, st *devstack.Stack, f *File, r ledger.Record) string {
	key := f.OutputKey
	if p := st.Resources.Functions[0].Env["FILEFLOW_OUTPUT_PREFIX"]; p != "" {
		key = p + key
	}
	obj, err := st.S3Direct.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.Resources.OutputBucket), Key: aws.String(key)})
	if err != nil {
		return f.Key + ": no output: " + err.Error()
	}
	defer obj.Body.Close()
	body, err := io.ReadAll(obj.Body)
	if err != nil {
		return f.Key + ": " + err.Error()
	}
	if got := sha(body); got != f.OutputSHA {
		return f.Key + ": output bytes differ"
	}
	if obj.Metadata[task.MetaRevision] == "" {
		return f.Key + ": output without its revision's label"
	}
	if r.SHA256 != f.OutputSHA {
		return f.Key + ": sha256 in the record " + r.SHA256
	}
	if multipart := strings.Contains(aws.ToString(obj.ETag), "-"); !multipart && obj.Metadata[task.MetaSHA256] != f.OutputSHA {
		return f.Key + ": sha256 metadata " + obj.Metadata[task.MetaSHA256]
	}
	return ""
}

// drainKeys reads every message in the DLQ (hiding them for a minute) and returns the
// keys their S3 events name.
func drainKeys(ctx context.Context, c *sqs.Client, url string) (map[string]bool, error) {
	keys := map[string]bool{}
	for {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10, VisibilityTimeout: 60})
		if err != nil {
			return nil, fmt.Errorf("demo: read DLQ: %w", err)
		}
		if len(out.Messages) == 0 {
			return keys, nil
		}
		for _, m := range out.Messages {
			d, err := task.Decode([]byte(aws.ToString(m.Body)))
			if err != nil {
				continue
			}
			for _, f := range d.Files {
				keys[f.Key] = true
			}
		}
	}
}

func unmarshal(item map[string]ddbtypes.AttributeValue, r *ledger.Record) error {
	if err := attributevalue.UnmarshalMap(item, r); err != nil {
		return fmt.Errorf("demo: ledger record: %w", err)
	}
	return nil
}

// showProgress shows a live bar (or plain lines, when w is not a terminal) until the
// returned func is called.
func showProgress(w io.Writer, logs *progress.Logs, st *devstack.Stack, total int, uploaded *atomic.Int64) func() {
	if w == nil {
		return func() {}
	}
	d := progress.Start(w, progress.Options{Logs: logs})
	var eta progress.ETA
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			n, text := progressLine(st, total, uploaded, &eta)
			select {
			case <-done:
				d.Finish(n, int64(total), text)
				return
			case <-t.C:
				d.Update(n, int64(total), text)
			}
		}
	}()
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func progressLine(st *devstack.Stack, total int, uploaded *atomic.Int64, eta *progress.ETA) (int64, string) {
	ok := int(st.Metrics.Get("FilesSucceeded"))
	failed := int(st.Metrics.Get("FilesFailed"))
	up := int(uploaded.Load())
	done := min(total, ok+failed)
	eta.Observe(time.Now(), int64(done))
	left, known := eta.Left(int64(total))
	return int64(done), fmt.Sprintf("%d/%d  succeeded %d  failed %d  in flight %d  environments %d  %.0f files/s  ETA %s",
		done, total, ok, failed, max(0, up-ok-failed), st.Stats().Environments, eta.Rate(), progress.FormatLeft(left, known))
}

// JSON renders the summary.
func (s Summary) JSON() ([]byte, error) { return json.MarshalIndent(s, "", "  ") }

// Text renders the summary for people.
func (s Summary) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "files %d  succeeded %d  failed %d  in DLQ %d  lost %d\n", s.Files, s.Succeeded, s.Failed, s.DLQ, s.Lost)
	fmt.Fprintf(&b, "%.0f files/s end to end over %.1f s (uploads took %.1f s; processing alone %.0f files/s); upload → committed p50 %.0f ms, p99 %.0f ms\n",
		s.FilesPerSec, s.Seconds, s.UploadSeconds, s.ProcessingPerSec, s.P50ms, s.P99ms)
	fmt.Fprintf(&b, "execution environments: up to %d (%d cold starts), %d invocations\n", s.MaxEnvironments, s.ColdStarts, s.Invocations)
	svcs := make([]string, 0, len(s.CallsPerFile))
	for k := range s.CallsPerFile {
		svcs = append(svcs, k)
	}
	slices.Sort(svcs)
	b.WriteString("API calls per file:")
	for _, k := range svcs {
		fmt.Fprintf(&b, " %s %.2f", k, s.CallsPerFile[k])
	}
	b.WriteString("\n")
	if len(s.FailedReasons) > 0 {
		b.WriteString("failed, with reasons:\n")
		keys := make([]string, 0, len(s.FailedReasons))
		for k := range s.FailedReasons {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i == 10 {
				fmt.Fprintf(&b, "  … and %d more\n", len(keys)-10)
				break
			}
			fmt.Fprintf(&b, "  %s: %s\n", k, s.FailedReasons[k])
		}
	}
	for _, m := range s.OutputMismatches {
		fmt.Fprintf(&b, "OUTPUT MISMATCH %s\n", m)
	}
	for _, k := range s.LostKeys {
		fmt.Fprintf(&b, "LOST %s\n", k)
	}
	return b.String()
}
