// Package fnenv is the contract between the Pulumi component and the functions it
// deploys: the environment variables each function reads, and their parsing into the
// settings every function shares. It imports nothing of fileflow's, so the component
// (pkg/pipeline), the functions' mains and the handlers can all depend on it.
//
// Parsing follows one rule: read every variable, apply the defaults once, then
// validate, naming every missing or invalid variable in one error.
package fnenv

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The variables. The component sets them; [Parse] and the handlers' configs read them.
const (
	Table           = "FILEFLOW_TABLE"                // the ledger table's name
	OutputBucket    = "FILEFLOW_OUTPUT_BUCKET"        // where outputs and job reports go
	OutputPrefix    = "FILEFLOW_OUTPUT_PREFIX"        // prepended to every output key
	MaxReceiveCount = "FILEFLOW_MAX_RECEIVE_COUNT"    // the function's queue's redrive maxReceiveCount
	LedgerTTLDays   = "FILEFLOW_LEDGER_TTL_DAYS"      // 0: ledger records never expire
	CompletionTopic = "FILEFLOW_COMPLETION_TOPIC_ARN" // SNS topic a finished job is announced on
	TasksQueueURL   = "FILEFLOW_TASKS_QUEUE_URL"      // the worker's queue: task messages of files
	JobsQueueURL    = "FILEFLOW_JOBS_QUEUE_URL"       // the dispatcher's queue: fan-out and finalize tasks
	// ForwardJobSpecs ("true"): S3 events of job specs (jobs/*.json) reach the worker
	// (the ingest notification covers jobs/), which forwards them to the jobs queue.
	ForwardJobSpecs = "FILEFLOW_FORWARD_JOB_SPECS"

	// The worker's own.
	Rules          = "FILEFLOW_RULES"           // processing rules, JSON (process.ParseRules)
	Concurrency    = "FILEFLOW_CONCURRENCY"     // files of one batch processed at once
	BackoffBase    = "FILEFLOW_BACKOFF_BASE"    // retry backoff base, a duration
	BackoffCap     = "FILEFLOW_BACKOFF_CAP"     // retry backoff cap, a duration
	PartSizeMB     = "FILEFLOW_PART_SIZE_MB"    // multipart part size
	MinItemTime    = "FILEFLOW_MIN_ITEM_TIME"   // no file starts with less of the invocation left
	DuplicateCheck = "FILEFLOW_DUPLICATE_CHECK" // "auto", "always" or "redelivery"
	// ArchiveMaxMemberBytes and ArchiveMaxRatio bound what one zip member may expand to.
	ArchiveMaxMemberBytes = "FILEFLOW_ARCHIVE_MAX_MEMBER_BYTES"
	ArchiveMaxRatio       = "FILEFLOW_ARCHIVE_MAX_RATIO"

	// FunctionName is set by Lambda itself; it names the metrics' dimension.
	FunctionName = "AWS_LAMBDA_FUNCTION_NAME"
)

// Common are the settings every function reads.
type Common struct {
	Table           string
	OutputBucket    string
	OutputPrefix    string
	MaxReceiveCount int
	LedgerTTL       time.Duration
	CompletionTopic string
	TasksQueueURL   string
	JobsQueueURL    string
	ForwardJobSpecs bool
	FunctionName    string
}

// Reader reads variables from getenv and collects every problem; [Reader.Err] joins
// them. Handlers use it for their own variables after [Parse].
type Reader struct {
	getenv func(string) string
	errs   []error
}

// NewReader returns a reader over getenv (os.Getenv in a Lambda).
func NewReader(getenv func(string) string) *Reader { return &Reader{getenv: getenv} }

// String returns the trimmed value, or def if unset.
func (r *Reader) String(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

// Required returns the trimmed value; unset is an error.
func (r *Reader) Required(name string) string {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		r.errs = append(r.errs, fmt.Errorf("%s is required", name))
	}
	return v
}

// Int returns a whole number in lo..hi, or def if unset.
func (r *Reader) Int(name string, def, lo, hi int) int {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want a whole number in %d..%d", name, v, lo, hi))
		return def
	}
	return n
}

// Int64 is [Reader.Int] for 64-bit values.
func (r *Reader) Int64(name string, def, lo, hi int64) int64 {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want a whole number in %d..%d", name, v, lo, hi))
		return def
	}
	return n
}

// Duration returns a duration (like 2s) in lo..hi, or def if unset.
func (r *Reader) Duration(name string, def, lo, hi time.Duration) time.Duration {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want a duration (like 2s) in %s..%s", name, v, lo, hi))
		return def
	}
	return d
}

// Bool is true for "true", false for unset or "false"; anything else is an error.
func (r *Reader) Bool(name string) bool {
	switch v := strings.TrimSpace(r.getenv(name)); v {
	case "", "false":
		return false
	case "true":
		return true
	default:
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want true or false", name, v))
		return false
	}
}

// Fail adds a problem found by the caller.
func (r *Reader) Fail(err error) { r.errs = append(r.errs, err) }

// Err is every problem found so far, or nil.
func (r *Reader) Err() error { return errors.Join(r.errs...) }

// Parse reads the common settings. The error names every missing or invalid variable.
func Parse(getenv func(string) string) (Common, error) {
	r := NewReader(getenv)
	c := r.Common()
	return c, r.Err()
}

// Common reads the common settings into the reader's errors.
func (r *Reader) Common() Common {
	return Common{
		Table:           r.Required(Table),
		OutputBucket:    r.Required(OutputBucket),
		OutputPrefix:    r.getenv(OutputPrefix),             // not trimmed: a prefix may end in a space
		MaxReceiveCount: r.Int(MaxReceiveCount, 0, 1, 1000), // 0: the handler's default
		LedgerTTL:       time.Duration(r.Int(LedgerTTLDays, 0, 0, 3650)) * 24 * time.Hour,
		CompletionTopic: r.String(CompletionTopic, ""),
		TasksQueueURL:   r.String(TasksQueueURL, ""),
		JobsQueueURL:    r.String(JobsQueueURL, ""),
		ForwardJobSpecs: r.Bool(ForwardJobSpecs),
		FunctionName:    r.String(FunctionName, ""),
	}
}

// ReconcileBody is the message the component's schedule sends to the jobs queue every
// few minutes (an EventBridge rule with an SQS target and this constant input; the local
// stack sends it from a ticker). The dispatcher then re-checks every running job: it
// completes those whose work is done, requests a finalize that was lost, and reports
// tasks stuck in a dead-letter queue.
const ReconcileBody = `{"v":1,"step":"reconcile"}`

// The dispatcher's dead-letter queues to peek at when it reconciles (job tasks stuck
// there are reported on their job).
const (
	TasksDLQURL = "FILEFLOW_TASKS_DLQ_URL"
	JobsDLQURL  = "FILEFLOW_JOBS_DLQ_URL"
)
