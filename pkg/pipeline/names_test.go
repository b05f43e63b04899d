package pipeline_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/appautoscaling"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/dynamodb"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/iam"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/kms"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/lambda"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/s3"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sns"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sqs"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/policy"
)

// everything is a component with every optional part: both functions, provisioned
// concurrency, the customer-managed key, EventBridge ingest, an alarm address.
func everything(name string) *pipeline.Args {
	return &pipeline.Args{Code: code("worker", "dispatch"), CustomerManagedKey: true, Ingest: pipeline.IngestEventBridge, IngestPrefix: "in/",
		AlarmEmail: "ops@example.com", Protect: true, Tags: map[string]string{"team": "data"},
		Table:     pipeline.TableArgs{Provisioned: true},
		Functions: map[string]pipeline.FunctionArgs{"worker": {MaxConcurrency: 20, ReservedConcurrency: 20, ProvisionedConcurrency: 2}}}
}

// namedTypes are the types whose name is unique per account and region (or account):
// two resources must never share one.
var namedTypes = map[string]string{
	"aws:s3/bucketV2:BucketV2":               "bucket",
	"aws:sqs/queue:Queue":                    "name",
	"aws:dynamodb/table:Table":               "name",
	"aws:lambda/function:Function":           "name",
	"aws:iam/role:Role":                      "name",
	"aws:cloudwatch/logGroup:LogGroup":       "name",
	"aws:sns/topic:Topic":                    "name",
	"aws:cloudwatch/eventRule:EventRule":     "name",
	"aws:cloudwatch/metricAlarm:MetricAlarm": "name",
	"aws:cloudwatch/dashboard:Dashboard":     "dashboardName",
}

// Two pipelines in one program share no physical name; the names the component sets
// itself carry project, stack and component (and the region, for the account-global
// dashboard), so other deployments can't collide either.
func TestPhysicalNamesAreUnique(t *testing.T) {
	g, err := plan.RunIn("proj", "stk", "eu-west-1", func(ctx *pulumi.Context) error {
		for _, n := range []string{"alpha", "beta"} {
			if _, err := pipeline.New(ctx, n, everything(n)); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	seen := map[string]string{}
	checked := 0
	for _, r := range g.Resources {
		key, ok := namedTypes[r.Type]
		if !ok {
			continue
		}
		name, _ := r.State[key].(string)
		require.NotEmpty(t, name, "%s %s has a physical name", r.Type, r.Name)
		if other, dup := seen[r.Type+" "+name]; dup {
			t.Errorf("%s %q is the physical name of both %s and %s", r.Type, name, other, r.Name)
		}
		seen[r.Type+" "+name] = r.Name
		checked++
		if _, explicit := r.Inputs[key]; explicit {
			for _, part := range []string{"proj", "stk"} {
				assert.Contains(t, name, part, "%s %s: a set name carries project and stack", r.Type, r.Name)
			}
			assert.True(t, strings.Contains(name, "alpha") || strings.Contains(name, "beta"), "%s: component in %q", r.Name, name)
		}
	}
	assert.Greater(t, checked, 60)
	for _, d := range g.OfType("aws:cloudwatch/dashboard:Dashboard") {
		assert.Contains(t, d.Inputs["dashboardName"], "eu-west-1", "dashboards are account-global")
	}
}

// Taggable types, by the pulumi-aws Args type each declared type is made from.
var argsOf = map[string]any{
	"aws:s3/bucketV2:BucketV2": s3.BucketV2Args{}, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": s3.BucketPublicAccessBlockArgs{},
	"aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2": s3.BucketServerSideEncryptionConfigurationV2Args{},
	"aws:s3/bucketVersioningV2:BucketVersioningV2":                                               s3.BucketVersioningV2Args{},
	"aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2":                       s3.BucketLifecycleConfigurationV2Args{},
	"aws:s3/bucketPolicy:BucketPolicy":                                                           s3.BucketPolicyArgs{}, "aws:s3/bucketNotification:BucketNotification": s3.BucketNotificationArgs{},
	"aws:sqs/queue:Queue": sqs.QueueArgs{}, "aws:sqs/queuePolicy:QueuePolicy": sqs.QueuePolicyArgs{},
	"aws:sqs/redriveAllowPolicy:RedriveAllowPolicy": sqs.RedriveAllowPolicyArgs{},
	"aws:dynamodb/table:Table":                      dynamodb.TableArgs{},
	"aws:cloudwatch/logGroup:LogGroup":              cloudwatch.LogGroupArgs{}, "aws:cloudwatch/metricAlarm:MetricAlarm": cloudwatch.MetricAlarmArgs{},
	"aws:cloudwatch/dashboard:Dashboard": cloudwatch.DashboardArgs{}, "aws:cloudwatch/eventRule:EventRule": cloudwatch.EventRuleArgs{},
	"aws:cloudwatch/eventTarget:EventTarget": cloudwatch.EventTargetArgs{},
	"aws:iam/role:Role":                      iam.RoleArgs{}, "aws:iam/rolePolicy:RolePolicy": iam.RolePolicyArgs{},
	"aws:lambda/function:Function": lambda.FunctionArgs{}, "aws:lambda/eventSourceMapping:EventSourceMapping": lambda.EventSourceMappingArgs{},
	"aws:lambda/alias:Alias": lambda.AliasArgs{}, "aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig": lambda.ProvisionedConcurrencyConfigArgs{},
	"aws:lambda/functionRecursionConfig:FunctionRecursionConfig": lambda.FunctionRecursionConfigArgs{},
	"aws:sns/topic:Topic": sns.TopicArgs{}, "aws:sns/topicPolicy:TopicPolicy": sns.TopicPolicyArgs{}, "aws:sns/topicSubscription:TopicSubscription": sns.TopicSubscriptionArgs{},
	"aws:kms/key:Key":                  kms.KeyArgs{},
	"aws:appautoscaling/target:Target": appautoscaling.TargetArgs{}, "aws:appautoscaling/policy:Policy": appautoscaling.PolicyArgs{},
}

// Every resource whose type takes tags carries the stage tag, the pipeline tag and the
// user's tags.
func TestEveryTaggableResourceIsTagged(t *testing.T) {
	g, err := plan.Run("fileflow", "prod", func(ctx *pulumi.Context) error {
		_, err := pipeline.New(ctx, "files", everything("files"))
		return err
	})
	require.NoError(t, err)
	tagged := 0
	for _, r := range g.Resources {
		if r.Type == pipeline.TypeToken {
			continue
		}
		args, ok := argsOf[r.Type]
		require.True(t, ok, "add %s to argsOf", r.Type)
		if _, taggable := reflect.TypeOf(args).FieldByName("Tags"); !taggable {
			assert.NotContains(t, r.Inputs, "tags", r.Name)
			continue
		}
		tags, _ := r.Inputs["tags"].(map[string]any)
		assert.Equal(t, "prod", tags["fileflow:stage"], "%s %s", r.Type, r.Name)
		assert.Equal(t, "files", tags["fileflow:pipeline"], "%s %s", r.Type, r.Name)
		assert.Equal(t, "data", tags["team"], "%s %s", r.Type, r.Name)
		tagged++
	}
	assert.Greater(t, tagged, 30)
}

// Prod-like args protect and retain the data, and the key encrypts everything.
func TestProtectAndCustomerManagedKey(t *testing.T) {
	g := run(t, everything("files"))
	key := one(t, g, "aws:kms/key:Key", "files-key")
	assert.Equal(t, true, key.Inputs["enableKeyRotation"])
	arn := key.State["arn"]
	assert.Contains(t, jsonOf(one(t, g, "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2", "files-ingest-encryption").Inputs), `"sseAlgorithm":"aws:kms"`)
	for _, q := range g.OfType("aws:sqs/queue:Queue") {
		assert.Equal(t, arn, q.Inputs["kmsMasterKeyId"], q.Name)
	}
	for _, tp := range g.OfType("aws:sns/topic:Topic") {
		assert.Equal(t, arn, tp.Inputs["kmsMasterKeyId"], tp.Name)
	}
	for _, lg := range g.OfType("aws:cloudwatch/logGroup:LogGroup") {
		assert.Equal(t, arn, lg.Inputs["kmsKeyId"], lg.Name)
	}
	assert.Equal(t, arn, one(t, g, "aws:dynamodb/table:Table", "files-ledger").Inputs["serverSideEncryption"].(map[string]any)["kmsKeyArn"])
	for _, r := range g.Resources {
		want := r.Type == "aws:s3/bucketV2:BucketV2" || r.Type == "aws:dynamodb/table:Table" || r.Type == "aws:kms/key:Key"
		assert.Equal(t, want, r.Protected, "%s %s: protect and retain the data (and its key), nothing else", r.Type, r.Name)
	}
	assert.Empty(t, policy.Mandatory(policy.Check(g.Policy())))
	assert.Empty(t, policy.Check(g.Policy()), "under mocks nothing is left for apply")
}
