package pipeline_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/policy"
	"github.com/fileflow/fileflow/pkg/process"
)

func code(names ...string) map[string]pipeline.Code {
	if len(names) == 0 {
		names = []string{"worker"}
	}
	out := map[string]pipeline.Code{}
	for _, n := range names {
		out[n] = pipeline.Code{
			Archive: pulumi.NewAssetArchive(map[string]any{"bootstrap": pulumi.NewStringAsset("test binary for " + n)}),
			Hash:    "dGVzdA==",
		}
	}
	return out
}

func run(t *testing.T, args *pipeline.Args) *plan.Graph {
	t.Helper()
	g, err := plan.Run("fileflow", "test", func(ctx *pulumi.Context) error {
		_, err := pipeline.New(ctx, "files", args)
		return err
	})
	require.NoError(t, err)
	return g
}

func one(t *testing.T, g *plan.Graph, typ, name string) plan.Resource {
	t.Helper()
	r, ok := g.Named(typ, name)
	require.True(t, ok, "%s %s declared", typ, name)
	return r
}

func TestDefaultsGraph(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code()})
	assert.Equal(t, map[string]int{
		"fileflow:index:Pipeline":                                1,
		"aws:s3/bucketV2:BucketV2":                               2,
		"aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": 2,
		"aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2": 2,
		"aws:s3/bucketVersioningV2:BucketVersioningV2":                                               2,
		"aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2":                       2,
		"aws:s3/bucketPolicy:BucketPolicy":                                                           2,
		"aws:s3/bucketNotification:BucketNotification":                                               1,
		"aws:sqs/queue:Queue":                                        2,
		"aws:sqs/queuePolicy:QueuePolicy":                            2,
		"aws:sqs/redriveAllowPolicy:RedriveAllowPolicy":              1,
		"aws:sns/topicPolicy:TopicPolicy":                            2,
		"aws:lambda/functionRecursionConfig:FunctionRecursionConfig": 1,
		"aws:dynamodb/table:Table":                                   1,
		"aws:cloudwatch/logGroup:LogGroup":                           1,
		"aws:iam/role:Role":                                          1,
		"aws:iam/rolePolicy:RolePolicy":                              1,
		"aws:lambda/function:Function":                               1,
		"aws:lambda/eventSourceMapping:EventSourceMapping":           1,
		"aws:sns/topic:Topic":                                        2,
		"aws:cloudwatch/metricAlarm:MetricAlarm":                     9,
		"aws:cloudwatch/dashboard:Dashboard":                         1,
	}, g.Counts())

	// Every child is parented to the component and named from its name.
	comp := one(t, g, pipeline.TypeToken, "files")
	_ = comp
	for _, r := range g.Resources {
		if r.Type == pipeline.TypeToken {
			continue
		}
		assert.True(t, strings.HasPrefix(r.Name, "files-"), "%s is named from the component", r.Name)
		assert.Contains(t, r.Parent, "fileflow:index:Pipeline::files", "%s is parented to the component", r.Name)
	}
	assert.Empty(t, policy.Check(g.Policy()))
}

func TestQueuesDerivedVisibilityAndDLQ(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code(), MaxReceiveCount: 7,
		Functions: map[string]pipeline.FunctionArgs{"worker": {TimeoutSeconds: 90, BatchSize: 100, BatchingWindowSec: 5, MaxConcurrency: 20}}})
	tasks := one(t, g, "aws:sqs/queue:Queue", "files-tasks")
	dlq := one(t, g, "aws:sqs/queue:Queue", "files-tasks-dlq")
	assert.EqualValues(t, 6*90+5, tasks.Inputs["visibilityTimeoutSeconds"], "6 x timeout + batching window")
	assert.Equal(t, true, tasks.Inputs["sqsManagedSseEnabled"])
	assert.EqualValues(t, 1209600, dlq.Inputs["messageRetentionSeconds"], "DLQ keeps 14 days")
	var redrive struct {
		DeadLetterTargetArn string `json:"deadLetterTargetArn"`
		MaxReceiveCount     int    `json:"maxReceiveCount"`
	}
	require.NoError(t, json.Unmarshal([]byte(tasks.Inputs["redrivePolicy"].(string)), &redrive))
	assert.Equal(t, dlq.State["arn"], redrive.DeadLetterTargetArn)
	assert.Equal(t, 7, redrive.MaxReceiveCount)

	esm := one(t, g, "aws:lambda/eventSourceMapping:EventSourceMapping", "files-worker-trigger")
	assert.Equal(t, tasks.State["arn"], esm.Inputs["eventSourceArn"])
	assert.EqualValues(t, 100, esm.Inputs["batchSize"])
	assert.EqualValues(t, 5, esm.Inputs["maximumBatchingWindowInSeconds"])
	assert.Equal(t, []any{"ReportBatchItemFailures"}, esm.Inputs["functionResponseTypes"])
	assert.EqualValues(t, 20, esm.Inputs["scalingConfig"].(map[string]any)["maximumConcurrency"])

	fn := one(t, g, "aws:lambda/function:Function", "files-worker")
	assert.Equal(t, "provided.al2023", fn.Inputs["runtime"])
	assert.Equal(t, []any{"arm64"}, fn.Inputs["architectures"])
	assert.EqualValues(t, 90, fn.Inputs["timeout"])
	assert.NotContains(t, fn.Inputs, "reservedConcurrentExecutions", "no reservation by default: deploys on any account")
	assert.Equal(t, "JSON", fn.Inputs["loggingConfig"].(map[string]any)["logFormat"])
	env := fn.Inputs["environment"].(map[string]any)["variables"].(map[string]any)
	assert.Equal(t, "7", env["FILEFLOW_MAX_RECEIVE_COUNT"], "the worker knows the queue's maxReceiveCount")
	assert.Equal(t, "16", env["FILEFLOW_CONCURRENCY"])
	var rules process.Rules
	require.NoError(t, json.Unmarshal([]byte(env["FILEFLOW_RULES"].(string)), &rules))
	assert.Equal(t, process.DefaultRules, rules)
}

func TestBucketsPrivateEncryptedTLSOnly(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code(), IngestPrefix: "uploads/", IngestSuffix: ".csv", ExpireOutputsDays: 30})
	for _, kind := range []string{"ingest", "output"} {
		pab := one(t, g, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "files-"+kind+"-public-access")
		for _, k := range []string{"blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"} {
			assert.Equal(t, true, pab.Inputs[k], "%s %s", kind, k)
		}
		sse := one(t, g, "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2", "files-"+kind+"-encryption")
		assert.Contains(t, jsonOf(sse.Inputs), `"sseAlgorithm":"AES256"`)
		pol := one(t, g, "aws:s3/bucketPolicy:BucketPolicy", "files-"+kind+"-tls-only")
		assert.Contains(t, pol.Inputs["policy"], `"aws:SecureTransport":"false"`)
		ver := one(t, g, "aws:s3/bucketVersioningV2:BucketVersioningV2", "files-"+kind+"-versioning")
		assert.Contains(t, jsonOf(ver.Inputs), `"status":"Enabled"`)
	}
	out := one(t, g, "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2", "files-output-lifecycle")
	assert.Contains(t, jsonOf(out.Inputs), `"expiration":{"days":30}`)
	in := one(t, g, "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2", "files-ingest-lifecycle")
	assert.NotContains(t, jsonOf(in.Inputs), `"expiration"`)

	n := one(t, g, "aws:s3/bucketNotification:BucketNotification", "files-ingest-events")
	q := n.Inputs["queues"].([]any)[0].(map[string]any)
	assert.Equal(t, "uploads/", q["filterPrefix"])
	assert.Equal(t, ".csv", q["filterSuffix"])
	assert.Equal(t, []any{"s3:ObjectCreated:*"}, q["events"])

	qp := one(t, g, "aws:sqs/queuePolicy:QueuePolicy", "files-tasks-policy")
	doc := qp.Inputs["policy"].(string)
	assert.Contains(t, doc, `"aws:SourceArn":"arn:aws:s3:::files-ingest"`)
	assert.Contains(t, doc, `"aws:SourceAccount":"123456789012"`)
	assert.Contains(t, doc, `"aws:SecureTransport":"false"`, "TLS only")
}

// The worker's role may do exactly what the handler calls, on this pipeline's ARNs only.
func TestWorkerIAMLeastPrivilege(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code()})
	pol := one(t, g, "aws:iam/rolePolicy:RolePolicy", "files-worker-policy")
	var doc pipeline.PolicyDocument
	require.NoError(t, json.Unmarshal([]byte(pol.Inputs["policy"].(string)), &doc))
	got := map[string][]string{}
	for _, s := range doc.Statement {
		assert.Equal(t, "Allow", s.Effect)
		for _, r := range s.Resource {
			got[r] = append(got[r], s.Action...)
		}
	}
	arn := "arn:aws:"
	assert.Equal(t, map[string][]string{
		arn + "sqs:us-east-1:123456789012:files-tasks":             {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl", "sqs:SendMessage"},
		arn + "s3:::files-ingest":                                  {"s3:ListBucket"},
		arn + "s3:::files-ingest/*":                                {"s3:GetObject", "s3:GetObjectVersion"},
		arn + "s3:::files-output/*":                                {"s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:DeleteObject"},
		arn + "s3:::files-output":                                  {"s3:ListBucket"},
		arn + "dynamodb:us-east-1:123456789012:table/files-ledger": {"dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem"},
		arn + "logs:us-east-1:123456789012:log-group:/fileflow/fileflow/test/files/worker:*": {"logs:CreateLogStream", "logs:PutLogEvents"},
	}, got)
	role := one(t, g, "aws:iam/role:Role", "files-worker-role")
	assert.Contains(t, role.Inputs["assumeRolePolicy"], `"Service":"lambda.amazonaws.com"`)
}

func TestTracingAddsOnlyXRayWrites(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code(), Tracing: true})
	fn := one(t, g, "aws:lambda/function:Function", "files-worker")
	assert.Equal(t, "Active", fn.Inputs["tracingConfig"].(map[string]any)["mode"])
	pol := one(t, g, "aws:iam/rolePolicy:RolePolicy", "files-worker-policy")
	assert.Contains(t, pol.Inputs["policy"], `{"Sid":"Tracing","Effect":"Allow","Action":["xray:PutTraceSegments","xray:PutTelemetryRecords"],"Resource":["*"]}`)
	assert.Empty(t, policy.Check(g.Policy()), "the X-Ray exception is the only '*' allowed")
}

func TestAlarmsAndTopics(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code(), AlarmEmail: "ops@example.com", OldestMessageAlarmSeconds: 600})
	alarms := g.OfType("aws:cloudwatch/metricAlarm:MetricAlarm")
	require.Len(t, alarms, 9)
	topic := one(t, g, "aws:sns/topic:Topic", "files-alarms")
	for _, a := range alarms {
		assert.Equal(t, []any{topic.State["arn"]}, a.Inputs["alarmActions"], a.Name)
		assert.NotEmpty(t, a.Inputs["alarmDescription"], a.Name)
	}
	dlq := one(t, g, "aws:cloudwatch/metricAlarm:MetricAlarm", "files-tasks-dlq-depth")
	assert.EqualValues(t, 0, dlq.Inputs["threshold"])
	assert.Equal(t, "files-tasks-dlq", dlq.Inputs["dimensions"].(map[string]any)["QueueName"])
	age := one(t, g, "aws:cloudwatch/metricAlarm:MetricAlarm", "files-tasks-oldest-age")
	assert.EqualValues(t, 600, age.Inputs["threshold"])
	near := one(t, g, "aws:cloudwatch/metricAlarm:MetricAlarm", "files-worker-near-timeout")
	assert.EqualValues(t, 48000, near.Inputs["threshold"], "80% of the 60 s default timeout, in ms")
	sub := one(t, g, "aws:sns/topicSubscription:TopicSubscription", "files-alarms-email")
	assert.Equal(t, plan.Secret, sub.Inputs["endpoint"], "the address is a secret: encrypted in state")
	one(t, g, "aws:sns/topic:Topic", "files-completions")
	dash := one(t, g, "aws:cloudwatch/dashboard:Dashboard", "files-dashboard")
	var body struct {
		Widgets []map[string]any `json:"widgets"`
	}
	require.NoError(t, json.Unmarshal([]byte(dash.Inputs["dashboardBody"].(string)), &body))
	assert.Len(t, body.Widgets, 5)
	assert.Contains(t, dash.Inputs["dashboardBody"], `"FilesSucceeded"`)
}

func TestProvisionedTableAndConcurrencyAutoscale(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code(),
		Table:     pipeline.TableArgs{Provisioned: true, MinRead: 10, MaxRead: 200, MinWrite: 20, MaxWrite: 400, PointInTimeRecovery: true, DeletionProtection: true},
		Functions: map[string]pipeline.FunctionArgs{"worker": {MaxConcurrency: 100, ReservedConcurrency: 150, ProvisionedConcurrency: 5, ProvisionedMax: 40}},
	})
	table := one(t, g, "aws:dynamodb/table:Table", "files-ledger")
	assert.Equal(t, "PROVISIONED", table.Inputs["billingMode"])
	assert.EqualValues(t, 10, table.Inputs["readCapacity"])
	assert.Equal(t, true, table.Inputs["deletionProtectionEnabled"])
	assert.Equal(t, true, table.Inputs["pointInTimeRecovery"].(map[string]any)["enabled"])
	assert.Equal(t, map[string]any{"attributeName": "expires_at", "enabled": true}, table.Inputs["ttl"])

	targets := g.OfType("aws:appautoscaling/target:Target")
	require.Len(t, targets, 3, "table reads, table writes, provisioned concurrency")
	byDim := map[string]plan.Resource{}
	for _, tg := range targets {
		byDim[tg.Inputs["scalableDimension"].(string)] = tg
	}
	assert.EqualValues(t, 400, byDim["dynamodb:table:WriteCapacityUnits"].Inputs["maxCapacity"])
	pc := byDim["lambda:function:ProvisionedConcurrency"]
	assert.Equal(t, "function:files-worker:live", pc.Inputs["resourceId"])
	assert.EqualValues(t, 5, pc.Inputs["minCapacity"])
	assert.EqualValues(t, 40, pc.Inputs["maxCapacity"])
	require.Len(t, g.OfType("aws:appautoscaling/policy:Policy"), 3)

	esm := one(t, g, "aws:lambda/eventSourceMapping:EventSourceMapping", "files-worker-trigger")
	alias := one(t, g, "aws:lambda/alias:Alias", "files-worker-live")
	assert.Equal(t, alias.State["arn"], esm.Inputs["functionName"], "the mapping invokes the warm alias")
	fn := one(t, g, "aws:lambda/function:Function", "files-worker")
	assert.Equal(t, true, fn.Inputs["publish"])
	assert.Empty(t, policy.Check(g.Policy()))
}

func TestOnDemandTableHasNoScaling(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code()})
	table := one(t, g, "aws:dynamodb/table:Table", "files-ledger")
	assert.Equal(t, "PAY_PER_REQUEST", table.Inputs["billingMode"])
	gsi := table.Inputs["globalSecondaryIndexes"].([]any)[0].(map[string]any)
	assert.Equal(t, "gsi1", gsi["name"])
	assert.Empty(t, g.OfType("aws:appautoscaling/target:Target"))
	assert.Empty(t, g.OfType("aws:lambda/alias:Alias"), "no provisioned concurrency: scales to zero")
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		args pipeline.Args
		want string
	}{
		{"no worker", pipeline.Args{Code: map[string]pipeline.Code{}}, `the "worker" function is required`},
		{"unknown function", pipeline.Args{Code: code("worker", "resizer")}, "Code[resizer]: unknown function"},
		{"nil archive", pipeline.Args{Code: map[string]pipeline.Code{"worker": {}}}, "Code[worker].Archive = nil"},
		{"config for missing function", pipeline.Args{Code: code(), Functions: map[string]pipeline.FunctionArgs{"dispatch": {}}}, "Functions[dispatch]: configures a function that has no code"},
		{"batch size", w(pipeline.FunctionArgs{BatchSize: 20000, BatchingWindowSec: 1}), "Functions[worker].BatchSize = 20000: must be in 1..10000"},
		{"batch without window", w(pipeline.FunctionArgs{BatchSize: 50}), "Functions[worker].BatchingWindowSec = 0: must be >= 1 when BatchSize (50) is above 10"},
		{"window", w(pipeline.FunctionArgs{BatchingWindowSec: 301}), "Functions[worker].BatchingWindowSec = 301: must be in 0..300"},
		{"max concurrency low", w(pipeline.FunctionArgs{MaxConcurrency: 1}), "Functions[worker].MaxConcurrency = 1: must be in 2..1000"},
		{"max concurrency high", w(pipeline.FunctionArgs{MaxConcurrency: 1001, ReservedConcurrency: 2000}), "Functions[worker].MaxConcurrency = 1001: must be in 2..1000"},
		{"reserved below max", w(pipeline.FunctionArgs{MaxConcurrency: 100, ReservedConcurrency: 50}), "Functions[worker].ReservedConcurrency = 50: must be 0 (none) or >= MaxConcurrency (100)"},
		{"memory", w(pipeline.FunctionArgs{MemoryMB: 64}), "Functions[worker].MemoryMB = 64: must be in 128..10240"},
		{"timeout", w(pipeline.FunctionArgs{TimeoutSeconds: 901}), "Functions[worker].TimeoutSeconds = 901: must be in 1..900"},
		{"provisioned max", w(pipeline.FunctionArgs{ProvisionedConcurrency: 10, ProvisionedMax: 5}), "Functions[worker].ProvisionedMax = 5: must be >= ProvisionedConcurrency (10)"},
		{"provisioned above reserved", w(pipeline.FunctionArgs{MaxConcurrency: 10, ReservedConcurrency: 10, ProvisionedConcurrency: 5, ProvisionedMax: 20}), "Functions[worker].ProvisionedMax = 20: must be <= ReservedConcurrency (10)"},
		{"ingest", pipeline.Args{Code: code(), Ingest: "sns"}, `Ingest = sns: must be "notification" or "eventbridge"`},
		{"reconcile", pipeline.Args{Code: code(), ReconcileMinutes: 1441}, "ReconcileMinutes = 1441: must be in 1..1440"},
		{"dlq age", pipeline.Args{Code: code(), DLQAgeAlarmSeconds: 14 * 24 * 3600}, "DLQAgeAlarmSeconds = 1209600: must be in 60..1209540"},
		{"tag", pipeline.Args{Code: code(), Tags: map[string]string{"aws:x": "y"}}, "Tags[aws:x] = y"},
		{"reserved env", w(pipeline.FunctionArgs{Env: map[string]string{"FILEFLOW_TABLE": "x"}}), "Functions[worker].Env[FILEFLOW_TABLE]"},
		{"max receive", pipeline.Args{Code: code(), MaxReceiveCount: 1001}, "MaxReceiveCount = 1001: must be in 1..1000"},
		{"retention", pipeline.Args{Code: code(), RetentionSeconds: 30}, "RetentionSeconds = 30: must be in 60..1209600"},
		{"log retention", pipeline.Args{Code: code(), LogRetentionDays: 10}, "LogRetentionDays = 10: must be one of"},
		{"email", pipeline.Args{Code: code(), AlarmEmail: "a@b.c, d@e.f"}, "AlarmEmail = a@b.c, d@e.f: must be one e-mail address"},
		{"table max read", pipeline.Args{Code: code(), Table: pipeline.TableArgs{Provisioned: true, MinRead: 50, MaxRead: 10}}, "Table.MaxRead = 10: must be >= Table.MinRead (50)"},
		{"ttl", pipeline.Args{Code: code(), Table: pipeline.TableArgs{TTLDays: -1}}, "Table.TTLDays = -1: must be in 0..3650"},
		{"rules", pipeline.Args{Code: code(), Rules: process.Rules{{Processors: []string{"sha1"}}}}, `Rules: process: invalid rules: rule 0: process: unknown processor "sha1"`},
		{"oldest alarm", pipeline.Args{Code: code(), OldestMessageAlarmSeconds: 5}, "OldestMessageAlarmSeconds = 5: must be in 60..1209600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.args.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			// New fails the same way before declaring anything.
			_, perr := plan.Run("fileflow", "test", func(ctx *pulumi.Context) error {
				_, err := pipeline.New(ctx, "files", &tt.args)
				return err
			})
			require.Error(t, perr)
			assert.Contains(t, perr.Error(), tt.want)
		})
	}
	// The visibility timeout is derived, and bounded by SQS's 12 hours.
	assert.Equal(t, 6*900+300, pipeline.VisibilityTimeout(pipeline.FunctionArgs{TimeoutSeconds: 900, BatchingWindowSec: 300}))
	// Several problems are reported together.
	err := w(pipeline.FunctionArgs{MemoryMB: 64, TimeoutSeconds: 901}).Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "MemoryMB")
	assert.Contains(t, err.Error(), "TimeoutSeconds")
	// Nil args.
	_, perr := plan.Run("fileflow", "test", func(ctx *pulumi.Context) error {
		_, err := pipeline.New(ctx, "files", nil)
		return err
	})
	assert.ErrorContains(t, perr, "args are required")
}

func w(f pipeline.FunctionArgs) pipeline.Args {
	return pipeline.Args{Code: code(), Functions: map[string]pipeline.FunctionArgs{"worker": f}}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// With a dispatch function, the component adds the jobs queue, its DLQ, mapping, role and
// alarms; the dispatcher may send to the tasks queue and publish completions, nothing more.
func TestDispatchFunctionGetsJobsQueue(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code("worker", "dispatch")})
	jobs := one(t, g, "aws:sqs/queue:Queue", "files-jobs")
	one(t, g, "aws:sqs/queue:Queue", "files-jobs-dlq")
	esm := one(t, g, "aws:lambda/eventSourceMapping:EventSourceMapping", "files-dispatch-trigger")
	assert.Equal(t, jobs.State["arn"], esm.Inputs["eventSourceArn"])
	assert.Len(t, g.OfType("aws:cloudwatch/metricAlarm:MetricAlarm"), 16, "7 per function + 2 for the table")

	fn := one(t, g, "aws:lambda/function:Function", "files-dispatch")
	env := fn.Inputs["environment"].(map[string]any)["variables"].(map[string]any)
	assert.Equal(t, "https://sqs.us-east-1.amazonaws.com/123456789012/files-tasks", env["FILEFLOW_TASKS_QUEUE_URL"])
	assert.NotContains(t, env, "FILEFLOW_RULES", "rules are the worker's")

	pol := one(t, g, "aws:iam/rolePolicy:RolePolicy", "files-dispatch-policy")
	var doc pipeline.PolicyDocument
	require.NoError(t, json.Unmarshal([]byte(pol.Inputs["policy"].(string)), &doc))
	sids := map[string][]string{}
	for _, s := range doc.Statement {
		sids[s.Sid] = s.Resource
	}
	assert.Equal(t, []string{"arn:aws:sqs:us-east-1:123456789012:files-tasks"}, sids["SendTasks"])
	assert.Equal(t, []string{"arn:aws:s3:::files-ingest"}, sids["ListIngest"])
	assert.Equal(t, []string{"arn:aws:sns:us-east-1:123456789012:files-completions"}, sids["NotifyCompletion"])
	assert.Empty(t, policy.Check(g.Policy()))

	// The ingest notification (no filter) covers jobs/*.json, and S3 refuses overlapping
	// configurations: the worker forwards job specs, and may send to the jobs queue.
	n := one(t, g, "aws:s3/bucketNotification:BucketNotification", "files-ingest-events")
	assert.Len(t, n.Inputs["queues"], 1)
	wfn := one(t, g, "aws:lambda/function:Function", "files-worker")
	wenv := wfn.Inputs["environment"].(map[string]any)["variables"].(map[string]any)
	assert.Equal(t, "https://sqs.us-east-1.amazonaws.com/123456789012/files-jobs", wenv["FILEFLOW_JOBS_QUEUE_URL"])
	assert.Equal(t, "true", wenv["FILEFLOW_FORWARD_JOB_SPECS"])
	assert.Contains(t, jsonOf(one(t, g, "aws:iam/rolePolicy:RolePolicy", "files-worker-policy").Inputs), "SendToJobs")
}

// With an ingest filter that leaves jobs/ out, job specs get their own notification
// straight to the jobs queue, and the worker has no business with that queue.
func TestJobSpecsNotifyTheJobsQueue(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code("worker", "dispatch"), IngestPrefix: "uploads/"})
	n := one(t, g, "aws:s3/bucketNotification:BucketNotification", "files-ingest-events")
	qs := n.Inputs["queues"].([]any)
	require.Len(t, qs, 2)
	specs := qs[1].(map[string]any)
	assert.Equal(t, "jobs/", specs["filterPrefix"])
	assert.Equal(t, ".json", specs["filterSuffix"])
	assert.Equal(t, one(t, g, "aws:sqs/queue:Queue", "files-jobs").State["arn"], specs["queueArn"])
	qp := one(t, g, "aws:sqs/queuePolicy:QueuePolicy", "files-jobs-policy")
	assert.Contains(t, qp.Inputs["policy"], `"aws:SourceArn":"arn:aws:s3:::files-ingest"`)
	wfn := one(t, g, "aws:lambda/function:Function", "files-worker")
	assert.NotContains(t, wfn.Inputs["environment"].(map[string]any)["variables"], "FILEFLOW_FORWARD_JOB_SPECS")
	assert.Empty(t, policy.Check(g.Policy()))
}

// With ingest through EventBridge: the bucket sends its events to EventBridge; a rule
// matches Object Created in the ingest bucket with the prefix and suffix and targets
// the tasks queue, whose policy lets events.amazonaws.com send for that rule only; job
// specs get their own rule to the jobs queue. The reconcile schedule targets the jobs
// queue with the constant message.
func TestEventBridgeIngestAndReconcileSchedule(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code("worker", "dispatch"), Ingest: pipeline.IngestEventBridge,
		IngestPrefix: "uploads/", IngestSuffix: ".csv", ReconcileMinutes: 10})
	n := one(t, g, "aws:s3/bucketNotification:BucketNotification", "files-ingest-events")
	assert.Equal(t, true, n.Inputs["eventbridge"])
	assert.NotContains(t, n.Inputs, "queues")

	rule := one(t, g, "aws:cloudwatch/eventRule:EventRule", "files-ingest-rule")
	var pattern map[string]any
	require.NoError(t, json.Unmarshal([]byte(rule.Inputs["eventPattern"].(string)), &pattern))
	assert.Equal(t, map[string]any{
		"source": []any{"aws.s3"}, "detail-type": []any{"Object Created"},
		"detail": map[string]any{"bucket": map[string]any{"name": []any{"files-ingest"}},
			"object": map[string]any{"key": []any{map[string]any{"wildcard": "uploads/*.csv"}}}},
	}, pattern)
	target := one(t, g, "aws:cloudwatch/eventTarget:EventTarget", "files-ingest-rule-target")
	assert.Equal(t, one(t, g, "aws:sqs/queue:Queue", "files-tasks").State["arn"], target.Inputs["arn"])
	tp := one(t, g, "aws:sqs/queuePolicy:QueuePolicy", "files-tasks-policy").Inputs["policy"].(string)
	assert.Contains(t, tp, `"Service":"events.amazonaws.com"`)
	assert.Contains(t, tp, `"aws:SourceArn":"`+rule.State["arn"].(string)+`"`)
	assert.NotContains(t, tp, "s3.amazonaws.com", "no S3 notification sends to it")

	specs := one(t, g, "aws:cloudwatch/eventRule:EventRule", "files-job-specs-rule")
	assert.Contains(t, specs.Inputs["eventPattern"], `"wildcard":"jobs/*.json"`)
	assert.Equal(t, one(t, g, "aws:sqs/queue:Queue", "files-jobs").State["arn"],
		one(t, g, "aws:cloudwatch/eventTarget:EventTarget", "files-job-specs-rule-target").Inputs["arn"])

	sched := one(t, g, "aws:cloudwatch/eventRule:EventRule", "files-reconcile")
	assert.Equal(t, "rate(10 minutes)", sched.Inputs["scheduleExpression"])
	st := one(t, g, "aws:cloudwatch/eventTarget:EventTarget", "files-reconcile-target")
	assert.Equal(t, fnenv.ReconcileBody, st.Inputs["input"])
	assert.Equal(t, one(t, g, "aws:sqs/queue:Queue", "files-jobs").State["arn"], st.Inputs["arn"])
	jp := one(t, g, "aws:sqs/queuePolicy:QueuePolicy", "files-jobs-policy").Inputs["policy"].(string)
	assert.Contains(t, jp, `"Sid":"ReconcileSchedule"`)
	assert.Contains(t, jp, `"aws:SourceArn":"`+sched.State["arn"].(string)+`"`)
	assert.Contains(t, jp, `"aws:SecureTransport":"false"`)
	assert.Empty(t, policy.Check(g.Policy()))

	// Without the dispatcher there is no schedule.
	g = run(t, &pipeline.Args{Code: code("worker")})
	assert.Empty(t, g.OfType("aws:cloudwatch/eventRule:EventRule"))
	// One minute is "rate(1 minute)".
	g = run(t, &pipeline.Args{Code: code("worker", "dispatch"), ReconcileMinutes: 1})
	assert.Equal(t, "rate(1 minute)", one(t, g, "aws:cloudwatch/eventRule:EventRule", "files-reconcile").Inputs["scheduleExpression"])
}

func TestObjectCreatedPattern(t *testing.T) {
	for _, tt := range []struct{ prefix, suffix, want string }{
		{"", "", `{"detail":{"bucket":{"name":["b"]}},"detail-type":["Object Created"],"source":["aws.s3"]}`},
		{"in/", "", `"key":[{"prefix":"in/"}]`},
		{"", ".gz", `"key":[{"suffix":".gz"}]`},
		{`a*b\`, ".x", `"key":[{"wildcard":"a\\*b\\\\*.x"}]`},
	} {
		p, err := pipeline.ObjectCreatedPattern("b", tt.prefix, tt.suffix)
		require.NoError(t, err)
		assert.Contains(t, p, tt.want)
	}
}

// Trust, identity and resource policies are three types: a trust policy has no
// Resource at all, and a statement missing what its kind requires does not marshal.
func TestPolicyKindsMarshal(t *testing.T) {
	var trust pipeline.TrustPolicy
	g := run(t, &pipeline.Args{Code: code()})
	role := one(t, g, "aws:iam/role:Role", "files-worker-role")
	require.NoError(t, json.Unmarshal([]byte(role.Inputs["assumeRolePolicy"].(string)), &trust))
	assert.NotContains(t, role.Inputs["assumeRolePolicy"], "Resource")
	assert.Equal(t, pipeline.Service("lambda.amazonaws.com"), trust.Statement[0].Principal)

	_, err := pipeline.PolicyDocument{Statement: []pipeline.Statement{{Effect: "Allow", Action: []string{"s3:GetObject"}}}}.JSON()
	assert.ErrorContains(t, err, "no Resource")
	_, err = pipeline.ResourcePolicy{Statement: []pipeline.ResourceStatement{{Effect: "Allow", Principal: pipeline.Everyone, Action: []string{"s3:GetObject"}}}}.JSON()
	assert.ErrorContains(t, err, "no Resource")
	_, err = pipeline.TrustPolicy{Statement: []pipeline.TrustStatement{{Effect: "Allow", Principal: pipeline.Principal{}, Action: []string{"sts:AssumeRole"}}}}.JSON()
	assert.ErrorContains(t, err, "exactly one of")
	_, err = pipeline.TrustPolicy{}.JSON()
	assert.ErrorContains(t, err, "no statements")
}
