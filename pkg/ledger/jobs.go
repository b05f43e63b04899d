package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Job records and sharded counters.
//
//	pk           sk        what
//	J#<job id>   job       the job: status, spec, timestamps
//	J#<job id>   c#<n>     counter shard n: expected, done, failed
//
// Termination detection: every unit of work (a listing task, a file) is counted in
// "expected" before it can be counted "done", and a task adds its children to "expected"
// in the same atomic write that counts itself "done". So at every instant
// sum(expected) - sum(done) is the number of units still outstanding, and it reaches zero
// only when all work is finished — never while fan-out is still enqueuing. The sums are
// read with one TransactGetItems (a serializable snapshot across shards), and the job is
// completed with a conditional write, so it completes exactly once.
//
// Writers spread over the shards (each batch picks one), so no single item caps a job's
// rate: DynamoDB allows ~1,000 writes/s per item.

// JobStatus is a job's state.
type JobStatus string

// Job statuses.
const (
	JobRunning   JobStatus = "RUNNING"
	JobComplete  JobStatus = "COMPLETE"
	JobFailed    JobStatus = "FAILED"
	JobCancelled JobStatus = "CANCELLED"
)

// MaxJobShards bounds the shards (TransactGetItems reads at most 100 items).
const MaxJobShards = 99

// ErrJobNotRunning: the job was already completed, failed or cancelled.
var ErrJobNotRunning = errors.New("ledger: job is not running")

// Counts are a job's summed counters.
type Counts struct {
	Expected, Done, Failed int64
}

// Outstanding is the work not yet finished.
func (c Counts) Outstanding() int64 { return c.Expected - c.Done }

func jobPK(id string) string { return "J#" + id }

// CreateJob writes the job record and its shards, with the root planning task counted
// as expected. It fails if the job exists.
func (s *Store) CreateJob(ctx context.Context, id, spec string, shards int, now time.Time) error {
	if shards < 1 || shards > MaxJobShards {
		return fmt.Errorf("ledger: job %s: shards = %d: must be in 1..%d", id, shards, MaxJobShards)
	}
	items := []types.TransactWriteItem{{Put: &types.Put{
		TableName: aws.String(s.table),
		Item: map[string]types.AttributeValue{
			AttrPK:       &types.AttributeValueMemberS{Value: jobPK(id)},
			AttrSK:       &types.AttributeValueMemberS{Value: "job"},
			"status":     &types.AttributeValueMemberS{Value: string(JobRunning)},
			"spec":       &types.AttributeValueMemberS{Value: spec},
			"shards":     &types.AttributeValueMemberN{Value: strconv.Itoa(shards)},
			"created_at": &types.AttributeValueMemberS{Value: now.UTC().Format(time.RFC3339Nano)},
		},
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	}}}
	for n := range shards {
		expected := "0"
		if n == 0 {
			expected = "1" // the root planning task
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{
			TableName: aws.String(s.table),
			Item: map[string]types.AttributeValue{
				AttrPK:     &types.AttributeValueMemberS{Value: jobPK(id)},
				AttrSK:     &types.AttributeValueMemberS{Value: "c#" + strconv.Itoa(n)},
				"expected": &types.AttributeValueMemberN{Value: expected},
				"done":     &types.AttributeValueMemberN{Value: "0"},
				"failed":   &types.AttributeValueMemberN{Value: "0"},
			},
		}})
	}
	if _, err := s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items}); err != nil {
		return fmt.Errorf("ledger: create job %s: %w", id, err)
	}
	return nil
}

// Progress adds to one shard's counters in one write: the children a task enqueued
// (expected), the units it finished (done) and how many of those failed.
func (s *Store) Progress(ctx context.Context, id string, shard int, expected, done, failed int64) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table),
		Key: map[string]types.AttributeValue{
			AttrPK: &types.AttributeValueMemberS{Value: jobPK(id)},
			AttrSK: &types.AttributeValueMemberS{Value: "c#" + strconv.Itoa(shard)},
		},
		UpdateExpression:    aws.String("ADD expected :e, done :d, failed :f"),
		ConditionExpression: aws.String("attribute_exists(pk)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":e": &types.AttributeValueMemberN{Value: strconv.FormatInt(expected, 10)},
			":d": &types.AttributeValueMemberN{Value: strconv.FormatInt(done, 10)},
			":f": &types.AttributeValueMemberN{Value: strconv.FormatInt(failed, 10)},
		},
	})
	if err != nil {
		return fmt.Errorf("ledger: job %s shard %d progress: %w", id, shard, err)
	}
	return nil
}

// JobCounts reads every shard in one serializable snapshot.
func (s *Store) JobCounts(ctx context.Context, id string, shards int) (Counts, error) {
	var gets []types.TransactGetItem
	for n := range shards {
		gets = append(gets, types.TransactGetItem{Get: &types.Get{
			TableName: aws.String(s.table),
			Key: map[string]types.AttributeValue{
				AttrPK: &types.AttributeValueMemberS{Value: jobPK(id)},
				AttrSK: &types.AttributeValueMemberS{Value: "c#" + strconv.Itoa(n)},
			},
		}})
	}
	out, err := s.api.TransactGetItems(ctx, &dynamodb.TransactGetItemsInput{TransactItems: gets})
	if err != nil {
		return Counts{}, fmt.Errorf("ledger: job %s counts: %w", id, err)
	}
	var c Counts
	for _, r := range out.Responses {
		c.Expected += num(r.Item["expected"])
		c.Done += num(r.Item["done"])
		c.Failed += num(r.Item["failed"])
	}
	return c, nil
}

func num(v types.AttributeValue) int64 {
	n, ok := v.(*types.AttributeValueMemberN)
	if !ok {
		return 0
	}
	x, _ := strconv.ParseInt(n.Value, 10, 64)
	return x
}

// TryComplete completes the job if no work is outstanding: exactly one caller gets
// completed = true; the others (and any caller while work remains) get false.
func (s *Store) TryComplete(ctx context.Context, id string, shards int, now time.Time) (completed bool, c Counts, err error) {
	c, err = s.JobCounts(ctx, id, shards)
	if err != nil || c.Outstanding() != 0 {
		return false, c, err
	}
	status := JobComplete
	_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table),
		Key: map[string]types.AttributeValue{
			AttrPK: &types.AttributeValueMemberS{Value: jobPK(id)},
			AttrSK: &types.AttributeValueMemberS{Value: "job"},
		},
		UpdateExpression:         aws.String("SET #status = :done, finished_at = :now, files_done = :d, files_failed = :f"),
		ConditionExpression:      aws.String("#status = :running"),
		ExpressionAttributeNames: map[string]string{"#status": "status"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":done":    &types.AttributeValueMemberS{Value: string(status)},
			":running": &types.AttributeValueMemberS{Value: string(JobRunning)},
			":now":     &types.AttributeValueMemberS{Value: now.UTC().Format(time.RFC3339Nano)},
			":d":       &types.AttributeValueMemberN{Value: strconv.FormatInt(c.Done, 10)},
			":f":       &types.AttributeValueMemberN{Value: strconv.FormatInt(c.Failed, 10)},
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return false, c, nil // completed (or stopped) by someone else
	}
	if err != nil {
		return false, c, fmt.Errorf("ledger: complete job %s: %w", id, err)
	}
	return true, c, nil
}
