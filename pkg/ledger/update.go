package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// update accumulates one UpdateItem expression.
type update struct {
	sets    []string
	removes []string
	names   map[string]string
	values  map[string]any
}

func (u *update) name(ref string) {
	u.names[ref] = strings.TrimPrefix(ref, "#")
}

func (u *update) set(name, value string, v any) {
	u.name(name)
	u.sets = append(u.sets, name+" = "+value)
	u.values[value] = v
}

func (u *update) remove(names ...string) {
	for _, n := range names {
		u.name(n)
		u.removes = append(u.removes, n)
	}
}

// update starts the expression every file write shares: identity, the attempt appended
// to the history, the attempt count, timestamps and TTL.
func (s *Store) update(k Key, jobID string, att Attempt) *update {
	u := &update{names: map[string]string{}, values: map[string]any{}}
	u.set("#bucket", ":bucket", k.Bucket)
	u.set("#key", ":key", k.Key)
	if jobID != "" {
		u.set("#job_id", ":job_id", jobID)
	}
	u.set("#updated_at", ":updated_at", att.At)
	u.set("#duration_ms", ":duration_ms", att.DurationMS)
	u.name("#attempts")
	u.sets = append(u.sets, "#attempts = if_not_exists(#attempts, :zero) + :one")
	u.values[":zero"], u.values[":one"] = 0, 1
	u.name("#history")
	u.sets = append(u.sets, "#history = list_append(if_not_exists(#history, :empty), :attempt)")
	u.values[":empty"] = []Attempt{}
	u.values[":attempt"] = []Attempt{att}
	if s.ttl > 0 {
		u.set("#"+AttrTTL, ":"+AttrTTL, att.At.Add(s.ttl).Unix())
	}
	return u
}

// write sends u as one UpdateItem, on condition that the record is not SUCCEEDED.
func (s *Store) write(ctx context.Context, k Key, u *update) error {
	values, err := attributevalue.MarshalMap(u.values)
	if err != nil {
		return fmt.Errorf("ledger: write %s/%s: %w", k.Bucket, k.Key, err)
	}
	values[":succeeded"] = &types.AttributeValueMemberS{Value: string(StatusSucceeded)}
	u.name("#status")
	expr := "SET " + strings.Join(u.sets, ", ")
	if len(u.removes) > 0 {
		expr += " REMOVE " + strings.Join(u.removes, ", ")
	}
	_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table),
		Key: map[string]types.AttributeValue{
			AttrPK: &types.AttributeValueMemberS{Value: k.pk()},
			AttrSK: &types.AttributeValueMemberS{Value: k.Revision},
		},
		UpdateExpression:          aws.String(expr),
		ConditionExpression:       aws.String("attribute_not_exists(#status) OR #status <> :succeeded"),
		ExpressionAttributeNames:  u.names,
		ExpressionAttributeValues: values,
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return ErrAlreadySucceeded
	}
	if err != nil {
		return fmt.Errorf("ledger: write %s/%s: %w", k.Bucket, k.Key, err)
	}
	return nil
}

// TableAPI is what [CreateTable] calls.
type TableAPI interface {
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	UpdateTimeToLive(context.Context, *dynamodb.UpdateTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// CreateTable creates the ledger table (on-demand, with the failure index and TTL) and
// waits until it is active. The Pulumi component declares the same schema.
func CreateTable(ctx context.Context, api TableAPI, table string) error {
	s := func(n string) types.AttributeDefinition {
		return types.AttributeDefinition{AttributeName: aws.String(n), AttributeType: types.ScalarAttributeTypeS}
	}
	_, err := api.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{s(AttrPK), s(AttrSK), s(AttrGSI1PK), s(AttrGSI1SK)},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(AttrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(AttrSK), KeyType: types.KeyTypeRange},
		},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName: aws.String(IndexFailed),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(AttrGSI1PK), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(AttrGSI1SK), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{
				ProjectionType:   types.ProjectionTypeInclude,
				NonKeyAttributes: []string{"status", "reason", "bucket", "key"},
			},
		}},
	})
	if err != nil {
		return fmt.Errorf("ledger: create table %s: %w", table, err)
	}
	w := dynamodb.NewTableExistsWaiter(api)
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, 2*time.Minute); err != nil {
		return fmt.Errorf("ledger: wait for table %s: %w", table, err)
	}
	_, err = api.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               aws.String(table),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(AttrTTL), Enabled: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("ledger: enable TTL on %s: %w", table, err)
	}
	return nil
}
