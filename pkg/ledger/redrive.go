package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Redrive markers: what `fileflow dlq redrive` did with each dead-letter message, so that
// an interrupted redrive resumes without sending a message twice.
//
//	pk                    sk        what
//	R#<dlq message id>    redrive   state "sending" (claimed, maybe sent) or "sent"
//
// A redrive claims a message ("sending") before it sends its copy to the source queue,
// marks it "sent" after, then deletes it from the DLQ. A resumed redrive that finds a
// message "sent" only deletes it; one that finds it "sending" knows the earlier run
// stopped between its claim and its mark, and must find out whether the copy went out
// (package dlq decides, from the files' records). Markers expire after [RedriveTTL],
// longer than any DLQ keeps a message.

// RedriveState is a marker's state.
type RedriveState string

// The states of a redrive marker.
const (
	RedriveSending RedriveState = "sending"
	RedriveSent    RedriveState = "sent"
)

// RedriveTTL is how long a marker is kept: past SQS's longest retention (14 days).
const RedriveTTL = 15 * 24 * time.Hour

const (
	redrivePrefix = "R#"
	redriveSK     = "redrive"
)

// RedriveMark is a dead-letter message's marker.
type RedriveMark struct {
	MessageID string       `dynamodbav:"-"`
	Queue     string       `dynamodbav:"queue"` // the DLQ's URL
	State     RedriveState `dynamodbav:"state"`
	Run       string       `dynamodbav:"run"` // the redrive run that holds it
	At        time.Time    `dynamodbav:"at"`  // claimed (or taken over) at
	// Attempts snapshots, when claimed, the attempt count of each file of the message
	// that was not final, by its record's "pk sk": if any has grown since, the copy was
	// sent and processed.
	Attempts map[string]int `dynamodbav:"attempts,omitempty"`
	// NewMessageID is the copy's id in the source queue, once sent.
	NewMessageID string    `dynamodbav:"new_message_id,omitempty"`
	SentAt       time.Time `dynamodbav:"sent_at,omitempty"`
}

func redriveKey(messageID string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: str(redrivePrefix + messageID), AttrSK: str(redriveSK)}
}

// ClaimRedrive writes m as a new "sending" marker, unless the message has one: then it
// writes nothing and returns that one (claimed=false).
func (s *Store) ClaimRedrive(ctx context.Context, m RedriveMark) (existing RedriveMark, claimed bool, err error) {
	m.State = RedriveSending
	item, err := attributevalue.MarshalMap(m)
	if err != nil {
		return RedriveMark{}, false, fmt.Errorf("ledger: claim redrive of %s: %w", m.MessageID, err)
	}
	for k, v := range redriveKey(m.MessageID) {
		item[k] = v
	}
	item[AttrTTL] = &types.AttributeValueMemberN{Value: strconv.FormatInt(m.At.Add(RedriveTTL).Unix(), 10)}
	_, err = s.api.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.table), Item: item,
		ConditionExpression:                 aws.String("attribute_not_exists(pk)"),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var ccf *types.ConditionalCheckFailedException
	switch {
	case errors.As(err, &ccf) && ccf.Item != nil:
		if err := attributevalue.UnmarshalMap(ccf.Item, &existing); err != nil {
			return RedriveMark{}, false, fmt.Errorf("ledger: claim redrive of %s: %w", m.MessageID, err)
		}
		existing.MessageID = m.MessageID
		return existing, false, nil
	case errors.As(err, &ccf):
		mark, ok, gerr := s.GetRedrive(ctx, m.MessageID)
		if gerr != nil || !ok {
			return RedriveMark{}, false, fmt.Errorf("ledger: claim redrive of %s: the marker exists but cannot be read: %v", m.MessageID, gerr)
		}
		return mark, false, nil
	case err != nil:
		return RedriveMark{}, false, fmt.Errorf("ledger: claim redrive of %s: %w", m.MessageID, err)
	}
	return m, true, nil
}

// GetRedrive reads a message's marker.
func (s *Store) GetRedrive(ctx context.Context, messageID string) (RedriveMark, bool, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: redriveKey(messageID), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return RedriveMark{}, false, fmt.Errorf("ledger: redrive marker of %s: %w", messageID, err)
	}
	if out.Item == nil {
		return RedriveMark{}, false, nil
	}
	var m RedriveMark
	if err := attributevalue.UnmarshalMap(out.Item, &m); err != nil {
		return RedriveMark{}, false, fmt.Errorf("ledger: redrive marker of %s: %w", messageID, err)
	}
	m.MessageID = messageID
	return m, true, nil
}

// ErrRedriveTaken: another run holds the message's marker now.
var ErrRedriveTaken = errors.New("ledger: the redrive marker is held by another run")

// TakeOverRedrive moves a "sending" marker left by run from to run to (at now), so that
// of two resumed runs only one sends the message again; [ErrRedriveTaken] if the marker
// is no longer from's "sending" one.
func (s *Store) TakeOverRedrive(ctx context.Context, messageID, from, to string, now time.Time) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: redriveKey(messageID),
		UpdateExpression:          aws.String("SET #run = :to, #at = :at"),
		ConditionExpression:       aws.String("#run = :from AND #state = :sending"),
		ExpressionAttributeNames:  map[string]string{"#run": "run", "#at": "at", "#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":to": str(to), ":from": str(from), ":at": str(now.UTC().Format(time.RFC3339Nano)), ":sending": str(string(RedriveSending))},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return ErrRedriveTaken
	}
	if err != nil {
		return fmt.Errorf("ledger: take over redrive of %s: %w", messageID, err)
	}
	return nil
}

// MarkRedriven records that run sent the message's copy (newID: the copy's message id;
// "" when a resumed run found it sent without knowing its id). [ErrRedriveTaken] if run
// no longer holds the marker.
func (s *Store) MarkRedriven(ctx context.Context, messageID, run, newID string, now time.Time) error {
	names := map[string]string{"#run": "run", "#state": "state", "#sent_at": "sent_at"}
	values := map[string]types.AttributeValue{":run": str(run), ":sent": str(string(RedriveSent)), ":now": str(now.UTC().Format(time.RFC3339Nano))}
	set := "SET #state = :sent, #sent_at = :now"
	if newID != "" {
		names["#new"] = "new_message_id"
		values[":new"] = str(newID)
		set += ", #new = :new"
	}
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: redriveKey(messageID),
		UpdateExpression:          aws.String(set),
		ConditionExpression:       aws.String("#run = :run"),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return ErrRedriveTaken
	}
	if err != nil {
		return fmt.Errorf("ledger: mark %s redriven: %w", messageID, err)
	}
	return nil
}

// ID is the record's partition and sort key as one string ("pk sk"): how a redrive
// marker names a file record.
func (k Key) ID() string { return k.pk() + " " + k.sk() }
