package pipeline

import (
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/s3"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
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
	}, append(b.protect(), b.parent)...)
	if err != nil {
		return nil, err
	}
	if _, err := s3.NewBucketPublicAccessBlock(b.ctx, b.n(kind+"-public-access"), &s3.BucketPublicAccessBlockArgs{
		Bucket: bucket.ID(), BlockPublicAcls: pulumi.Bool(true), BlockPublicPolicy: pulumi.Bool(true),
		IgnorePublicAcls: pulumi.Bool(true), RestrictPublicBuckets: pulumi.Bool(true),
	}, b.parent); err != nil {
		return nil, err
	}
	// SSE-S3 by default: no per-request KMS charge (at 1M files/day that is real money),
	// and no key policy for Lambda to need. With the pipeline's key: SSE-KMS with an S3
	// Bucket Key, which cuts the KMS requests to about one per object batch.
	sse := s3.BucketServerSideEncryptionConfigurationV2RuleArgs{
		ApplyServerSideEncryptionByDefault: s3.BucketServerSideEncryptionConfigurationV2RuleApplyServerSideEncryptionByDefaultArgs{
			SseAlgorithm: pulumi.String("AES256"),
		},
	}
	if b.key != nil {
		sse = s3.BucketServerSideEncryptionConfigurationV2RuleArgs{
			ApplyServerSideEncryptionByDefault: s3.BucketServerSideEncryptionConfigurationV2RuleApplyServerSideEncryptionByDefaultArgs{
				SseAlgorithm: pulumi.String("aws:kms"), KmsMasterKeyId: b.key.Arn,
			},
			BucketKeyEnabled: pulumi.Bool(true),
		}
	}
	if _, err := s3.NewBucketServerSideEncryptionConfigurationV2(b.ctx, b.n(kind+"-encryption"), &s3.BucketServerSideEncryptionConfigurationV2Args{
		Bucket: bucket.ID(),
		Rules:  s3.BucketServerSideEncryptionConfigurationV2RuleArray{sse},
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
		return ResourcePolicy{Statement: []ResourceStatement{denyInsecureTransport("s3", arn, arn+"/*")}}.JSON()
	}).(pulumi.StringOutput)
	if _, err := s3.NewBucketPolicy(b.ctx, b.n(kind+"-tls-only"), &s3.BucketPolicyArgs{
		Bucket: bucket.ID(), Policy: policy,
	}, b.parent); err != nil {
		return nil, err
	}
	return bucket, nil
}
