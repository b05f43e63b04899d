// Package dlq is what an operator does with fileflow's dead-letter queues: look at the
// messages without consuming them ([Reader.Peek]), decode each into the files or the
// fan-out task it carries with their last recorded error ([Reader.Describe]), move them
// back to their source queue ([Redriver]), and purge them.
//
// # Peeking
//
// SQS has no read-only look at a queue: a peek receives messages with a short
// visibility timeout and then sets their visibility back to zero, so nothing is
// consumed. Each peek adds one to a message's ApproximateReceiveCount; a DLQ has no
// redrive policy of its own, so that count has no effect.
//
// # Redrive
//
// See [Redriver]: receive → claim in the ledger → send to the source queue → mark sent
// → delete, rate limited, resumable after an interruption without losing or doubling
// a message.
package dlq

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// SQS is the part of the SQS client the package calls.
type SQS interface {
	ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error)
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	DeleteMessage(context.Context, *sqs.DeleteMessageInput, ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	PurgeQueue(context.Context, *sqs.PurgeQueueInput, ...func(*sqs.Options)) (*sqs.PurgeQueueOutput, error)
	StartMessageMoveTask(context.Context, *sqs.StartMessageMoveTaskInput, ...func(*sqs.Options)) (*sqs.StartMessageMoveTaskOutput, error)
	ListMessageMoveTasks(context.Context, *sqs.ListMessageMoveTasksInput, ...func(*sqs.Options)) (*sqs.ListMessageMoveTasksOutput, error)
	CancelMessageMoveTask(context.Context, *sqs.CancelMessageMoveTaskInput, ...func(*sqs.Options)) (*sqs.CancelMessageMoveTaskOutput, error)
}

// Ledger is the part of the ledger store the package calls.
type Ledger interface {
	Records(ctx context.Context, keys []ledger.Key) (map[ledger.Key]ledger.Record, error)
	GetJob(ctx context.Context, id string) (ledger.Job, bool, error)
	TaskState(ctx context.Context, jobID, taskID, parent, parentRun string) (ledger.Outcome, error)
	ClaimRedrive(ctx context.Context, m ledger.RedriveMark) (ledger.RedriveMark, bool, error)
	GetRedrive(ctx context.Context, messageID string) (ledger.RedriveMark, bool, error)
	TakeOverRedrive(ctx context.Context, messageID, from, to string, now time.Time) error
	MarkRedriven(ctx context.Context, messageID, run, newID string, now time.Time) error
}

var _ Ledger = (*ledger.Store)(nil)

// The queues a DLQ belongs to.
const (
	Tasks = "tasks" // the worker's: S3 events and task messages of files
	Jobs  = "jobs"  // the dispatcher's: fan-out tasks of jobs
)

// Queue is a work queue and its dead-letter queue.
type Queue struct {
	Name   string // Tasks or Jobs
	URL    string // the source queue: where a redrive sends
	DLQURL string
}

// The shapes of a dead-letter message's body.
const (
	ShapeS3Event     = "s3-event"    // an S3 event notification (in any wrapping)
	ShapeTestEvent   = "test-event"  // S3's s3:TestEvent: no file
	ShapeTask        = "task"        // a fileflow task message of files
	ShapeFanout      = "fanout"      // a job's fan-out task (jobs queue)
	ShapeUndecodable = "undecodable" // neither: the worker would record it as poison
)

// Message is a dead-letter message, decoded.
type Message struct {
	ID       string    `json:"message_id"`
	SentAt   time.Time `json:"sent_at"`  // first sent to the source queue
	Receives int       `json:"receives"` // ApproximateReceiveCount (peeks count too)
	Shape    string    `json:"shape"`
	JobID    string    `json:"job_id,omitempty"`
	TaskID   string    `json:"task_id,omitempty"`
	Step     string    `json:"step,omitempty"` // a fan-out task's
	Files    []File    `json:"files,omitempty"`
	// BadEntries is how many entries of a task message are not files.
	BadEntries int `json:"bad_entries,omitempty"`
	// JobStatus and Counted, for a fan-out task: its job's status, and whether the task
	// was counted already (a copy of it finished).
	JobStatus string `json:"job_status,omitempty"`
	Counted   bool   `json:"counted,omitempty"`
	// DecodeError says why the body is undecodable.
	DecodeError string `json:"decode_error,omitempty"`
	// Redrive is the message's redrive marker, if a redrive got to it before: "sent"
	// means a copy is in the source queue already (a redrive stopped before deleting).
	Redrive *ledger.RedriveMark `json:"redrive,omitempty"`
	Body    string              `json:"body,omitempty"` // set by Describe with bodies

	raw sqstypes.Message
}

// File is one file a message carries, with its ledger record's state.
type File struct {
	URI       string `json:"file"` // s3://bucket/key (an archive member's, a part's range)
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	VersionID string `json:"version_id,omitempty"`
	ETag      string `json:"etag,omitempty"`
	// The ledger record: none (never processed) if Status is "".
	Status      string     `json:"status,omitempty"`
	Code        string     `json:"code,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	Attempts    int        `json:"attempts,omitempty"`
	LastAttempt *time.Time `json:"last_attempt,omitempty"`
	// OtherRevision: the record is of another revision of the key than the message's.
	OtherRevision string `json:"other_revision,omitempty"`

	primary ledger.Key // the file's own record: how a redrive marker names the file
	record  ledger.Key // the record read (its own, or the one kept beside it)
}

// Final says whether the file has an outcome that processing it again would not change
// (without a replay): SUCCEEDED, or FAILED for good.
func (f File) Final() bool {
	return f.Status == string(ledger.StatusSucceeded) || f.Status == string(ledger.StatusFailed)
}

// LastError is the message's most telling recorded error: the first of its files that
// is not SUCCEEDED, as "STATUS Code: reason"; "" if none is known.
func (m Message) LastError() string {
	switch {
	case m.DecodeError != "":
		return m.DecodeError
	case m.Shape == ShapeFanout && m.JobStatus != "":
		if m.Counted {
			return "job " + m.JobStatus + ", task counted already"
		}
		return "job " + m.JobStatus
	}
	for _, f := range m.Files {
		if f.Status != "" && f.Status != string(ledger.StatusSucceeded) {
			s := f.Status
			if f.Code != "" {
				s += " " + f.Code
			}
			return s + ": " + f.Reason
		}
	}
	for _, f := range m.Files {
		if f.Status == string(ledger.StatusSucceeded) {
			return "SUCCEEDED since (nothing left to do)"
		}
	}
	if len(m.Files) > 0 {
		return "no ledger record"
	}
	return ""
}

// Filter selects messages to redrive or list.
type Filter struct {
	JobID  string // task messages and fan-out tasks of this job
	Reason string // messages with a file (or job) whose recorded reason or code contains this, any case
}

// Empty says whether the filter selects everything.
func (f Filter) Empty() bool { return f.JobID == "" && f.Reason == "" }

// Match says whether m passes the filter.
func (f Filter) Match(m Message) bool {
	if f.JobID != "" && m.JobID != f.JobID {
		return false
	}
	if f.Reason == "" {
		return true
	}
	want := strings.ToLower(f.Reason)
	has := func(s string) bool { return s != "" && strings.Contains(strings.ToLower(s), want) }
	if has(m.DecodeError) || (m.Shape == ShapeFanout && has(m.LastError())) {
		return true
	}
	for _, fl := range m.Files {
		if has(fl.Reason) || has(fl.Code) {
			return true
		}
	}
	return false
}

// Reader peeks at and decodes dead-letter messages.
type Reader struct {
	SQS    SQS
	Ledger Ledger
}

// peekVisibility hides peeked messages while a peek reads on; they are made visible
// again as soon as it ends.
const peekVisibility = 30

// Peek returns up to limit messages of the queue's DLQ, decoded, without consuming
// them: every message it received is visible again when it returns. With bodies, each
// message keeps its body.
func (r *Reader) Peek(ctx context.Context, q Queue, limit int, bodies bool) ([]Message, error) {
	var raw []sqstypes.Message
	seen := map[string]bool{}
	defer func() { r.release(context.WithoutCancel(ctx), q.DLQURL, raw) }()
	for limit <= 0 || len(raw) < limit {
		out, err := r.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(q.DLQURL), MaxNumberOfMessages: 10, VisibilityTimeout: peekVisibility, WaitTimeSeconds: 1,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
			MessageAttributeNames:       []string{"All"},
		})
		if err != nil {
			return nil, fmt.Errorf("dlq: peek %s: %w", q.DLQURL, err)
		}
		fresh := 0
		for _, m := range out.Messages {
			if id := aws.ToString(m.MessageId); !seen[id] {
				seen[id], fresh = true, fresh+1
				raw = append(raw, m)
			}
		}
		if fresh == 0 {
			break
		}
	}
	if limit > 0 && len(raw) > limit {
		// Keep the extra ones in raw (released with the rest), not in the answer.
		return r.describeAll(ctx, q, raw[:limit], bodies)
	}
	return r.describeAll(ctx, q, raw, bodies)
}

func (r *Reader) describeAll(ctx context.Context, q Queue, raw []sqstypes.Message, bodies bool) ([]Message, error) {
	msgs, err := r.Describe(ctx, q, raw)
	if err != nil {
		return nil, err
	}
	for i := range msgs {
		if bodies {
			msgs[i].Body = aws.ToString(raw[i].Body)
		}
		mark, ok, err := r.Ledger.GetRedrive(ctx, msgs[i].ID)
		if err != nil {
			return nil, fmt.Errorf("dlq: %w", err)
		}
		if ok {
			msgs[i].Redrive = &mark
		}
	}
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].SentAt.Before(msgs[j].SentAt) })
	return msgs, nil
}

// release makes messages visible again at once.
func (r *Reader) release(ctx context.Context, url string, msgs []sqstypes.Message) {
	for start := 0; start < len(msgs); start += 10 {
		var entries []sqstypes.ChangeMessageVisibilityBatchRequestEntry
		for i, m := range msgs[start:min(start+10, len(msgs))] {
			entries = append(entries, sqstypes.ChangeMessageVisibilityBatchRequestEntry{
				Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0})
		}
		_, _ = r.SQS.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(url), Entries: entries})
	}
}

// Describe decodes messages of q's DLQ and reads what the ledger knows of their files
// (one batch read) or, for fan-out tasks, of their job and task.
func (r *Reader) Describe(ctx context.Context, q Queue, raw []sqstypes.Message) ([]Message, error) {
	msgs := make([]Message, len(raw))
	var keys []ledger.Key
	for i, rm := range raw {
		m := Message{ID: aws.ToString(rm.MessageId), raw: rm}
		if ms, err := strconv.ParseInt(rm.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
			m.SentAt = time.UnixMilli(ms).UTC()
		}
		m.Receives, _ = strconv.Atoi(rm.Attributes[string(sqstypes.MessageSystemAttributeNameApproximateReceiveCount)])
		body := []byte(aws.ToString(rm.Body))
		if q.Name == Jobs {
			p, err := job.DecodeFanoutTask(body)
			if err != nil {
				m.Shape, m.DecodeError = ShapeUndecodable, err.Error()
			} else {
				m.Shape, m.JobID, m.TaskID, m.Step = ShapeFanout, p.JobID, p.TaskID, p.Step
				if err := r.fanoutState(ctx, &m, p); err != nil {
					return nil, err
				}
			}
			msgs[i] = m
			continue
		}
		d, err := task.Decode(body)
		switch {
		case err != nil:
			m.Shape, m.DecodeError = ShapeUndecodable, err.Error()
		case d.Kind == task.KindTestEvent:
			m.Shape = ShapeTestEvent
		case d.Kind == task.KindS3Event:
			m.Shape = ShapeS3Event
		default:
			m.Shape, m.JobID, m.TaskID, m.BadEntries = ShapeTask, d.JobID, d.TaskID, len(d.Bad)
		}
		for _, f := range d.Files {
			k, _ := job.FileKey(f, d.JobID)
			fl := File{URI: f.String(), Bucket: f.Bucket, Key: f.Name(), VersionID: f.VersionID, ETag: strings.Trim(f.ETag, `"`), primary: k, record: k}
			keys = append(keys, k, beside(k, d.JobID))
			m.Files = append(m.Files, fl)
		}
		msgs[i] = m
	}
	if len(keys) == 0 {
		return msgs, nil
	}
	recs, err := r.Ledger.Records(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	for i := range msgs {
		for j := range msgs[i].Files {
			fill(&msgs[i].Files[j], recs, msgs[i].JobID)
		}
	}
	return msgs, nil
}

// beside is where the worker keeps a file's failure when its revision was never read:
// the job's own record, or an "unread" one.
func beside(k ledger.Key, jobID string) ledger.Key {
	b := ledger.Key{Bucket: k.Bucket, Key: k.Key, Scope: ledger.ScopeUnread}
	if jobID != "" {
		b.Scope = ledger.JobScope(jobID)
	}
	return b
}

// fill sets a file's ledger state: its own record's, else the one kept beside it.
func fill(f *File, recs map[ledger.Key]ledger.Record, jobID string) {
	rec, ok := recs[f.record]
	if !ok && f.record.Ordered() {
		if rec, ok = recs[beside(f.record, jobID)]; ok {
			f.record = beside(f.record, jobID)
		}
	}
	if !ok {
		return
	}
	f.Status, f.Reason, f.Attempts, f.Code = string(rec.Status), rec.Reason, rec.Attempts, rec.Code
	if f.Code == "" && rec.Status == ledger.StatusDeadLettered {
		f.Code = failure.RetriesExhausted // a record from before codes were kept
	}
	if last := rec.Last(); !last.At.IsZero() {
		at := last.At
		f.LastAttempt = &at
	}
	msgRev := ledger.Revision{VersionID: f.VersionID, ETag: f.ETag}
	if (msgRev.ETag != "" || msgRev.VersionID != "") && !msgRev.Same(rec.Rev()) && f.record.Ordered() {
		f.OtherRevision = rec.Rev().String()
	}
}

// fanoutState reads a fan-out task's job and whether the task was counted.
func (r *Reader) fanoutState(ctx context.Context, m *Message, p job.FanoutTask) error {
	if p.JobID == "" {
		return nil // the reconcile message
	}
	j, ok, err := r.Ledger.GetJob(ctx, p.JobID)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	if !ok {
		m.JobStatus = "UNKNOWN"
		return nil
	}
	m.JobStatus = string(j.Status)
	if p.TaskID != "" {
		o, err := r.Ledger.TaskState(ctx, p.JobID, p.TaskID, "", "")
		if err != nil {
			return fmt.Errorf("dlq: %w", err)
		}
		m.Counted = o == ledger.Duplicate
	}
	return nil
}

// Depth is how many messages the queue holds: visible, and in flight (received, not
// yet deleted, by a consumer or a peek).
func Depth(ctx context.Context, q SQS, url string) (visible, inFlight int, err error) {
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url), AttributeNames: []sqstypes.QueueAttributeName{
		sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		return 0, 0, fmt.Errorf("dlq: depth of %s: %w", url, err)
	}
	visible, _ = strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	inFlight, _ = strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return visible, inFlight, nil
}

// ErrNotConfirmed: a purge was not confirmed.
var ErrNotConfirmed = errors.New("dlq: purge not confirmed")

// Purge deletes every message of the queue's DLQ (SQS's PurgeQueue: irreversible; the
// files' ledger records stay as they are, DEAD_LETTERED).
func Purge(ctx context.Context, q SQS, url string) error {
	if _, err := q.PurgeQueue(ctx, &sqs.PurgeQueueInput{QueueUrl: aws.String(url)}); err != nil {
		return fmt.Errorf("dlq: purge %s: %w", url, err)
	}
	return nil
}
