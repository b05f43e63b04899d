// Package workload describes files arriving at a stage and how the stage's worker takes
// them in — files per message, per invocation, how long an invocation takes — the
// common ground of the cost model (pkg/cost) and the capacity model (pkg/capacity).
//
// Everything here is plain arithmetic over a stage's settings ([pipeline.Args]) and a
// few stated assumptions (the time one file takes, message and record sizes); nothing
// talks to AWS. The assumptions are fields with documented defaults, so the CLI can
// expose each one as a flag.
package workload

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/pipeline"
)

// Stage is what the models read of a stage: the worker's effective settings (defaults
// applied) and what the stage declares that costs money while idle.
type Stage struct {
	Name   string
	Worker pipeline.FunctionArgs
	// Dispatch is the dispatcher's settings; nil when the stage has none.
	Dispatch *pipeline.FunctionArgs
	// DuplicateCheck: "auto" (task messages always, S3 events when redelivered), "always"
	// (before every batch) or "redelivery"; see [Stage.Checks].
	DuplicateCheck string
	// Parallel is how many files of one batch the worker processes at once
	// (FILEFLOW_CONCURRENCY).
	Parallel int
	// PartSizeBytes: outputs above it are multipart uploads (FILEFLOW_PART_SIZE_MB).
	PartSizeBytes int64
	Table         pipeline.TableArgs
	Tracing       bool
	// Declared, from the stage's plan: CloudWatch alarms, dashboards, and schedules.
	Alarms, Dashboards, Schedules int
}

// The worker's defaults when the stage's environment does not set them (pkg/worker's
// Config defaults).
const (
	DefaultParallel   = 8
	DefaultPartSizeMB = 8
)

// Resource type tokens counted by [NewStage].
const (
	TypeAlarm     = "aws:cloudwatch/metricAlarm:MetricAlarm"
	TypeDashboard = "aws:cloudwatch/dashboard:Dashboard"
)

// scheduleTypes are the resource types that run something on a timer.
var scheduleTypes = []string{"aws:cloudwatch/eventRule:EventRule", "aws:scheduler/schedule:Schedule"}

// NewStage reads a stage from its args (as pkg/stage parses them: defaults not yet
// applied), the functions it deploys (the directories under functions/) and the
// resource counts of its plan (by type token; nil if not planned).
func NewStage(name string, a pipeline.Args, functions []string, counts map[string]int) (Stage, error) {
	s := Stage{Name: name, Worker: effective(a.Functions["worker"]), DuplicateCheck: a.DuplicateCheck,
		Table: a.Table, Tracing: a.Tracing, Parallel: DefaultParallel, PartSizeBytes: DefaultPartSizeMB << 20}
	if s.DuplicateCheck == "" {
		s.DuplicateCheck = "auto"
	}
	if slices.Contains(functions, "dispatch") {
		d := effective(a.Functions["dispatch"])
		s.Dispatch = &d
	}
	env := s.Worker.Env
	if v, ok := env[fnenv.Concurrency]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return Stage{}, fmt.Errorf("workload: worker %s = %q: want a whole number >= 1", fnenv.Concurrency, v)
		}
		s.Parallel = n
	}
	if v, ok := env[fnenv.PartSizeMB]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 {
			return Stage{}, fmt.Errorf("workload: worker %s = %q: want a whole number >= 5", fnenv.PartSizeMB, v)
		}
		s.PartSizeBytes = int64(n) << 20
	}
	s.Alarms, s.Dashboards = counts[TypeAlarm], counts[TypeDashboard]
	for _, t := range scheduleTypes {
		s.Schedules += counts[t]
	}
	return s, nil
}

// effective fills a function's unset settings with the component's defaults
// ([pipeline.DefaultFunction]; reserved concurrency defaults to the mapping's maximum).
func effective(f pipeline.FunctionArgs) pipeline.FunctionArgs {
	d := pipeline.DefaultFunction
	if f.MemoryMB == 0 {
		f.MemoryMB = d.MemoryMB
	}
	if f.TimeoutSeconds == 0 {
		f.TimeoutSeconds = d.TimeoutSeconds
	}
	if f.BatchSize == 0 {
		f.BatchSize = d.BatchSize
	}
	if f.MaxConcurrency == 0 {
		f.MaxConcurrency = d.MaxConcurrency
	}
	if f.ReservedConcurrency == 0 {
		f.ReservedConcurrency = f.MaxConcurrency
	}
	if f.ProvisionedConcurrency > 0 && f.ProvisionedMax == 0 {
		f.ProvisionedMax = f.ProvisionedConcurrency
	}
	return f
}

// Path is how files reach the worker.
type Path string

const (
	// Events: every upload to the ingest bucket sends one S3 event message (one record)
	// to the tasks queue.
	Events Path = "events"
	// Job: a fan-out job lists the files and sends task messages of FilesPerTask files.
	Job Path = "job"
)

// Workload is the files and the assumptions both models share.
type Workload struct {
	Files     int64
	SizeBytes int64
	Path      Path
	// FilesPerTask: files per task message on the job path (default 100, as jobs).
	FilesPerTask int
	// FileTime is how long one file takes from its GET to its ledger commit. Default
	// 50 ms: AWS-FACTS.md's reference estimate (100 KB, Go, 512 MB).
	FileTime time.Duration
	// CheckTime is the duplicate check's ledger read before a batch (default 10 ms;
	// only when the stage checks always).
	CheckTime time.Duration
	// RecordBytes is a committed file's ledger record (default 800: the key twice, the
	// revision, checksums, outputs, one attempt; estimated from pkg/ledger.Record).
	RecordBytes int
}

// Defaults of the assumptions.
const (
	DefaultFileTime     = 50 * time.Millisecond
	DefaultCheckTime    = 10 * time.Millisecond
	DefaultRecordBytes  = 800
	DefaultFilesPerTask = 100 // job.DefaultFilesPerTask
	// S3EventBytes is one S3 event notification with one record (pkg/task/testdata:
	// about 1 KB a record).
	S3EventBytes = 1100
	// TaskFileBytes is one file's entry in a task message (bucket, key, version, ETag,
	// size), and TaskHeaderBytes the rest of the message.
	TaskFileBytes   = 190
	TaskHeaderBytes = 200
)

// WithDefaults fills unset assumptions.
func (w Workload) WithDefaults() Workload {
	if w.Path == "" {
		w.Path = Events
	}
	if w.FilesPerTask == 0 {
		w.FilesPerTask = DefaultFilesPerTask
	}
	if w.FileTime == 0 {
		w.FileTime = DefaultFileTime
	}
	if w.CheckTime == 0 {
		w.CheckTime = DefaultCheckTime
	}
	if w.RecordBytes == 0 {
		w.RecordBytes = DefaultRecordBytes
	}
	return w
}

// Validate reports every invalid field.
func (w Workload) Validate() error {
	var errs []string
	if w.Files < 1 {
		errs = append(errs, fmt.Sprintf("files = %d: must be >= 1", w.Files))
	}
	if w.SizeBytes < 0 {
		errs = append(errs, fmt.Sprintf("size = %d: must be >= 0", w.SizeBytes))
	}
	if w.Path != Events && w.Path != Job {
		errs = append(errs, fmt.Sprintf("path = %q: must be %q or %q", w.Path, Events, Job))
	}
	if w.FilesPerTask < 1 || w.FilesPerTask > 1000 {
		errs = append(errs, fmt.Sprintf("files per task = %d: must be in 1..1000", w.FilesPerTask))
	}
	if w.FileTime <= 0 {
		errs = append(errs, fmt.Sprintf("file time = %s: must be > 0", w.FileTime))
	}
	if w.RecordBytes < 1 || w.RecordBytes > 400_000 {
		errs = append(errs, fmt.Sprintf("record bytes = %d: must be in 1..400000", w.RecordBytes))
	}
	if len(errs) > 0 {
		return fmt.Errorf("workload: %s", strings.Join(errs, "; "))
	}
	return nil
}

// FilesPerMessage is how many files one SQS message carries.
func (w Workload) FilesPerMessage() int {
	if w.Path == Job {
		return w.FilesPerTask
	}
	return 1
}

// MessageBytes is one message's size.
func (w Workload) MessageBytes() int {
	if w.Path == Job {
		return TaskHeaderBytes + w.FilesPerTask*TaskFileBytes
	}
	return S3EventBytes
}

// FilesPerInvocation is a full batch: the mapping's batch size in messages × files per
// message. Under load batches are full (and a batching window fills them when traffic
// is light); a trickle of files gives smaller batches, which the models do not price.
func (w Workload) FilesPerInvocation(s Stage) int {
	return s.Worker.BatchSize * w.FilesPerMessage()
}

// InvocationTime is how long one full batch takes: the duplicate check's read (when
// the stage checks always), then the files in waves of Parallel at FileTime each.
func (w Workload) InvocationTime(s Stage) time.Duration {
	return Invocation{Files: w.FilesPerInvocation(s), Parallel: s.Parallel, FileTime: w.FileTime,
		Check: s.Checks(w.Path), CheckTime: w.CheckTime}.Time()
}

// Checks says whether the worker reads the ledger before a first delivery of files
// arriving by path p (redeliveries are always read): "always" does; "auto" for jobs
// only; "redelivery" never.
func (s Stage) Checks(p Path) bool {
	switch s.DuplicateCheck {
	case "always":
		return true
	case "auto", "":
		return p == Job
	}
	return false
}

// Invocation is one invocation's shape: the files it handles, how many at once.
type Invocation struct {
	Files, Parallel int
	FileTime        time.Duration
	Check           bool // a duplicate-check read before the files
	CheckTime       time.Duration
}

// Time is ceil(Files / Parallel) × FileTime (+ CheckTime).
func (i Invocation) Time() time.Duration {
	waves := int64(math.Ceil(float64(i.Files) / float64(max(i.Parallel, 1))))
	t := time.Duration(waves) * i.FileTime
	if i.Check {
		t += i.CheckTime
	}
	return t
}

// OutputRequests is how many PUT-class S3 requests one output of size bytes takes: one
// PutObject, or a multipart upload (create, the parts, complete) above the part size.
func OutputRequests(size, partSize int64) int64 {
	if partSize <= 0 || size <= partSize {
		return 1
	}
	parts := (size + partSize - 1) / partSize
	return parts + 2
}

// ParseSize reads a size: "100KB" (1000s), "100KiB" (1024s), "1.5MB", "2GiB", "512B"
// or a number of bytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"B", 1}}
	mult := 1.0
	up := strings.ToUpper(t)
	for _, u := range units {
		if strings.HasSuffix(up, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("size %q: want a number of bytes, or with KB, KiB, MB, MiB, GB, GiB", s)
	}
	if n := math.Round(f * mult); n < math.MaxInt64 {
		return int64(n), nil
	}
	return 0, fmt.Errorf("size %q: over %d bytes", s, int64(math.MaxInt64))
}

// ParseCount reads a count written as 1000000, 1e6 or 1_000_000.
func ParseCount(s string) (int64, error) {
	t := strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(s), "_", ""), ",", "")
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f > 1e15 || f != math.Trunc(f) {
		return 0, fmt.Errorf("count %q: want a whole number such as 1000000 or 1e6", s)
	}
	return int64(f), nil
}
