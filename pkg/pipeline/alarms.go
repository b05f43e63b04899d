package pipeline

import (
	"encoding/json"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// alarm is one CloudWatch alarm, as data: docs/operations.md says what to do about each.
type alarm struct {
	suffix      string
	description string
	namespace   string
	metric      string
	dimensions  pulumi.StringMap
	statistic   string
	period      int
	periods     int
	op          string
	threshold   float64
}

func (b *builder) alarms() error {
	var all []alarm
	for _, fnName := range sortedKeys(b.functions) {
		f := b.functions[fnName]
		q := functionQueues[fnName]
		queue, dlq := b.queues[q], b.queues[q+"-dlq"]
		all = append(all,
			alarm{q + "-dlq-depth", "Messages in the " + q + " DLQ: they failed maxReceiveCount times. Inspect, fix, redrive.",
				"AWS/SQS", "ApproximateNumberOfMessagesVisible", pulumi.StringMap{"QueueName": dlq.Name}, "Maximum", 60, 1, "GreaterThanThreshold", 0},
			alarm{q + "-dlq-age", "The oldest message in the " + q + " DLQ will expire soon (DLQs keep 14 days): redrive or record it now.",
				"AWS/SQS", "ApproximateAgeOfOldestMessage", pulumi.StringMap{"QueueName": dlq.Name}, "Maximum", 3600, 1, "GreaterThanThreshold", float64(b.args.DLQAgeAlarmSeconds)},
			alarm{q + "-depth", "The " + q + " queue is deeper than expected: processing is falling behind.",
				"AWS/SQS", "ApproximateNumberOfMessagesVisible", pulumi.StringMap{"QueueName": queue.Name}, "Maximum", 300, 3, "GreaterThanThreshold", float64(b.args.QueueDepthAlarm)},
			alarm{q + "-oldest-age", "The oldest message in the " + q + " queue is old: consumers are stuck or throttled.",
				"AWS/SQS", "ApproximateAgeOfOldestMessage", pulumi.StringMap{"QueueName": queue.Name}, "Maximum", 300, 1, "GreaterThanThreshold", float64(b.args.OldestMessageAlarmSeconds)},
			alarm{fnName + "-errors", "The " + fnName + " function failed invocations (not per-file failures, which are batch item failures).",
				"AWS/Lambda", "Errors", pulumi.StringMap{"FunctionName": f.fn.Name}, "Sum", 300, 1, "GreaterThanThreshold", 0},
			alarm{fnName + "-throttles", "The " + fnName + " function was throttled: reserved concurrency is too low for the mapping.",
				"AWS/Lambda", "Throttles", pulumi.StringMap{"FunctionName": f.fn.Name}, "Sum", 300, 1, "GreaterThanThreshold", 0},
			alarm{fnName + "-near-timeout", "A " + fnName + " invocation ran over 80% of its timeout: batches are too big or files too slow.",
				"AWS/Lambda", "Duration", pulumi.StringMap{"FunctionName": f.fn.Name}, "Maximum", 300, 1, "GreaterThanThreshold", 0.8 * float64(f.args.TimeoutSeconds*1000)},
		)
		if f.alias != nil {
			all = append(all, alarm{fnName + "-spillover", "Invocations of " + fnName + " spilled over its provisioned concurrency for 15 minutes: cold starts; raise ProvisionedMax or check the autoscaling.",
				"AWS/Lambda", "ProvisionedConcurrencySpilloverInvocations",
				pulumi.StringMap{"FunctionName": f.fn.Name, "Resource": pulumi.Sprintf("%s:%s", f.fn.Name, f.alias.Name)},
				"Sum", 300, 3, "GreaterThanThreshold", 0})
		}
	}
	for _, kind := range []string{"Read", "Write"} {
		all = append(all, alarm{"ledger-" + lower(kind) + "-throttles", "The ledger table throttled " + lower(kind) + "s: raise capacity or check hot keys.",
			"AWS/DynamoDB", kind + "ThrottleEvents", pulumi.StringMap{"TableName": b.table.Name}, "Sum", 300, 1, "GreaterThanThreshold", 0})
	}
	actions := pulumi.Array{b.alarmTopic.Arn}
	for _, a := range all {
		if _, err := cloudwatch.NewMetricAlarm(b.ctx, b.n(a.suffix), &cloudwatch.MetricAlarmArgs{
			AlarmDescription:   pulumi.String(a.description),
			Namespace:          pulumi.String(a.namespace),
			MetricName:         pulumi.String(a.metric),
			Dimensions:         a.dimensions,
			Statistic:          pulumi.String(a.statistic),
			Period:             pulumi.Int(a.period),
			EvaluationPeriods:  pulumi.Int(a.periods),
			ComparisonOperator: pulumi.String(a.op),
			Threshold:          pulumi.Float64(a.threshold),
			TreatMissingData:   pulumi.String("notBreaching"),
			AlarmActions:       actions,
			OkActions:          actions,
			Tags:               b.tags,
		}, b.parent); err != nil {
			return err
		}
	}
	return nil
}

func lower(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]+'a'-'A') + s[1:]
}

// dashboard widgets, marshalled with encoding/json.
type widget struct {
	Type       string         `json:"type"`
	X          int            `json:"x"`
	Y          int            `json:"y"`
	Width      int            `json:"width"`
	Height     int            `json:"height"`
	Properties map[string]any `json:"properties"`
}

func (b *builder) dashboardAll() error {
	names := []pulumi.StringInput{b.table.Name}
	var fnOrder []string
	for _, fn := range sortedKeys(b.functions) {
		fnOrder = append(fnOrder, fn)
		q := functionQueues[fn]
		names = append(names, b.functions[fn].fn.Name, b.queues[q].Name, b.queues[q+"-dlq"].Name)
	}
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = n
	}
	body := pulumi.All(args...).ApplyT(func(v []any) (string, error) {
		table := v[0].(string)
		region := b.regionName
		var widgets []widget
		y := 0
		add := func(title string, metrics [][]any, stat string) {
			widgets = append(widgets, widget{Type: "metric", X: (len(widgets) % 2) * 12, Y: y, Width: 12, Height: 6,
				Properties: map[string]any{"title": title, "metrics": metrics, "stat": stat, "period": 60, "view": "timeSeries", "region": region}})
			if len(widgets)%2 == 0 {
				y += 6
			}
		}
		for i, fn := range fnOrder {
			fnName, queue, dlq := v[1+3*i].(string), v[2+3*i].(string), v[3+3*i].(string)
			if fn == "dispatch" {
				// The dispatcher's own EMF metrics (pkg/dispatch/metrics.go).
				add(fn+": fan-out", [][]any{
					{"fileflow", "FanoutTasks", "Function", fnName}, {".", "FanoutFailures", ".", "."},
					{".", "FilesListed", ".", "."}, {".", "TaskMessages", ".", "."}, {".", "ChildTasks", ".", "."}, {".", "BadEntries", ".", "."},
				}, "Sum")
			} else {
				add(fn+": files", [][]any{
					{"fileflow", "FilesSucceeded", "Function", fnName}, {".", "FilesFailed", ".", "."},
					{".", "FilesRetrying", ".", "."}, {".", "FilesDuplicate", ".", "."}, {".", "FilesSkipped", ".", "."}, {".", "PoisonMessages", ".", "."},
				}, "Sum")
			}
			add(fn+": queue", [][]any{
				{"AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue}, {".", "ApproximateNumberOfMessagesNotVisible", ".", "."},
				{".", "ApproximateNumberOfMessagesVisible", ".", dlq, map[string]string{"label": "DLQ"}},
			}, "Maximum")
			add(fn+": invocations", [][]any{
				{"AWS/Lambda", "Invocations", "FunctionName", fnName}, {".", "Errors", ".", "."}, {".", "Throttles", ".", "."},
				{".", "ConcurrentExecutions", ".", ".", map[string]string{"stat": "Maximum"}},
			}, "Sum")
			add(fn+": duration", [][]any{
				{"AWS/Lambda", "Duration", "FunctionName", fnName, map[string]string{"stat": "p50"}},
				{"...", map[string]string{"stat": "p99"}}, {"...", map[string]string{"stat": "Maximum"}},
			}, "p50")
		}
		add("ledger", [][]any{
			{"AWS/DynamoDB", "ConsumedWriteCapacityUnits", "TableName", table}, {".", "ConsumedReadCapacityUnits", ".", "."},
			{".", "WriteThrottleEvents", ".", "."}, {".", "ReadThrottleEvents", ".", "."},
		}, "Sum")
		bs, err := json.Marshal(map[string]any{"widgets": widgets})
		return string(bs), err
	}).(pulumi.StringOutput)
	var err error
	b.dashboard, err = cloudwatch.NewDashboard(b.ctx, b.n("dashboard"), &cloudwatch.DashboardArgs{
		DashboardName: pulumi.String(b.dashboardName()),
		DashboardBody: body,
	}, b.parent)
	return err
}
