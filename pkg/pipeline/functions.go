package pipeline

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/appautoscaling"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/iam"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/lambda"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/fileflow/fileflow/pkg/fnenv"
)

// function is one declared Lambda function and what belongs to it.
type function struct {
	name     string // "worker", "dispatch"
	args     FunctionArgs
	fn       *lambda.Function
	logGroup *cloudwatch.LogGroup
	role     *iam.Role
	mapping  *lambda.EventSourceMapping
	alias    *lambda.Alias // the warm alias, with provisioned concurrency only
}

// sendsToOwnQueue reports whether a function's policy lets it send to the queue that
// triggers it: such a function forms a Lambda → SQS → same Lambda chain, which Lambda's
// recursive loop detection stops after about 16 hops unless the function's recursion
// config says Allow.
func sendsToOwnQueue(fn string) bool {
	const own = "arn:aws:sqs:region:account:own"
	for _, s := range FunctionPolicy(fn, resourceARNs{Queue: own}, false).Statement {
		if s.Effect == "Allow" && slices.Contains(s.Action, "sqs:SendMessage") && slices.Contains(s.Resource, own) {
			return true
		}
	}
	return false
}

func (b *builder) lambdas() error {
	b.functions = map[string]*function{}
	for _, name := range sortedKeys(b.args.Code) {
		f, err := b.lambdaFunction(name)
		if err != nil {
			return fmt.Errorf("function %s: %w", name, err)
		}
		b.functions[name] = f
	}
	return nil
}

// environment is what the component tells a function about the pipeline.
func (b *builder) environment(name string, f FunctionArgs) (pulumi.StringMap, error) {
	rules, err := json.Marshal(b.args.Rules)
	if err != nil {
		return nil, err
	}
	env := pulumi.StringMap{
		fnenv.Table:           b.table.Name,
		fnenv.OutputBucket:    b.output.Bucket,
		fnenv.OutputPrefix:    pulumi.String(b.args.OutputPrefix),
		fnenv.MaxReceiveCount: pulumi.String(itoa(b.args.MaxReceiveCount)),
		fnenv.LedgerTTLDays:   pulumi.String(itoa(b.args.Table.TTLDays)),
	}
	if name == "worker" {
		env[fnenv.Rules] = pulumi.String(string(rules))
		if b.args.DuplicateCheck != "" {
			env[fnenv.DuplicateCheck] = pulumi.String(b.args.DuplicateCheck)
		}
		// Files of one batch in parallel: the batch size, at most 16 (memory: one part
		// buffer of 8 MiB per file in flight).
		env[fnenv.Concurrency] = pulumi.String(itoa(min(max(f.BatchSize, 1), 16)))
		// Don't start a file with less than a sixth of the timeout left (at most 5 s), so
		// that short timeouts still process files and long ones don't start too late.
		env[fnenv.MinItemTime] = pulumi.String(itoa(max(1, min(5, f.TimeoutSeconds/6))) + "s")
	}
	env[fnenv.CompletionTopic] = b.completionTopic.Arn
	if name == "dispatch" {
		env[fnenv.TasksQueueURL] = b.queues["tasks"].Url
		env[fnenv.JobsQueueURL] = b.queues["jobs"].Url
		// The reconciler peeks at both dead-letter queues for jobs' stuck tasks.
		env[fnenv.TasksDLQURL] = b.queues["tasks-dlq"].Url
		env[fnenv.JobsDLQURL] = b.queues["jobs-dlq"].Url
	}
	if jobs, ok := b.queues["jobs"]; ok && name == "worker" {
		// Finished jobs' finalize tasks go to the dispatcher.
		env[fnenv.JobsQueueURL] = jobs.Url
		if b.jobSpecsViaWorker() {
			// Job specs uploaded under jobs/ reach the tasks queue (S3 allows no second,
			// overlapping notification): the worker forwards them to the jobs queue.
			env[fnenv.ForwardJobSpecs] = pulumi.String("true")
		}
	}
	for k, v := range f.Env {
		env[k] = pulumi.String(v)
	}
	return env, nil
}

func (b *builder) lambdaFunction(name string) (*function, error) {
	f := b.args.Functions[name]
	code := b.args.Code[name]
	queue := b.queues[functionQueues[name]]
	out := &function{name: name, args: f}
	var err error

	lg := &cloudwatch.LogGroupArgs{
		// Log group names are per account and region: the project, stack and component
		// keep two deployments (other projects, same stack and component name) apart.
		Name:            pulumi.String(b.logGroupName(name)),
		RetentionInDays: pulumi.Int(b.args.LogRetentionDays),
		Tags:            b.tags,
	}
	if b.key != nil {
		lg.KmsKeyId = b.key.Arn
	}
	out.logGroup, err = cloudwatch.NewLogGroup(b.ctx, b.n(name+"-logs"), lg, b.parent)
	if err != nil {
		return nil, err
	}
	assume, err := lambdaTrust.JSON()
	if err != nil {
		return nil, err
	}
	out.role, err = iam.NewRole(b.ctx, b.n(name+"-role"), &iam.RoleArgs{
		AssumeRolePolicy: pulumi.String(assume),
		Description:      pulumi.Sprintf("fileflow %s %s function", b.name, name),
		Tags:             b.tags,
	}, b.parent)
	if err != nil {
		return nil, err
	}
	tasksArn := pulumi.String("").ToStringOutput()
	if t, ok := b.queues["tasks"]; ok {
		tasksArn = t.Arn
	}
	jobsArn := pulumi.String("").ToStringOutput()
	if jobs, ok := b.queues["jobs"]; ok && name == "worker" {
		jobsArn = jobs.Arn
	}
	keyArn := pulumi.String("").ToStringOutput()
	if b.key != nil {
		keyArn = b.key.Arn
	}
	dlqArns := pulumi.String("").ToStringOutput()
	if name == "dispatch" {
		dlqArns = pulumi.Sprintf("%s %s", b.queues["tasks-dlq"].Arn, b.queues["jobs-dlq"].Arn)
	}
	policy := pulumi.All(b.ingest.Arn, b.output.Arn, b.table.Arn, queue.Arn, out.logGroup.Arn, tasksArn, b.completionTopic.Arn, jobsArn, keyArn, dlqArns).ApplyT(
		func(v []any) (string, error) {
			return FunctionPolicy(name, resourceARNs{
				Ingest: v[0].(string), Output: v[1].(string), Table: v[2].(string), Queue: v[3].(string),
				LogGroup: v[4].(string), Tasks: v[5].(string), CompletionTopic: v[6].(string), Jobs: v[7].(string),
				Key: v[8].(string), OutputPrefix: b.args.OutputPrefix, Region: b.regionName,
				DeadLetters: strings.Fields(v[9].(string)),
			}, b.args.Tracing).JSON()
		}).(pulumi.StringOutput)
	rolePolicy, err := iam.NewRolePolicy(b.ctx, b.n(name+"-policy"), &iam.RolePolicyArgs{
		Role: out.role.Name, Policy: policy,
	}, b.parent)
	if err != nil {
		return nil, err
	}
	env, err := b.environment(name, f)
	if err != nil {
		return nil, err
	}
	fnArgs := &lambda.FunctionArgs{
		Runtime:        pulumi.String("provided.al2023"),
		Architectures:  pulumi.ToStringArray([]string{"arm64"}),
		Handler:        pulumi.String("bootstrap"),
		Code:           code.Archive,
		SourceCodeHash: pulumi.String(code.Hash),
		Role:           out.role.Arn,
		MemorySize:     pulumi.Int(f.MemoryMB),
		Timeout:        pulumi.Int(f.TimeoutSeconds),
		Environment:    lambda.FunctionEnvironmentArgs{Variables: env},
		LoggingConfig: lambda.FunctionLoggingConfigArgs{
			LogFormat: pulumi.String("JSON"), LogGroup: out.logGroup.Name,
			ApplicationLogLevel: pulumi.String("INFO"), SystemLogLevel: pulumi.String("WARN"),
		},
		Publish: pulumi.Bool(f.ProvisionedConcurrency > 0),
		Tags:    b.tags,
	}
	if f.ReservedConcurrency > 0 {
		// Optional: Lambda keeps 100 of the account's concurrency unreserved, so a
		// reservation needs an account quota of reserved + 100 (`fileflow plan` prints
		// what a stage needs). Unreserved, the mapping's maximum concurrency still caps it.
		fnArgs.ReservedConcurrentExecutions = pulumi.Int(f.ReservedConcurrency)
	}
	if b.args.Tracing {
		fnArgs.TracingConfig = lambda.FunctionTracingConfigArgs{Mode: pulumi.String("Active")}
	}
	out.fn, err = lambda.NewFunction(b.ctx, b.n(name), fnArgs, b.parent, pulumi.DependsOn([]pulumi.Resource{rolePolicy, out.logGroup}))
	if err != nil {
		return nil, err
	}
	if sendsToOwnQueue(name) {
		// The worker re-sends tasks waiting for their parent; the dispatcher sends child
		// fan-out tasks, parent waits and finalize re-requests to its own queue. With
		// the default (Terminate) Lambda would stop such a chain after ~16 hops and a
		// long listing or a long parent wait would stall its job.
		if _, err := lambda.NewFunctionRecursionConfig(b.ctx, b.n(name+"-recursion"), &lambda.FunctionRecursionConfigArgs{
			FunctionName: out.fn.Name, RecursiveLoop: pulumi.String("Allow"),
		}, b.parent); err != nil {
			return nil, err
		}
	}

	target := out.fn.Arn
	if f.ProvisionedConcurrency > 0 {
		alias, err := lambda.NewAlias(b.ctx, b.n(name+"-live"), &lambda.AliasArgs{
			Name: pulumi.String("live"), FunctionName: out.fn.Name, FunctionVersion: out.fn.Version,
		}, b.parent)
		if err != nil {
			return nil, err
		}
		out.alias = alias
		pc, err := lambda.NewProvisionedConcurrencyConfig(b.ctx, b.n(name+"-warm"), &lambda.ProvisionedConcurrencyConfigArgs{
			FunctionName: out.fn.Name, Qualifier: alias.Name, ProvisionedConcurrentExecutions: pulumi.Int(f.ProvisionedConcurrency),
		}, b.parent, pulumi.IgnoreChanges([]string{"provisionedConcurrentExecutions"}))
		if err != nil {
			return nil, err
		}
		resourceID := pulumi.Sprintf("function:%s:%s", out.fn.Name, alias.Name)
		if err := b.targetTracking(name+"-warm", "lambda", resourceID, "lambda:function:ProvisionedConcurrency",
			f.ProvisionedConcurrency, f.ProvisionedMax, "LambdaProvisionedConcurrencyUtilization", 0.7, pulumi.DependsOn([]pulumi.Resource{pc})); err != nil {
			return nil, err
		}
		target = alias.Arn
	}

	esm := &lambda.EventSourceMappingArgs{
		EventSourceArn:        queue.Arn,
		FunctionName:          target,
		BatchSize:             pulumi.Int(f.BatchSize),
		FunctionResponseTypes: pulumi.ToStringArray([]string{"ReportBatchItemFailures"}),
		ScalingConfig:         lambda.EventSourceMappingScalingConfigArgs{MaximumConcurrency: pulumi.Int(f.MaxConcurrency)},
		Tags:                  b.tags,
	}
	if f.BatchingWindowSec > 0 {
		esm.MaximumBatchingWindowInSeconds = pulumi.Int(f.BatchingWindowSec)
	}
	out.mapping, err = lambda.NewEventSourceMapping(b.ctx, b.n(name+"-trigger"), esm, b.parent, pulumi.DependsOn([]pulumi.Resource{rolePolicy}))
	if err != nil {
		return nil, err
	}
	return out, nil
}

func newScalingTarget(b *builder, name, namespace string, resourceID pulumi.StringInput, dimension string, minCap, maxCap int, opts ...pulumi.ResourceOption) (*appautoscaling.Target, error) {
	return appautoscaling.NewTarget(b.ctx, b.n(name+"-scaling"), &appautoscaling.TargetArgs{
		ServiceNamespace: pulumi.String(namespace), ResourceId: resourceID, ScalableDimension: pulumi.String(dimension),
		MinCapacity: pulumi.Int(minCap), MaxCapacity: pulumi.Int(maxCap), Tags: b.tags,
	}, append([]pulumi.ResourceOption{b.parent}, opts...)...)
}

func newScalingPolicy(b *builder, name string, t *appautoscaling.Target, metric string, target float64) error {
	_, err := appautoscaling.NewPolicy(b.ctx, b.n(name+"-tracking"), &appautoscaling.PolicyArgs{
		PolicyType: pulumi.String("TargetTrackingScaling"), ResourceId: t.ResourceId,
		ScalableDimension: t.ScalableDimension, ServiceNamespace: t.ServiceNamespace,
		TargetTrackingScalingPolicyConfiguration: appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs{
			TargetValue: pulumi.Float64(target),
			PredefinedMetricSpecification: appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs{
				PredefinedMetricType: pulumi.String(metric),
			},
		},
	}, b.parent)
	return err
}
