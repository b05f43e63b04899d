// Package benchmark measures fileflow on the local stack and writes the benchmark report:
// bench/report.json (the figures) and docs/benchmarks.md with its charts (drawn in Go with
// gonum.org/v1/plot), each figure naming the machine, the date and the commit.
//
// `make bench` runs it (`fileflow bench report`). The sections are those of issue 13:
//
//  1. the pipeline end to end against the raw loop, for 1 KB, 100 KB and 20 MB files;
//  2. throughput as the worker mapping's maximum concurrency grows, next to the raw loop;
//  3. API calls per file, priced by the cost model, next to the naive design;
//  4. the worker's own overhead with in-memory fakes;
//  5. cold start: each function's zip size and init time under the local runtime;
//  6. fan-out scale: a 1,000,000-key manifest and a 100,000-key prefix tree;
//
// and, for the ratio of section 1, where the CPU went: each process's share of the
// machine's CPU time during the pipeline's drain and during the raw loop.
package benchmark

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Report is bench/report.json.
type Report struct {
	Machine Machine `json:"machine"`
	// EndToEnd is section 1: one run per file size.
	EndToEnd []SizeRun `json:"end_to_end"`
	// Concurrency is section 2: one run per maximum concurrency.
	Concurrency []ConcurrencyRun `json:"concurrency"`
	// Calls is section 3.
	Calls *CallsSection `json:"calls,omitempty"`
	// Overhead is section 4.
	Overhead *Overhead `json:"worker_overhead,omitempty"`
	// ColdStarts is section 5: one per function.
	ColdStarts []ColdStart `json:"cold_starts"`
	// FanOut is section 6.
	FanOut *FanOut `json:"fan_out,omitempty"`
	// Goals are the targets next to what was measured, misses included.
	Goals []Goal `json:"goals"`
	// Seconds is how long the whole report took.
	Seconds float64 `json:"seconds"`
}

// Machine is where and when the figures were measured.
type Machine struct {
	Cores     int    `json:"cores"`
	CPU       string `json:"cpu"`
	MemoryGiB int    `json:"memory_gib"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	Date      string `json:"date"` // YYYY-MM-DD, UTC
	Commit    string `json:"commit"`
	// Dirty is true when the work tree had uncommitted changes.
	Dirty bool `json:"dirty,omitempty"`
}

// Caption is the line every figure carries.
func (m Machine) Caption() string {
	commit := m.Commit
	if m.Dirty {
		commit += "+changes"
	}
	return fmt.Sprintf("%d cores, %s, %s, commit %s", m.Cores, m.GoVersion, m.Date, commit)
}

// Throughput is one loop's result.
type Throughput struct {
	Files       int     `json:"files"`
	Seconds     float64 `json:"seconds"`
	FilesPerSec float64 `json:"files_per_sec"`
	MBPerSec    float64 `json:"mb_per_sec"`
	// P50ms and P99ms are the per-file times: for the pipeline, from the worker's start
	// of the file to its commit (the ledger's duration); for the raw loop, its GET, PUT
	// and write.
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	// Lost is the pipeline's files without a final record at the end (must be 0).
	Lost int `json:"lost,omitempty"`
}

// SizeRun is section 1 for one file size.
type SizeRun struct {
	Label     string     `json:"label"`
	SizeBytes int        `json:"size_bytes"`
	Pipeline  Throughput `json:"pipeline"`
	// Raw is the mean of the raw loop's runs just before and just after the pipeline's
	// drain (RawBefore, RawAfter), so that drift in the servers' speed over the run
	// (DynamoDB Local's JVM keeps compiling for tens of thousands of requests) favours
	// neither loop.
	Raw       Throughput `json:"raw"`
	RawBefore Throughput `json:"raw_before"`
	RawAfter  Throughput `json:"raw_after"`
	// WarmUp is the raw loop's files/s in each warm-up pass, before anything is measured.
	WarmUp []float64 `json:"warm_up_files_per_sec,omitempty"`
	// Ratio is the pipeline's files/s over the raw loop's.
	Ratio float64 `json:"ratio"`
	// CPU is where the machine's CPU went during each loop.
	CPU *CPUProfile `json:"cpu,omitempty"`
}

// ConcurrencyRun is section 2 for one maximum concurrency.
type ConcurrencyRun struct {
	Concurrency int        `json:"concurrency"`
	Pipeline    Throughput `json:"pipeline"`
	// Raw is the raw loop with as many files in flight as the pipeline can have:
	// concurrency × the files one environment works on at once (FilesInFlight); the mean
	// of its runs before and after the pipeline's, as in SizeRun.
	Raw       Throughput `json:"raw"`
	RawBefore Throughput `json:"raw_before"`
	RawAfter  Throughput `json:"raw_after"`
	RawFiles  int        `json:"raw_in_flight"`
}

// CallsSection is section 3.
type CallsSection struct {
	Files  int    `json:"files"`
	Stage  string `json:"stage"`
	Source string `json:"source"`
	// PerFile are the functions' API calls per file by "Service.Operation".
	PerFile map[string]float64 `json:"per_file"`
	// USDPerMillion are the orchestration's dollars per million files, by design.
	FileflowUSDPerMillion float64 `json:"fileflow_usd_per_million"`
	NaiveUSDPerMillion    float64 `json:"naive_usd_per_million"`
	// Lines are each design's lines (per million files), fileflow first.
	FileflowLines []CostLine `json:"fileflow_lines"`
	NaiveLines    []CostLine `json:"naive_lines"`
}

// CostLine is one service's dollars per million files.
type CostLine struct {
	Service string  `json:"service"`
	USD     float64 `json:"usd"`
}

// Overhead is section 4: `BenchmarkHandlePerFile`.
type Overhead struct {
	Runs            int       `json:"runs"`
	NsPerFile       []float64 `json:"ns_per_file"`
	MedianNsPerFile float64   `json:"median_ns_per_file"`
	// FilesPerSecPerCore is 1e9 / the median.
	FilesPerSecPerCore float64 `json:"files_per_sec_per_core"`
	AllocsPerFile      float64 `json:"allocs_per_file"`
	BytesPerFile       float64 `json:"bytes_per_file"`
}

// ColdStart is section 5 for one function.
type ColdStart struct {
	Function string    `json:"function"`
	ZipBytes int64     `json:"zip_bytes"`
	InitMs   []float64 `json:"init_ms"`
	MedianMs float64   `json:"median_ms"`
}

// FanOut is section 6.
type FanOut struct {
	// Manifest is the 1,000,000-key manifest.
	Manifest FanOutRun `json:"manifest"`
	// Prefix is the 100,000-key prefix tree.
	Prefix FanOutRun `json:"prefix"`
}

// FanOutRun is one fan-out's figures.
type FanOutRun struct {
	Keys int `json:"keys"`
	// PlanSeconds is the planning alone (in process): reading the manifest or listing the
	// tree and packing the task messages.
	PlanSeconds float64 `json:"plan_seconds"`
	// Messages are the task messages (for a job: all its tasks, fan-out tasks too).
	Messages int `json:"messages"`
	// PeakHeapMiB is the live heap's peak growth while planning.
	PeakHeapMiB float64 `json:"peak_heap_mib"`
	// JobSeconds is the job on the local stack, submitted to finished (0: not run; see
	// Note).
	JobSeconds float64 `json:"job_seconds,omitempty"`
	JobStatus  string  `json:"job_status,omitempty"`
	// DispatcherPeakMiB is the dispatcher processes' largest resident set during the job.
	DispatcherPeakMiB float64 `json:"dispatcher_peak_mib,omitempty"`
	Note              string  `json:"note,omitempty"`
}

// CPUProfile is where the machine's CPU time went during one loop: each process group's
// CPU seconds (user + system, from /proc) over the loop's wall time.
type CPUProfile struct {
	Pipeline []ProcessCPU `json:"pipeline"`
	Raw      []ProcessCPU `json:"raw"`
}

// ProcessCPU is one process group's CPU.
type ProcessCPU struct {
	Name       string  `json:"name"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// Share is of the machine's capacity over the loop: CPU seconds / (wall × cores).
	Share float64 `json:"share"`
	// PerFileMs is CPU milliseconds per file.
	PerFileMs float64 `json:"per_file_ms"`
}

// Goal is one target of the issue and what was measured.
type Goal struct {
	What     string `json:"what"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// Write writes the report as indented JSON.
func (r *Report) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("benchmark: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("benchmark: write report: %w", err)
	}
	return nil
}

// Read reads a report written by [Report.Write].
func Read(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("benchmark: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("benchmark: %s: %w", path, err)
	}
	return &r, nil
}

// Date is today's date as the report writes it.
func Date(t time.Time) string { return t.UTC().Format("2006-01-02") }
