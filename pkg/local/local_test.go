package local_test

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/localtest"
)

func TestMain(m *testing.M) { os.Exit(localtest.Main(m)) }

// The standard AWS_ENDPOINT_URL_* variables alone reach every server: handler code needs
// no endpoint code.
func TestEnvReachesEveryServer(t *testing.T) {
	ctx := context.Background()
	for _, kv := range localtest.Servers.Env() {
		if strings.HasPrefix(kv, "AWS_ENDPOINT_URL_") {
			require.Contains(t, kv, "=http://127.0.0.1:", "servers bind loopback only")
		}
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	require.NoError(t, err)

	s3c := s3.NewFromConfig(cfg)
	_, err = s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("local-env-test")})
	require.NoError(t, err)
	_, err = s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("local-env-test"), Key: aws.String("a b+c/ü.txt"), Body: strings.NewReader("hello")})
	require.NoError(t, err)

	q, err := sqs.NewFromConfig(cfg).CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("local-env-test")})
	require.NoError(t, err)
	require.NotEmpty(t, aws.ToString(q.QueueUrl))

	_, err = dynamodb.NewFromConfig(cfg).ListTables(ctx, &dynamodb.ListTablesInput{})
	require.NoError(t, err)
}

// Buckets can be versioned, as the component declares them: every write has its own
// version id, an older version stays readable by it, and a GET pinned to an ETag that
// is no longer current fails its precondition.
func TestVersionedBucket(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	require.NoError(t, err)
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	const b = "local-versioned-test"
	_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)})
	require.NoError(t, err)
	_, err = c.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(b),
		VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}})
	require.NoError(t, err)
	v1, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b), Key: aws.String("k.txt"), Body: strings.NewReader("one")})
	require.NoError(t, err)
	v2, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b), Key: aws.String("k.txt"), Body: strings.NewReader("two")})
	require.NoError(t, err)
	require.NotEmpty(t, aws.ToString(v1.VersionId))
	require.NotEqual(t, aws.ToString(v1.VersionId), aws.ToString(v2.VersionId))

	old, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b), Key: aws.String("k.txt"), VersionId: v1.VersionId})
	require.NoError(t, err)
	body, _ := io.ReadAll(old.Body)
	old.Body.Close()
	require.Equal(t, "one", string(body))
	require.Equal(t, aws.ToString(v1.ETag), aws.ToString(old.ETag))

	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b), Key: aws.String("k.txt"), IfMatch: v1.ETag})
	var api smithy.APIError
	require.ErrorAs(t, err, &api)
	require.Equal(t, "PreconditionFailed", api.ErrorCode(), "the code the worker reads")
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b), Key: aws.String("k.txt"), IfMatch: v2.ETag})
	require.NoError(t, err)
}

// DynamoDB Local with its tables on disk survives a restart on the same port: what was
// written before is read after, and clients reach it again without being rebuilt. In
// memory, a restart is refused rather than silently losing every table.
func TestRestartDynamoDBKeepsItsTables(t *testing.T) {
	ctx := context.Background()
	require.ErrorContains(t, localtest.Servers.RestartDynamoDB(ctx, 0), "in memory")

	srv, err := local.Start(ctx, local.Options{DynamoDBOnDisk: true})
	require.NoError(t, err)
	defer srv.Stop()
	cfg, err := srv.AWSConfig(ctx)
	require.NoError(t, err)
	db := srv.DynamoDBClient(cfg)
	_, err = db.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String("restart"), BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}}})
	require.NoError(t, err)
	item := map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "kept"}}
	_, err = db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("restart"), Item: item})
	require.NoError(t, err)

	require.NoError(t, srv.RestartDynamoDB(ctx, 500*time.Millisecond))
	out, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("restart"), Key: item, ConsistentRead: aws.Bool(true)})
	require.NoError(t, err)
	require.Equal(t, item, out.Item)
}
