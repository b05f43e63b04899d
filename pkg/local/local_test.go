package local_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

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
