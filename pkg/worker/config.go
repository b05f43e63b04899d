package worker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/upload"
)

// Config is the worker's configuration, read once per execution environment.
type Config struct {
	Table        string        // ledger table name
	OutputBucket string        // where outputs go
	OutputPrefix string        // prepended to every output key
	Rules        process.Rules // which processors apply to which files
	// Concurrency bounds how many files of one batch are processed at once.
	Concurrency int
	// MaxReceiveCount is the tasks queue's redrive maxReceiveCount: on that receive a
	// failing message is about to go to the DLQ, and a missing object is given up on.
	MaxReceiveCount int
	Retry           retry.Policy
	PartSize        int           // multipart part size; memory per file in flight
	LedgerTTL       time.Duration // 0: ledger records never expire
	// MinItemTime: no file is started with less of the invocation left; it is reported
	// as a batch item failure instead and comes back after its visibility timeout.
	MinItemTime time.Duration
	// Margin is kept free before the invocation deadline for the final ledger writes,
	// visibility changes and the response.
	Margin time.Duration
	// FunctionName is the metric dimension (AWS_LAMBDA_FUNCTION_NAME in Lambda).
	FunctionName string
	// DuplicateCheck says when the ledger is read before processing a batch: "always"
	// (default: a duplicate delivery costs one read per file and no work), or
	// "redelivery" (only for messages received before: a duplicate on its first receive
	// is processed again, overwrites the same output and loses the conditional commit —
	// still one output and one count — which is cheaper when duplicates are rare).
	DuplicateCheck string
	// CompletionTopic is the SNS topic ARN for job notifications ("" : none).
	CompletionTopic string
	// JobsQueueURL is the dispatcher's queue: finished jobs' finalize tasks go there,
	// and, with ForwardJobSpecs, the S3 events of job specs (jobs/*.json).
	JobsQueueURL    string
	ForwardJobSpecs bool
}

// The DuplicateCheck values.
const (
	DuplicateCheckAlways     = "always"
	DuplicateCheckRedelivery = "redelivery"
)

// Environment variables [ConfigFromEnv] reads.
const (
	EnvTable           = "FILEFLOW_TABLE"
	EnvOutputBucket    = "FILEFLOW_OUTPUT_BUCKET"
	EnvOutputPrefix    = "FILEFLOW_OUTPUT_PREFIX"
	EnvRules           = "FILEFLOW_RULES"
	EnvConcurrency     = "FILEFLOW_CONCURRENCY"
	EnvMaxReceiveCount = "FILEFLOW_MAX_RECEIVE_COUNT"
	EnvBackoffBase     = "FILEFLOW_BACKOFF_BASE"
	EnvBackoffCap      = "FILEFLOW_BACKOFF_CAP"
	EnvPartSize        = "FILEFLOW_PART_SIZE_MB"
	EnvLedgerTTLDays   = "FILEFLOW_LEDGER_TTL_DAYS"
	EnvMinItemTime     = "FILEFLOW_MIN_ITEM_TIME"
	EnvDuplicateCheck  = "FILEFLOW_DUPLICATE_CHECK"
	// EnvCompletionTopic is the SNS topic a finished job is announced on (the worker or
	// the dispatcher that finishes a job announces it).
	EnvCompletionTopic = "FILEFLOW_COMPLETION_TOPIC_ARN"
	EnvTasksQueueURL   = "FILEFLOW_TASKS_QUEUE_URL"
	EnvJobsQueueURL    = "FILEFLOW_JOBS_QUEUE_URL"
	// EnvForwardJobSpecs ("true"): S3 events of job specs reach the worker (the ingest
	// notification covers jobs/), which forwards them to the jobs queue.
	EnvForwardJobSpecs = "FILEFLOW_FORWARD_JOB_SPECS"
)

// ConfigFromEnv reads and validates the configuration. getenv is os.Getenv in a Lambda.
// The error names every missing or invalid variable at once.
func ConfigFromEnv(getenv func(string) string, reg process.Registry) (Config, error) {
	var errs []error
	required := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
		return v
	}
	intVar := func(name string, def, lo, hi int) int {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			errs = append(errs, fmt.Errorf("%s=%q: want a whole number in %d..%d", name, v, lo, hi))
			return def
		}
		return n
	}
	durVar := func(name string, def, lo, hi time.Duration) time.Duration {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < lo || d > hi {
			errs = append(errs, fmt.Errorf("%s=%q: want a duration (like 2s) in %s..%s", name, v, lo, hi))
			return def
		}
		return d
	}

	cfg := Config{
		Table:           required(EnvTable),
		OutputBucket:    required(EnvOutputBucket),
		OutputPrefix:    getenv(EnvOutputPrefix),
		Concurrency:     intVar(EnvConcurrency, 8, 1, 256),
		MaxReceiveCount: intVar(EnvMaxReceiveCount, 5, 1, 1000),
		PartSize:        intVar(EnvPartSize, upload.DefaultPartSize>>20, upload.MinPartSize>>20, 512) << 20,
		LedgerTTL:       time.Duration(intVar(EnvLedgerTTLDays, 0, 0, 3650)) * 24 * time.Hour,
		MinItemTime:     durVar(EnvMinItemTime, 5*time.Second, 0, 15*time.Minute),
		Margin:          2 * time.Second,
		FunctionName:    getenv("AWS_LAMBDA_FUNCTION_NAME"),
		CompletionTopic: strings.TrimSpace(getenv(EnvCompletionTopic)),
		JobsQueueURL:    strings.TrimSpace(getenv(EnvJobsQueueURL)),
		ForwardJobSpecs: strings.TrimSpace(getenv(EnvForwardJobSpecs)) == "true",
	}
	switch v := strings.TrimSpace(getenv(EnvDuplicateCheck)); v {
	case "", DuplicateCheckAlways:
		cfg.DuplicateCheck = DuplicateCheckAlways
	case DuplicateCheckRedelivery:
		cfg.DuplicateCheck = v
	default:
		errs = append(errs, fmt.Errorf("%s=%q: want %q or %q", EnvDuplicateCheck, v, DuplicateCheckAlways, DuplicateCheckRedelivery))
	}
	cfg.Retry = retry.DefaultPolicy
	cfg.Retry.Base = durVar(EnvBackoffBase, cfg.Retry.Base, time.Second, time.Hour)
	cfg.Retry.Cap = durVar(EnvBackoffCap, cfg.Retry.Cap, time.Second, retry.MaxVisibility)
	if cfg.Retry.Cap < cfg.Retry.Base {
		errs = append(errs, fmt.Errorf("%s (%s) is below %s (%s)", EnvBackoffCap, cfg.Retry.Cap, EnvBackoffBase, cfg.Retry.Base))
	}

	cfg.Rules = process.DefaultRules
	if raw := strings.TrimSpace(getenv(EnvRules)); raw != "" {
		rules, err := process.ParseRules([]byte(raw), reg)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvRules, err))
		} else {
			cfg.Rules = rules
		}
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("worker: invalid configuration: %w", errors.Join(errs...))
	}
	return cfg, nil
}
