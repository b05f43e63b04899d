package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Reading records for operators (`fileflow audit`, `failures`, `dlq`): whole partitions
// and full items, never on a handler's path.

// FileItems returns every record kept under one file name (bucket/key, or an archive
// member's "<zip>!/<entry>"): the key's own record (sk "file"), an archive member's
// ("member"), a job's own ("job:<id>"), a failure before any revision was read
// ("unread"), and the superseded revisions ("superseded#…"), in sort-key order, read
// consistently.
func (s *Store) FileItems(ctx context.Context, bucket, key string) ([]Record, error) {
	var out []Record
	p := dynamodb.NewQueryPaginator(s.api, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		KeyConditionExpression:    aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(Key{Bucket: bucket, Key: key}.pk())},
		ConsistentRead:            aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: records of %s/%s: %w", bucket, key, err)
		}
		var recs []Record
		if err := attributevalue.UnmarshalListOfMaps(page.Items, &recs); err != nil {
			return nil, fmt.Errorf("ledger: records of %s/%s: %w", bucket, key, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

// Records reads whole file records (absent keys have none), with strongly consistent
// BatchGetItem reads of up to 100 keys each.
func (s *Store) Records(ctx context.Context, keys []Key) (map[Key]Record, error) {
	out := make(map[Key]Record, len(keys))
	byID := make(map[[2]string]Key, len(keys))
	var items []map[string]types.AttributeValue
	for _, k := range keys {
		id := [2]string{k.pk(), k.sk()}
		if _, dup := byID[id]; !dup {
			byID[id] = k
			items = append(items, k.Attributes())
		}
	}
	err := s.batchGet(ctx, items, func(item map[string]types.AttributeValue) error {
		var r Record
		if err := attributevalue.UnmarshalMap(item, &r); err != nil {
			return err
		}
		if k, ok := byID[[2]string{r.PK, r.SK}]; ok {
			out[k] = r
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: read records: %w", err)
	}
	return out, nil
}

// batchGet reads items by primary key, 100 a call, retrying unprocessed keys with a
// short backoff.
func (s *Store) batchGet(ctx context.Context, keys []map[string]types.AttributeValue, each func(map[string]types.AttributeValue) error) error {
	for start := 0; start < len(keys); start += 100 {
		req := map[string]types.KeysAndAttributes{s.table: {Keys: keys[start:min(start+100, len(keys))], ConsistentRead: aws.Bool(true)}}
		for attempt := 0; len(req[s.table].Keys) > 0; attempt++ {
			if attempt > 8 {
				return errors.New("unprocessed keys after 8 retries")
			}
			if attempt > 0 {
				if err := sleep(ctx, time.Duration(attempt*attempt)*20*time.Millisecond); err != nil {
					return err
				}
			}
			resp, err := s.api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: req})
			if err != nil {
				return err
			}
			for _, item := range resp.Responses[s.table] {
				if err := each(item); err != nil {
					return err
				}
			}
			req = resp.UnprocessedKeys
		}
	}
	return nil
}

// Last is the record's newest attempt (zero if its history is empty).
func (r Record) Last() Attempt {
	if len(r.History) == 0 {
		return Attempt{}
	}
	return r.History[len(r.History)-1]
}

// Scope is the record's scope, from its sort key: "" for the key's own record, else
// "member", "unread", "job:<id>" or "superseded#…".
func (r Record) Scope() string {
	if r.SK == fileSK {
		return ""
	}
	return r.SK
}
