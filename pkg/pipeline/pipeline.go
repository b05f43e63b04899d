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
	"regexp"
	"strconv"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/dynamodb"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/kms"
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
	// RoleARNs are the functions' execution roles, keyed by function.
	RoleARNs pulumi.StringMapOutput `pulumi:"roleArns"`
	// AliasARNs are the warm aliases of functions with provisioned concurrency (their
	// mappings invoke them), keyed by function; empty when none has one.
	AliasARNs pulumi.StringMapOutput `pulumi:"aliasArns"`
	// KeyARN is the customer-managed KMS key ("" unless Args.CustomerManagedKey).
	KeyARN pulumi.StringOutput `pulumi:"keyArn"`
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
	tags := withTag(withTag(a.Tags, "fileflow:pipeline", name), "fileflow:stage", ctx.Stack())
	b := &builder{ctx: ctx, name: name, args: a, parent: pulumi.Parent(p), tags: pulumi.ToStringMap(tags), queueAllows: map[string][]queueAllow{}}
	if err := b.build(); err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", name, err)
	}

	queueURLs, queueARNs, fnNames := pulumi.StringMap{}, pulumi.StringMap{}, pulumi.StringMap{}
	roleARNs, aliasARNs := pulumi.StringMap{}, pulumi.StringMap{}
	for k, q := range b.queues {
		queueURLs[k], queueARNs[k] = q.Url, q.Arn
	}
	for k, f := range b.functions {
		fnNames[k] = f.fn.Name
		roleARNs[k] = f.role.Arn
		if f.alias != nil {
			aliasARNs[k] = f.alias.Arn
		}
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
	p.RoleARNs = roleARNs.ToStringMapOutput()
	p.AliasARNs = aliasARNs.ToStringMapOutput()
	p.KeyARN = pulumi.String("").ToStringOutput()
	if b.key != nil {
		p.KeyARN = b.key.Arn
	}
	if err := ctx.RegisterResourceOutputs(p, pulumi.Map{
		"ingestBucket": p.IngestBucket, "outputBucket": p.OutputBucket, "tableName": p.TableName,
		"queueUrls": p.QueueURLs, "queueArns": p.QueueARNs, "functionNames": p.FunctionNames,
		"alarmTopicArn": p.AlarmTopicARN, "completionTopicArn": p.CompletionTopicARN, "dashboardName": p.DashboardName,
		"roleArns": p.RoleARNs, "aliasArns": p.AliasARNs, "keyArn": p.KeyARN,
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

	account     pulumi.StringOutput
	accountID   string
	regionName  string
	key         *kms.Key                // the customer-managed key, or nil
	queueAllows map[string][]queueAllow // who may send to each queue, besides its functions
	// afterQueuePolicies declare what needs the queue policies in place (S3 checks it
	// may send when a notification configuration is created).
	afterQueuePolicies []func(policies []pulumi.Resource) error
	ingest, output     *s3.BucketV2
	table              *dynamodb.Table
	queues             map[string]*sqs.Queue // "tasks", "tasks-dlq", …
	functions          map[string]*function
	alarmTopic         *sns.Topic
	completionTopic    *sns.Topic
	dashboard          *cloudwatch.Dashboard
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
	b.accountID = id.AccountId
	region, err := aws.GetRegion(b.ctx, nil, b.parent)
	if err != nil {
		return fmt.Errorf("region: %w", err)
	}
	b.regionName = region.Name

	steps := []func() error{b.kmsKey, b.topics, b.buckets, b.ledgerTable, b.workQueues, b.lambdas, b.ingestRouting,
		b.reconcileSchedule, b.queuePolicies, b.alarms, b.dashboardAll}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) topics() error {
	var err error
	// Without a customer-managed key the alarm topic is not encrypted: CloudWatch alarms
	// cannot publish to a topic that uses the AWS-managed SNS key (its key policy can't
	// grant cloudwatch.amazonaws.com). The messages hold alarm names and states, nothing
	// from the files. With the pipeline's key, its key policy grants CloudWatch.
	alarms := &sns.TopicArgs{Tags: b.tags}
	completions := &sns.TopicArgs{KmsMasterKeyId: pulumi.String("alias/aws/sns"), Tags: b.tags}
	if b.key != nil {
		alarms.KmsMasterKeyId, completions.KmsMasterKeyId = b.key.Arn, b.key.Arn
	}
	if b.alarmTopic, err = sns.NewTopic(b.ctx, b.n("alarms"), alarms, b.parent); err != nil {
		return err
	}
	if b.args.AlarmEmail != "" {
		// A secret: the address stays encrypted in the stack's state and out of logs.
		if _, err := sns.NewTopicSubscription(b.ctx, b.n("alarms-email"), &sns.TopicSubscriptionArgs{
			Topic: b.alarmTopic.Arn, Protocol: pulumi.String("email"), Endpoint: pulumi.ToSecret(pulumi.String(b.args.AlarmEmail)).(pulumi.StringOutput),
		}, b.parent); err != nil {
			return err
		}
	}
	if b.completionTopic, err = sns.NewTopic(b.ctx, b.n("completions"), completions, b.parent); err != nil {
		return err
	}
	// Topic policies: TLS only; CloudWatch alarms of this account may publish alarms.
	for _, t := range []struct {
		name  string
		topic *sns.Topic
		alarm bool
	}{{"alarms", b.alarmTopic, true}, {"completions", b.completionTopic, false}} {
		policy := pulumi.All(t.topic.Arn, b.account).ApplyT(func(v []any) (string, error) {
			arn, account := v[0].(string), v[1].(string)
			st := []ResourceStatement{denyInsecureTransport("sns", arn)}
			if t.alarm {
				st = append(st, ResourceStatement{Sid: "CloudWatchAlarms", Effect: "Allow", Principal: Service("cloudwatch.amazonaws.com"),
					Action: []string{"sns:Publish"}, Resource: []string{arn},
					Condition: Condition{"StringEquals": {"aws:SourceAccount": account},
						"ArnLike": {"aws:SourceArn": "arn:aws:cloudwatch:" + b.regionName + ":" + account + ":alarm:*"}}})
			}
			return ResourcePolicy{Statement: st}.JSON()
		}).(pulumi.StringOutput)
		if _, err := sns.NewTopicPolicy(b.ctx, b.n(t.name+"-policy"), &sns.TopicPolicyArgs{Arn: t.topic.Arn, Policy: policy}, b.parent); err != nil {
			return err
		}
	}
	return nil
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
		ServerSideEncryption:      b.tableEncryption(),
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
	b.table, err = dynamodb.NewTable(b.ctx, b.n("ledger"), args, append(b.protect(), b.parent, pulumi.IgnoreChanges([]string{"readCapacity", "writeCapacity"}))...)
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
		dlqArgs := &sqs.QueueArgs{
			MessageRetentionSeconds: pulumi.Int(DLQRetentionSeconds),
			Tags:                    b.tags,
		}
		b.encryptQueue(dlqArgs)
		dlq, err := sqs.NewQueue(b.ctx, b.n(q+"-dlq"), dlqArgs, b.parent)
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
		mainArgs := &sqs.QueueArgs{
			VisibilityTimeoutSeconds: pulumi.Int(VisibilityTimeout(f)),
			MessageRetentionSeconds:  pulumi.Int(b.args.RetentionSeconds),
			ReceiveWaitTimeSeconds:   pulumi.Int(20),
			RedrivePolicy:            redrive,
			Tags:                     b.tags,
		}
		b.encryptQueue(mainArgs)
		main, err := sqs.NewQueue(b.ctx, b.n(q), mainArgs, b.parent)
		if err != nil {
			return err
		}
		// Only its own queue may use the DLQ as its dead-letter queue.
		allowRedrive := main.Arn.ApplyT(func(arn string) (string, error) {
			bs, err := json.Marshal(struct {
				RedrivePermission string   `json:"redrivePermission"`
				SourceQueueArns   []string `json:"sourceQueueArns"`
			}{"byQueue", []string{arn}})
			return string(bs), err
		}).(pulumi.StringOutput)
		if _, err := sqs.NewRedriveAllowPolicy(b.ctx, b.n(q+"-dlq-sources"), &sqs.RedriveAllowPolicyArgs{
			QueueUrl: dlq.Url, RedriveAllowPolicy: allowRedrive,
		}, b.parent); err != nil {
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

// DLQRetentionSeconds is how long dead-letter queues keep messages (SQS's maximum).
const DLQRetentionSeconds = 14 * 24 * 3600

// protect is what guards data-holding resources (buckets, the ledger) with Args.Protect:
// `pulumi destroy` refuses, and removing them from the program leaves them in AWS.
func (b *builder) protect() []pulumi.ResourceOption {
	if !b.args.Protect {
		return nil
	}
	return []pulumi.ResourceOption{pulumi.Protect(true), pulumi.RetainOnDelete(true)}
}

func (b *builder) tableEncryption() dynamodb.TableServerSideEncryptionArgs {
	e := dynamodb.TableServerSideEncryptionArgs{Enabled: pulumi.Bool(true)}
	if b.key != nil {
		e.KmsKeyArn = b.key.Arn
	}
	return e
}

func (b *builder) encryptQueue(q *sqs.QueueArgs) {
	if b.key != nil {
		q.KmsMasterKeyId = b.key.Arn
		q.KmsDataKeyReusePeriodSeconds = pulumi.Int(300)
		return
	}
	q.SqsManagedSseEnabled = pulumi.Bool(true)
}

// logGroupName is a function's log group: unique per project, stack and component
// within the account and region.
func (b *builder) logGroupName(fn string) string {
	return fmt.Sprintf("/fileflow/%s/%s/%s/%s", b.ctx.Project(), b.ctx.Stack(), b.name, fn)
}

// dashboardName: dashboards are account-global (not per region) and PutDashboard
// overwrites, so the name carries project, stack, region and component.
func (b *builder) dashboardName() string {
	n := fmt.Sprintf("fileflow-%s-%s-%s-%s", b.ctx.Project(), b.ctx.Stack(), b.regionName, b.name)
	return dashboardChars.ReplaceAllString(n, "_")
}

var dashboardChars = regexp.MustCompile(`[^A-Za-z0-9_-]`)
