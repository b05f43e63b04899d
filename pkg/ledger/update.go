package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Write is one attempt's outcome for a file, as [Store.Write] records it.
type Write struct {
	Key     Key
	Rev     Revision
	JobID   string
	Status  Status // SUCCEEDED, FAILED, RETRYING or DEAD_LETTERED
	Result  Result // a success's
	Reason  string // a failure's
	Code    string // a failure's code (pkg/failure), kept as "code"
	Attempt Attempt
	// Over is the record, exactly as the caller read it, that this revision may replace:
	// the caller confirmed that Rev is the object's current content while that record
	// held the key (see [OtherRevisionError]). If the record changed since (another
	// revision, a new sequencer, another attempt), the write is refused again.
	Over *State
	// Replay, if set, lets a success of the same revision be written again, once per
	// replay id (a deliberate reprocessing, `fileflow replay`).
	Replay string
}

// Write records an attempt with one conditional UpdateItem. On a key's own record:
// a new record, or the same revision not yet SUCCEEDED, is written (the attempt
// appended to the history); the same revision already SUCCEEDED is
// [ErrAlreadySucceeded]; a revision older than the record's by sequencer is a
// [*SupersededError]; a newer one (by sequencer, or named by Over) replaces the record;
// any other is an [*OtherRevisionError]. A job's own record (Key.Scope) has no
// revisions: only a success is final. Nothing is written on an error.
func (s *Store) Write(ctx context.Context, w Write) error {
	_, err := s.WriteReplacing(ctx, w)
	return err
}

// WriteReplacing is [Store.Write], and says whether its writer must make sure the key's
// output is this revision's: when the write replaced another revision's record (the
// other's output may have landed last), and when a success of an ordered key landed on
// this revision's own earlier record that was not a success (RETRYING, DEAD_LETTERED,
// FAILED): meanwhile an older revision's writer, seeing this one unfinished, may have put
// its own output or removed this one's as a leftover (found by an adversarial review
// of the "auto" duplicate check, pkg/worker/review_auto_test.go).
func (s *Store) WriteReplacing(ctx context.Context, w Write) (replaced bool, err error) {
	if w.Status == "" || w.Status == StatusSuperseded {
		return false, fmt.Errorf("ledger: write %s: status %q is not one a write records", w.Key, w.Status)
	}
	w.Attempt.Outcome = w.Status
	if w.Status != StatusSucceeded && w.Attempt.Error == "" {
		w.Attempt.Error = w.Reason
	}
	if w.Attempt.Revision == "" {
		w.Attempt.Revision = w.Rev.String()
	}
	check := w.Status == StatusSucceeded && w.Key.Ordered()
	for try := 0; try < 6; try++ {
		old, err := s.put(ctx, w, modeAppend, nil)
		if err != errCondition {
			return err == nil && check && old != nil, err
		}
		if old == nil {
			continue // the record changed between the write and its failure: look again
		}
		head := State{Status: old.Status, Rev: old.Rev(), Attempts: old.Attempts}
		switch {
		case !w.Key.Ordered() || head.Rev.Same(w.Rev):
			if head.Status == StatusSucceeded && (w.Replay == "" || slices.Contains(old.Replays, w.Replay)) {
				if w.Key.Ordered() && w.Rev.Placed(head.Rev) {
					s.advance(ctx, w.Key, w.Rev) // the same content, uploaded again later
				}
				return false, ErrAlreadySucceeded
			}
			// The history is full: keep its newest part (an earlier record, not a success).
			if _, err := s.put(ctx, w, modeTrim, old); err != errCondition {
				return err == nil && check, err
			}
		case w.Rev.Older(head.Rev):
			return false, &SupersededError{Head: head}
		case head.Rev.Older(w.Rev) || (w.Over != nil && *w.Over == head):
			if _, err := s.put(ctx, w, modeReplace, old); err != errCondition {
				return err == nil, err
			}
		default:
			return false, &OtherRevisionError{Head: head}
		}
	}
	return false, fmt.Errorf("ledger: write %s: the record kept changing under six attempts", w.Key)
}

// SupersededKey is where [Store.RecordSuperseded] keeps revision rev of k's record.
func SupersededKey(k Key, rev Revision) Key {
	scope := "superseded#"
	if k.Scope != "" {
		scope += k.Scope + "#"
	}
	return Key{Bucket: k.Bucket, Key: k.Key, Scope: scope + rev.String()}
}

// RecordSuperseded keeps a revision that arrived after a newer one (acknowledged,
// never processed, or processed and not committed) beside the key's record, with the
// reason and the revision that superseded it.
func (s *Store) RecordSuperseded(ctx context.Context, k Key, rev Revision, by Revision, reason string, att Attempt) error {
	att.Outcome, att.Error, att.Revision = StatusSuperseded, reason, rev.String()
	item := map[string]any{
		AttrPK: k.pk(), AttrSK: SupersededKey(k, rev).sk(),
		"bucket": k.Bucket, "key": k.Key, "status": StatusSuperseded, "reason": reason,
		"superseded_by": by.String(), "updated_at": att.At, "attempts": 1, "history": []Attempt{att},
	}
	if rev.ETag != "" {
		item["etag"] = rev.ETag
	}
	if rev.VersionID != "" {
		item["version_id"] = rev.VersionID
	}
	if rev.Sequencer != "" {
		item["seq"] = rev.Sequencer
	}
	if s.ttl > 0 {
		item[AttrTTL] = att.At.Add(s.ttl).Unix()
	}
	av, err := attributevalue.MarshalMap(item)
	if err != nil {
		return fmt.Errorf("ledger: record %s superseded: %w", k, err)
	}
	if _, err := s.api.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(s.table), Item: av}); err != nil {
		return fmt.Errorf("ledger: record %s superseded: %w", k, err)
	}
	return nil
}

// Advance raises a SUCCEEDED record's sequencer to rev's (or sets it, if the record has
// none), when rev is the same content uploaded again later: an older event of other
// content that arrives afterwards is then superseded, as it should be, and a writer that
// read the record before sees it changed. Best effort; used when a duplicate is skipped.
func (s *Store) Advance(ctx context.Context, k Key, rev Revision) {
	s.advance(ctx, k, rev)
}

func (s *Store) advance(ctx context.Context, k Key, rev Revision) {
	if rev.Sequencer == "" || rev.ETag == "" || !k.Ordered() {
		return
	}
	_, _ = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: k.pk()}, AttrSK: &types.AttributeValueMemberS{Value: k.sk()}},
		UpdateExpression:          aws.String("SET seq = :seq"),
		ConditionExpression:       aws.String("etag = :etag AND (attribute_not_exists(seq) OR seq < :seq)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":seq": &types.AttributeValueMemberS{Value: rev.Sequencer}, ":etag": &types.AttributeValueMemberS{Value: rev.ETag}},
	})
}

// errCondition: the write's condition failed (the old record, if returned, says why).
var errCondition = errors.New("ledger: condition failed")

type writeMode int

const (
	modeAppend  writeMode = iota // new, or the same revision with room in its history
	modeTrim                     // the same revision, history full: rewrite its newest part
	modeReplace                  // another revision, now superseded by this one
)

// put sends w as one UpdateItem in the given mode; old is the record the mode acts on
// (trim, replace). On a failed condition it returns errCondition and the record as it
// was, if DynamoDB returned it. A success appended to an existing record returns that
// record's earlier status (ReturnValues UPDATED_OLD), nil for a new record.
func (s *Store) put(ctx context.Context, w Write, mode writeMode, old *Record) (*Record, error) {
	u := &update{names: map[string]string{}, values: map[string]any{}}
	u.set("#bucket", ":bucket", w.Key.Bucket)
	u.set("#key", ":key", w.Key.Key)
	if w.JobID != "" {
		u.set("#job_id", ":job_id", w.JobID)
	}
	u.set("#status", ":status", w.Status)
	u.set("#updated_at", ":updated_at", w.Attempt.At)
	u.set("#duration_ms", ":duration_ms", w.Attempt.DurationMS)
	if w.Rev.ETag != "" {
		u.set("#etag", ":etag", w.Rev.ETag)
	}
	if w.Rev.VersionID != "" {
		u.set("#version_id", ":version_id", w.Rev.VersionID)
	}
	if s.ttl > 0 {
		u.set("#"+AttrTTL, ":"+AttrTTL, w.Attempt.At.Add(s.ttl).Unix())
	}
	if w.Status == StatusSucceeded {
		res := w.Result
		u.set("#size", ":size", res.Size)
		u.set("#output_size", ":output_size", res.OutputSize)
		u.set("#sha256", ":sha256", res.SHA256)
		u.set("#crc32c", ":crc32c", res.CRC32C)
		u.set("#content_type", ":content_type", res.ContentType)
		u.set("#outputs", ":outputs", nonNil(res.Outputs))
		u.set("#processors", ":processors", nonNil(res.Processors))
		if res.Member != nil {
			u.set("#member", ":member", res.Member)
		}
		u.remove("#reason", "#code", "#gsi1pk", "#gsi1sk")
	} else {
		u.set("#reason", ":reason", w.Reason)
		if w.Code != "" {
			u.set("#code", ":code", w.Code)
		} else {
			u.remove("#code")
		}
		if w.Status == StatusFailed || w.Status == StatusDeadLettered {
			u.set("#gsi1pk", ":gsi1pk", failedPartition(w.Attempt.At))
			u.set("#gsi1sk", ":gsi1sk", failedSortKey(w.Attempt.At, w.Key.pk()))
		} else {
			u.remove("#gsi1pk", "#gsi1sk")
		}
	}
	var cond string
	switch mode {
	case modeAppend:
		u.name("#attempts")
		u.sets = append(u.sets, "#attempts = if_not_exists(#attempts, :zero) + :one")
		u.values[":zero"], u.values[":one"] = 0, 1
		u.name("#history")
		u.sets = append(u.sets, "#history = list_append(if_not_exists(#history, :empty), :attempt)")
		u.values[":empty"] = []Attempt{}
		u.values[":attempt"] = []Attempt{w.Attempt}
		u.values[":hmax"] = MaxHistory
		if w.Key.Ordered() && w.Rev.Sequencer != "" {
			u.set("#seq", ":seq", w.Rev.Sequencer)
		}
		u.values[":succeeded"] = StatusSucceeded
		same := "#status <> :succeeded"
		if w.Replay != "" {
			same = u.replay(w.Replay)
		}
		if w.Key.Ordered() {
			same = u.same(w.Rev) + " AND " + same
		}
		cond = "attribute_not_exists(#status) OR (" + same + " AND size(#history) < :hmax)"
	case modeTrim:
		hist := append(append([]Attempt{}, old.History[max(0, len(old.History)-(MaxHistory-1)):]...), w.Attempt)
		u.set("#history", ":history", hist)
		u.set("#attempts", ":attempts", old.Attempts+1)
		u.values[":seen"] = old.Attempts
		u.values[":succeeded"] = StatusSucceeded
		cond = "#attempts = :seen AND #status <> :succeeded"
		if w.Replay != "" {
			cond = "#attempts = :seen AND " + u.replay(w.Replay)
		}
		if w.Key.Ordered() {
			cond += " AND " + u.same(w.Rev)
		}
	case modeReplace:
		u.set("#history", ":history", []Attempt{w.Attempt})
		u.set("#attempts", ":attempts", 1)
		if w.Rev.Sequencer != "" {
			u.set("#seq", ":seq", w.Rev.Sequencer)
		} else {
			u.remove("#seq") // confirmed current, but not placed among the events
		}
		if w.Rev.VersionID == "" {
			u.remove("#version_id")
		}
		if old.ETag != "" {
			u.set("#prev_etag", ":prev_etag", old.ETag)
		}
		if old.VersionID != "" {
			u.set("#prev_version_id", ":prev_version_id", old.VersionID)
		}
		if w.Status != StatusSucceeded {
			u.remove("#size", "#output_size", "#sha256", "#crc32c", "#content_type", "#outputs", "#processors")
		}
		// Exactly the record that was read: the same revision, attempts and sequencer
		// (an Advance since, of the same content uploaded again, must be seen).
		u.values[":seen"] = old.Attempts
		cond = "#attempts = :seen AND " + u.same(old.Rev())
		u.name("#seq")
		if old.Sequencer == "" {
			cond += " AND attribute_not_exists(#seq)"
		} else {
			u.values[":seen_seq"] = old.Sequencer
			cond += " AND #seq = :seen_seq"
		}
	}
	values, err := attributevalue.MarshalMap(u.values)
	if err != nil {
		return nil, fmt.Errorf("ledger: write %s: %w", w.Key, err)
	}
	expr := "SET " + strings.Join(u.sets, ", ")
	if len(u.removes) > 0 {
		expr += " REMOVE " + strings.Join(u.removes, ", ")
	}
	if w.Replay != "" && mode != modeReplace {
		// Every replay id is kept (a string set): a late redelivery of an earlier replay
		// is a duplicate too.
		expr += " ADD #replays :replay_set"
		values[":replay_set"] = &types.AttributeValueMemberSS{Value: []string{w.Replay}}
	}
	in := &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table),
		Key: map[string]types.AttributeValue{
			AttrPK: &types.AttributeValueMemberS{Value: w.Key.pk()},
			AttrSK: &types.AttributeValueMemberS{Value: w.Key.sk()},
		},
		UpdateExpression:                    aws.String(expr),
		ConditionExpression:                 aws.String(cond),
		ExpressionAttributeNames:            u.names,
		ExpressionAttributeValues:           values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	appendSuccess := mode == modeAppend && w.Status == StatusSucceeded && w.Key.Ordered()
	if appendSuccess {
		in.ReturnValues = types.ReturnValueUpdatedOld
	}
	out, err := s.api.UpdateItem(ctx, in)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		if ccf.Item == nil {
			return nil, errCondition
		}
		var rec Record
		if err := attributevalue.UnmarshalMap(ccf.Item, &rec); err != nil {
			return nil, fmt.Errorf("ledger: write %s: %w", w.Key, err)
		}
		return &rec, errCondition
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: write %s: %w", w.Key, err)
	}
	if appendSuccess && out != nil {
		if st, ok := out.Attributes["status"].(*types.AttributeValueMemberS); ok {
			return &Record{Status: Status(st.Value)}, nil
		}
	}
	return nil, nil
}

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

// replay is the condition that lets replay id go through once: the record is not a
// success yet, or no replay with this id was written.
func (u *update) replay(id string) string {
	u.name("#replays")
	u.values[":replay"] = id
	u.values[":succeeded"] = StatusSucceeded
	return "(#status <> :succeeded OR attribute_not_exists(#replays) OR NOT contains(#replays, :replay))"
}

// same is the condition that the record holds revision r's content: its ETag, or where
// one side's ETag is unknown, its version id.
func (u *update) same(r Revision) string {
	switch {
	case r.ETag != "":
		u.name("#etag")
	case r.VersionID != "":
		u.name("#version_id")
	default:
		u.name("#etag")
		u.name("#version_id")
	}
	switch {
	case r.ETag != "" && r.VersionID != "":
		u.name("#version_id")
		u.values[":same_etag"], u.values[":same_version"] = r.ETag, r.VersionID
		return "(#etag = :same_etag OR (attribute_not_exists(#etag) AND #version_id = :same_version))"
	case r.ETag != "":
		u.values[":same_etag"] = r.ETag
		return "#etag = :same_etag"
	case r.VersionID != "":
		u.values[":same_version"] = r.VersionID
		return "#version_id = :same_version"
	}
	return "attribute_not_exists(#etag) AND attribute_not_exists(#version_id)"
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

// maxSortKey is DynamoDB's limit on a sort key (of the table or an index), in bytes.
const maxSortKey = 1024

// failedSortKey is a failed record's sort key in the failures index: the time it failed,
// then its partition key, so the index orders failures by time and no two share one.
// A key near S3's 1,024 bytes would put it over DynamoDB's limit for a sort key (the
// write is refused): then the partition key is hashed there. Readers take only the time
// from it; the record's own keys come with the index's projection.
func failedSortKey(at time.Time, pk string) string {
	sk := at.UTC().Format(time.RFC3339Nano) + "#" + pk
	if len(sk) <= maxSortKey {
		return sk
	}
	sum := sha256.Sum256([]byte(pk))
	return at.UTC().Format(time.RFC3339Nano) + "#sha256:" + hex.EncodeToString(sum[:])
}
