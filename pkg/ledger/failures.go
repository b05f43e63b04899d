package ledger

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Failed is one entry of the failure index, with its whole item: a file record
// (FAILED or DEAD_LETTERED) or a poison message.
type Failed struct {
	At     time.Time // when it failed (the index's order)
	File   *Record
	Poison *PoisonRecord
}

// PoisonRecord is a poison message as stored (see [Store.RecordPoison]).
type PoisonRecord struct {
	MessageID string    `dynamodbav:"-"`
	Queue     string    `dynamodbav:"queue"`
	Reason    string    `dynamodbav:"reason"`
	Body      string    `dynamodbav:"body"`
	BodyBytes int       `dynamodbav:"body_bytes"`
	Receive   int       `dynamodbav:"receive"`
	At        time.Time `dynamodbav:"updated_at"`
}

// FailedBetween lists what failed from since to until (both UTC days and everything
// between them, one index partition a day), oldest first, with each entry's whole item
// (the index holds only status, reason, bucket and key). An entry whose item changed
// since it was indexed (a file that then succeeded leaves the index) is read as it is
// now, and left out if it no longer fails.
func (s *Store) FailedBetween(ctx context.Context, since, until time.Time) ([]Failed, error) {
	since, until = since.UTC(), until.UTC()
	var refs []Failed
	var keys []map[string]types.AttributeValue
	for day := since.Truncate(24 * time.Hour); !day.After(until); day = day.Add(24 * time.Hour) {
		p := dynamodb.NewQueryPaginator(s.api, &dynamodb.QueryInput{
			TableName:                aws.String(s.table),
			IndexName:                aws.String(IndexFailed),
			KeyConditionExpression:   aws.String("#g = :g AND #s BETWEEN :from AND :to"),
			ExpressionAttributeNames: map[string]string{"#g": AttrGSI1PK, "#s": AttrGSI1SK},
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":g":    str(failedPartition(day)),
				":from": str(since.Format(time.RFC3339Nano)),
				// '~' sorts after '#' and every digit: the whole of the until instant.
				":to": str(until.Format(time.RFC3339Nano) + "~"),
			},
			ProjectionExpression: aws.String("pk, sk, #s"),
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("ledger: failures of %s: %w", day.Format("2006-01-02"), err)
			}
			for _, it := range page.Items {
				at, _, _ := strings.Cut(text(it[AttrGSI1SK]), "#")
				t, _ := time.Parse(time.RFC3339Nano, at)
				refs = append(refs, Failed{At: t})
				keys = append(keys, map[string]types.AttributeValue{AttrPK: it[AttrPK], AttrSK: it[AttrSK]})
			}
		}
	}
	items := map[[2]string]map[string]types.AttributeValue{}
	err := s.batchGet(ctx, keys, func(item map[string]types.AttributeValue) error {
		items[[2]string{text(item[AttrPK]), text(item[AttrSK])}] = item
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: read failures: %w", err)
	}
	var out []Failed
	for i, ref := range refs {
		pk, sk := text(keys[i][AttrPK]), text(keys[i][AttrSK])
		item, ok := items[[2]string{pk, sk}]
		if !ok {
			continue // expired or removed since
		}
		switch {
		case strings.HasPrefix(pk, poisonPrefix):
			p := &PoisonRecord{}
			if err := attributevalue.UnmarshalMap(item, p); err != nil {
				return nil, fmt.Errorf("ledger: poison %s: %w", pk, err)
			}
			p.MessageID = strings.TrimPrefix(pk, poisonPrefix)
			ref.Poison = p
		case strings.HasPrefix(pk, filePrefix):
			r := &Record{}
			if err := attributevalue.UnmarshalMap(item, r); err != nil {
				return nil, fmt.Errorf("ledger: record %s: %w", pk, err)
			}
			if r.Status != StatusFailed && r.Status != StatusDeadLettered {
				continue // it failed then, and has been retried since
			}
			ref.File = r
		default:
			continue
		}
		out = append(out, ref)
	}
	return out, nil
}
