package devstack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/iamcheck"
	"github.com/fileflow/fileflow/pkg/local/devstack"
	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/stack"
	"github.com/fileflow/fileflow/pkg/stage"
)

// recording collects every AWS call the functions make in this package's end-to-end
// runs (TestPipelineEndToEnd: S3 events; TestJobs: every job kind), in order to judge
// them with an IAM simulator once they have all run (this file sorts after theirs).
var recording = devstack.NewRecording()

// neverExercised lists the grants of the dev stage's role policies that the local run
// does not exercise, each with the reason it is granted anyway. The test fails when a
// grant is neither exercised nor listed (remove it, or say why it stays) and when a
// listed grant is exercised after all or no longer granted (the table is stale).
// Grants marked sometimes are exercised in some runs only (timing, failures).
var neverExercised = map[string]struct {
	reason    string
	sometimes bool
}{
	"worker WriteOwnLogs logs:CreateLogStream":             {reason: "Lambda itself writes the function's stdout to its log group with the role; the local runtime reads stdout directly"},
	"worker WriteOwnLogs logs:PutLogEvents":                {reason: "as logs:CreateLogStream"},
	"dispatch WriteOwnLogs logs:CreateLogStream":           {reason: "as the worker's"},
	"dispatch WriteOwnLogs logs:PutLogEvents":              {reason: "as the worker's"},
	"dispatch ReadIngest s3:GetObjectVersion":              {reason: "a job spec's event, or a manifest entry, names a versionId (versioned ingest bucket)", sometimes: true},
	"worker WriteOutput s3:AbortMultipartUpload":           {reason: "aborts a multipart output whose upload failed; the run's uploads succeed", sometimes: true},
	"dispatch WriteReports s3:AbortMultipartUpload":        {reason: "aborts a report file whose upload failed", sometimes: true},
	"dispatch WriteSplitScratch s3:AbortMultipartUpload":   {reason: "aborts a split merge that failed", sometimes: true},
	"worker ListIngest s3:ListBucket":                      {reason: "makes a read of a key deleted before its event is handled NoSuchKey (404, retried) instead of AccessDenied (403, permanent); no test file is deleted", sometimes: true},
	"worker ConsumeOwnQueue sqs:ChangeMessageVisibility":   {reason: "backs off a retryable failure; exercised when a file fails transiently (the slow files)", sometimes: true},
	"dispatch ConsumeOwnQueue sqs:ChangeMessageVisibility": {reason: "brings a finalize back while report lines are still being written, or a task whose parent wait could not be sent", sometimes: true},
	"worker ResendWaitingTasks sqs:SendMessage":            {reason: "a task message that arrives before its fan-out task is counted is sent again, delayed", sometimes: true},
	"dispatch SendChildJobs sqs:SendMessage":               {reason: "finalize re-requests and parent waits send single messages; child fan-out tasks go in batches (also sqs:SendMessage)", sometimes: true},
	"worker WriteOutput s3:GetObject":                      {reason: "HEADs an output: a conditional PUT refused (whose output is there?), a redelivery's confirm, a superseded revision's output check", sometimes: true},
	"worker ListOutput s3:ListBucket":                      {reason: "makes a HEAD of a missing output (a superseded revision's output check) NotFound instead of AccessDenied", sometimes: true},
	"dispatch ListOutput s3:ListBucket":                    {reason: "makes a GET of a missing report part NoSuchKey (named in the report) instead of AccessDenied", sometimes: true},
	"dispatch PeekDeadLetters sqs:ReceiveMessage":          {reason: "the reconciler peeks at the DLQs while a job is open; exercised when a reconcile message arrives during a job", sometimes: true},
	"dispatch PeekDeadLetters sqs:ChangeMessageVisibility": {reason: "the reconciler makes the DLQ messages it peeked at visible again; only when a DLQ holds messages while a job is open", sometimes: true},
	"dispatch RemoveOwnScratch s3:DeleteObject":            {reason: "removes the report part of a delivery that was not counted (a duplicate, an orphan), and a split's merge once promoted", sometimes: true},
	"worker RemoveStaleOutputs s3:DeleteObject":            {reason: "removes a superseded revision's output, or an uncounted delivery's report part", sometimes: true},
}

func TestIAMAllowsEveryRecordedCall(t *testing.T) {
	g := recording.Graph()
	all := recording.Calls()
	require.NotNil(t, g, "no local run was recorded: this test judges the calls of TestPipelineEndToEnd and TestJobs; run them in the same `go test` (-run 'TestPipelineEndToEnd|TestJobs|TestIAM')")
	byFunction := map[string]int{}
	for _, c := range all {
		byFunction[c.Function]++
	}
	require.Positive(t, byFunction["worker"], "worker calls recorded")
	require.Positive(t, byFunction["dispatch"], "dispatcher calls recorded")

	ctx := context.Background()
	checker, err := iamcheck.New(ctx, "")
	require.NoError(t, err)
	roles := iamcheck.Roles(g)
	roleOf := func(g map[string]iamcheck.Role, component string) func(c iamcheck.Call) (iamcheck.Role, error) {
		return func(c iamcheck.Call) (iamcheck.Role, error) {
			r, ok := g[component+"-"+c.Function]
			if !ok {
				return r, fmt.Errorf("no role for function %s", c.Function)
			}
			return r, nil
		}
	}
	calls := make([]iamcheck.Call, len(all))
	for i, c := range all {
		calls[i] = c.Call
	}
	judged, err := checker.Judge(ctx, g, roleOf(roles, stack.ComponentName), calls)
	require.NoError(t, err)
	var denied []string
	for _, j := range judged {
		if j.Decision.Result != iamcheck.Allowed {
			denied = append(denied, fmt.Sprintf("%s %s %s → %s %s", j.Function, j.Operation, j.Resource, j.Decision.Result, j.Decision.Error))
		}
	}
	sort.Strings(denied)
	assert.Empty(t, denied, "calls the functions made that their roles would not be allowed in AWS")
	// The dispatcher's only way to write an output key is a copy of a split's merge
	// (PromoteMergedSplits, conditioned on s3:x-amz-copy-source): the run must have made
	// that copy, and been allowed it, or the condition is untested.
	promotes := 0
	for _, j := range judged {
		if j.Function == "dispatch" && j.Operation == "S3.CopyObject" && j.Decision.Result == iamcheck.Allowed &&
			strings.Contains(j.Context["s3:x-amz-copy-source"], ".parts/") && !strings.Contains(j.Resource, ".parts/") {
			promotes++
		}
	}
	assert.Positive(t, promotes, "no split merge was promoted to its output key by a copy")
	t.Logf("calls recorded %d (%d distinct: worker %d, dispatch %d), simulated %d, denied %d; split merges promoted by copy %d",
		recording.Total(), len(all), byFunction["worker"], byFunction["dispatch"], len(judged), len(denied), promotes)
	t.Logf("per function and action: %s", recording.String())

	t.Run("GrantsNeverExercised", func(t *testing.T) {
		unexercised := map[string]bool{}
		granted := map[string]bool{}
		allowed := map[string][]string{} // "function action" → resources allowed
		for _, j := range judged {
			if j.Decision.Result == iamcheck.Allowed {
				allowed[j.Function+" "+j.Action] = append(allowed[j.Function+" "+j.Action], j.Resource)
			}
		}
		for _, fn := range []string{"worker", "dispatch"} {
			role := roles[stack.ComponentName+"-"+fn]
			for _, doc := range role.Policies {
				var p pipeline.PolicyDocument
				require.NoError(t, json.Unmarshal([]byte(doc), &p))
				for _, s := range p.Statement {
					for _, action := range s.Action {
						k := fn + " " + s.Sid + " " + action
						granted[k] = true
						match := patterns(s.Resource)
						used := false
						for _, res := range allowed[fn+" "+action] {
							if match.MatchString(res) {
								used = true
								break
							}
						}
						if !used {
							unexercised[k] = true
						}
					}
				}
			}
		}
		var missing, stale []string
		for k := range unexercised {
			if _, ok := neverExercised[k]; !ok {
				missing = append(missing, k)
			}
		}
		for k, e := range neverExercised {
			assert.NotEmpty(t, e.reason, k)
			switch {
			case !granted[k]:
				stale = append(stale, k+" (no longer granted)")
			case !unexercised[k] && !e.sometimes:
				stale = append(stale, k+" (exercised now)")
			}
		}
		sort.Strings(missing)
		sort.Strings(stale)
		assert.Empty(t, missing, "granted but never exercised, and not in neverExercised with a reason: remove the grant or give the reason")
		assert.Empty(t, stale, "neverExercised is stale")
		var rows []string
		for k := range unexercised {
			rows = append(rows, k+": "+neverExercised[k].reason)
		}
		sort.Strings(rows)
		t.Logf("%d grants never exercised by this run:\n  %s", len(rows), strings.Join(rows, "\n  "))
	})

	t.Run("NegativeCases", func(t *testing.T) {
		ingest, output := bucketARN(t, g, "-ingest"), bucketARN(t, g, "-output")
		var loop, dispatchIngest, dispatchDelete, dispatchOutputs, dispatchCopies []iamcheck.Call
		// Negative cases are judged on representatives: one object per function, action,
		// bucket and folder (the policies' patterns name buckets and prefixes, never
		// single files), every queue, table and topic.
		seen := map[string]bool{}
		once := func(c iamcheck.Call) bool {
			k := c.Function + " " + c.Action + " " + folder(c.Resource)
			if seen[k] {
				return false
			}
			seen[k] = true
			return true
		}
		for _, c := range calls {
			if !strings.HasPrefix(c.Resource, output+"/") {
				continue
			}
			key := strings.TrimPrefix(c.Resource, output+"/")
			isWrite := c.Action == "s3:PutObject" || c.Action == "s3:AbortMultipartUpload"
			if c.Function == "worker" && isWrite {
				// A worker writing its output into the ingest bucket would trigger itself.
				if w := (iamcheck.Call{Function: "worker", Operation: c.Operation, Action: c.Action, Resource: ingest + "/" + key}); once(w) {
					loop = append(loop, w)
				}
				// The dispatcher writing a worker's output (outside reports/ and split
				// parts).
				if !strings.Contains(key, "reports/") && !strings.Contains(key, ".parts/") {
					if d := (iamcheck.Call{Function: "dispatch", Operation: c.Operation, Action: c.Action, Resource: c.Resource}); once(d) {
						dispatchOutputs = append(dispatchOutputs, d)
					}
					// …nor as a copy of anything but a split's merge: its report files,
					// another output, an ingest file.
					for _, src := range []string{"reports/x/result.csv", "other-output", ""} {
						from := strings.TrimPrefix(output, "arn:aws:s3:::") + "/" + src
						if src == "" {
							from = strings.TrimPrefix(ingest, "arn:aws:s3:::") + "/" + key
						}
						d := iamcheck.Call{Function: "dispatch", Operation: "S3.CopyObject", Action: "s3:PutObject", Resource: c.Resource,
							Context: map[string]string{"s3:x-amz-copy-source": from}}
						if once(iamcheck.Call{Function: "dispatch copy from " + src, Action: d.Action, Resource: d.Resource}) {
							dispatchCopies = append(dispatchCopies, d)
						}
					}
				}
			}
			if c.Function == "dispatch" && isWrite {
				if d := (iamcheck.Call{Function: "dispatch", Operation: c.Operation, Action: c.Action, Resource: ingest + "/" + key}); once(d) {
					dispatchIngest = append(dispatchIngest, d)
				}
			}
			// The dispatcher may delete only its own scratch: report parts it did not
			// count, a split's merge once promoted.
			if strings.Contains(key, "reports/") || strings.Contains(key, ".parts/") {
				continue
			}
			if d := (iamcheck.Call{Function: "dispatch", Operation: "S3.DeleteObject", Action: "s3:DeleteObject", Resource: c.Resource}); once(d) {
				dispatchDelete = append(dispatchDelete, d)
			}
		}

		// Two component instances in one program: every call, aimed at the second
		// pipeline's bucket, table, queues or topic, by the first pipeline's roles.
		two := twoPipelines(t)
		var other []iamcheck.Call
		for _, c := range calls {
			moved := c
			moved.Resource = strings.NewReplacer(":::"+stack.ComponentName+"-", ":::other-", ":"+stack.ComponentName+"-", ":other-",
				"table/"+stack.ComponentName+"-", "table/other-").Replace(c.Resource)
			require.NotEqual(t, c.Resource, moved.Resource, "a call outside the pipeline: %+v", c)
			if once(moved) {
				other = append(other, moved)
			}
		}
		twoRoles := iamcheck.Roles(two)
		// Control: in the two-pipeline program, the first pipeline's own calls are still
		// allowed, so the denials below are about the other pipeline, not the program.
		var representatives []iamcheck.Call
		for _, c := range calls {
			if once(iamcheck.Call{Function: "control " + c.Function, Action: c.Action, Resource: c.Resource}) {
				representatives = append(representatives, c)
			}
		}
		control, err := checker.Judge(ctx, two, roleOf(twoRoles, stack.ComponentName), representatives)
		require.NoError(t, err)
		for _, j := range control {
			require.Equal(t, iamcheck.Allowed, j.Decision.Result, "control: %s %s %s", j.Function, j.Action, j.Resource)
		}

		cases := []struct {
			name  string
			graph *plan.Graph
			calls []iamcheck.Call
			want  string
			why   string
		}{
			{"worker writes into the ingest bucket (a trigger loop)", g, loop, "denied", ""},
			{"worker and dispatcher touch a second pipeline's buckets, table, queues, topic", two, other, "denied", ""},
			{"dispatcher writes into the ingest bucket", g, dispatchIngest, "denied", ""},
			{"dispatcher deletes objects in the output bucket (outside reports/ and split parts)", g, dispatchDelete, "denied", ""},
			{"dispatcher writes a worker's output key (outside reports/ and split parts)", g, dispatchOutputs, "denied", ""},
			{"dispatcher copies into an output key from anything but a split's merge", g, dispatchCopies, "denied", ""},
		}
		total := 0
		for _, tc := range cases {
			require.NotEmpty(t, tc.calls, tc.name)
			roleMap := roles
			if tc.graph == two {
				roleMap = twoRoles
			}
			js, err := checker.Judge(ctx, tc.graph, roleOf(roleMap, stack.ComponentName), tc.calls)
			require.NoError(t, err)
			n := 0
			for _, j := range js {
				require.Empty(t, j.Decision.Error, "%s: %s %s", tc.name, j.Action, j.Resource)
				isDenied := j.Decision.Result == iamcheck.ImplicitlyDenied || j.Decision.Result == iamcheck.ExplicitlyDenied
				if (tc.want == "denied") == isDenied {
					n++
				} else {
					t.Errorf("%s: %s %s %s → %s (want %s)", tc.name, j.Function, j.Action, j.Resource, j.Decision.Result, tc.want)
				}
			}
			if tc.want == "denied" {
				total += n
			}
			t.Logf("negative case %q: %d of %d %s %s", tc.name, n, len(js), tc.want, tc.why)
		}
		t.Logf("negative cases denied: %d", total)
	})
}

// folder is an S3 object ARN without its last path element (other ARNs unchanged).
func folder(arn string) string {
	if !strings.HasPrefix(arn, "arn:aws:s3:::") || !strings.Contains(strings.TrimPrefix(arn, "arn:aws:s3:::"), "/") {
		return arn
	}
	return arn[:strings.LastIndexByte(arn, '/')+1]
}

func bucketARN(t *testing.T, g *plan.Graph, suffix string) string {
	t.Helper()
	for _, b := range g.OfType("aws:s3/bucketV2:BucketV2") {
		if strings.HasSuffix(b.Name, suffix) {
			return b.State["arn"].(string)
		}
	}
	t.Fatalf("no bucket %s", suffix)
	return ""
}

// twoPipelines plans the dev stage's args as two components in one program.
func twoPipelines(t *testing.T) *plan.Graph {
	t.Helper()
	root, err := stack.ModuleRoot(".")
	require.NoError(t, err)
	values, err := stage.ReadFile(stack.StageFile(root, "dev"))
	require.NoError(t, err)
	args, err := stage.Parse(values, filepath.Base(stack.StageFile(root, "dev")), []string{"dispatch", "worker"})
	require.NoError(t, err)
	code := map[string]pipeline.Code{}
	for _, fn := range []string{"dispatch", "worker"} {
		code[fn] = pipeline.Code{Archive: pulumi.NewAssetArchive(map[string]any{"bootstrap": pulumi.NewStringAsset(fn)}), Hash: "eA=="}
	}
	args.Code = code
	g, err := plan.Run(stack.Project, "dev", func(ctx *pulumi.Context) error {
		for _, name := range []string{stack.ComponentName, "other"} {
			a := args
			if _, err := pipeline.New(ctx, name, &a); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	return g
}

// patterns matches what one of the IAM resource patterns ("*", "?") covers.
func patterns(ps []string) *regexp.Regexp {
	var alts []string
	for _, p := range ps {
		alts = append(alts, strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(p)))
	}
	return regexp.MustCompile("^(?:" + strings.Join(alts, "|") + ")$")
}

// published are the metrics AWS services publish that the component's dashboard and
// alarms use, with their dimension sets (from the services' CloudWatch metrics docs).
var published = map[string][]string{
	"AWS/SQS ApproximateNumberOfMessagesVisible":            {"QueueName"},
	"AWS/SQS ApproximateNumberOfMessagesNotVisible":         {"QueueName"},
	"AWS/SQS ApproximateAgeOfOldestMessage":                 {"QueueName"},
	"AWS/Lambda Invocations":                                {"FunctionName", "FunctionName,Resource"},
	"AWS/Lambda Errors":                                     {"FunctionName", "FunctionName,Resource"},
	"AWS/Lambda Throttles":                                  {"FunctionName", "FunctionName,Resource"},
	"AWS/Lambda Duration":                                   {"FunctionName", "FunctionName,Resource"},
	"AWS/Lambda ConcurrentExecutions":                       {"FunctionName", "FunctionName,Resource"},
	"AWS/Lambda ProvisionedConcurrencySpilloverInvocations": {"FunctionName,Resource"},
	"AWS/DynamoDB ConsumedWriteCapacityUnits":               {"TableName"},
	"AWS/DynamoDB ConsumedReadCapacityUnits":                {"TableName"},
	"AWS/DynamoDB ReadThrottleEvents":                       {"TableName"},
	"AWS/DynamoDB WriteThrottleEvents":                      {"TableName"},
}

// Every dashboard widget's metric and every alarm has data: its namespace, metric and
// dimensions are what a function emitted in the local run (EMF lines) or what an AWS
// service publishes, and its dimension values name a declared resource. Both stages.
func TestDashboardAndAlarmsHaveData(t *testing.T) {
	emitted := recording.Emitted()
	require.NotEmpty(t, emitted, "no EMF line recorded: this test reads the metrics of TestPipelineEndToEnd and TestJobs (run them in the same `go test`)")
	byMetric := map[string][]string{} // "namespace metric" → functions' "dimension sets"
	for _, e := range emitted {
		f := strings.Fields(e) // function namespace metric dims
		byMetric[f[1]+" "+f[2]] = append(byMetric[f[1]+" "+f[2]], f[3])
	}
	t.Logf("emitted by the functions: %v", emitted)
	root, err := stack.ModuleRoot(".")
	require.NoError(t, err)
	for _, st := range []string{"dev", "prod"} {
		g, _, err := stack.Plan(context.Background(), root, st)
		require.NoError(t, err)
		names := map[string]bool{} // declared queue, function, table names (and function:alias)
		for _, r := range g.Resources {
			if n, ok := r.State["name"].(string); ok {
				names[n] = true
			}
		}
		for _, a := range g.OfType("aws:lambda/alias:Alias") {
			names[fmt.Sprint(a.Inputs["functionName"])+":"+fmt.Sprint(a.Inputs["name"])] = true
		}
		check := func(where, ns, metric string, dims map[string]string) {
			var keys []string
			for k, v := range dims {
				keys = append(keys, k)
				assert.True(t, names[v], "%s: %s=%s names no declared resource", where, k, v)
			}
			sort.Strings(keys)
			set := strings.Join(keys, ",")
			sets, fromFunction := byMetric[ns+" "+metric]
			if !fromFunction {
				sets = published[ns+" "+metric]
			}
			assert.Contains(t, sets, set, "%s: %s %s with dimensions %s is neither emitted by a function nor published by AWS", where, ns, metric, set)
		}
		n := 0
		for _, a := range g.OfType("aws:cloudwatch/metricAlarm:MetricAlarm") {
			dims := map[string]string{}
			for k, v := range a.Inputs["dimensions"].(map[string]any) {
				dims[k] = fmt.Sprint(v)
			}
			check(st+" alarm "+a.Name, fmt.Sprint(a.Inputs["namespace"]), fmt.Sprint(a.Inputs["metricName"]), dims)
			n++
		}
		for _, d := range g.OfType("aws:cloudwatch/dashboard:Dashboard") {
			var body struct {
				Widgets []struct {
					Properties struct {
						Title   string  `json:"title"`
						Metrics [][]any `json:"metrics"`
					} `json:"properties"`
				} `json:"widgets"`
			}
			require.NoError(t, json.Unmarshal([]byte(d.Inputs["dashboardBody"].(string)), &body))
			for _, w := range body.Widgets {
				var prev []string
				for _, m := range w.Properties.Metrics {
					cur := expandMetric(m, prev)
					prev = cur
					dims := map[string]string{}
					for i := 2; i+1 < len(cur); i += 2 {
						dims[cur[i]] = cur[i+1]
					}
					check(st+" widget "+w.Properties.Title, cur[0], cur[1], dims)
					n++
				}
			}
		}
		t.Logf("stage %s: %d alarm and widget metrics checked", st, n)
	}
}

// expandMetric resolves a dashboard metric array's shorthand ("." repeats the previous
// row's value at that position, "..." the previous row's remaining values) and drops
// the trailing options object.
func expandMetric(m []any, prev []string) []string {
	var out []string
	for i, x := range m {
		s, ok := x.(string)
		if !ok {
			continue // rendering options
		}
		switch {
		case s == "...":
			out = append(out, prev[len(out):]...)
		case s == "." && i < len(prev):
			out = append(out, prev[i])
		default:
			out = append(out, s)
		}
	}
	return out
}
