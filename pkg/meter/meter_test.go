package meter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCountsPerServiceAndOperation(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()

	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")}
	var c Calls
	c.Attach(&cfg)
	db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	ctx := context.Background()
	key := map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "x"}}
	for range 3 {
		_, err := db.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String("t"), Key: key})
		require.NoError(t, err)
	}
	_, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t"), Key: key})
	require.NoError(t, err)

	assert.Equal(t, int64(3), c.Count("DynamoDB.UpdateItem"))
	assert.Equal(t, int64(4), c.Count("DynamoDB"))
	assert.Equal(t, int64(3), c.DynamoDBWrites(), "GetItem is a read")
	assert.Equal(t, map[string]int64{"DynamoDB": 4}, c.PerService())
	assert.Equal(t, "DynamoDB.GetItem=1 DynamoDB.UpdateItem=3", c.String())
	c.Reset()
	assert.Zero(t, c.Count("DynamoDB"))
}
