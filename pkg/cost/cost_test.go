package cost

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/workload"
)

const cent = 1e-6 // dollars compared to a millionth

func prices(t *testing.T) Prices {
	t.Helper()
	p, err := DefaultPrices()
	require.NoError(t, err)
	return p
}

// devStage is a stage like Pulumi.dev.yaml's: 512 MB, batch 10, 8 files at once, the
// duplicate check always.
func devStage(t *testing.T) workload.Stage {
	t.Helper()
	// Checking always: the by-hand figures below price the duplicate check's read and time.
	s, err := workload.NewStage("dev", pipeline.Args{DuplicateCheck: "always", Functions: map[string]pipeline.FunctionArgs{
		"worker": {MemoryMB: 512, BatchSize: 10, MaxConcurrency: 10}}}, []string{"dispatch", "worker"}, nil)
	require.NoError(t, err)
	return s
}

var million = workload.Workload{Files: 1_000_000, SizeBytes: 100_000}

func TestPricesAreDatedAndSourced(t *testing.T) {
	p := prices(t)
	assert.Equal(t, "2026-11-26", p.Date)
	assert.Equal(t, "us-east-1", p.Region)
	assert.Equal(t, "arm64", p.Arch)
	for _, key := range []string{"lambda_per_request", "lambda_per_gb_second", "lambda_provisioned_per_gb_second", "sqs_per_request",
		"sqs_chunk_bytes", "dynamodb_per_wru", "dynamodb_per_rru", "s3_per_put", "s3_per_get", "sns_per_publish",
		"logs_per_gb_ingested", "xray_per_trace", "alarm_per_month", "dashboard_per_month"} {
		assert.NotEmpty(t, p.Sources[key], "every price names its source: %s", key)
	}
	// AWS-FACTS.md's figures.
	assert.InDelta(t, 0.20, p.LambdaRequest*1e6, 1e-9)
	assert.InDelta(t, 0.0000133334, p.LambdaGBSecond, 1e-12)
	assert.InDelta(t, 0.40, p.SQSRequest*1e6, 1e-9)
	assert.InDelta(t, 0.625, p.DynamoWRU*1e6, 1e-9)
	assert.InDelta(t, 0.125, p.DynamoRRU*1e6, 1e-9)
	assert.InDelta(t, 0.005, p.S3Put*1e3, 1e-12)
	assert.InDelta(t, 0.0004, p.S3Get*1e3, 1e-12)
	assert.Equal(t, 65536, p.SQSChunkBytes)
}

// The naive design, 1M files of 100 KB at 512 MB, 50 ms a file — AWS-FACTS.md's
// reference case, by hand:
//
//	Lambda requests  1,000,000 × $0.20/M                          = $0.20
//	Lambda compute   0.5 GB × 0.05 s × 1M = 25,000 GB-s × $0.0000133334 = $0.333335
//	SQS              (S3's send + receive + delete) 3 × 1M × $0.40/M = $1.20
//	DynamoDB writes  3 × 1M WRU (800 B records: 1 WRU each) × $0.625/M = $1.875
//	S3 GET           1M × $0.0004/1000                             = $0.40
//	Logs             1,300 B × 1M = 1.3 GB × $0.50                 = $0.65
//	orchestration    4.658335; without the logs 4.008335 (the reference's ~$4.0)
//	outputs          1M × $0.005/1000                              = $5.00
func TestNaiveDesignByHand(t *testing.T) {
	e := Price(NaiveDesign(devStage(t), million), 1_000_000, prices(t))
	want := map[string]float64{LambdaRequests: 0.20, LambdaCompute: 0.333335, SQSRequests: 1.20, DynamoWrites: 1.875,
		DynamoReads: 0, S3Gets: 0.40, S3Puts: 0, SNS: 0, Logs: 0.65, XRay: 0}
	for service, usd := range want {
		assert.InDelta(t, usd, e.Line(service).USD, cent, service)
	}
	assert.InDelta(t, 25_000, e.Line(LambdaCompute).Units, 1e-6)
	assert.InDelta(t, 3_000_000, e.Line(SQSRequests).Units, 1e-6)
	assert.InDelta(t, 4.658335, e.Orchestration, cent)
	assert.InDelta(t, 4.008335, e.Orchestration-e.Line(Logs).USD, cent, "AWS-FACTS.md's naive ~$4.0 (it leaves logs out)")
	assert.InDelta(t, 5.00, e.Outputs.USD, cent)
	assert.InDelta(t, 5.00, e.Ingest.USD, cent)
	assert.Empty(t, e.Unpriced)
}

// The dev stage on the events path with round calls per file, by hand:
//
//	an invocation: 10 files, 8 at once: ceil(10/8) = 2 waves × 50 ms + 10 ms check = 0.11 s
//	Lambda requests  0.1 a file → 100,000 × $0.20/M                 = $0.02
//	Lambda compute   0.5 GB × 0.11 s / 10 = 0.0055 GB-s a file → 5,500 GB-s = $0.0733337
//	SQS              S3's send 1 (1,100 B: one 64 KB unit)
//	                 + receive 0.1 (10 messages × 1,100 B = 11 KB: one unit)
//	                 + delete batch 0.1 = 1.2 a file → $0.48
//	DynamoDB writes  1 UpdateItem × 1 WRU → $0.625
//	DynamoDB reads   0.1 BatchGetItem × 10 items (one a file) × 1 RRU → 1 a file → $0.125
//	S3 GET           1 → $0.40; outputs: 1 PutObject → $5.00 apart
//	Logs             1,300 B / 10 = 130 B a file → 0.13 GB → $0.065
//	GetQueueAttributes is the local mapping's, not billed.
//	orchestration    0.02 + 0.0733337 + 0.48 + 0.625 + 0.125 + 0.40 + 0.065 = 1.7883337
func TestStageDesignByHand(t *testing.T) {
	m := Measured{Calls: Calls{"DynamoDB.UpdateItem": 1, "DynamoDB.BatchGetItem": 0.1, "S3.GetObject": 1, "S3.PutObject": 1,
		"SQS.ReceiveMessage": 0.1, "SQS.DeleteMessageBatch": 0.1, "SQS.GetQueueAttributes": 0.1}}
	d := StageDesign(devStage(t), million, m)
	assert.Equal(t, 110*time.Millisecond, d.InvocationTime)
	e := Price(d, 1_000_000, prices(t))
	want := map[string]float64{LambdaRequests: 0.02, LambdaCompute: 0.0733337, SQSRequests: 0.48, DynamoWrites: 0.625,
		DynamoReads: 0.125, S3Gets: 0.40, S3Puts: 0, Logs: 0.065}
	for service, usd := range want {
		assert.InDelta(t, usd, e.Line(service).USD, cent, service)
	}
	assert.InDelta(t, 1.7883337, e.Orchestration, cent)
	assert.InDelta(t, 5.00, e.Outputs.USD, cent)
	assert.Equal(t, []string{"SQS.GetQueueAttributes"}, e.NotBilled)
	assert.Empty(t, e.Unpriced)

	// The same with the duplicate check only on redelivery: no check time, and no reads
	// when the calls were measured checking always.
	s := devStage(t)
	s.DuplicateCheck = "redelivery"
	m.DuplicateCheck = "always"
	e = Price(StageDesign(s, million, m), 1_000_000, prices(t))
	// 0.5 GB × 0.10 s / 10 = 0.005 GB-s a file → 5,000 GB-s × $0.0000133334 = $0.066667
	assert.InDelta(t, 0.066667, e.Line(LambdaCompute).USD, cent)
	assert.Zero(t, e.Line(DynamoReads).USD)
	assert.Contains(t, m.Calls, "DynamoDB.BatchGetItem", "the measurement itself is left alone")
	// Measured with an unknown setting: the reads measured are what is priced.
	m.DuplicateCheck = ""
	e = Price(StageDesign(s, million, m), 1_000_000, prices(t))
	assert.InDelta(t, 0.125, e.Line(DynamoReads).USD, cent)

	// The default ("auto") reads a job's files first, not S3 events: priced like
	// redelivery on the events path, like always on the job path.
	s.DuplicateCheck = "auto"
	m.DuplicateCheck = "always"
	assert.Zero(t, Price(StageDesign(s, million, m), 1_000_000, prices(t)).Line(DynamoReads).USD)
	jobs := million
	jobs.Path = workload.Job
	assert.NotZero(t, Price(StageDesign(s, jobs, m), 1_000_000, prices(t)).Line(DynamoReads).USD)
}

// The job path: 100 files a task message of 200 + 100 × 190 = 19,200 B, batches of 10
// messages = 1,000 files an invocation; 20 MB files are multipart.
//
//	receive 0.001 a file: 10 messages × 19,200 B = 192,000 B = ceil(2.93) = 3 units → 0.003
//	send batch 0.001: the same 3 units → 0.003
//	TransactWriteItems 0.001 × 2 × (10 markers + the parent check + the shard = 12) = 0.024 WRU
//	TransactGetItems 0.001 × 2 × (8 shards + the job = 9) = 0.018 RRU
//	outputs: 20,000,000 B in 8 MiB parts = 3 parts + create + complete = 5 PUTs a file
//	a second PutObject a file (a report part): 1 PUT, not an output
func TestJobPathUnits(t *testing.T) {
	w := workload.Workload{Files: 1000, SizeBytes: 20_000_000, Path: workload.Job}
	m := Measured{Calls: Calls{"SQS.ReceiveMessage": 0.001, "SQS.SendMessageBatch": 0.001,
		"DynamoDB.TransactWriteItems": 0.001, "DynamoDB.TransactGetItems": 0.001, "S3.PutObject": 2, "S3.Frobnicate": 1}}
	d := StageDesign(devStage(t), w, m)
	assert.Equal(t, 1000, d.FilesPerInvocation)
	assert.Equal(t, 19_200, d.MessageBytes)
	assert.Zero(t, d.Notifications, "no S3 event per file on the job path")
	u := d.usage(prices(t))
	assert.InDelta(t, 0.006, u.sqs, 1e-12)
	assert.InDelta(t, 0.024, u.wru, 1e-12)
	assert.InDelta(t, 0.018, u.rru, 1e-12)
	assert.InDelta(t, 5, u.outputs, 1e-12)
	assert.InDelta(t, 1, u.put, 1e-12)
	assert.Equal(t, []string{"S3.Frobnicate"}, u.unpriced, "an operation without a rule is named, not dropped silently")
	// 1,000 files: 125 waves × 50 ms + 10 ms = 6.26 s an invocation.
	assert.Equal(t, 6260*time.Millisecond, d.InvocationTime)
}

// A bigger record costs more units: 1,500 B → 2 WRU a write; 5,000 B → 2 RRU a read.
func TestRecordSize(t *testing.T) {
	w := million
	w.RecordBytes = 1500
	u := StageDesign(devStage(t), w, Measured{Calls: Calls{"DynamoDB.UpdateItem": 1, "DynamoDB.GetItem": 1}}).usage(prices(t))
	assert.Equal(t, 2.0, u.wru)
	assert.Equal(t, 1.0, u.rru)
	w.RecordBytes = 5000
	u = StageDesign(devStage(t), w, Measured{Calls: Calls{"DynamoDB.GetItem": 1}}).usage(prices(t))
	assert.Equal(t, 2.0, u.rru)
}

// Idle, by hand, for a stage like prod with a reconcile schedule:
//
//	provisioned concurrency 5 × 1 GB × 730 h × 3,600 s = 13,140,000 GB-s × $0.0000033334 = $43.800876
//	alarms 14 × $0.10 = $1.40; dashboard $3.00
//	polling 2 mappings × 2 pollers × 3 a minute × 60 × 730 = 525,600 × $0.40/M = $0.21024
//	schedule 730 × 12 = 8,760 runs × ($0.20/M + 3 × $0.40/M) = $0.012264
//	         + 8,760 × 0.5 GB × 0.1 s = 438 GB-s × $0.0000133334 = $0.00584003
func TestIdleByHand(t *testing.T) {
	s, err := workload.NewStage("prod", pipeline.Args{Functions: map[string]pipeline.FunctionArgs{
		"worker": {MemoryMB: 1024, MaxConcurrency: 200, ReservedConcurrency: 250, ProvisionedConcurrency: 5, ProvisionedMax: 50}}},
		[]string{"dispatch", "worker"}, map[string]int{workload.TypeAlarm: 14, workload.TypeDashboard: 1, "aws:scheduler/schedule:Schedule": 1})
	require.NoError(t, err)
	idle := Idle(s, prices(t))
	got := map[string]float64{}
	for _, l := range idle {
		got[l.What] = l.USDPerMonth
	}
	assert.InDelta(t, 43.800876, got["provisioned concurrency (worker)"], cent)
	assert.InDelta(t, 1.40, got["CloudWatch alarms"], cent)
	assert.InDelta(t, 3.00, got["CloudWatch dashboard"], cent)
	assert.InDelta(t, 0.21024, got["SQS mappings polling empty queues"], cent)
	assert.InDelta(t, 0.012264+0.00584003, got["reconcile schedule"], cent)
	assert.InDelta(t, 43.800876+1.40+3.00+0.21024+0.018104, Total(idle), 1e-5)
	zero, breaks := ScaleToZero(idle)
	assert.False(t, zero)
	assert.Equal(t, []string{"provisioned concurrency (worker)", "CloudWatch alarms", "CloudWatch dashboard"}, breaks)

	// Without provisioned concurrency, alarms or a dashboard: pennies of polling only.
	bare, err := workload.NewStage("bare", pipeline.Args{}, []string{"worker"}, nil)
	require.NoError(t, err)
	idle = Idle(bare, prices(t))
	zero, breaks = ScaleToZero(idle)
	assert.True(t, zero)
	assert.Empty(t, breaks)
	// 1 mapping × 2 × 3 × 60 × 730 = 262,800 receives × $0.40/M = $0.10512
	assert.InDelta(t, 0.10512, Total(idle), cent)
}

func TestReconcileEveryMatchesJob(t *testing.T) {
	assert.Equal(t, job.ReconcileEvery, ReconcileEvery)
}

func TestFromSummary(t *testing.T) {
	m, err := FromSummary([]byte(`{"files": 200, "calls_per_file": {"S3": 2}, "operation_calls": {"S3.GetObject": 200, "S3.PutObject": 190, "DynamoDB.BatchGetItem": 20}}`), "s.json")
	require.NoError(t, err)
	assert.Equal(t, Calls{"S3.GetObject": 1, "S3.PutObject": 0.95, "DynamoDB.BatchGetItem": 0.1}, m.Calls)
	assert.Equal(t, "s.json (200 files)", m.Source)

	// bench compare --meter nests the pipeline's summary.
	m, err = FromSummary([]byte(`{"pipeline": {"files": 10, "operation_calls": {"S3.GetObject": 10}}, "raw": {}, "ratio": 0.7}`), "b.json")
	require.NoError(t, err)
	assert.Equal(t, Calls{"S3.GetObject": 1}, m.Calls)

	_, err = FromSummary([]byte(`{"files": 10, "calls_per_file": {"S3": 2}}`), "old.json")
	assert.ErrorContains(t, err, `no "operation_calls"`)
	_, err = FromSummary([]byte(`{"x": 1}`), "x.json")
	assert.ErrorContains(t, err, `no "files"`)
	_, err = FromSummary([]byte(`nope`), "bad.json")
	assert.ErrorContains(t, err, "bad.json")
}

// The built-in measurements price every operation they hold.
func TestMeasuredDefaultsArePriced(t *testing.T) {
	for _, m := range []Measured{MeasuredEvents, MeasuredJob} {
		e := Price(StageDesign(devStage(t), million, m), 1_000_000, prices(t))
		assert.Empty(t, e.Unpriced, m.Source)
	}
}

func TestFormatUSD(t *testing.T) {
	assert.Equal(t, "$0", FormatUSD(0))
	assert.Equal(t, "$0.0053", FormatUSD(0.0053))
	assert.Equal(t, "$0.0002", FormatUSD(0.0002))
	assert.Equal(t, "$1.79", FormatUSD(1.7883))
	assert.Equal(t, "$43.80", FormatUSD(43.800876))
}
