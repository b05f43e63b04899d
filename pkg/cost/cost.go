// Package cost prices file processing on a stage, service by service: Lambda requests
// and GB-seconds, SQS requests in 64 KB units, DynamoDB write and read units, S3
// requests, SNS and CloudWatch — from the stage's settings and the API calls per file
// the local stack measured — and what the stage costs per month while no file arrives.
// The same model prices a naive design (one message and one invocation per file, three
// ledger writes) for comparison.
//
// # Prices
//
// prices.json (embedded) holds the price table: dated, us-east-1, arm64 Lambda, each
// figure with its source (AWS-FACTS.md, or marked as not from it). Free tiers are
// ignored.
//
// # What is priced apart
//
// The ingest PUTs (the uploads themselves, $5.00 per million for every design) are
// excluded, and the outputs' PUTs are a line of their own, as in AWS-FACTS.md's
// reference estimate: the orchestration total compares what the designs do differently.
package cost

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/fileflow/fileflow/pkg/workload"
)

//go:embed prices.json
var pricesJSON []byte

// Prices is the price table, in dollars per unit.
type Prices struct {
	Date                   string            `json:"date"`
	Region                 string            `json:"region"`
	Arch                   string            `json:"arch"`
	LambdaRequest          float64           `json:"lambda_per_request"`
	LambdaGBSecond         float64           `json:"lambda_per_gb_second"`
	LambdaProvisionedGBSec float64           `json:"lambda_provisioned_per_gb_second"`
	SQSRequest             float64           `json:"sqs_per_request"`
	SQSChunkBytes          int               `json:"sqs_chunk_bytes"`
	DynamoWRU              float64           `json:"dynamodb_per_wru"`
	DynamoRRU              float64           `json:"dynamodb_per_rru"`
	DynamoProvisionedWCUHr float64           `json:"dynamodb_provisioned_wcu_hour"`
	DynamoProvisionedRCUHr float64           `json:"dynamodb_provisioned_rcu_hour"`
	S3Put                  float64           `json:"s3_per_put"`
	S3Get                  float64           `json:"s3_per_get"`
	SNSPublish             float64           `json:"sns_per_publish"`
	LogsPerGB              float64           `json:"logs_per_gb_ingested"`
	XRayTrace              float64           `json:"xray_per_trace"`
	AlarmMonth             float64           `json:"alarm_per_month"`
	DashboardMonth         float64           `json:"dashboard_per_month"`
	Sources                map[string]string `json:"sources"`
}

// DefaultPrices is the embedded price table.
func DefaultPrices() (Prices, error) {
	var p Prices
	if err := json.Unmarshal(pricesJSON, &p); err != nil {
		return Prices{}, fmt.Errorf("cost: prices.json: %w", err)
	}
	return p, nil
}

// Calls are API calls per file, by "Service.Operation" (as pkg/meter names them).
type Calls map[string]float64

// Measured is a set of calls per file and where it came from.
type Measured struct {
	Source string
	Calls  Calls
	// DuplicateCheck is the worker's setting when they were measured ("" unknown). A
	// stage that checks only redeliveries does not pay the reads of a run that checked
	// always.
	DuplicateCheck string
}

// MeasuredEvents are the calls per file of `fileflow dev --files 1000 --json` on the
// dev stage (2026-11-30): 1,000 uploads, each an S3 event message, with the demo's 2%
// poison files (no output) and 20 duplicate events. The functions' calls and the
// local mapping's receives and deletes, counted at the proxies.
var MeasuredEvents = Measured{
	Source:         "fileflow dev --files 1000 --json, dev stage, 2026-11-30 (2% poison, 20 duplicate events)",
	DuplicateCheck: "always",
	Calls: Calls{
		"DynamoDB.UpdateItem":    1.021,
		"DynamoDB.BatchGetItem":  0.103,
		"S3.GetObject":           1.001,
		"S3.PutObject":           0.981,
		"SQS.ReceiveMessage":     0.120,
		"SQS.DeleteMessageBatch": 0.103,
		"SQS.GetQueueAttributes": 0.100,
		"SQS.GetQueueUrl":        0.009,
	},
}

// MeasuredJob are the calls per file of a prefix job over 3,000 files in 7 directories on
// the local stack, dev stage (2026-11-30): 30 task messages of 100 files, the listing,
// settlements, the completion check, the report (parts, results, manifest).
var MeasuredJob = Measured{
	Source:         "a 3,000-file prefix job on the local stack, dev stage, 2026-11-30 (30 task messages of 100 files)",
	DuplicateCheck: "always",
	Calls: Calls{
		"DynamoDB.UpdateItem":         1.0013,
		"DynamoDB.BatchGetItem":       0.0173,
		"DynamoDB.GetItem":            0.0163,
		"DynamoDB.Query":              0.0003,
		"DynamoDB.TransactGetItems":   0.0003,
		"DynamoDB.TransactWriteItems": 0.0040,
		"S3.GetObject":                1.0117,
		"S3.ListObjectsV2":            0.0027,
		"S3.PutObject":                1.0127,
		"SQS.ReceiveMessage":          0.0050,
		"SQS.DeleteMessageBatch":      0.0023,
		"SQS.SendMessage":             0.0003,
		"SQS.SendMessageBatch":        0.0027,
		"SQS.GetQueueUrl":             0.0003,
		"SQS.GetQueueAttributes":      0.0693,
	},
}

// Design is how files go through the functions: what [Price] prices.
type Design struct {
	Name               string
	MemoryMB           int
	FilesPerInvocation int
	InvocationTime     time.Duration
	FilesPerMessage    int
	MessageBytes       int
	// Notifications are the messages S3 itself sends to the tasks queue per file (one
	// on the events path): billed SQS requests the local meter does not see.
	Notifications float64
	Calls         Calls
	RecordBytes   int
	// OutputRequests is PUT-class requests per output (more than one when multipart).
	OutputRequests int64
	// SettleItems is the items of one job settlement transaction (a marker per task
	// message of the batch, the parent's check, the shard); CheckItems those of one
	// completion check (the shards and the job).
	SettleItems, CheckItems int
	// LogBytesPerInvocation is what one invocation writes to CloudWatch Logs.
	LogBytesPerInvocation int
	Tracing               bool
}

// Assumptions the designs share, stated once.
const (
	// LogBytesPerInvocation: the worker's "batch done" line (≈330 B in the local
	// function log), its EMF metrics line (≈600 B) and Lambda's START/END/REPORT lines
	// (≈350 B, estimated).
	LogBytesPerInvocation = 1300
	// TraceSampling is X-Ray's default sampling of a busy function: 1 a second, then 5%.
	TraceSampling = 0.05
	// JobShards is a job's counter shards (job.DefaultShards).
	JobShards = 8
)

// StageDesign is the stage as it runs: its memory, batch and parallelism, the
// workload's files per message, and the measured calls per file — without the duplicate
// check's reads when they were measured checking always and the stage does not read a
// first delivery on the workload's path (redeliveries' reads, a few per hundred files,
// the model leaves out).
func StageDesign(s workload.Stage, w workload.Workload, m Measured) Design {
	w = w.WithDefaults()
	calls := m.Calls
	if m.DuplicateCheck == "always" && !s.Checks(w.Path) {
		calls = maps.Clone(calls)
		delete(calls, "DynamoDB.BatchGetItem")
	}
	return Design{
		Name:                  s.Name,
		MemoryMB:              s.Worker.MemoryMB,
		FilesPerInvocation:    w.FilesPerInvocation(s),
		InvocationTime:        w.InvocationTime(s),
		FilesPerMessage:       w.FilesPerMessage(),
		MessageBytes:          w.MessageBytes(),
		Notifications:         notifications(w.Path),
		Calls:                 calls,
		RecordBytes:           w.RecordBytes,
		OutputRequests:        workload.OutputRequests(w.SizeBytes, s.PartSizeBytes),
		SettleItems:           s.Worker.BatchSize + 2,
		CheckItems:            JobShards + 1,
		LogBytesPerInvocation: LogBytesPerInvocation,
		Tracing:               s.Tracing,
	}
}

func notifications(p workload.Path) float64 {
	if p == workload.Events {
		return 1
	}
	return 0
}

// NaiveDesign is the design fileflow is compared with, on the same stage and files:
// each file its own SQS message (an S3 event) and its own invocation, no duplicate
// check, three ledger writes (claim, start, commit), one receive and one delete per
// message, one file's time per invocation.
func NaiveDesign(s workload.Stage, w workload.Workload) Design {
	w = w.WithDefaults()
	return Design{
		Name:               "naive",
		MemoryMB:           s.Worker.MemoryMB,
		FilesPerInvocation: 1,
		InvocationTime:     workload.Invocation{Files: 1, Parallel: 1, FileTime: w.FileTime}.Time(),
		FilesPerMessage:    1,
		MessageBytes:       workload.S3EventBytes,
		Notifications:      1,
		Calls: Calls{
			"DynamoDB.UpdateItem": 3,
			"S3.GetObject":        1,
			"S3.PutObject":        1,
			"SQS.ReceiveMessage":  1,
			"SQS.DeleteMessage":   1,
		},
		RecordBytes:           w.RecordBytes,
		OutputRequests:        workload.OutputRequests(w.SizeBytes, s.PartSizeBytes),
		LogBytesPerInvocation: LogBytesPerInvocation,
		Tracing:               s.Tracing,
	}
}

// Line is one service's share.
type Line struct {
	Service string  `json:"service"`
	Units   float64 `json:"units"`
	Unit    string  `json:"unit"`
	USD     float64 `json:"usd"`
}

// Estimate is a design's cost for a number of files.
type Estimate struct {
	Design string `json:"design"`
	Files  int64  `json:"files"`
	// Lines are the orchestration's services, always in the same order.
	Lines []Line `json:"lines"`
	// Orchestration is the sum of Lines: what the designs do differently.
	Orchestration float64 `json:"orchestration_usd"`
	// Outputs are the outputs' PUTs, apart (the same for every design writing them).
	Outputs Line `json:"outputs"`
	// Ingest is the uploads' PUTs: excluded from every total.
	Ingest Line `json:"ingest_excluded"`
	// Unpriced are operations in the calls that the model has no rule for.
	Unpriced []string `json:"unpriced,omitempty"`
	// NotBilled are operations counted locally that AWS does not bill as such.
	NotBilled []string `json:"not_billed,omitempty"`
}

// Line names, in order.
const (
	LambdaRequests = "Lambda requests"
	LambdaCompute  = "Lambda compute"
	SQSRequests    = "SQS requests (64 KB units)"
	DynamoWrites   = "DynamoDB writes"
	DynamoReads    = "DynamoDB reads"
	S3Gets         = "S3 GET/HEAD"
	S3Puts         = "S3 PUT/COPY/LIST (not outputs)"
	SNS            = "SNS publishes"
	Logs           = "CloudWatch Logs"
	XRay           = "X-Ray traces"
)

// usage is what one file consumes, in billed units.
type usage struct {
	requests, gbs, sqs, wru, rru, get, put, outputs, sns, logBytes, traces float64
	unpriced, notBilled                                                    []string
}

// notBilled are operations the local stack counts but AWS does not bill as such: the
// local mapping polls its queue's depth to scale; Lambda's pollers bill receives and
// deletes only.
var notBilled = map[string]bool{"SQS.GetQueueAttributes": true}

// capped is the items one batch call handles: the files behind it, within the API's
// maximum.
func capped(callsPerFile float64, maxItems int) float64 {
	if callsPerFile <= 0 {
		return 0
	}
	return math.Min(float64(maxItems), math.Max(1, 1/callsPerFile))
}

func (d Design) usage(p Prices) usage {
	var u usage
	fpi := float64(max(d.FilesPerInvocation, 1))
	u.requests = 1 / fpi
	u.gbs = float64(d.MemoryMB) / 1024 * d.InvocationTime.Seconds() / fpi
	u.logBytes = float64(d.LogBytesPerInvocation) / fpi
	if d.Tracing {
		u.traces = TraceSampling / fpi
	}
	chunks := func(bytes float64) float64 {
		return math.Max(1, math.Ceil(bytes/float64(p.SQSChunkBytes)))
	}
	msgPerFile := 1 / float64(max(d.FilesPerMessage, 1))
	wruPerWrite := math.Ceil(float64(d.RecordBytes) / 1024)
	rruPerRead := math.Ceil(float64(d.RecordBytes) / 4096)

	u.sqs += d.Notifications * chunks(float64(d.MessageBytes))
	for _, op := range sortedOps(d.Calls) {
		n := d.Calls[op]
		if n == 0 {
			continue
		}
		switch op {
		// SQS: each call is a request per 64 KB of payload it carries.
		case "SQS.ReceiveMessage", "SQS.SendMessageBatch":
			msgs := math.Min(10, math.Max(1, msgPerFile/n)) // messages per call
			u.sqs += n * chunks(msgs*float64(d.MessageBytes))
		case "SQS.SendMessage":
			u.sqs += n * chunks(float64(d.MessageBytes))
		case "SQS.DeleteMessage", "SQS.DeleteMessageBatch", "SQS.ChangeMessageVisibility",
			"SQS.ChangeMessageVisibilityBatch", "SQS.GetQueueUrl", "SQS.PurgeQueue":
			u.sqs += n
		// DynamoDB on demand: a write unit per KB written, a strongly consistent read unit
		// per 4 KB; transactions cost double.
		case "DynamoDB.UpdateItem", "DynamoDB.PutItem", "DynamoDB.DeleteItem":
			u.wru += n * wruPerWrite
		case "DynamoDB.BatchWriteItem":
			u.wru += n * capped(n, 25) * wruPerWrite
		case "DynamoDB.TransactWriteItems":
			u.wru += n * 2 * float64(max(d.SettleItems, 1)) * wruPerWrite
		case "DynamoDB.GetItem", "DynamoDB.Query", "DynamoDB.Scan":
			u.rru += n * rruPerRead
		case "DynamoDB.BatchGetItem":
			u.rru += n * capped(n, 100) * rruPerRead
		case "DynamoDB.TransactGetItems":
			u.rru += n * 2 * float64(max(d.CheckItems, 1)) * rruPerRead
		// S3: GET-class and PUT-class requests; a file's first PUT is its output.
		case "S3.GetObject", "S3.HeadObject":
			u.get += n
		case "S3.PutObject":
			out := math.Min(n, 1)
			u.outputs += out * float64(max(d.OutputRequests, 1))
			u.put += n - out
		case "S3.CopyObject", "S3.UploadPart", "S3.UploadPartCopy", "S3.CreateMultipartUpload",
			"S3.CompleteMultipartUpload", "S3.ListObjectsV2", "S3.ListObjects", "S3.ListObjectVersions":
			u.put += n
		case "S3.DeleteObject", "S3.DeleteObjects", "S3.AbortMultipartUpload":
			// free
		case "SNS.Publish":
			u.sns += n
		default:
			if notBilled[op] {
				u.notBilled = append(u.notBilled, op)
			} else {
				u.unpriced = append(u.unpriced, op)
			}
		}
	}
	return u
}

func sortedOps(c Calls) []string {
	ops := make([]string, 0, len(c))
	for op := range c {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	return ops
}

// Price is the design's cost for files files.
func Price(d Design, files int64, p Prices) Estimate {
	u := d.usage(p)
	n := float64(files)
	line := func(service, unit string, perFile, price float64) Line {
		return Line{Service: service, Units: perFile * n, Unit: unit, USD: perFile * n * price}
	}
	e := Estimate{Design: d.Name, Files: files, Unpriced: u.unpriced, NotBilled: u.notBilled}
	e.Lines = []Line{
		line(LambdaRequests, "requests", u.requests, p.LambdaRequest),
		line(LambdaCompute, "GB-s", u.gbs, p.LambdaGBSecond),
		line(SQSRequests, "requests", u.sqs, p.SQSRequest),
		line(DynamoWrites, "WRU", u.wru, p.DynamoWRU),
		line(DynamoReads, "RRU", u.rru, p.DynamoRRU),
		line(S3Gets, "requests", u.get, p.S3Get),
		line(S3Puts, "requests", u.put, p.S3Put),
		line(SNS, "publishes", u.sns, p.SNSPublish),
		line(Logs, "GB", u.logBytes/1e9, p.LogsPerGB),
		line(XRay, "traces", u.traces, p.XRayTrace),
	}
	for _, l := range e.Lines {
		e.Orchestration += l.USD
	}
	e.Outputs = line("S3 PUTs of the outputs", "requests", u.outputs, p.S3Put)
	e.Ingest = line("S3 PUTs of the uploads (excluded)", "requests", 1, p.S3Put)
	return e
}

// Line returns the estimate's line for a service.
func (e Estimate) Line(service string) Line {
	for _, l := range e.Lines {
		if l.Service == service {
			return l
		}
	}
	return Line{Service: service}
}

// IdleLine is one thing a stage pays for each month whether files arrive or not.
type IdleLine struct {
	What        string  `json:"what"`
	Detail      string  `json:"detail"`
	USDPerMonth float64 `json:"usd_per_month"`
	// Setting is true for what the stage chose (provisioned concurrency, alarms, a
	// dashboard, provisioned table capacity), false for what any deployment pays.
	Setting bool `json:"setting"`
}

// Idle assumptions.
const (
	HoursPerMonth = 730
	// IdlePollers is how many pollers an idle SQS mapping keeps (AWS-FACTS.md: it
	// scales down to 2 when traffic is low), each a 20 s long poll: 3 receives a minute.
	IdlePollers          = 2
	IdleReceivesPerMin   = 3
	FreeDashboards       = 3
	ReconcileEvery       = 5 * time.Minute // job.ReconcileEvery
	ReconcileRunTime     = 100 * time.Millisecond
	reconcileSQSRequests = 3 // the schedule's send, the mapping's receive and delete
)

// Idle is what the stage costs per month with no files at all.
func Idle(s workload.Stage, p Prices) []IdleLine {
	var out []IdleLine
	secs := float64(HoursPerMonth * 3600)
	type fn struct {
		name string
		mem  int
		pc   int
	}
	all := []fn{{"worker", s.Worker.MemoryMB, s.Worker.ProvisionedConcurrency}}
	if s.Dispatch != nil {
		all = append(all, fn{"dispatch", s.Dispatch.MemoryMB, s.Dispatch.ProvisionedConcurrency})
	}
	for _, f := range all {
		if f.pc == 0 {
			continue
		}
		gb := float64(f.pc) * float64(f.mem) / 1024
		out = append(out, IdleLine{What: "provisioned concurrency (" + f.name + ")",
			Detail:      fmt.Sprintf("%d × %d MB = %.3g GB × %d h (autoscaling may add more under load)", f.pc, f.mem, gb, HoursPerMonth),
			USDPerMonth: gb * secs * p.LambdaProvisionedGBSec, Setting: true})
	}
	if s.Table.Provisioned {
		out = append(out, IdleLine{What: "DynamoDB provisioned capacity (minimum)",
			Detail:      fmt.Sprintf("%d WCU + %d RCU × %d h", s.Table.MinWrite, s.Table.MinRead, HoursPerMonth),
			USDPerMonth: HoursPerMonth * (float64(s.Table.MinWrite)*p.DynamoProvisionedWCUHr + float64(s.Table.MinRead)*p.DynamoProvisionedRCUHr), Setting: true})
	}
	if s.Alarms > 0 {
		out = append(out, IdleLine{What: "CloudWatch alarms", Detail: fmt.Sprintf("%d × $%.2f", s.Alarms, p.AlarmMonth),
			USDPerMonth: float64(s.Alarms) * p.AlarmMonth, Setting: true})
	}
	if s.Dashboards > 0 {
		out = append(out, IdleLine{What: "CloudWatch dashboard",
			Detail:      fmt.Sprintf("%d × $%.2f (free if among the account's first %d)", s.Dashboards, p.DashboardMonth, FreeDashboards),
			USDPerMonth: float64(s.Dashboards) * p.DashboardMonth, Setting: true})
	}
	mappings := len(all)
	receives := float64(mappings*IdlePollers*IdleReceivesPerMin) * 60 * HoursPerMonth
	out = append(out, IdleLine{What: "SQS mappings polling empty queues",
		Detail:      fmt.Sprintf("%d mapping(s) × %d pollers × %d receives/min (20 s long polls)", mappings, IdlePollers, IdleReceivesPerMin),
		USDPerMonth: receives * p.SQSRequest})
	if s.Schedules > 0 && s.Dispatch != nil {
		runs := float64(s.Schedules) * HoursPerMonth * float64(time.Hour/ReconcileEvery)
		gbs := runs * float64(s.Dispatch.MemoryMB) / 1024 * ReconcileRunTime.Seconds()
		usd := runs*(p.LambdaRequest+reconcileSQSRequests*p.SQSRequest) + gbs*p.LambdaGBSecond
		out = append(out, IdleLine{What: "reconcile schedule",
			Detail:      fmt.Sprintf("%.0f runs (every %s): an invocation of %s each, %d SQS requests", runs, ReconcileEvery, ReconcileRunTime, reconcileSQSRequests),
			USDPerMonth: usd})
	}
	return out
}

// ScaleToZero says whether the stage costs nothing beyond pennies while idle, and
// names what breaks it: the settings among the idle lines.
func ScaleToZero(idle []IdleLine) (bool, []string) {
	var breaks []string
	for _, l := range idle {
		if l.Setting && l.USDPerMonth > 0 {
			breaks = append(breaks, l.What)
		}
	}
	return len(breaks) == 0, breaks
}

// Total sums idle lines.
func Total(idle []IdleLine) float64 {
	t := 0.0
	for _, l := range idle {
		t += l.USDPerMonth
	}
	return t
}

// FormatUSD renders dollars with cents, or more digits below a dollar's tenth.
func FormatUSD(v float64) string {
	switch {
	case v == 0:
		return "$0"
	case v < 0.01:
		return "$" + strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.4f", v), "0"), ".")
	}
	return fmt.Sprintf("$%.2f", v)
}

// FromSummary reads the calls per file of a `fileflow dev --json` summary (pkg/local/demo
// Summary), or of `fileflow bench compare --meter` output (its "pipeline"): the summary's
// "operation_calls" divided by its "files". A summary with only the per-service
// "calls_per_file" cannot be priced per operation and is refused.
func FromSummary(b []byte, source string) (Measured, error) {
	var bench struct {
		Pipeline json.RawMessage `json:"pipeline"`
	}
	if json.Unmarshal(b, &bench) == nil && len(bench.Pipeline) > 0 {
		b = bench.Pipeline
	}
	var s struct {
		Files          int64              `json:"files"`
		OperationCalls map[string]int64   `json:"operation_calls"`
		CallsPerFile   map[string]float64 `json:"calls_per_file"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return Measured{}, fmt.Errorf("cost: %s: %w", source, err)
	}
	if s.Files <= 0 {
		return Measured{}, fmt.Errorf("cost: %s: no \"files\": not a fileflow dev --json summary", source)
	}
	if len(s.OperationCalls) == 0 {
		return Measured{}, fmt.Errorf("cost: %s: no \"operation_calls\" (calls per operation); bench compare counts them only with --meter", source)
	}
	m := Measured{Source: fmt.Sprintf("%s (%d files)", source, s.Files), Calls: Calls{}}
	for op, n := range s.OperationCalls {
		m.Calls[op] = float64(n) / float64(s.Files)
	}
	return m, nil
}
