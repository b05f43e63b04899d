package pipeline

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/kms"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/s3"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sqs"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/job"
)

// Ingest routes.
const (
	IngestNotification = "notification" // S3 event notifications straight to the queues
	IngestEventBridge  = "eventbridge"  // S3 → EventBridge → rules → the queues
)

// queueAllow lets one AWS service send to a queue on behalf of one source (a bucket, an
// EventBridge rule) of this account.
type queueAllow struct {
	sid     string
	service string // "s3.amazonaws.com", "events.amazonaws.com"
	source  pulumi.StringOutput
}

func (b *builder) allowSend(queue, sid, service string, source pulumi.StringOutput) {
	b.queueAllows[queue] = append(b.queueAllows[queue], queueAllow{sid, service, source})
}

// queuePolicies declares one policy per queue (SQS keeps one; a second QueuePolicy on
// the same queue would overwrite the first): TLS only, plus the service senders.
func (b *builder) queuePolicies() error {
	var declared []pulumi.Resource
	for _, q := range sortedKeys(b.queues) {
		queue := b.queues[q]
		allows := b.queueAllows[q]
		args := []any{queue.Arn, b.account}
		for _, a := range allows {
			args = append(args, a.source)
		}
		policy := pulumi.All(args...).ApplyT(func(v []any) (string, error) {
			arn, account := v[0].(string), v[1].(string)
			st := []ResourceStatement{denyInsecureTransport("sqs", arn)}
			for i, a := range allows {
				st = append(st, ResourceStatement{Sid: a.sid, Effect: "Allow", Principal: Service(a.service),
					Action: []string{"sqs:SendMessage"}, Resource: []string{arn},
					Condition: Condition{"ArnEquals": {"aws:SourceArn": v[2+i].(string)}, "StringEquals": {"aws:SourceAccount": account}}})
			}
			return ResourcePolicy{Statement: st}.JSON()
		}).(pulumi.StringOutput)
		qp, err := sqs.NewQueuePolicy(b.ctx, b.n(q+"-policy"), &sqs.QueuePolicyArgs{QueueUrl: queue.Url, Policy: policy}, b.parent)
		if err != nil {
			return err
		}
		declared = append(declared, qp)
	}
	for _, f := range b.afterQueuePolicies {
		if err := f(declared); err != nil {
			return err
		}
	}
	return nil
}

// ingestRouting sends the ingest bucket's ObjectCreated events within the prefix and
// suffix filters to the tasks queue, and job specs (jobs/*.json) to the jobs queue:
// through S3 event notifications, or through EventBridge rules.
func (b *builder) ingestRouting() error {
	if b.args.Ingest == IngestEventBridge {
		return b.eventBridgeIngest()
	}
	tasks := b.queues["tasks"]
	b.allowSend("tasks", "S3IngestEvents", "s3.amazonaws.com", b.ingest.Arn)
	q := s3.BucketNotificationQueueArgs{
		Id: pulumi.String("fileflow-ingest"), QueueArn: tasks.Arn, Events: pulumi.ToStringArray([]string{"s3:ObjectCreated:*"}),
	}
	if b.args.IngestPrefix != "" {
		q.FilterPrefix = pulumi.String(b.args.IngestPrefix)
	}
	if b.args.IngestSuffix != "" {
		q.FilterSuffix = pulumi.String(b.args.IngestSuffix)
	}
	queues := s3.BucketNotificationQueueArray{q}
	if jobs, ok := b.queues["jobs"]; ok && !b.jobSpecsViaWorker() {
		// Job specs under jobs/ go straight to the dispatcher's queue.
		b.allowSend("jobs", "S3JobSpecs", "s3.amazonaws.com", b.ingest.Arn)
		queues = append(queues, s3.BucketNotificationQueueArgs{
			Id: pulumi.String("fileflow-job-specs"), QueueArn: jobs.Arn, Events: pulumi.ToStringArray([]string{"s3:ObjectCreated:*"}),
			FilterPrefix: pulumi.String(job.SpecPrefix), FilterSuffix: pulumi.String(".json"),
		})
	}
	// S3 checks that it may send when the configuration is created: the queue policies
	// must exist first. They are declared last (one per queue), so depend on them by
	// ordering the notification after the step that declares them.
	b.afterQueuePolicies = append(b.afterQueuePolicies, func(deps []pulumi.Resource) error {
		_, err := s3.NewBucketNotification(b.ctx, b.n("ingest-events"), &s3.BucketNotificationArgs{
			Bucket: b.ingest.ID(), Queues: queues,
		}, b.parent, pulumi.DependsOn(deps))
		return err
	})
	return nil
}

// jobSpecsViaWorker: the ingest filter overlaps jobs/*.json, so S3 would refuse a second
// notification configuration for job specs (and an EventBridge rule for them would
// deliver them twice); they reach the worker, which forwards them to the jobs queue.
func (b *builder) jobSpecsViaWorker() bool {
	if _, ok := b.queues["jobs"]; !ok {
		return false
	}
	p, s := b.args.IngestPrefix, b.args.IngestSuffix
	prefixes := strings.HasPrefix(p, job.SpecPrefix) || strings.HasPrefix(job.SpecPrefix, p)
	suffixes := strings.HasSuffix(s, ".json") || strings.HasSuffix(".json", s)
	return prefixes && suffixes
}

// keyPattern is an EventBridge content filter for object keys with a prefix and a
// suffix: prefix and suffix matchers, or one wildcard matcher for both.
func keyPattern(prefix, suffix string) []map[string]string {
	esc := strings.NewReplacer(`\`, `\\`, `*`, `\*`)
	switch {
	case prefix != "" && suffix != "":
		return []map[string]string{{"wildcard": esc.Replace(prefix) + "*" + esc.Replace(suffix)}}
	case prefix != "":
		return []map[string]string{{"prefix": prefix}}
	case suffix != "":
		return []map[string]string{{"suffix": suffix}}
	}
	return nil
}

// ObjectCreatedPattern is the EventBridge pattern of the bucket's Object Created events
// with keys matching the prefix and suffix.
func ObjectCreatedPattern(bucket, prefix, suffix string) (string, error) {
	object := map[string]any{}
	if kp := keyPattern(prefix, suffix); kp != nil {
		object["key"] = kp
	}
	detail := map[string]any{"bucket": map[string]any{"name": []string{bucket}}}
	if len(object) > 0 {
		detail["object"] = object
	}
	bs, err := json.Marshal(map[string]any{
		"source": []string{"aws.s3"}, "detail-type": []string{"Object Created"}, "detail": detail,
	})
	return string(bs), err
}

func (b *builder) eventBridgeIngest() error {
	// The bucket sends every event to EventBridge; rules pick what goes where.
	if _, err := s3.NewBucketNotification(b.ctx, b.n("ingest-events"), &s3.BucketNotificationArgs{
		Bucket: b.ingest.ID(), Eventbridge: pulumi.Bool(true),
	}, b.parent); err != nil {
		return err
	}
	route := func(name, queue, sid, prefix, suffix, description string) error {
		pattern := b.ingest.Bucket.ApplyT(func(bucket string) (string, error) {
			return ObjectCreatedPattern(bucket, prefix, suffix)
		}).(pulumi.StringOutput)
		rule, err := cloudwatch.NewEventRule(b.ctx, b.n(name), &cloudwatch.EventRuleArgs{
			Description: pulumi.String(description), EventPattern: pattern, Tags: b.tags,
		}, b.parent)
		if err != nil {
			return err
		}
		if _, err := cloudwatch.NewEventTarget(b.ctx, b.n(name+"-target"), &cloudwatch.EventTargetArgs{
			Rule: rule.Name, Arn: b.queues[queue].Arn,
		}, b.parent); err != nil {
			return err
		}
		b.allowSend(queue, sid, "events.amazonaws.com", rule.Arn)
		return nil
	}
	if err := route("ingest-rule", "tasks", "EventBridgeIngest", b.args.IngestPrefix, b.args.IngestSuffix,
		"fileflow: uploads to the ingest bucket → the tasks queue"); err != nil {
		return err
	}
	if _, ok := b.queues["jobs"]; ok && !b.jobSpecsViaWorker() {
		return route("job-specs-rule", "jobs", "EventBridgeJobSpecs", job.SpecPrefix, ".json",
			"fileflow: job specs uploaded under jobs/ → the jobs queue")
	}
	return nil
}

// reconcileSchedule sends the dispatcher a reconcile request every ReconcileMinutes:
// an EventBridge schedule whose target is the jobs queue, with a constant message.
func (b *builder) reconcileSchedule() error {
	jobs, ok := b.queues["jobs"]
	if !ok {
		return nil
	}
	unit := "minutes"
	if b.args.ReconcileMinutes == 1 {
		unit = "minute"
	}
	rule, err := cloudwatch.NewEventRule(b.ctx, b.n("reconcile"), &cloudwatch.EventRuleArgs{
		Description:        pulumi.String("fileflow: the dispatcher re-checks running jobs"),
		ScheduleExpression: pulumi.String(fmt.Sprintf("rate(%d %s)", b.args.ReconcileMinutes, unit)),
		Tags:               b.tags,
	}, b.parent)
	if err != nil {
		return err
	}
	if _, err := cloudwatch.NewEventTarget(b.ctx, b.n("reconcile-target"), &cloudwatch.EventTargetArgs{
		Rule: rule.Name, Arn: jobs.Arn, Input: pulumi.String(fnenv.ReconcileBody),
	}, b.parent); err != nil {
		return err
	}
	b.allowSend("jobs", "ReconcileSchedule", "events.amazonaws.com", rule.Arn)
	return nil
}

// kmsKey declares the pipeline's customer-managed key (Args.CustomerManagedKey): the
// account administers it; the services that deliver into the pipeline's encrypted
// queues and topics (S3 notifications, EventBridge, CloudWatch alarms) may use it for
// this account's resources; CloudWatch Logs may use it for the pipeline's log groups.
// The functions' roles get their use of it through the services (kms:ViaService).
func (b *builder) kmsKey() error {
	if !b.args.CustomerManagedKey {
		return nil
	}
	policy := b.account.ApplyT(func(account string) (string, error) {
		st := []ResourceStatement{{
			Sid: "AccountAdministers", Effect: "Allow", Principal: Principal{AWS: "arn:aws:iam::" + account + ":root"},
			Action: []string{"kms:*"}, Resource: []string{"*"},
		}}
		for _, svc := range []struct{ sid, name string }{
			{"S3Notifications", "s3.amazonaws.com"}, {"EventBridge", "events.amazonaws.com"}, {"CloudWatchAlarms", "cloudwatch.amazonaws.com"},
		} {
			st = append(st, ResourceStatement{Sid: svc.sid, Effect: "Allow", Principal: Service(svc.name),
				Action: []string{"kms:GenerateDataKey", "kms:Decrypt"}, Resource: []string{"*"},
				Condition: Condition{"StringEquals": {"aws:SourceAccount": account}}})
		}
		st = append(st, ResourceStatement{Sid: "CloudWatchLogs", Effect: "Allow", Principal: Service("logs." + b.regionName + ".amazonaws.com"),
			Action:   []string{"kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey", "kms:DescribeKey"},
			Resource: []string{"*"},
			Condition: Condition{"ArnLike": {"kms:EncryptionContext:aws:logs:arn": fmt.Sprintf("arn:aws:logs:%s:%s:log-group:%s",
				b.regionName, account, b.logGroupName("*"))}}})
		return ResourcePolicy{Statement: st}.JSON()
	}).(pulumi.StringOutput)
	var err error
	b.key, err = kms.NewKey(b.ctx, b.n("key"), &kms.KeyArgs{
		Description:       pulumi.Sprintf("fileflow %s: buckets, queues, topics, ledger and logs", b.name),
		EnableKeyRotation: pulumi.Bool(true), DeletionWindowInDays: pulumi.Int(30), Policy: policy, Tags: b.tags,
	}, append(b.protect(), b.parent)...)
	return err
}
