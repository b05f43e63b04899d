// Package ledger keeps fileflow's processing state in one DynamoDB table: a record per
// file with its status, checksums, outputs and an attempt history (the audit trail), a
// record per unreadable ("poison") message, and the jobs' records and counters.
//
// # Single-table layout
//
//	pk                      sk                      what
//	F#<bucket>/<key>        file                    the key's record: its newest revision (newest wins)
//	F#<bucket>/<key>        job:<id>                a file one job processes on its own (a split part,
//	                                                a manifest entry naming no version or ETag)
//	F#<bucket>/<key>        superseded#<revision>   a revision that arrived after a newer one
//	M#<sqs message id>      poison                  a message that could not be decoded
//	R#<dlq message id>      redrive                 a dead-letter message being or been redriven (redrive.go)
//	J#<job id>              job | c#<n> | t#<task>  jobs (see jobs.go)
//
// Failed and dead-lettered records also carry gsi1pk = "FAILED#<yyyy-mm-dd>" and
// gsi1sk = "<finished time>#<pk>", a sparse index for listing failures by day without a
// scan; successes never enter it, so it is never hot. expires_at (epoch seconds) is the
// TTL attribute when a retention is configured.
//
// # One write per file, newest revision wins
//
// A key's record holds one revision: the content (ETag, version id) and, when it came
// from an S3 event, the event's sequencer — S3's order of the events of one key. A
// success is one conditional UpdateItem ([Store.Write]) that sets the result, bumps the
// attempt count and appends the attempt to the (bounded) history, on condition that the
// record is new, or holds the same revision not yet SUCCEEDED. The loser of a
// duplicate-delivery race gets [ErrAlreadySucceeded] and must not count the file again.
// A different revision replaces the record only if it is newer: by sequencer when both
// have one ([SupersededError] if not); otherwise the caller confirms that its revision
// is the object's current content and writes again naming the revision it replaces
// ([OtherRevisionError]). [Store.Lookup] reads a whole batch's records in one
// BatchGetItem, so redeliveries and older revisions are skipped before any work.
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

// Table schema, shared with the infrastructure that declares the table.
const (
	AttrPK       = "pk"
	AttrSK       = "sk"
	AttrGSI1PK   = "gsi1pk"
	AttrGSI1SK   = "gsi1sk"
	AttrTTL      = "expires_at"
	IndexFailed  = "gsi1"
	poisonSK     = "poison"
	fileSK       = "file"
	filePrefix   = "F#"
	poisonPrefix = "M#"
)

// Status of a file record.
type Status string

// The statuses. SUCCEEDED and FAILED are final; RETRYING means the message will be
// delivered again; DEAD_LETTERED means it has used its receives and is in the DLQ (or,
// for a job's file, was counted failed); SUPERSEDED, only in a superseded#<revision>
// record, means a newer revision of the key was processed instead.
const (
	StatusSucceeded    Status = "SUCCEEDED"
	StatusFailed       Status = "FAILED"
	StatusRetrying     Status = "RETRYING"
	StatusDeadLettered Status = "DEAD_LETTERED"
	StatusSuperseded   Status = "SUPERSEDED"
)

// Errors the store returns.
var (
	// ErrAlreadySucceeded: the revision is already committed as SUCCEEDED, by an
	// earlier or a concurrent delivery. Nothing was written.
	ErrAlreadySucceeded = errors.New("ledger: file already succeeded")
)

// SupersededError: a newer revision (by sequencer) holds the key. Nothing was written.
type SupersededError struct{ Head State }

func (e *SupersededError) Error() string {
	return "ledger: superseded by newer revision " + e.Head.Rev.String()
}

// OtherRevisionError: another revision holds the key and nothing orders the two. The
// caller checks whether its revision is the object's current content: if it is, it
// writes again with [Write.Over] set to Head.Rev.ETag; if not, it is superseded.
type OtherRevisionError struct{ Head State }

func (e *OtherRevisionError) Error() string {
	return "ledger: the key holds revision " + e.Head.Rev.String() + " (unordered)"
}

// Key identifies a file record.
type Key struct {
	Bucket string
	Key    string // the object key; for an archive member or a split part, its name
	// Scope is "" for the key's own record, where the newest revision wins; ScopeMember
	// for an archive member's (revisions of its archive, newest wins); JobScope(id) for
	// a record one job keeps on its own, and ScopeUnread for a file that failed before
	// its revision was known (neither has revisions: only a success is final).
	Scope string
}

// The scopes of file records besides the key's own ("").
const (
	ScopeMember = "member"
	ScopeUnread = "unread"
)

// JobScope is the scope of the records job id keeps on its own.
func JobScope(id string) string { return "job:" + id }

// Ordered says whether the record keeps the newest revision (the key's own, or a
// member's): revisions are compared, and an older one is superseded.
func (k Key) Ordered() bool { return k.Scope == "" || k.Scope == ScopeMember }

func (k Key) pk() string { return filePrefix + k.Bucket + "/" + k.Key }

func (k Key) sk() string {
	if k.Scope == "" {
		return fileSK
	}
	return k.Scope
}

// Attributes is the record's primary key as DynamoDB attributes (for reading records
// in bulk).
func (k Key) Attributes() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrPK: &types.AttributeValueMemberS{Value: k.pk()},
		AttrSK: &types.AttributeValueMemberS{Value: k.sk()},
	}
}

// String is bucket/key, with the scope.
func (k Key) String() string {
	if k.Scope == "" {
		return k.Bucket + "/" + k.Key
	}
	return k.Bucket + "/" + k.Key + " (" + k.Scope + ")"
}

// Revision is the content a record is about.
type Revision struct {
	VersionID string
	ETag      string // unquoted
	// Sequencer is the S3 event's, normalized (see [NormalizeSequencer]); "" if the
	// revision did not come from an event.
	Sequencer string
}

// String is "v:<version id>", else "e:<etag>", else "latest".
func (r Revision) String() string {
	switch {
	case r.VersionID != "":
		return "v:" + r.VersionID
	case r.ETag != "":
		return "e:" + r.ETag
	}
	return "latest"
}

// Same says whether two revisions are the same content: equal ETags, or equal version
// ids where an ETag is unknown.
func (r Revision) Same(o Revision) bool {
	if r.ETag != "" && o.ETag != "" {
		return r.ETag == o.ETag
	}
	return r.VersionID != "" && r.VersionID == o.VersionID
}

// Older says whether r is known to be older than o: both have sequencers, and r's is
// lower. Sequencers of one key are comparable; nothing else orders revisions.
func (r Revision) Older(o Revision) bool {
	return r.Sequencer != "" && o.Sequencer != "" && r.Sequencer < o.Sequencer
}

// Placed says whether r's sequencer places it after o: r has one, and o has none or a
// lower one (for the same content: o's record may take r's sequencer).
func (r Revision) Placed(o Revision) bool {
	return r.Sequencer != "" && (o.Sequencer == "" || o.Sequencer < r.Sequencer)
}

// NormalizeSequencer makes S3 event sequencers of one key comparable as strings: AWS
// documents that the greater sequencer is the later event once the shorter is right-
// padded with zeros. Hex digits are upper-cased.
func NormalizeSequencer(seq string) string {
	if seq == "" {
		return ""
	}
	seq = strings.ToUpper(seq)
	if len(seq) < sequencerWidth {
		seq += strings.Repeat("0", sequencerWidth-len(seq))
	}
	return seq
}

const sequencerWidth = 64

// State is a record as [Store.Lookup] reads it.
type State struct {
	Status   Status
	Rev      Revision
	Attempts int
}

// Attempt is one entry of a record's history.
type Attempt struct {
	At         time.Time `dynamodbav:"at"`
	Outcome    Status    `dynamodbav:"outcome"`
	Receive    int       `dynamodbav:"receive"` // the message's ApproximateReceiveCount
	DurationMS int64     `dynamodbav:"duration_ms"`
	RequestID  string    `dynamodbav:"request_id,omitempty"`
	Error      string    `dynamodbav:"error,omitempty"`
	Class      string    `dynamodbav:"class,omitempty"` // retry class of the error
	Revision   string    `dynamodbav:"revision,omitempty"`
}

// Result is what a successful attempt produced.
type Result struct {
	Size        int64    `dynamodbav:"size"`        // source bytes
	OutputSize  int64    `dynamodbav:"output_size"` // bytes written (after gzip, say)
	SHA256      string   `dynamodbav:"sha256,omitempty"`
	CRC32C      string   `dynamodbav:"crc32c,omitempty"`
	ContentType string   `dynamodbav:"content_type,omitempty"`
	Outputs     []string `dynamodbav:"outputs"` // s3://bucket/key of each output
	Processors  []string `dynamodbav:"processors"`
	// Member, for an archive member, is where it is in its archive's revision: enough to
	// read it again (a worker restoring the newest revision's output reads it).
	Member *Member `dynamodbav:"member,omitempty"`
}

// Member locates an archive member in its archive.
type Member struct {
	Name           string `dynamodbav:"name"`
	Offset         int64  `dynamodbav:"offset"`
	CompressedSize int64  `dynamodbav:"csize"`
	Size           int64  `dynamodbav:"size"`
	Method         uint16 `dynamodbav:"method"`
	CRC32          uint32 `dynamodbav:"crc32"`
}

// Record is a file record as stored.
type Record struct {
	PK         string    `dynamodbav:"pk"`
	SK         string    `dynamodbav:"sk"`
	Bucket     string    `dynamodbav:"bucket"`
	Key        string    `dynamodbav:"key"`
	JobID      string    `dynamodbav:"job_id,omitempty"`
	Status     Status    `dynamodbav:"status"`
	Reason     string    `dynamodbav:"reason,omitempty"`
	Code       string    `dynamodbav:"code,omitempty"`       // a failure's code (pkg/failure)
	ETag       string    `dynamodbav:"etag,omitempty"`       // the revision's content
	VersionID  string    `dynamodbav:"version_id,omitempty"` // the revision's version, if known
	Sequencer  string    `dynamodbav:"seq,omitempty"`        // the S3 event's sequencer, normalized
	Attempts   int       `dynamodbav:"attempts"`             // every attempt, also those the history dropped
	History    []Attempt `dynamodbav:"history"`              // the last MaxHistory attempts
	UpdatedAt  time.Time `dynamodbav:"updated_at"`
	DurationMS int64     `dynamodbav:"duration_ms"`
	// PrevETag and PrevVersionID name the revision this one replaced, if any.
	PrevETag      string `dynamodbav:"prev_etag,omitempty"`
	PrevVersionID string `dynamodbav:"prev_version_id,omitempty"`
	// SupersededBy, in a superseded#<revision> record, names the newer revision.
	SupersededBy string `dynamodbav:"superseded_by,omitempty"`
	// Replays are the ids of the deliberate reprocessings written (`fileflow replay`).
	Replays []string `dynamodbav:"replays,stringset,omitempty"`
	Result
}

// Rev is the record's revision.
func (r Record) Rev() Revision {
	return Revision{VersionID: r.VersionID, ETag: r.ETag, Sequencer: r.Sequencer}
}

// MaxHistory bounds a record's attempt history: the last MaxHistory attempts are kept
// (Attempts counts them all), so a record never nears DynamoDB's 400 KB item limit.
const MaxHistory = 20

// Poison is a message that could not be decoded, kept so that nothing is lost silently.
type Poison struct {
	MessageID string
	Queue     string // the source queue ARN
	Body      string // truncated to MaxPoisonBody bytes
	Reason    string
	Receive   int
	At        time.Time
}

// MaxPoisonBody bounds the stored body of a poison message (DynamoDB items are <= 400 KB).
const MaxPoisonBody = 64 << 10

// API is the part of the DynamoDB client the store calls.
type API interface {
	UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	BatchGetItem(context.Context, *dynamodb.BatchGetItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	TransactWriteItems(context.Context, *dynamodb.TransactWriteItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
	TransactGetItems(context.Context, *dynamodb.TransactGetItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactGetItemsOutput, error)
}

// Store reads and writes the ledger table.
type Store struct {
	api   API
	table string
	ttl   time.Duration // 0: records never expire
}

// New returns a store for table. With ttl > 0, every record expires ttl after its last
// update (DynamoDB deletes expired items for free, usually within two days).
func New(api API, table string, ttl time.Duration) *Store {
	return &Store{api: api, table: table, ttl: ttl}
}

// Table is the store's table name.
func (s *Store) Table() string { return s.table }

func failedPartition(t time.Time) string { return "FAILED#" + t.UTC().Format("2006-01-02") }

// RecordPoison stores an undecodable message once (a redelivery finds it already there).
func (s *Store) RecordPoison(ctx context.Context, p Poison) error {
	body := p.Body
	if len(body) > MaxPoisonBody {
		body = body[:MaxPoisonBody]
	}
	item := map[string]types.AttributeValue{
		AttrPK:       &types.AttributeValueMemberS{Value: poisonPrefix + p.MessageID},
		AttrSK:       &types.AttributeValueMemberS{Value: poisonSK},
		"status":     &types.AttributeValueMemberS{Value: string(StatusFailed)},
		"reason":     &types.AttributeValueMemberS{Value: p.Reason},
		"queue":      &types.AttributeValueMemberS{Value: p.Queue},
		"body":       &types.AttributeValueMemberS{Value: body},
		"body_bytes": &types.AttributeValueMemberN{Value: fmt.Sprint(len(p.Body))},
		"receive":    &types.AttributeValueMemberN{Value: fmt.Sprint(p.Receive)},
		"updated_at": &types.AttributeValueMemberS{Value: p.At.UTC().Format(time.RFC3339Nano)},
		AttrGSI1PK:   &types.AttributeValueMemberS{Value: failedPartition(p.At)},
		AttrGSI1SK:   &types.AttributeValueMemberS{Value: p.At.UTC().Format(time.RFC3339Nano) + "#" + poisonPrefix + p.MessageID},
	}
	if s.ttl > 0 {
		item[AttrTTL] = &types.AttributeValueMemberN{Value: fmt.Sprint(p.At.Add(s.ttl).Unix())}
	}
	_, err := s.api.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           aws.String(s.table),
		Item:                item,
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return nil // recorded by an earlier delivery
	}
	if err != nil {
		return fmt.Errorf("ledger: record poison message %s: %w", p.MessageID, err)
	}
	return nil
}

// Lookup returns the state of each key that has a record (absent keys have none), with
// strongly consistent BatchGetItem reads of up to 100 keys each.
func (s *Store) Lookup(ctx context.Context, keys []Key) (map[Key]State, error) {
	out := make(map[Key]State, len(keys))
	byPK := make(map[[2]string]Key, len(keys))
	for start := 0; start < len(keys); start += 100 {
		chunk := keys[start:min(start+100, len(keys))]
		var reqKeys []map[string]types.AttributeValue
		for _, k := range chunk {
			id := [2]string{k.pk(), k.sk()}
			if _, dup := byPK[id]; dup {
				continue
			}
			byPK[id] = k
			reqKeys = append(reqKeys, map[string]types.AttributeValue{
				AttrPK: &types.AttributeValueMemberS{Value: id[0]},
				AttrSK: &types.AttributeValueMemberS{Value: id[1]},
			})
		}
		if len(reqKeys) == 0 {
			continue
		}
		req := map[string]types.KeysAndAttributes{s.table: {
			Keys:                     reqKeys,
			ConsistentRead:           aws.Bool(true),
			ProjectionExpression:     aws.String("pk, sk, #status, etag, version_id, seq, attempts"),
			ExpressionAttributeNames: map[string]string{"#status": "status"},
		}}
		for attempt := 0; len(req) > 0 && len(req[s.table].Keys) > 0; attempt++ {
			if attempt > 0 {
				if err := sleep(ctx, time.Duration(attempt*attempt)*20*time.Millisecond); err != nil {
					return nil, fmt.Errorf("ledger: lookup: %w", err)
				}
			}
			if attempt > 8 {
				return nil, errors.New("ledger: lookup: unprocessed keys after 8 retries")
			}
			resp, err := s.api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: req})
			if err != nil {
				return nil, fmt.Errorf("ledger: lookup: %w", err)
			}
			for _, item := range resp.Responses[s.table] {
				var r Record
				if err := attributevalue.UnmarshalMap(item, &r); err != nil {
					return nil, fmt.Errorf("ledger: lookup: %w", err)
				}
				if k, ok := byPK[[2]string{r.PK, r.SK}]; ok {
					out[k] = State{Status: r.Status, Rev: r.Rev(), Attempts: r.Attempts}
				}
			}
			req = resp.UnprocessedKeys
		}
	}
	return out, nil
}

// Get returns one file record, or ok=false if there is none.
func (s *Store) Get(ctx context.Context, k Key) (rec Record, ok bool, err error) {
	resp, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		ConsistentRead: aws.Bool(true),
		Key: map[string]types.AttributeValue{
			AttrPK: &types.AttributeValueMemberS{Value: k.pk()},
			AttrSK: &types.AttributeValueMemberS{Value: k.sk()},
		},
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("ledger: get %s/%s: %w", k.Bucket, k.Key, err)
	}
	if resp.Item == nil {
		return Record{}, false, nil
	}
	if err := attributevalue.UnmarshalMap(resp.Item, &rec); err != nil {
		return Record{}, false, fmt.Errorf("ledger: get %s/%s: %w", k.Bucket, k.Key, err)
	}
	return rec, true, nil
}

// GetPoison returns the poison record of a message, or ok=false.
func (s *Store) GetPoison(ctx context.Context, messageID string) (reason, body string, ok bool, err error) {
	resp, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		ConsistentRead: aws.Bool(true),
		Key: map[string]types.AttributeValue{
			AttrPK: &types.AttributeValueMemberS{Value: poisonPrefix + messageID},
			AttrSK: &types.AttributeValueMemberS{Value: poisonSK},
		},
	})
	if err != nil {
		return "", "", false, fmt.Errorf("ledger: get poison %s: %w", messageID, err)
	}
	if resp.Item == nil {
		return "", "", false, nil
	}
	var r struct {
		Reason string `dynamodbav:"reason"`
		Body   string `dynamodbav:"body"`
	}
	if err := attributevalue.UnmarshalMap(resp.Item, &r); err != nil {
		return "", "", false, fmt.Errorf("ledger: get poison %s: %w", messageID, err)
	}
	return r.Reason, r.Body, true, nil
}

// Failure is one entry of [Store.Failures].
type Failure struct {
	PK     string `dynamodbav:"pk"`
	SK     string `dynamodbav:"sk"`
	Status Status `dynamodbav:"status"`
	Reason string `dynamodbav:"reason"`
}

// Failures lists the failed, dead-lettered and poison records of one UTC day, oldest
// first, from the sparse failure index.
func (s *Store) Failures(ctx context.Context, day time.Time) ([]Failure, error) {
	var out []Failure
	err := s.index(ctx, failedPartition(day), func(items []map[string]types.AttributeValue) error {
		var fs []Failure
		if err := attributevalue.UnmarshalListOfMaps(items, &fs); err != nil {
			return err
		}
		out = append(out, fs...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: failures: %w", err)
	}
	return out, nil
}

// index reads one partition of the sparse index (gsi1), a page at a time, oldest first.
func (s *Store) index(ctx context.Context, partition string, page func([]map[string]types.AttributeValue) error) error {
	p := dynamodb.NewQueryPaginator(s.api, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(IndexFailed),
		KeyConditionExpression:    aws.String("#g = :g"),
		ExpressionAttributeNames:  map[string]string{"#g": AttrGSI1PK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":g": &types.AttributeValueMemberS{Value: partition}},
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		if err := page(out.Items); err != nil {
			return err
		}
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
