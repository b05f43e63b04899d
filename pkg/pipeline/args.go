package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/fileflow/fileflow/pkg/process"
)

// Args configure a [Pipeline]. They are plain Go values, not pulumi.Inputs, because every
// one of them is checked (and some derived, like visibility timeouts) at plan time.
// Zero values take the documented defaults; [Args.Validate] reports every invalid field
// with its value and the allowed range.
type Args struct {
	// Code is each function's deployment package, by function name (the directory under
	// functions/). "worker" is required; each function gets its own queue, DLQ, event
	// source mapping, role, log group and alarms.
	Code map[string]Code

	// Functions configures each function by name; a function in Code without an entry
	// here takes [DefaultFunction].
	Functions map[string]FunctionArgs

	// IngestPrefix and IngestSuffix filter which uploads to the ingest bucket notify the
	// tasks queue (S3 event notification filters). Empty: every object.
	IngestPrefix string
	IngestSuffix string
	// Ingest is how uploads reach the queues: "notification" (default: S3 event
	// notifications) or "eventbridge" (the bucket's events go to EventBridge, whose
	// rules match Object Created events with the prefix/suffix filter and send them to
	// the tasks queue, job specs to the jobs queue).
	Ingest string
	// ReconcileMinutes: with the dispatch function, an EventBridge schedule sends the
	// jobs queue a reconcile request this often (1..1440, default 5).
	ReconcileMinutes int
	// OutputPrefix is prepended to every output key.
	OutputPrefix string
	// Rules choose the worker's processors per file; empty means process.DefaultRules.
	Rules process.Rules
	// DuplicateCheck is the worker's "auto" (default), "always" or "redelivery"; see
	// worker.Config.DuplicateCheck.
	DuplicateCheck string

	// MaxReceiveCount: receives before SQS moves a message to its DLQ (1..1000, default 5).
	MaxReceiveCount int
	// RetentionSeconds of the work queues (60..1209600, default 4 days). DLQs keep 14 days.
	RetentionSeconds int

	// ExpireOutputsDays, if > 0, expires output objects after that many days.
	ExpireOutputsDays int
	// ExpireIngestDays, if > 0, expires ingested objects after that many days.
	ExpireIngestDays int
	// ForceDestroy lets `pulumi destroy` delete non-empty buckets (dev stages).
	ForceDestroy bool
	// Protect marks the buckets, the ledger table and the key Protect and RetainOnDelete:
	// `pulumi destroy` refuses, and dropping them from the program leaves them in AWS.
	Protect bool
	// CustomerManagedKey encrypts the buckets, queues, topics, ledger and log groups
	// with one customer-managed KMS key of the pipeline (rotated yearly) instead of
	// AWS-owned and AWS-managed keys.
	CustomerManagedKey bool

	Table TableArgs

	// LogRetentionDays of every function's log group (a CloudWatch Logs value, default 30).
	LogRetentionDays int
	// Tracing turns on X-Ray active tracing for every function.
	Tracing bool

	// AlarmEmail, if set, subscribes this address to the alarm topic.
	AlarmEmail string
	// OldestMessageAlarmSeconds: alarm when a work queue's oldest message is older
	// (default 900).
	OldestMessageAlarmSeconds int
	// QueueDepthAlarm: alarm when a work queue holds more visible messages (default 100000).
	QueueDepthAlarm int
	// DLQAgeAlarmSeconds: alarm when a DLQ's oldest message is older, i.e. will expire
	// (DLQs keep 14 days) unless redriven soon (default 7 days).
	DLQAgeAlarmSeconds int

	// Tags are added to every resource that takes tags.
	Tags map[string]string
}

// Code is one function's deployment package.
type Code struct {
	Archive pulumi.Archive // a zip holding `bootstrap`
	// Hash is the base64 SHA-256 of the zip (Lambda's source code hash): the function is
	// updated exactly when it changes.
	Hash string
}

// FunctionArgs configure one function and its event source mapping.
type FunctionArgs struct {
	MemoryMB       int // 128..10240, default 512
	TimeoutSeconds int // 1..900, default 60
	// ReservedConcurrency, if > 0, reserves (and caps) that much of the account's
	// concurrency for the function and must be >= MaxConcurrency, so the mapping is
	// never throttled by other functions. 0 (the default): no reservation — the function
	// shares the account's unreserved pool, which deploys on any account (Lambda keeps
	// 100 unreserved: reservations need an account quota of their sum + 100).
	ReservedConcurrency int
	BatchSize           int // 1..10000, default 10; above 10 needs a batching window
	BatchingWindowSec   int // 0..300, default 0
	MaxConcurrency      int // the mapping's ScalingConfig.MaximumConcurrency, 2..1000, default 50
	// ProvisionedConcurrency, if > 0, keeps that many environments warm behind an alias,
	// scaled by Application Auto Scaling up to ProvisionedMax on utilization. It is billed
	// while idle: a stage that sets it no longer scales to zero cost.
	ProvisionedConcurrency int
	ProvisionedMax         int
	// Env adds environment variables (FILEFLOW_* are set by the component).
	Env map[string]string
}

// TableArgs configure the ledger table.
type TableArgs struct {
	// Provisioned switches from on-demand to provisioned capacity with Application Auto
	// Scaling between the Min and Max read/write units, targeting 70% utilization.
	Provisioned             bool
	MinRead, MaxRead        int
	MinWrite, MaxWrite      int
	PointInTimeRecovery     bool
	DeletionProtection      bool
	TTLDays                 int // ledger records expire this long after their last update; 0 keeps them
	FailureIndexCapacityRCU int // provisioned mode only: the sparse failure index's units (default 5)
}

// DefaultFunction is what a function without FunctionArgs gets.
var DefaultFunction = FunctionArgs{MemoryMB: 512, TimeoutSeconds: 60, BatchSize: 10, MaxConcurrency: 50}

// logRetentionDays are the values CloudWatch Logs accepts.
var logRetentionDays = []int{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

// functionQueues maps each known function to the queue that triggers it.
var functionQueues = map[string]string{"worker": "tasks", "dispatch": "jobs"}

// withDefaults returns a copy with defaults filled in for the named functions.
func (a Args) withDefaults(functions []string) Args {
	fns := make(map[string]FunctionArgs, len(functions))
	for _, name := range functions {
		f := a.Functions[name]
		d := DefaultFunction
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
		if f.ProvisionedConcurrency > 0 && f.ProvisionedMax == 0 {
			f.ProvisionedMax = f.ProvisionedConcurrency
		}
		fns[name] = f
	}
	a.Functions = fns
	if a.MaxReceiveCount == 0 {
		a.MaxReceiveCount = 5
	}
	if a.RetentionSeconds == 0 {
		a.RetentionSeconds = 4 * 24 * 3600
	}
	if a.LogRetentionDays == 0 {
		a.LogRetentionDays = 30
	}
	if a.OldestMessageAlarmSeconds == 0 {
		a.OldestMessageAlarmSeconds = 900
	}
	if a.QueueDepthAlarm == 0 {
		a.QueueDepthAlarm = 100_000
	}
	if a.DLQAgeAlarmSeconds == 0 {
		a.DLQAgeAlarmSeconds = 7 * 24 * 3600
	}
	if a.Ingest == "" {
		a.Ingest = IngestNotification
	}
	if a.ReconcileMinutes == 0 {
		a.ReconcileMinutes = 5
	}
	if len(a.Rules) == 0 {
		a.Rules = process.DefaultRules
	}
	if a.Table.Provisioned {
		if a.Table.MinRead == 0 {
			a.Table.MinRead = 5
		}
		if a.Table.MinWrite == 0 {
			a.Table.MinWrite = 5
		}
		if a.Table.MaxRead == 0 {
			a.Table.MaxRead = max(a.Table.MinRead, 100)
		}
		if a.Table.MaxWrite == 0 {
			a.Table.MaxWrite = max(a.Table.MinWrite, 100)
		}
		if a.Table.FailureIndexCapacityRCU == 0 {
			a.Table.FailureIndexCapacityRCU = 5
		}
	}
	return a
}

// VisibilityTimeout is the visibility timeout the component gives a function's queue:
// 6 x the function timeout + the batching window (AWS's guidance for Lambda triggers).
func VisibilityTimeout(f FunctionArgs) int { return 6*f.TimeoutSeconds + f.BatchingWindowSec }

// Validate checks the args (after defaults) and returns every problem at once. Each
// message names the field, its value and what is allowed.
func (a Args) Validate() error {
	var errs []error
	for name, c := range a.Code {
		if c.Archive == nil {
			errs = append(errs, fmt.Errorf("Code[%s].Archive = nil: a zip holding bootstrap is required", name))
		}
	}
	if err := a.ValidateFor(sortedKeys(a.Code)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ValidateFor checks every setting for a pipeline of the named functions, without the
// code itself (stage configuration is checked this way before anything is built).
func (a Args) ValidateFor(functions []string) error {
	var errs []error
	for _, name := range functions {
		if _, ok := functionQueues[name]; !ok {
			errs = append(errs, fieldErr("Code["+name+"]", "unknown function (known: dispatch, worker)"))
		}
	}
	if !slices.Contains(functions, "worker") {
		errs = append(errs, fieldErr("Code", `the "worker" function is required`))
	}
	for name := range a.Functions {
		if !slices.Contains(functions, name) {
			errs = append(errs, fieldErr("Functions["+name+"]", "configures a function that has no code"))
		}
	}
	a = a.withDefaults(functions)
	bad := func(field string, v any, allowed string) {
		errs = append(errs, fmt.Errorf("%s = %v: %s", field, v, allowed))
	}
	inRange := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(field, v, fmt.Sprintf("must be in %d..%d", lo, hi))
		}
	}
	for _, name := range sortedKeys(a.Functions) {
		f := a.Functions[name]
		p := "Functions[" + name + "]."
		inRange(p+"MemoryMB", f.MemoryMB, 128, 10240)
		inRange(p+"TimeoutSeconds", f.TimeoutSeconds, 1, 900)
		inRange(p+"BatchSize", f.BatchSize, 1, 10000)
		inRange(p+"BatchingWindowSec", f.BatchingWindowSec, 0, 300)
		if f.BatchSize > 10 && f.BatchingWindowSec < 1 {
			bad(p+"BatchingWindowSec", f.BatchingWindowSec, fmt.Sprintf("must be >= 1 when BatchSize (%d) is above 10", f.BatchSize))
		}
		inRange(p+"MaxConcurrency", f.MaxConcurrency, 2, 1000)
		if f.ReservedConcurrency != 0 && f.ReservedConcurrency < f.MaxConcurrency {
			bad(p+"ReservedConcurrency", f.ReservedConcurrency, fmt.Sprintf("must be 0 (none) or >= MaxConcurrency (%d), or the mapping is throttled", f.MaxConcurrency))
		}
		inRange(p+"ReservedConcurrency", f.ReservedConcurrency, 0, 10000)
		if v := VisibilityTimeout(f); v > 43200 {
			bad(p+"TimeoutSeconds", f.TimeoutSeconds, fmt.Sprintf("gives a visibility timeout of %d s (6 x timeout + batching window), above SQS's 43200", v))
		}
		if f.ProvisionedConcurrency < 0 {
			bad(p+"ProvisionedConcurrency", f.ProvisionedConcurrency, "must be >= 0")
		}
		if f.ProvisionedConcurrency > 0 {
			if f.ProvisionedMax < f.ProvisionedConcurrency {
				bad(p+"ProvisionedMax", f.ProvisionedMax, fmt.Sprintf("must be >= ProvisionedConcurrency (%d)", f.ProvisionedConcurrency))
			}
			if f.ReservedConcurrency > 0 && f.ProvisionedMax > f.ReservedConcurrency {
				bad(p+"ProvisionedMax", f.ProvisionedMax, fmt.Sprintf("must be <= ReservedConcurrency (%d)", f.ReservedConcurrency))
			}
		}
		for k := range f.Env {
			if strings.HasPrefix(k, "FILEFLOW_") || strings.HasPrefix(k, "AWS_") {
				bad(p+"Env["+k+"]", k, "FILEFLOW_* and AWS_* are set by the component")
			}
		}
	}
	if a.DuplicateCheck != "" && a.DuplicateCheck != "auto" && a.DuplicateCheck != "always" && a.DuplicateCheck != "redelivery" {
		bad("DuplicateCheck", a.DuplicateCheck, `must be "auto", "always" or "redelivery"`)
	}
	inRange("MaxReceiveCount", a.MaxReceiveCount, 1, 1000)
	inRange("RetentionSeconds", a.RetentionSeconds, 60, 1209600)
	inRange("ExpireOutputsDays", a.ExpireOutputsDays, 0, 36500)
	inRange("ExpireIngestDays", a.ExpireIngestDays, 0, 36500)
	if !slices.Contains(logRetentionDays, a.LogRetentionDays) {
		bad("LogRetentionDays", a.LogRetentionDays, fmt.Sprintf("must be one of %v", logRetentionDays))
	}
	inRange("OldestMessageAlarmSeconds", a.OldestMessageAlarmSeconds, 60, 1209600)
	inRange("QueueDepthAlarm", a.QueueDepthAlarm, 1, 100_000_000)
	inRange("DLQAgeAlarmSeconds", a.DLQAgeAlarmSeconds, 60, DLQRetentionSeconds-60)
	if a.Ingest != IngestNotification && a.Ingest != IngestEventBridge {
		bad("Ingest", a.Ingest, `must be "notification" or "eventbridge"`)
	}
	inRange("ReconcileMinutes", a.ReconcileMinutes, 1, 1440)
	for k, v := range a.Tags {
		if k == "" || len(k) > 128 || len(v) > 256 || strings.HasPrefix(strings.ToLower(k), "aws:") {
			bad("Tags["+k+"]", v, "keys 1..128 characters, not aws:*; values up to 256")
		}
	}
	if a.AlarmEmail != "" && (!strings.Contains(a.AlarmEmail, "@") || strings.ContainsAny(a.AlarmEmail, " ,;")) {
		bad("AlarmEmail", a.AlarmEmail, "must be one e-mail address")
	}
	inRange("Table.TTLDays", a.Table.TTLDays, 0, 3650)
	if a.Table.Provisioned {
		inRange("Table.MinRead", a.Table.MinRead, 1, 40000)
		inRange("Table.MinWrite", a.Table.MinWrite, 1, 40000)
		if a.Table.MaxRead < a.Table.MinRead {
			bad("Table.MaxRead", a.Table.MaxRead, fmt.Sprintf("must be >= Table.MinRead (%d)", a.Table.MinRead))
		}
		if a.Table.MaxWrite < a.Table.MinWrite {
			bad("Table.MaxWrite", a.Table.MaxWrite, fmt.Sprintf("must be >= Table.MinWrite (%d)", a.Table.MinWrite))
		}
	}
	if err := a.Rules.Validate(process.Builtins()); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", "Rules", err))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// fieldErr is an error about one Args field; messages start with the field's Go name.
func fieldErr(field, msg string) error { return fmt.Errorf("%s: %s", field, msg) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
