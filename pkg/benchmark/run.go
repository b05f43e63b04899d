package benchmark

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/cpuprofile"
	"github.com/fileflow/fileflow/pkg/local/demo"
	"github.com/fileflow/fileflow/pkg/local/devstack"
)

// Env is what every run on the local stack needs.
type Env struct {
	Root string       // the module's root (the functions are built from it)
	Log  *slog.Logger // progress; nil discards
	// Overrides are fileflow:* settings over the dev stage's, for every run.
	Overrides map[string]string
}

func (e Env) log() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}

// start brings up the dev stage's local stack, paused (a burst is uploaded, then drained),
// with the functions talking straight to the servers unless meter is set.
func (e Env) start(ctx context.Context, meter bool, overrides map[string]string) (*devstack.Stack, error) {
	o := maps.Clone(e.Overrides)
	if o == nil {
		o = map[string]string{}
	}
	maps.Copy(o, overrides)
	st, err := devstack.Start(ctx, devstack.Options{Root: e.Root, Paused: true, NoMeter: !meter, Overrides: o,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("benchmark: local stack: %w", err)
	}
	return st, nil
}

// RawBucket is where the raw loop's own inputs go (no notifications): the warm-up's and
// those of the raw run before the pipeline's.
const RawBucket = "fileflow-bench-raw"

// The warm-up: WarmUpPasses raw passes over WarmUpFiles small files, each pass writing new
// records. DynamoDB Local's JVM keeps getting faster for tens of thousands of requests
// (measured 2026-12-01, 2,000-write passes from a cold start: 6.5, 2.8, 2.1, 1.5, 1.3, 1.2,
// 1.2, 0.9 ms of its CPU a write); with the earlier warm-up of 2,000 writes, the loop
// measured first (the pipeline) paid for the rest of the compiling.
const (
	WarmUpPasses = 8
	WarmUpFiles  = 2000
)

// WarmUp creates RawBucket and runs the warm-up passes in it (the pipeline does not watch
// it); it returns each pass's files/s.
func WarmUp(ctx context.Context, st *devstack.Stack, files, passes int) ([]float64, error) {
	if _, err := st.S3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(RawBucket)}); err != nil {
		return nil, fmt.Errorf("benchmark: warm-up bucket: %w", err)
	}
	warm := demo.Generate(demo.Options{Files: files, PoisonEvery: -1, Seed: 9, Prefix: "warmup/"})
	keys, err := demo.UploadOnly(ctx, st, RawBucket, warm, 16)
	if err != nil {
		return nil, fmt.Errorf("benchmark: warm-up: %w", err)
	}
	rates := make([]float64, 0, passes)
	for p := range passes {
		res, err := demo.RawLoopAs(ctx, st.S3Direct, st.DynamoDB, RawBucket, st.Resources.OutputBucket, st.Resources.Table, keys, 32, "warm"+strconv.Itoa(p)+"/")
		if err != nil {
			return nil, fmt.Errorf("benchmark: warm-up: %w", err)
		}
		rates = append(rates, round(res.FilesPerSec, 1))
	}
	return rates, nil
}

// rawBefore is the raw loop's run before the pipeline's: over `files` files of `size`
// bytes like the pipeline's (other content), uploaded to the raw loop's own bucket. Call
// it before generating the pipeline's files: the loop runs in this process, and with
// the pipeline's 2 GB of 20 MB files held in its heap as well, it ran at half the
// files/s of the same loop after the drain (4.2–5.4 against 7.9–12.3, 2026-12-02).
func rawBefore(ctx context.Context, st *devstack.Stack, files, size int, prefix string, concurrency int, cpu bool) (Throughput, []ProcessCPU, error) {
	keys, size, err := uploadRaw(ctx, st, files, size, prefix)
	if err != nil {
		return Throughput{}, nil, fmt.Errorf("benchmark: raw loop: %w", err)
	}
	return rawOver(ctx, st, RawBucket, keys, size, concurrency, cpu)
}

// uploadRaw uploads the raw loop's own files to RawBucket and returns their keys and
// average size; the bodies are garbage once it returns.
func uploadRaw(ctx context.Context, st *devstack.Stack, files, size int, prefix string) ([]string, int, error) {
	fs := demo.Generate(demo.Options{Files: files, Size: size, PoisonEvery: -1, Seed: uint64(size) + 7, Prefix: prefix})
	keys, err := demo.UploadOnly(ctx, st, RawBucket, fs, 16)
	return keys, avgSize(fs), err
}

// bracket is the mean of the raw loop's runs before and after the pipeline's.
func bracket(before, after Throughput) Throughput {
	mean := func(a, b float64) float64 { return round((a+b)/2, 2) }
	return Throughput{Files: after.Files, Seconds: mean(before.Seconds, after.Seconds), FilesPerSec: mean(before.FilesPerSec, after.FilesPerSec),
		MBPerSec: mean(before.MBPerSec, after.MBPerSec), P50ms: mean(before.P50ms, after.P50ms), P99ms: mean(before.P99ms, after.P99ms)}
}

// meanCPU is the mean of two runs' CPU lines, group by group (a group missing from one
// run counts as zero there), in the order the groups first appear.
func meanCPU(a, b []ProcessCPU) []ProcessCPU {
	sum := map[string]ProcessCPU{}
	var names []string
	for _, l := range append(append([]ProcessCPU{}, a...), b...) {
		t, ok := sum[l.Name]
		if !ok {
			names = append(names, l.Name)
		}
		t.Name, t.CPUSeconds, t.Share, t.PerFileMs = l.Name, t.CPUSeconds+l.CPUSeconds, t.Share+l.Share, t.PerFileMs+l.PerFileMs
		sum[l.Name] = t
	}
	out := make([]ProcessCPU, len(names))
	for i, n := range names {
		t := sum[n]
		out[i] = ProcessCPU{Name: n, CPUSeconds: round(t.CPUSeconds/2, 3), Share: round(t.Share/2, 3), PerFileMs: round(t.PerFileMs/2, 3)}
	}
	return out
}

// settle writes the page cache's dirty pages to disk (sync(2)) before a timed loop, so
// that no loop pays for writing back another's files: the kernel flushes dirty pages 30
// s after they were written, in the middle of whatever runs then. Measured 2026-12-02,
// 20 MB files: the raw loop right after its 2 GB upload ran at 4.2–4.6 files/s, the same
// loop after the pipeline's drain at 7.9–11.8.
func settle() {
	t0 := time.Now()
	dirty := dirtyKiB()
	syscall.Sync()
	slog.Debug("settled the page cache", "dirty MiB", dirty/1024, "took", time.Since(t0).Round(time.Millisecond))
}

// dirtyKiB is /proc/meminfo's Dirty (0 where there is none).
func dirtyKiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Dirty:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// drain uploads the files with the mappings paused, then resumes them and measures the
// drain (and the CPU, if cpu is set). Every file must end succeeded.
func drain(ctx context.Context, st *devstack.Stack, files []*demo.File, cpu bool) (Throughput, []ProcessCPU, error) {
	var meter *CPUMeter
	var lines []ProcessCPU
	var meterErr error
	sum, err := demo.Run(ctx, st, files, demo.Options{Files: len(files), Timeout: 10 * time.Minute, Burst: true, Concurrency: 16,
		DrainStarts: func() {
			settle()
			if cpu {
				meter, meterErr = StartCPU()
			}
		},
		Drained: func() {
			if meter != nil {
				lines, meterErr = meter.Stop(len(files), runtime.NumCPU())
			}
		}})
	if err != nil {
		return Throughput{}, nil, fmt.Errorf("benchmark: pipeline: %w", err)
	}
	if meterErr != nil {
		return Throughput{}, nil, meterErr
	}
	if sum.Succeeded != len(files) {
		return Throughput{}, nil, fmt.Errorf("benchmark: pipeline: %d of %d files succeeded (%d failed, %d in the DLQ, %d lost): a benchmark counts only complete runs",
			sum.Succeeded, len(files), sum.Failed, sum.DLQ, sum.Lost)
	}
	if len(sum.OutputMismatches) > 0 {
		return Throughput{}, nil, fmt.Errorf("benchmark: pipeline: %d wrong outputs, e.g. %s", len(sum.OutputMismatches), sum.OutputMismatches[0])
	}
	// The drain: from the resume to the last commit (not to the moment the run noticed).
	secs := sum.DrainSeconds
	if secs <= 0 {
		secs = sum.Seconds
	}
	rate := float64(len(files)) / secs
	return Throughput{Files: len(files), Seconds: round(secs, 3), FilesPerSec: round(rate, 1),
		MBPerSec: round(rate*float64(avgSize(files))/1e6, 2),
		P50ms:    sum.WorkP50ms, P99ms: sum.WorkP99ms, Lost: sum.Lost}, lines, nil
}

// raw runs the raw loop over the pipeline's inputs, on the same servers.
func raw(ctx context.Context, st *devstack.Stack, files []*demo.File, concurrency int, cpu bool) (Throughput, []ProcessCPU, error) {
	keys := make([]string, len(files))
	for i, f := range files {
		keys[i] = f.Key
	}
	return rawOver(ctx, st, st.Resources.IngestBucket, keys, avgSize(files), concurrency, cpu)
}

// rawOver runs the raw loop over keys of bucket (files of about size bytes).
func rawOver(ctx context.Context, st *devstack.Stack, bucket string, keys []string, size, concurrency int, cpu bool) (Throughput, []ProcessCPU, error) {
	settle()
	var meter *CPUMeter
	var err error
	if cpu {
		if meter, err = StartCPU(); err != nil {
			return Throughput{}, nil, err
		}
	}
	res, err := demo.RawLoop(ctx, st.S3Direct, st.DynamoDB, bucket, st.Resources.OutputBucket, st.Resources.Table, keys, concurrency)
	if err != nil {
		return Throughput{}, nil, fmt.Errorf("benchmark: raw loop: %w", err)
	}
	var lines []ProcessCPU
	if meter != nil {
		if lines, err = meter.Stop(len(keys), runtime.NumCPU()); err != nil {
			return Throughput{}, nil, err
		}
	}
	return Throughput{Files: res.Files, Seconds: round(res.Seconds, 3), FilesPerSec: round(res.FilesPerSec, 1),
		MBPerSec: round(res.FilesPerSec*float64(size)/1e6, 2), P50ms: res.P50ms, P99ms: res.P99ms}, lines, nil
}

func avgSize(files []*demo.File) int {
	if len(files) == 0 {
		return 0
	}
	n := 0
	for _, f := range files {
		n += len(f.Body)
	}
	return n / len(files)
}

// RawConcurrency is the raw loop's goroutines in section 1 (as `fileflow bench raw`).
const RawConcurrency = 32

// Size is one file size of section 1.
type Size struct {
	Label string
	Bytes int // each file's size
	Files int
}

// EndToEnd is section 1: one local stack and its warm-up, then for each size the raw loop
// over files like the pipeline's, the pipeline's drain of the size's files, then the raw
// loop over the pipeline's files, on the same servers, each with where the CPU went. The
// raw loop's figure is the mean of its two runs. Between sizes the mappings are paused
// until every environment has stopped, so each drain starts cold, as on a fresh stack (a
// stack and a warm-up per size cost about 95 s each here).
func EndToEnd(ctx context.Context, e Env, sizes []Size) ([]SizeRun, error) {
	st, err := e.start(ctx, false, nil)
	if err != nil {
		return nil, err
	}
	defer st.Stop()
	warm, err := WarmUp(ctx, st, WarmUpFiles, WarmUpPasses)
	if err != nil {
		return nil, err
	}
	var runs []SizeRun
	for i, sz := range sizes {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := st.Pause(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("benchmark: %s: %w", sz.Label, err)
		}
		run, err := endToEnd(ctx, e, st, sz)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			run.WarmUp = warm
		}
		runs = append(runs, run)
	}
	return runs, nil
}

func endToEnd(ctx context.Context, e Env, st *devstack.Stack, sz Size) (SizeRun, error) {
	label, size, files := sz.Label, sz.Bytes, sz.Files
	e.log().Info("end to end", "size", label, "files", files)
	r0, r0cpu, err := rawBefore(ctx, st, files, size, "before/"+strconv.Itoa(size)+"/", RawConcurrency, true)
	if err != nil {
		return SizeRun{}, err
	}
	fs := demo.Generate(demo.Options{Files: files, Size: size, Seed: uint64(size), Prefix: "bench/" + strconv.Itoa(size) + "/"})
	p, pcpu, err := drain(ctx, st, fs, true)
	if err != nil {
		return SizeRun{}, err
	}
	r1, r1cpu, err := raw(ctx, st, fs, RawConcurrency, true)
	if err != nil {
		return SizeRun{}, err
	}
	r := bracket(r0, r1)
	run := SizeRun{Label: label, SizeBytes: size, Pipeline: p, Raw: r, RawBefore: r0, RawAfter: r1,
		CPU: &CPUProfile{Pipeline: pcpu, Raw: meanCPU(r0cpu, r1cpu)}}
	if r.FilesPerSec > 0 {
		run.Ratio = round(p.FilesPerSec/r.FilesPerSec, 3)
	}
	e.log().Info("end to end", "size", label, "pipeline", p.FilesPerSec, "raw before", r0.FilesPerSec, "raw after", r1.FilesPerSec, "ratio", run.Ratio,
		"mappings", fmt.Sprintf("%+v", st.Stats()))
	return run, nil
}

// FilesInFlight is how many files of one batch an environment works on at once (the
// worker's default Concurrency).
const FilesInFlight = 8

// Concurrency is section 2: one local stack and one warm-up, then for each maximum
// concurrency of the worker's mapping (set while the stack runs, as
// UpdateEventSourceMapping does on AWS, with the mappings paused and every environment
// stopped in between, so each level starts cold as a fresh stack would): the raw loop
// with as many files in flight (concurrency × FilesInFlight), the pipeline's drain of
// `files` 1 KB files, and the raw loop again. A stack and a warm-up per level cost
// about 95 s each here.
func Concurrency(ctx context.Context, e Env, levels []int, files int) ([]ConcurrencyRun, error) {
	if !slices.IsSorted(levels) {
		return nil, fmt.Errorf("benchmark: concurrency levels %v: must ascend (each level's most environments at once is checked)", levels)
	}
	st, err := e.start(ctx, false, nil)
	if err != nil {
		return nil, err
	}
	defer st.Stop()
	if _, err := WarmUp(ctx, st, WarmUpFiles, WarmUpPasses); err != nil {
		return nil, err
	}
	var runs []ConcurrencyRun
	for _, c := range levels {
		e.log().Info("concurrency", "max", c, "files", files)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := st.Pause(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("benchmark: concurrency %d: %w", c, err)
		}
		if err := st.SetMaxConcurrency("worker", c); err != nil {
			return nil, fmt.Errorf("benchmark: concurrency %d: %w", c, err)
		}
		inFlight := c * FilesInFlight
		r0, _, err := rawBefore(ctx, st, files, 1<<10, "before/c"+strconv.Itoa(c)+"/", inFlight, false)
		if err != nil {
			return nil, err
		}
		fs := demo.Generate(demo.Options{Files: files, Size: 1 << 10, Seed: uint64(c), Prefix: "bench/c" + strconv.Itoa(c) + "/"})
		p, _, err := drain(ctx, st, fs, false)
		if err != nil {
			return nil, err
		}
		for _, m := range st.Mappings { // levels ascend: the most at once is this level's
			if got := m.Stats().MaxEnvironments; m.Config.Function.Handler == "worker" && got > c {
				return nil, fmt.Errorf("benchmark: concurrency %d: %d worker environments at once", c, got)
			}
		}
		r1, _, err := raw(ctx, st, fs, inFlight, false)
		if err != nil {
			return nil, err
		}
		r := bracket(r0, r1)
		e.log().Info("concurrency", "max", c, "pipeline", p.FilesPerSec, "raw before", r0.FilesPerSec, "raw after", r1.FilesPerSec,
			"mappings", fmt.Sprintf("%+v", st.Stats()))
		runs = append(runs, ConcurrencyRun{Concurrency: c, Pipeline: p, Raw: r, RawBefore: r0, RawAfter: r1, RawFiles: inFlight})
	}
	return runs, nil
}

// Calls is section 3's measurement: the functions' API calls per file by operation, with
// the counting proxies on, over a drain of `files` mixed files (the demo's mix, with its
// poison files and duplicate events, as `fileflow dev`).
func Calls(ctx context.Context, e Env, files int) (map[string]float64, error) {
	e.log().Info("calls per file", "files", files)
	st, err := e.start(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	defer st.Stop()
	fs := demo.Generate(demo.Options{Files: files, Duplicates: files / 50, Seed: 3})
	sum, err := demo.Run(ctx, st, fs, demo.Options{Files: files, Timeout: 10 * time.Minute, Burst: true})
	if err != nil {
		return nil, fmt.Errorf("benchmark: calls: %w", err)
	}
	if sum.Lost > 0 || sum.DLQ > 0 {
		return nil, fmt.Errorf("benchmark: calls: %d lost, %d in the DLQ", sum.Lost, sum.DLQ)
	}
	out := map[string]float64{}
	for op, n := range sum.OperationCalls {
		out[op] = round(float64(n)/float64(files), 4)
	}
	return out, nil
}

// Profile runs section 1's 1 KB case with CPU profiles: the functions built with the
// fileflowprofile tag write theirs to dir (pkg/cpuprofile), and this process (the local
// runtime, the mappings and, for the raw loop, the loop itself) writes self-pipeline.pprof
// and self-raw.pprof. It returns the run (its figures carry the profiling's own cost, so
// the report's ratio comes from an unprofiled run).
func Profile(ctx context.Context, e Env, files int, dir string) (SizeRun, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return SizeRun{}, fmt.Errorf("benchmark: profile: %w", err)
	}
	o := maps.Clone(e.Overrides)
	st, err := devstack.Start(ctx, devstack.Options{Root: e.Root, Paused: true, NoMeter: true, Overrides: o,
		BuildTags: []string{"fileflowprofile"}, FunctionEnv: []string{cpuprofile.Env + "=" + dir},
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return SizeRun{}, fmt.Errorf("benchmark: local stack: %w", err)
	}
	defer st.Stop()
	warm, err := WarmUp(ctx, st, WarmUpFiles, WarmUpPasses)
	if err != nil {
		return SizeRun{}, err
	}
	r0, r0cpu, err := rawBefore(ctx, st, files, 1<<10, "before/profile/", RawConcurrency, true)
	if err != nil {
		return SizeRun{}, err
	}
	fs := demo.Generate(demo.Options{Files: files, Size: 1 << 10, Seed: 1 << 10, Prefix: "bench/profile/"})
	// Only the drain's windows count: the warm-up's profiles are removed.
	old, _ := filepath.Glob(filepath.Join(dir, "*.pprof"))
	for _, f := range old {
		os.Remove(f)
	}
	stopSelf, err := profileSelf(filepath.Join(dir, "self-pipeline.pprof"))
	if err != nil {
		return SizeRun{}, err
	}
	p, pcpu, err := drain(ctx, st, fs, true)
	stopSelf()
	if err != nil {
		return SizeRun{}, err
	}
	if stopSelf, err = profileSelf(filepath.Join(dir, "self-raw.pprof")); err != nil {
		return SizeRun{}, err
	}
	r1, r1cpu, err := raw(ctx, st, fs, RawConcurrency, true)
	stopSelf()
	if err != nil {
		return SizeRun{}, err
	}
	r := bracket(r0, r1)
	run := SizeRun{Label: "1 KB, profiled", SizeBytes: 1 << 10, Pipeline: p, Raw: r, RawBefore: r0, RawAfter: r1, WarmUp: warm,
		CPU: &CPUProfile{Pipeline: pcpu, Raw: meanCPU(r0cpu, r1cpu)}}
	if r.FilesPerSec > 0 {
		run.Ratio = round(p.FilesPerSec/r.FilesPerSec, 3)
	}
	return run, nil
}

func profileSelf(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("benchmark: profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("benchmark: profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
