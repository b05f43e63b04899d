package capacity

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/workload"
)

func stage(t *testing.T, name string, worker pipeline.FunctionArgs) workload.Stage {
	t.Helper()
	// Checking always: the by-hand figures include the duplicate check's reads and time.
	s, err := workload.NewStage(name, pipeline.Args{DuplicateCheck: "always", Functions: map[string]pipeline.FunctionArgs{"worker": worker}}, []string{"dispatch", "worker"}, nil)
	require.NoError(t, err)
	return s
}

var (
	devWorker  = pipeline.FunctionArgs{MemoryMB: 512, BatchSize: 10, MaxConcurrency: 10, ReservedConcurrency: 10}
	prodWorker = pipeline.FunctionArgs{MemoryMB: 1024, BatchSize: 10, BatchingWindowSec: 1, MaxConcurrency: 200, ReservedConcurrency: 250,
		ProvisionedConcurrency: 5, ProvisionedMax: 50}
	files100KB = workload.Workload{Files: 1_000_000, SizeBytes: 100_000}
)

func limit(t *testing.T, r Result, name string) Limit {
	t.Helper()
	for _, l := range r.Limits {
		if l.Name == name {
			return l
		}
	}
	t.Fatalf("no limit %q in %+v", name, r.Limits)
	return Limit{}
}

const lambdaRow = "Lambda: concurrency × batch ÷ batch time"

// dev, by hand: an invocation is 10 files, 8 at once: 2 waves × 50 ms + 10 ms = 0.11 s.
//
//	Lambda          10 concurrent × 10 files ÷ 0.11 s = 909.09 files/s   ← binds
//	DynamoDB writes 4,000 WRU/s ÷ 1 WRU = 4,000; reads 12,000 ÷ 1 = 12,000
//	S3              3,500 PUT/s (outputs, uploads), 5,500 GET/s on one prefix
//	SQS in flight   120,000 ÷ 10 = 12,000 batches × 90.909 files/s = 1,090,909
func TestDevByHand(t *testing.T) {
	r := Model(stage(t, "dev", devWorker), files100KB, DefaultLimits, Options{})
	assert.Equal(t, 10, r.Concurrency)
	assert.Equal(t, 10, r.FilesPerInvocation)
	assert.InDelta(t, 0.11, r.InvocationSeconds, 1e-12)
	assert.InDelta(t, 909.0909, limit(t, r, lambdaRow).FilesPerSec, 1e-3)
	assert.InDelta(t, 4000, limit(t, r, "DynamoDB table writes (on demand)").FilesPerSec, 1e-9)
	assert.InDelta(t, 12000, limit(t, r, "DynamoDB table reads").FilesPerSec, 1e-9)
	assert.InDelta(t, 3500, limit(t, r, "S3 PUTs per prefix (outputs)").FilesPerSec, 1e-9)
	assert.InDelta(t, 3500, limit(t, r, "S3 PUTs per prefix (the uploads)").FilesPerSec, 1e-9)
	assert.InDelta(t, 5500, limit(t, r, "S3 GETs per prefix (sources)").FilesPerSec, 1e-9)
	assert.InDelta(t, 1_090_909.09, limit(t, r, "SQS in-flight messages").FilesPerSec, 1e-2)
	assert.True(t, math.IsInf(limit(t, r, "DynamoDB per partition: file records").FilesPerSec, 1))
	assert.Equal(t, lambdaRow, r.Binding.Name)
	assert.InDelta(t, 1.0, r.RampSeconds, 1e-12, "5 → 10 at 5 a second")

	// A burst of 1M: ramp 5 → 10 in 1 s doing 90.909 × (5 × 1 + 5 × 1²/2) = 681.82 files,
	// then (1,000,000 − 681.82) ÷ 909.09 = 1,099.25 s: 1,100.25 s in all.
	d := r.Drain(1_000_000, DefaultLimits)
	assert.InDelta(t, 681.818, d.RampFiles, 1e-3)
	assert.InDelta(t, 1100.25, d.Seconds, 1e-2)
}

// prod, by hand: concurrency min(200 mapping, 250 reserved, 1,250, 900 reservable) = 200.
//
//	Lambda          200 × 10 ÷ 0.11 = 18,181.8 files/s
//	S3 outputs      3,500 PUT/s on one prefix  ← binds (the uploads too, listed after)
//	burst of 1M: other limits cap the rate at 3,500 = 38.5 concurrent × 90.909, reached
//	  after (38.5 − 5) ÷ 5 = 6.7 s with 90.909 × (5 × 6.7 + 2.5 × 6.7²) = 13,247.7 files;
//	  then (1,000,000 − 13,247.7) ÷ 3,500 = 281.93 s: 288.63 s.
func TestProdByHand(t *testing.T) {
	r := Model(stage(t, "prod", prodWorker), files100KB, DefaultLimits, Options{})
	assert.Equal(t, 200, r.Concurrency)
	assert.InDelta(t, 18181.818, limit(t, r, lambdaRow).FilesPerSec, 1e-3)
	assert.Equal(t, "S3 PUTs per prefix (outputs)", r.Binding.Name)
	assert.InDelta(t, 3500, r.Binding.FilesPerSec, 1e-9)
	assert.InDelta(t, 39, r.RampSeconds, 1e-9, "(200 − 5) ÷ 5 a second")
	d := r.Drain(1_000_000, DefaultLimits)
	assert.InDelta(t, 13247.73, d.RampFiles, 1e-2)
	assert.InDelta(t, 288.629, d.Seconds, 1e-3)
	assert.Empty(t, r.Notes)

	// Keys over 10 prefixes and a table that has served 10,000 files/s before: on demand
	// serves 20,000 WRU/s and RRU/s, S3 35,000: Lambda's 18,182 binds.
	r = Model(stage(t, "prod", prodWorker), files100KB, DefaultLimits, Options{Prefixes: 10, TablePeak: 10_000})
	assert.Equal(t, lambdaRow, r.Binding.Name)
	assert.InDelta(t, 20000, limit(t, r, "DynamoDB table writes (on demand)").FilesPerSec, 1e-9)
	// The drain then ramps all the way: 5 → 200 in 39 s doing 90.909 × (5 × 39 + 2.5 × 39²)
	// = 363,409.1 files, then 636,590.9 ÷ 18,181.8 = 35.01 s: 74.01 s.
	d = r.Drain(1_000_000, DefaultLimits)
	assert.InDelta(t, 363409.09, d.RampFiles, 1e-2)
	assert.InDelta(t, 74.0125, d.Seconds, 1e-3)
}

// The job path on prod: 10 messages × 100 files = 1,000 files an invocation, 125 waves ×
// 50 ms + 10 ms = 6.26 s.
//
//	Lambda        200 × 1,000 ÷ 6.26 = 31,948.9
//	a job's counters: a settlement is 2 × (10 markers + 1 parent check + 1 shard) = 24
//	              WCU on the job's partition: 1,000 ÷ 24 × 1,000 files = 41,666.7
//	table writes  1 + 24 ÷ 1,000 = 1.024 WRU a file: 4,000 ÷ 1.024 = 3,906.25
func TestJobPathByHand(t *testing.T) {
	w := files100KB
	w.Path = workload.Job
	r := Model(stage(t, "prod", prodWorker), w, DefaultLimits, Options{})
	assert.InDelta(t, 31948.88, limit(t, r, lambdaRow).FilesPerSec, 1e-2)
	assert.InDelta(t, 41666.67, limit(t, r, "DynamoDB per partition: one job's counters").FilesPerSec, 1e-2)
	assert.InDelta(t, 3906.25, limit(t, r, "DynamoDB table writes (on demand)").FilesPerSec, 1e-9)
	for _, l := range r.Limits {
		assert.NotEqual(t, "S3 PUTs per prefix (the uploads)", l.Name, "a job's files are already stored")
	}
}

func TestProvisionedTableAndAccountNote(t *testing.T) {
	s := stage(t, "p", pipeline.FunctionArgs{MaxConcurrency: 900, ReservedConcurrency: 950})
	s.Table = pipeline.TableArgs{Provisioned: true, MaxWrite: 500, MaxRead: 300}
	r := Model(s, files100KB, DefaultLimits, Options{})
	assert.Equal(t, 900, r.Concurrency, "min(900 mapping, 950 reserved, 900 reservable)")
	assert.InDelta(t, 500, limit(t, r, "DynamoDB table writes (provisioned)").FilesPerSec, 1e-9)
	assert.InDelta(t, 300, r.Binding.FilesPerSec, 1e-9, "reads: 300 RCU ÷ 1")
	require.Len(t, r.Notes, 1)
	// 950 worker + 50 dispatch (the default) = 1,000 > 900.
	assert.Contains(t, r.Notes[0], "reserve 1000 concurrency")
}

// DrainTime's two regimes, by hand (perEnv 1 file/s, start 5, +5/s, up to 10):
//
//	n = 100: ramp 1 s doing 5 + 2.5 = 7.5 files, then 92.5 ÷ 10 = 9.25 s: 10.25 s
//	n = 5 (within the ramp): 2.5 T² + 5 T = 5 → T = (−5 + √75) ÷ 5 = 0.7320508 s
//	other ceiling 3 < 5 × 1: no ramp at all, n = 30 → 10 s
func TestDrainTime(t *testing.T) {
	assert.InDelta(t, 10.25, DrainTime(100, 1, 5, 5, 10, math.Inf(1)).Seconds, 1e-9)
	assert.InDelta(t, 0.7320508, DrainTime(5, 1, 5, 5, 10, math.Inf(1)).Seconds, 1e-7)
	assert.InDelta(t, 10, DrainTime(30, 1, 5, 5, 10, 3).Seconds, 1e-9)
	assert.InDelta(t, 3, DrainTime(30, 1, 10, 5, 10, math.Inf(1)).Seconds, 1e-9, "already at the maximum")
	assert.Zero(t, DrainTime(0, 1, 5, 5, 10, 3).Seconds)
}

func TestJSONHasNoInfinity(t *testing.T) {
	r := Model(stage(t, "dev", devWorker), files100KB, DefaultLimits, Options{})
	b, err := json.Marshal(r)
	require.NoError(t, err)
	assert.Contains(t, string(b), `(1,000 WCU/s caps only rewrites of one key)","files_per_sec":null}`)
}
