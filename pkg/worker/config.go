package worker

import (
	"errors"
	"fmt"
	"time"

	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/upload"
)

// Config is the worker's configuration, read once per execution environment. [New]
// applies the defaults once, then validates.
type Config struct {
	Table        string        // ledger table name
	OutputBucket string        // where outputs go
	OutputPrefix string        // prepended to every output key
	Rules        process.Rules // which processors apply to which files; default process.DefaultRules
	// Concurrency bounds how many files of one batch are processed at once; default 8.
	Concurrency int
	// MaxReceiveCount is the tasks queue's redrive maxReceiveCount (default 5): on that
	// receive a failing message is about to go to the DLQ, and a missing object is given
	// up on.
	MaxReceiveCount int
	Retry           retry.Policy  // default retry.DefaultPolicy
	PartSize        int           // multipart part size; memory per file in flight; default upload.DefaultPartSize
	LedgerTTL       time.Duration // 0: ledger records never expire
	// MinItemTime: no file is started with less of the invocation left; it is reported
	// as a batch item failure instead and comes back after its visibility timeout.
	MinItemTime time.Duration
	// Margin is kept free before the invocation deadline for the final ledger writes,
	// visibility changes and the response; default 2 s (at most a tenth of the invocation).
	Margin time.Duration
	// CompleteAfter: once an invocation has run this long, each message whose files are
	// all finished is completed at once (its job task counted, the message deleted)
	// instead of when the batch ends, so a crash or timeout later in the batch redoes
	// only the messages still open. Default 500 ms; negative: only when the batch ends.
	CompleteAfter time.Duration
	// FunctionName is the metric dimension (AWS_LAMBDA_FUNCTION_NAME in Lambda).
	FunctionName string
	// DuplicateCheck says when the ledger is read before processing a batch's files:
	//   - "auto" (default): always for task messages (a job's files, archive members,
	//     files sent again: often committed before, by re-runs and overlapping jobs), and
	//     for S3 event messages only when redelivered. A new upload's
	//     first event is a duplicate only when S3 sent it twice, which is rare: the read
	//     would cost every file one read request and the ledger one read, to save a GET
	//     and two PUTs on the rare duplicate (break-even near 1% duplicates; docs/cost.md).
	//   - "always": every message, first receive too: a duplicate costs one read per
	//     file and no work.
	//   - "redelivery": only messages received before, jobs' too.
	// A duplicate that is not read first is processed again, writes the same output
	// again and loses the conditional commit: still one record and one count. A late
	// event of a superseded version, not read first, writes its output until its
	// refused commit puts the newest one back: "always" avoids that window.
	DuplicateCheck string
	// CompletionTopic is the SNS topic ARN for job notifications ("" : none).
	CompletionTopic string
	// JobsQueueURL is the dispatcher's queue: finished jobs' finalize tasks go there,
	// and, with ForwardJobSpecs, the S3 events of job specs (jobs/*.json).
	JobsQueueURL    string
	ForwardJobSpecs bool
	// Archive bounds what one zip member may expand to (zip bombs); see [ArchiveLimits].
	Archive ArchiveLimits
}

// ArchiveLimits bound zip members: checked from the central directory before any work
// and enforced while inflating, since a member's header can lie.
type ArchiveLimits struct {
	MaxMemberBytes int64   // uncompressed size of one member; default 4 GiB
	MaxRatio       float64 // uncompressed / compressed size; default 200
}

// The DuplicateCheck values.
const (
	DuplicateCheckAuto       = "auto"
	DuplicateCheckAlways     = "always"
	DuplicateCheckRedelivery = "redelivery"
)

// withDefaults fills every unset field.
func (c Config) withDefaults() Config {
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.MaxReceiveCount == 0 {
		c.MaxReceiveCount = 5
	}
	if c.Retry.Base == 0 && c.Retry.Cap == 0 {
		c.Retry = retry.DefaultPolicy
	}
	if c.PartSize == 0 {
		c.PartSize = upload.DefaultPartSize
	}
	if c.Margin == 0 {
		c.Margin = 2 * time.Second
	}
	if c.CompleteAfter == 0 {
		// Soon: make chaos's tail kills its one busy environment every 1.5-4.5 s.
		c.CompleteAfter = 500 * time.Millisecond
	}
	if c.DuplicateCheck == "" {
		c.DuplicateCheck = DuplicateCheckAuto
	}
	if len(c.Rules) == 0 {
		c.Rules = process.DefaultRules
	}
	if c.Archive.MaxMemberBytes == 0 {
		c.Archive.MaxMemberBytes = 4 << 30
	}
	if c.Archive.MaxRatio == 0 {
		c.Archive.MaxRatio = 200
	}
	return c
}

// validate checks a config with its defaults applied; the error names every bad field.
func (c Config) validate(reg process.Registry) error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("%s = %v: %s", field, v, want))
	}
	if c.OutputBucket == "" {
		bad("OutputBucket", `""`, "required")
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		bad("Concurrency", c.Concurrency, "must be in 1..256")
	}
	if c.MaxReceiveCount < 1 {
		bad("MaxReceiveCount", c.MaxReceiveCount, "must be at least 1")
	}
	if c.PartSize < upload.MinPartSize {
		bad("PartSize", c.PartSize, fmt.Sprintf("must be at least %d", upload.MinPartSize))
	}
	if c.Retry.Base <= 0 || c.Retry.Cap < c.Retry.Base || c.Retry.Cap > retry.MaxVisibility {
		bad("Retry", fmt.Sprintf("base %s cap %s", c.Retry.Base, c.Retry.Cap), fmt.Sprintf("want 0 < base <= cap <= %s", retry.MaxVisibility))
	}
	if c.MinItemTime < 0 || c.Margin < 0 {
		bad("MinItemTime/Margin", fmt.Sprintf("%s/%s", c.MinItemTime, c.Margin), "must not be negative")
	}
	if c.DuplicateCheck != DuplicateCheckAuto && c.DuplicateCheck != DuplicateCheckAlways && c.DuplicateCheck != DuplicateCheckRedelivery {
		bad("DuplicateCheck", fmt.Sprintf("%q", c.DuplicateCheck), fmt.Sprintf("want %q, %q or %q", DuplicateCheckAuto, DuplicateCheckAlways, DuplicateCheckRedelivery))
	}
	if c.Archive.MaxMemberBytes < 1 || c.Archive.MaxRatio < 1 {
		bad("Archive", fmt.Sprintf("%+v", c.Archive), "MaxMemberBytes and MaxRatio must be at least 1")
	}
	if err := c.Rules.Validate(reg); err != nil {
		errs = append(errs, fmt.Errorf("rules: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("worker: invalid configuration: %w", errors.Join(errs...))
	}
	return nil
}

// ConfigFromEnv reads the configuration the component sets (see package fnenv). getenv
// is os.Getenv in a Lambda. The error names every missing or invalid variable at once;
// defaults are applied, and the rest validated, by [New].
func ConfigFromEnv(getenv func(string) string, reg process.Registry) (Config, error) {
	r := fnenv.NewReader(getenv)
	common := r.Common()
	cfg := Config{
		Table:           common.Table,
		OutputBucket:    common.OutputBucket,
		OutputPrefix:    common.OutputPrefix,
		MaxReceiveCount: common.MaxReceiveCount,
		LedgerTTL:       common.LedgerTTL,
		FunctionName:    common.FunctionName,
		CompletionTopic: common.CompletionTopic,
		JobsQueueURL:    common.JobsQueueURL,
		ForwardJobSpecs: common.ForwardJobSpecs,
		Concurrency:     r.Int(fnenv.Concurrency, 0, 1, 256),
		PartSize:        r.Int(fnenv.PartSizeMB, 0, upload.MinPartSize>>20, 512) << 20,
		MinItemTime:     r.Duration(fnenv.MinItemTime, 5*time.Second, 0, 15*time.Minute),
		DuplicateCheck:  r.String(fnenv.DuplicateCheck, ""),
		Archive: ArchiveLimits{
			MaxMemberBytes: r.Int64(fnenv.ArchiveMaxMemberBytes, 0, 1, 1<<50),
			MaxRatio:       float64(r.Int(fnenv.ArchiveMaxRatio, 0, 1, 1<<20)),
		},
	}
	cfg.Retry = retry.DefaultPolicy
	cfg.Retry.Base = r.Duration(fnenv.BackoffBase, cfg.Retry.Base, time.Second, time.Hour)
	cfg.Retry.Cap = r.Duration(fnenv.BackoffCap, cfg.Retry.Cap, time.Second, retry.MaxVisibility)
	if cfg.Retry.Cap < cfg.Retry.Base {
		r.Fail(fmt.Errorf("%s (%s) is below %s (%s)", fnenv.BackoffCap, cfg.Retry.Cap, fnenv.BackoffBase, cfg.Retry.Base))
	}
	if raw := r.String(fnenv.Rules, ""); raw != "" {
		rules, err := process.ParseRules([]byte(raw), reg)
		if err != nil {
			r.Fail(fmt.Errorf("%s: %w", fnenv.Rules, err))
		} else {
			cfg.Rules = rules
		}
	}
	if d := cfg.DuplicateCheck; d != "" && d != DuplicateCheckAlways && d != DuplicateCheckRedelivery {
		r.Fail(fmt.Errorf("%s=%q: want %q or %q", fnenv.DuplicateCheck, d, DuplicateCheckAlways, DuplicateCheckRedelivery))
	}
	if err := r.Err(); err != nil {
		return Config{}, fmt.Errorf("worker: invalid configuration: %w", err)
	}
	return cfg, nil
}
