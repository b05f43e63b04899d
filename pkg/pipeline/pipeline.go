// Package pipeline is fileflow's Pulumi component: the whole file-processing platform
// (buckets, queues with DLQs, the ledger table, Go Lambda functions with their SQS event
// source mappings, IAM, alarms, SNS topics, a dashboard and autoscaling) as one
// ComponentResource that other Go stacks can import.
//
//	p, err := pipeline.New(ctx, "files", &pipeline.Args{Code: code})
//	ctx.Export("ingestBucket", p.IngestBucket)
//
// Everything that AWS documents as a pitfall is derived or checked here, not left to
// each stack: visibility timeout = 6 x function timeout + batching window,
// ReportBatchItemFailures always on, reserved concurrency >= the mapping's maximum
// concurrency, a DLQ and a depth alarm for every queue, TLS-only encrypted private
// buckets, least-privilege roles built from Go structs.
package pipeline

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/dynamodb"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/s3"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sns"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sqs"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// TypeToken is the component's Pulumi type.
const TypeToken = "fileflow:index:Pipeline"

// Pipeline is the deployed platform.
type Pipeline struct {
	pulumi.ResourceState

	// IngestBucket receives uploads; ObjectCreated events under the prefix/suffix
	// filters go to the tasks queue.
	IngestBucket pulumi.StringOutput `pulumi:"ingestBucket"`
	// OutputBucket receives processed files under deterministic keys.
	OutputBucket pulumi.StringOutput `pulumi:"outputBucket"`
	// TableName is the ledger table (file records, attempt history, poison messages).
	TableName pulumi.StringOutput `pulumi:"tableName"`
	// QueueURLs and QueueARNs of the work queues and their DLQs, keyed "tasks",
	// "tasks-dlq" (and "jobs", "jobs-dlq" with the dispatch function).
	QueueURLs pulumi.StringMapOutput `pulumi:"queueUrls"`
	QueueARNs pulumi.StringMapOutput `pulumi:"queueArns"`
	// FunctionNames of the Lambda functions, keyed by function ("worker", …).
	FunctionNames pulumi.StringMapOutput `pulumi:"functionNames"`
	// AlarmTopicARN receives every alarm; CompletionTopicARN job completions.
	AlarmTopicARN      pulumi.StringOutput `pulumi:"alarmTopicArn"`
	CompletionTopicARN pulumi.StringOutput `pulumi:"completionTopicArn"`
	// DashboardName is the CloudWatch dashboard.
	DashboardName pulumi.StringOutput `pulumi:"dashboardName"`
}

// New declares the platform. Invalid args fail before any resource is registered.
func New(ctx *pulumi.Context, name string, args *Args, opts ...pulumi.ResourceOption) (*Pipeline, error) {
	if args == nil {
		return nil, fmt.Errorf("pipeline %s: args are required (at least Code[\"worker\"])", name)
	}
	if err := args.Validate(); err != nil {
		return nil, fmt.Errorf("pipeline %s: invalid args:\n%w", name, err)
	}
	a := args.withDefaults(sortedKeys(args.Code))
	p := &Pipeline{}
	if err := ctx.RegisterComponentResource(TypeToken, name, p, opts...); err != nil {
		return nil, err
	}
	b := &builder{ctx: ctx, name: name, args: a, parent: pulumi.Parent(p), tags: pulumi.ToStringMap(withTag(a.Tags, "fileflow:pipeline", name))}
	if err := b.build(); err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", name, err)
	}

	queueURLs, queueARNs, fnNames := pulumi.StringMap{}, pulumi.StringMap{}, pulumi.StringMap{}
	for k, q := range b.queues {
		queueURLs[k], queueARNs[k] = q.Url, q.Arn
	}
	for k, f := range b.functions {
		fnNames[k] = f.fn.Name
	}
	p.IngestBucket = b.ingest.Bucket
	p.OutputBucket = b.output.Bucket
	p.TableName = b.table.Name
	p.QueueURLs = queueURLs.ToStringMapOutput()
	p.QueueARNs = queueARNs.ToStringMapOutput()
	p.FunctionNames = fnNames.ToStringMapOutput()
	p.AlarmTopicARN = b.alarmTopic.Arn
	p.CompletionTopicARN = b.completionTopic.Arn
	p.DashboardName = b.dashboard.DashboardName
	if err := ctx.RegisterResourceOutputs(p, pulumi.Map{
		"ingestBucket": p.IngestBucket, "outputBucket": p.OutputBucket, "tableName": p.TableName,
		"queueUrls": p.QueueURLs, "queueArns": p.QueueARNs, "functionNames": p.FunctionNames,
		"alarmTopicArn": p.AlarmTopicARN, "completionTopicArn": p.CompletionTopicARN, "dashboardName": p.DashboardName,
	}); err != nil {
		return nil, err
	}
	return p, nil
}

// builder holds what the component declares as it goes.
type builder struct {
	ctx    *pulumi.Context
	name   string
	args   Args
	parent pulumi.ResourceOrInvokeOption
	tags   pulumi.StringMap

	account         pulumi.StringOutput
	regionName      string
	ingest, output  *s3.BucketV2
	table           *dynamodb.Table
	queues          map[string]*sqs.Queue // "tasks", "tasks-dlq", …
	functions       map[string]*function
	alarmTopic      *sns.Topic
	completionTopic *sns.Topic
	dashboard       *cloudwatch.Dashboard
}

func (b *builder) n(suffix string) string { return b.name + "-" + suffix }

func withTag(tags map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for tk, tv := range tags {
		out[tk] = tv
	}
	return out
}

func (b *builder) build() error {
	id, err := aws.GetCallerIdentity(b.ctx, nil, b.parent)
	if err != nil {
		return fmt.Errorf("caller identity: %w", err)
	}
	b.account = pulumi.String(id.AccountId).ToStringOutput()
	region, err := aws.GetRegion(b.ctx, nil, b.parent)
	if err != nil {
		return fmt.Errorf("region: %w", err)
	}
	b.regionName = region.Name

	steps := []func() error{b.topics, b.buckets, b.ledgerTable, b.workQueues, b.lambdas, b.notifications, b.alarms, b.dashboardAll}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) topics() error {
	var err error
	// Not encrypted with the AWS-managed SNS key: CloudWatch alarms cannot publish to a
	// topic that uses it (its key policy can't grant cloudwatch.amazonaws.com). The
	// messages hold alarm names and states, nothing from the files.
	b.alarmTopic, err = sns.NewTopic(b.ctx, b.n("alarms"), &sns.TopicArgs{Tags: b.tags}, b.parent)
	if err != nil {
		return err
	}
	if b.args.AlarmEmail != "" {
		if _, err := sns.NewTopicSubscription(b.ctx, b.n("alarms-email"), &sns.TopicSubscriptionArgs{
			Topic: b.alarmTopic.Arn, Protocol: pulumi.String("email"), Endpoint: pulumi.String(b.args.AlarmEmail),
		}, b.parent); err != nil {
			return err
		}
	}
	b.completionTopic, err = sns.NewTopic(b.ctx, b.n("completions"), &sns.TopicArgs{
		KmsMasterKeyId: pulumi.String("alias/aws/sns"), Tags: b.tags,
	}, b.parent)
	return err
}

// ledgerTable declares the single-table ledger with the keys, failure index and TTL
// attribute pkg/ledger uses.
func (b *builder) ledgerTable() error {
	t := b.args.Table
	attr := func(n string) dynamodb.TableAttributeInput {
		return dynamodb.TableAttributeArgs{Name: pulumi.String(n), Type: pulumi.String("S")}
	}
	gsi := dynamodb.TableGlobalSecondaryIndexArgs{
		Name: pulumi.String(ledger.IndexFailed), HashKey: pulumi.String(ledger.AttrGSI1PK), RangeKey: pulumi.String(ledger.AttrGSI1SK),
		ProjectionType: pulumi.String("INCLUDE"), NonKeyAttributes: pulumi.ToStringArray([]string{"status", "reason", "bucket", "key"}),
	}
	args := &dynamodb.TableArgs{
		HashKey:                   pulumi.String(ledger.AttrPK),
		RangeKey:                  pulumi.String(ledger.AttrSK),
		Attributes:                dynamodb.TableAttributeArray{attr(ledger.AttrPK), attr(ledger.AttrSK), attr(ledger.AttrGSI1PK), attr(ledger.AttrGSI1SK)},
		BillingMode:               pulumi.String("PAY_PER_REQUEST"),
		PointInTimeRecovery:       dynamodb.TablePointInTimeRecoveryArgs{Enabled: pulumi.Bool(t.PointInTimeRecovery)},
		DeletionProtectionEnabled: pulumi.Bool(t.DeletionProtection),
		ServerSideEncryption:      dynamodb.TableServerSideEncryptionArgs{Enabled: pulumi.Bool(true)},
		Ttl:                       dynamodb.TableTtlArgs{AttributeName: pulumi.String(ledger.AttrTTL), Enabled: pulumi.Bool(true)},
		Tags:                      b.tags,
	}
	if t.Provisioned {
		args.BillingMode = pulumi.String("PROVISIONED")
		args.ReadCapacity = pulumi.Int(t.MinRead)
		args.WriteCapacity = pulumi.Int(t.MinWrite)
		gsi.ReadCapacity = pulumi.Int(t.FailureIndexCapacityRCU)
		gsi.WriteCapacity = pulumi.Int(t.FailureIndexCapacityRCU)
	}
	args.GlobalSecondaryIndexes = dynamodb.TableGlobalSecondaryIndexArray{gsi}
	var err error
	// Autoscaling owns the capacity numbers once the table exists.
	b.table, err = dynamodb.NewTable(b.ctx, b.n("ledger"), args, b.parent, pulumi.IgnoreChanges([]string{"readCapacity", "writeCapacity"}))
	if err != nil {
		return err
	}
	if t.Provisioned {
		resourceID := pulumi.Sprintf("table/%s", b.table.Name)
		for _, dim := range []struct {
			kind, metric string
			min, max     int
		}{
			{"read", "DynamoDBReadCapacityUtilization", t.MinRead, t.MaxRead},
			{"write", "DynamoDBWriteCapacityUtilization", t.MinWrite, t.MaxWrite},
		} {
			unit := map[string]string{"read": "ReadCapacityUnits", "write": "WriteCapacityUnits"}[dim.kind]
			if err := b.targetTracking("ledger-"+dim.kind, "dynamodb", resourceID, "dynamodb:table:"+unit, dim.min, dim.max, dim.metric, 70); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *builder) workQueues() error {
	b.queues = map[string]*sqs.Queue{}
	for _, fn := range sortedKeys(b.args.Code) {
		q := functionQueues[fn]
		f := b.args.Functions[fn]
		dlq, err := sqs.NewQueue(b.ctx, b.n(q+"-dlq"), &sqs.QueueArgs{
			MessageRetentionSeconds: pulumi.Int(14 * 24 * 3600),
			SqsManagedSseEnabled:    pulumi.Bool(true),
			Tags:                    b.tags,
		}, b.parent)
		if err != nil {
			return err
		}
		redrive := dlq.Arn.ApplyT(func(arn string) (string, error) {
			bs, err := json.Marshal(struct {
				DeadLetterTargetArn string `json:"deadLetterTargetArn"`
				MaxReceiveCount     int    `json:"maxReceiveCount"`
			}{arn, b.args.MaxReceiveCount})
			return string(bs), err
		}).(pulumi.StringOutput)
		main, err := sqs.NewQueue(b.ctx, b.n(q), &sqs.QueueArgs{
			VisibilityTimeoutSeconds: pulumi.Int(VisibilityTimeout(f)),
			MessageRetentionSeconds:  pulumi.Int(b.args.RetentionSeconds),
			ReceiveWaitTimeSeconds:   pulumi.Int(20),
			RedrivePolicy:            redrive,
			SqsManagedSseEnabled:     pulumi.Bool(true),
			Tags:                     b.tags,
		}, b.parent)
		if err != nil {
			return err
		}
		b.queues[q], b.queues[q+"-dlq"] = main, dlq
	}
	return nil
}

// targetTracking declares an Application Auto Scaling target and a target-tracking
// policy on a predefined metric.
func (b *builder) targetTracking(name, namespace string, resourceID pulumi.StringInput, dimension string, minCap, maxCap int, metric string, target float64, opts ...pulumi.ResourceOption) error {
	tgt, err := newScalingTarget(b, name, namespace, resourceID, dimension, minCap, maxCap, opts...)
	if err != nil {
		return err
	}
	return newScalingPolicy(b, name, tgt, metric, target)
}

func itoa(n int) string { return strconv.Itoa(n) }
