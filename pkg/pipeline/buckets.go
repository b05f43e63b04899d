package pipeline

import (
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/s3"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sqs"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"strings"
)

func (b *builder) buckets() error {
	var err error
	if b.ingest, err = b.bucket("ingest", b.args.ExpireIngestDays); err != nil {
		return err
	}
	b.output, err = b.bucket("output", b.args.ExpireOutputsDays)
	return err
}

// bucket declares a private, versioned, encrypted, TLS-only bucket with lifecycle rules:
// incomplete multipart uploads are aborted after 7 days, old versions expire after 30,
// current objects after expireDays when that is > 0.
func (b *builder) bucket(kind string, expireDays int) (*s3.BucketV2, error) {
	bucket, err := s3.NewBucketV2(b.ctx, b.n(kind), &s3.BucketV2Args{
		ForceDestroy: pulumi.Bool(b.args.ForceDestroy),
		Tags:         b.tags,
	}, b.parent)
	if err != nil {
		return nil, err
	}
	if _, err := s3.NewBucketPublicAccessBlock(b.ctx, b.n(kind+"-public-access"), &s3.BucketPublicAccessBlockArgs{
		Bucket: bucket.ID(), BlockPublicAcls: pulumi.Bool(true), BlockPublicPolicy: pulumi.Bool(true),
		IgnorePublicAcls: pulumi.Bool(true), RestrictPublicBuckets: pulumi.Bool(true),
	}, b.parent); err != nil {
		return nil, err
	}
	if _, err := s3.NewBucketServerSideEncryptionConfigurationV2(b.ctx, b.n(kind+"-encryption"), &s3.BucketServerSideEncryptionConfigurationV2Args{
		Bucket: bucket.ID(),
		Rules: s3.BucketServerSideEncryptionConfigurationV2RuleArray{s3.BucketServerSideEncryptionConfigurationV2RuleArgs{
			ApplyServerSideEncryptionByDefault: s3.BucketServerSideEncryptionConfigurationV2RuleApplyServerSideEncryptionByDefaultArgs{
				// SSE-S3: no per-request KMS charge (at 1M files/day that is real money),
				// and no key policy for Lambda to need.
				SseAlgorithm: pulumi.String("AES256"),
			},
		}},
	}, b.parent); err != nil {
		return nil, err
	}
	if _, err := s3.NewBucketVersioningV2(b.ctx, b.n(kind+"-versioning"), &s3.BucketVersioningV2Args{
		Bucket:                  bucket.ID(),
		VersioningConfiguration: s3.BucketVersioningV2VersioningConfigurationArgs{Status: pulumi.String("Enabled")},
	}, b.parent); err != nil {
		return nil, err
	}
	rules := s3.BucketLifecycleConfigurationV2RuleArray{
		s3.BucketLifecycleConfigurationV2RuleArgs{
			Id: pulumi.String("abort-incomplete-multipart"), Status: pulumi.String("Enabled"),
			Filter:                         s3.BucketLifecycleConfigurationV2RuleFilterArgs{Prefix: pulumi.String("")},
			AbortIncompleteMultipartUpload: s3.BucketLifecycleConfigurationV2RuleAbortIncompleteMultipartUploadArgs{DaysAfterInitiation: pulumi.Int(7)},
			NoncurrentVersionExpiration:    s3.BucketLifecycleConfigurationV2RuleNoncurrentVersionExpirationArgs{NoncurrentDays: pulumi.Int(30)},
		},
	}
	if expireDays > 0 {
		rules = append(rules, s3.BucketLifecycleConfigurationV2RuleArgs{
			Id: pulumi.String("expire-objects"), Status: pulumi.String("Enabled"),
			Filter:     s3.BucketLifecycleConfigurationV2RuleFilterArgs{Prefix: pulumi.String("")},
			Expiration: s3.BucketLifecycleConfigurationV2RuleExpirationArgs{Days: pulumi.Int(expireDays)},
		})
	}
	if _, err := s3.NewBucketLifecycleConfigurationV2(b.ctx, b.n(kind+"-lifecycle"), &s3.BucketLifecycleConfigurationV2Args{
		Bucket: bucket.ID(), Rules: rules,
	}, b.parent); err != nil {
		return nil, err
	}
	policy := bucket.Arn.ApplyT(func(arn string) (string, error) {
		return PolicyDocument{Statement: []Statement{{
			Sid: "DenyInsecureTransport", Effect: "Deny", Principal: "*", Action: []string{"s3:*"},
			Resource:  []string{arn, arn + "/*"},
			Condition: map[string]map[string]string{"Bool": {"aws:SecureTransport": "false"}},
		}}}.JSON()
	}).(pulumi.StringOutput)
	if _, err := s3.NewBucketPolicy(b.ctx, b.n(kind+"-tls-only"), &s3.BucketPolicyArgs{
		Bucket: bucket.ID(), Policy: policy,
	}, b.parent); err != nil {
		return nil, err
	}
	return bucket, nil
}

// notifications sends the ingest bucket's ObjectCreated events (within the prefix and
// suffix filters) to the tasks queue, which accepts them only from this bucket in this
// account.
func (b *builder) notifications() error {
	tasks := b.queues["tasks"]
	qp, err := b.queueFromS3("tasks-from-s3", "S3IngestEvents", tasks)
	if err != nil {
		return err
	}
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
	deps := []pulumi.Resource{qp}
	if jobs, ok := b.queues["jobs"]; ok && !b.jobSpecsViaWorker() {
		// Job specs under jobs/ go straight to the dispatcher's queue.
		jp, err := b.queueFromS3("jobs-from-s3", "S3JobSpecs", jobs)
		if err != nil {
			return err
		}
		deps = append(deps, jp)
		queues = append(queues, s3.BucketNotificationQueueArgs{
			Id: pulumi.String("fileflow-job-specs"), QueueArn: jobs.Arn, Events: pulumi.ToStringArray([]string{"s3:ObjectCreated:*"}),
			FilterPrefix: pulumi.String(job.SpecPrefix), FilterSuffix: pulumi.String(".json"),
		})
	}
	_, err = s3.NewBucketNotification(b.ctx, b.n("ingest-events"), &s3.BucketNotificationArgs{
		Bucket: b.ingest.ID(), Queues: queues,
	}, b.parent, pulumi.DependsOn(deps))
	return err
}

// jobSpecsViaWorker: the ingest notification's filter overlaps jobs/*.json, so S3 would
// refuse a second configuration for job specs; they reach the worker, which forwards
// them to the jobs queue.
func (b *builder) jobSpecsViaWorker() bool {
	if _, ok := b.queues["jobs"]; !ok {
		return false
	}
	p, s := b.args.IngestPrefix, b.args.IngestSuffix
	prefixes := strings.HasPrefix(p, job.SpecPrefix) || strings.HasPrefix(job.SpecPrefix, p)
	suffixes := strings.HasSuffix(s, ".json") || strings.HasSuffix(".json", s)
	return prefixes && suffixes
}

// queueFromS3 lets the ingest bucket (only it, only from this account) send to q.
func (b *builder) queueFromS3(name, sid string, q *sqs.Queue) (*sqs.QueuePolicy, error) {
	policy := pulumi.All(q.Arn, b.ingest.Arn, b.account).ApplyT(func(v []any) (string, error) {
		return PolicyDocument{Statement: []Statement{{
			Sid: sid, Effect: "Allow", Principal: map[string]string{"Service": "s3.amazonaws.com"},
			Action: []string{"sqs:SendMessage"}, Resource: []string{v[0].(string)},
			Condition: map[string]map[string]string{
				"ArnEquals":    {"aws:SourceArn": v[1].(string)},
				"StringEquals": {"aws:SourceAccount": v[2].(string)},
			},
		}}}.JSON()
	}).(pulumi.StringOutput)
	return sqs.NewQueuePolicy(b.ctx, b.n(name), &sqs.QueuePolicyArgs{QueueUrl: q.Url, Policy: policy}, b.parent)
}
