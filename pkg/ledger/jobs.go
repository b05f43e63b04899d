package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Job records, task markers and sharded counters.
//
//	pk           sk        what
//	J#<job id>   job       the job: status, spec, timestamps, final counts
//	J#<job id>   c#<n>     counter shard n: tasks expected and done; files listed,
//	                       succeeded, failed; bytes
//	J#<job id>   t#<task>  marker: task <task> was counted (its children with it)
//
// Termination detection: every task (a planning task, a task message of files) is
// counted in "expected" before it can be counted "done": a task adds its children to
// "expected" in the same transaction that counts itself "done", and a child's
// transaction requires its parent's marker. So at every instant sum(expected) -
// sum(done) is the number of tasks still outstanding, and it reaches zero only when all
// work is finished — never while fan-out is still enqueuing. The marker makes a
// duplicate delivery count nothing. The sums are read with one TransactGetItems (a
// serializable snapshot across shards), and the job is finished with a conditional
// write, so it finishes exactly once.
//
// Writers spread over the shards (each settlement picks one at random), so no single
// item caps a job's rate: DynamoDB allows ~1,000 writes/s per item, and a task message
// carries up to 1,000 files.

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

// Counts are a job's summed counters.
type Counts struct {
	Expected  int64 `json:"tasks_expected"` // tasks
	Done      int64 `json:"tasks_done"`
	Listed    int64 `json:"files_listed"` // files
	Succeeded int64 `json:"files_succeeded"`
	Failed    int64 `json:"files_failed"`
	Bytes     int64 `json:"bytes"` // source bytes of the succeeded files
}

// Outstanding is the number of tasks not yet finished.
func (c Counts) Outstanding() int64 { return c.Expected - c.Done }

// Job is a job record.
type Job struct {
	ID         string
	Status     JobStatus
	Spec       string // the job spec, JSON
	Shards     int
	CreatedAt  time.Time
	FinishedAt time.Time // zero while running
	Reason     string    // why it failed or was cancelled
	Final      Counts    // the counts when it finished
	Notified   bool      // the report is written and the notification sent
	Report     string    // s3:// URI of the report's manifest.json
}

// Settlement counts one finished task: the children it enqueued and the files it
// accounted for, on one shard.
type Settlement struct {
	JobID    string
	TaskID   string
	Parent   string // "" for a job's root task
	Shards   int    // the job's shard count (one is picked at random)
	Children int64  // tasks it enqueued
	Listed   int64  // files it found (planning) or carried (a task message: 0)
	// The files it finished.
	Succeeded, Failed, Bytes int64
}

// Outcome is what happened to one settlement.
type Outcome int

// The outcomes of [Store.Settle].
const (
	Counted       Outcome = iota + 1 // counted now
	Duplicate                        // counted before: a duplicate delivery
	ParentPending                    // the parent is not counted yet: try again later
	UnknownJob                       // no such job (never created, or expired)
)

func (o Outcome) String() string {
	return map[Outcome]string{Counted: "counted", Duplicate: "duplicate", ParentPending: "parent pending", UnknownJob: "unknown job"}[o]
}

func jobPK(id string) string { return "J#" + id }

func jobKey(id, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrPK: &types.AttributeValueMemberS{Value: jobPK(id)},
		AttrSK: &types.AttributeValueMemberS{Value: sk},
	}
}

func shardSK(n int) string { return "c#" + strconv.Itoa(n) }

func n64(v int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}

func str(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

func (s *Store) expires(now time.Time) types.AttributeValue {
	return n64(now.Add(s.ttl).Unix())
}

// CreateJob writes the job record and its shards, with the root task counted as
// expected. It fails with an error wrapping [ErrJobExists] if the job exists.
func (s *Store) CreateJob(ctx context.Context, id, spec string, shards int, now time.Time) error {
	if shards < 1 || shards > MaxJobShards {
		return fmt.Errorf("ledger: job %s: shards = %d: must be in 1..%d", id, shards, MaxJobShards)
	}
	job := jobKey(id, "job")
	job["status"] = str(string(JobRunning))
	job["spec"] = str(spec)
	job["shards"] = n64(int64(shards))
	job["created_at"] = str(now.UTC().Format(time.RFC3339Nano))
	if s.ttl > 0 {
		job[AttrTTL] = s.expires(now)
	}
	items := []types.TransactWriteItem{{Put: &types.Put{
		TableName: aws.String(s.table), Item: job,
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	}}}
	for n := range shards {
		c := jobKey(id, shardSK(n))
		for _, a := range []string{"expected", "done", "listed", "succeeded", "failed", "bytes"} {
			c[a] = n64(0)
		}
		if n == 0 {
			c["expected"] = n64(1) // the root task
		}
		if s.ttl > 0 {
			c[AttrTTL] = s.expires(now)
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(s.table), Item: c}})
	}
	_, err := s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
	var tce *types.TransactionCanceledException
	if errors.As(err, &tce) && len(tce.CancellationReasons) > 0 && aws.ToString(tce.CancellationReasons[0].Code) == "ConditionalCheckFailed" {
		return fmt.Errorf("ledger: create job %s: %w", id, ErrJobExists)
	}
	if err != nil {
		return fmt.Errorf("ledger: create job %s: %w", id, err)
	}
	return nil
}

// ErrJobExists: a job with that id was created before.
var ErrJobExists = errors.New("job exists")

// Settle counts finished tasks in one transaction: per task a marker (so a duplicate
// counts nothing) and a check that its parent was counted (so a child is never counted
// before the parent that counts it as expected), and per job one shard update with the
// sums. Settlements that cannot be counted get their outcome and are left out; the rest
// are counted together. Conflicts with concurrent transactions are retried.
func (s *Store) Settle(ctx context.Context, now time.Time, all []Settlement) ([]Outcome, error) {
	out := make([]Outcome, len(all))
	for attempt := 0; ; attempt++ {
		var live []int
		seen := map[string]bool{}
		for i, st := range all {
			if out[i] != 0 {
				continue
			}
			if k := st.JobID + "\x00" + st.TaskID; seen[k] {
				out[i] = Duplicate // the same task twice in one batch
				continue
			} else {
				seen[k] = true
			}
			live = append(live, i)
		}
		if len(live) == 0 {
			return out, nil
		}
		items, owners := s.settleItems(now, all, live, seen)
		_, err := s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		if err == nil {
			for _, i := range live {
				out[i] = Counted
			}
			return out, nil
		}
		var tce *types.TransactionCanceledException
		if !errors.As(err, &tce) {
			return out, fmt.Errorf("ledger: settle %d tasks: %w", len(live), err)
		}
		decided, conflict := false, false
		for n, r := range tce.CancellationReasons {
			switch aws.ToString(r.Code) {
			case "ConditionalCheckFailed":
				for _, i := range owners[n].settlements {
					if out[i] == 0 {
						out[i], decided = owners[n].onFail, true
					}
				}
			case "TransactionConflict":
				conflict = true
			}
		}
		switch {
		case decided:
			// retry at once without the settlements that cannot be counted
		case conflict && attempt < 8:
			if err := sleep(ctx, time.Duration(1+rand.Int64N(int64(10*time.Millisecond<<attempt)))); err != nil {
				return out, err
			}
		default:
			return out, fmt.Errorf("ledger: settle %d tasks (attempt %d): %w", len(live), attempt+1, err)
		}
	}
}

// owner says which settlements a transaction item belongs to, and their outcome if its
// condition fails.
type owner struct {
	settlements []int
	onFail      Outcome
}

func (s *Store) settleItems(now time.Time, all []Settlement, live []int, inTx map[string]bool) ([]types.TransactWriteItem, []owner) {
	var items []types.TransactWriteItem
	var owners []owner
	table := aws.String(s.table)
	type sum struct {
		idx                                              []int
		shards                                           int
		children, done, listed, succeeded, failed, bytes int64
	}
	sums := map[string]*sum{}
	var jobs []string
	parents := map[string][]int{}
	var parentOrder []string
	for _, i := range live {
		st := all[i]
		m := jobKey(st.JobID, "t#"+st.TaskID)
		m["at"] = str(now.UTC().Format(time.RFC3339Nano))
		if s.ttl > 0 {
			m[AttrTTL] = s.expires(now)
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{
			TableName: table, Item: m, ConditionExpression: aws.String("attribute_not_exists(pk)"),
		}})
		owners = append(owners, owner{[]int{i}, Duplicate})
		if st.Parent != "" && !inTx[st.JobID+"\x00"+st.Parent] {
			k := st.JobID + "\x00" + st.Parent
			if _, ok := parents[k]; !ok {
				parentOrder = append(parentOrder, k)
			}
			parents[k] = append(parents[k], i)
		}
		a, ok := sums[st.JobID]
		if !ok {
			a = &sum{}
			sums[st.JobID] = a
			jobs = append(jobs, st.JobID)
		}
		a.idx = append(a.idx, i)
		a.shards = max(a.shards, st.Shards, 1)
		a.children += st.Children
		a.done++
		a.listed += st.Listed
		a.succeeded += st.Succeeded
		a.failed += st.Failed
		a.bytes += st.Bytes
	}
	for _, k := range parentOrder {
		job, parent, _ := cutNUL(k)
		items = append(items, types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{
			TableName: table, Key: jobKey(job, "t#"+parent), ConditionExpression: aws.String("attribute_exists(pk)"),
		}})
		owners = append(owners, owner{parents[k], ParentPending})
	}
	for _, job := range jobs {
		a := sums[job]
		items = append(items, types.TransactWriteItem{Update: &types.Update{
			TableName:           table,
			Key:                 jobKey(job, shardSK(rand.IntN(a.shards))),
			UpdateExpression:    aws.String("ADD expected :e, done :d, listed :l, succeeded :s, failed :f, bytes :b"),
			ConditionExpression: aws.String("attribute_exists(pk)"),
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":e": n64(a.children), ":d": n64(a.done), ":l": n64(a.listed),
				":s": n64(a.succeeded), ":f": n64(a.failed), ":b": n64(a.bytes),
			},
		}})
		owners = append(owners, owner{a.idx, UnknownJob})
	}
	return items, owners
}

func cutNUL(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// JobCounts reads every shard in one serializable snapshot.
func (s *Store) JobCounts(ctx context.Context, id string, shards int) (Counts, error) {
	var gets []types.TransactGetItem
	for n := range shards {
		gets = append(gets, types.TransactGetItem{Get: &types.Get{TableName: aws.String(s.table), Key: jobKey(id, shardSK(n))}})
	}
	out, err := s.api.TransactGetItems(ctx, &dynamodb.TransactGetItemsInput{TransactItems: gets})
	if err != nil {
		return Counts{}, fmt.Errorf("ledger: job %s counts: %w", id, err)
	}
	var c Counts
	for _, r := range out.Responses {
		c.Expected += num(r.Item["expected"])
		c.Done += num(r.Item["done"])
		c.Listed += num(r.Item["listed"])
		c.Succeeded += num(r.Item["succeeded"])
		c.Failed += num(r.Item["failed"])
		c.Bytes += num(r.Item["bytes"])
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

func text(v types.AttributeValue) string {
	s, _ := v.(*types.AttributeValueMemberS)
	if s == nil {
		return ""
	}
	return s.Value
}

// GetJob reads a job record (strongly consistent).
func (s *Store) GetJob(ctx context.Context, id string) (Job, bool, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: jobKey(id, "job"), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return Job{}, false, fmt.Errorf("ledger: get job %s: %w", id, err)
	}
	if out.Item == nil {
		return Job{}, false, nil
	}
	it := out.Item
	j := Job{
		ID: id, Status: JobStatus(text(it["status"])), Spec: text(it["spec"]), Shards: int(num(it["shards"])),
		Reason: text(it["reason"]), Report: text(it["report"]), Notified: text(it["notified_at"]) != "",
		Final: Counts{
			Expected: num(it["tasks_expected"]), Done: num(it["tasks_done"]), Listed: num(it["files_listed"]),
			Succeeded: num(it["files_succeeded"]), Failed: num(it["files_failed"]), Bytes: num(it["bytes"]),
		},
	}
	j.CreatedAt, _ = time.Parse(time.RFC3339Nano, text(it["created_at"]))
	j.FinishedAt, _ = time.Parse(time.RFC3339Nano, text(it["finished_at"]))
	return j, true, nil
}

// FinishJob moves a running job to status (COMPLETE, FAILED or CANCELLED) with its final
// counts: exactly one caller gets finished = true; for the others the job was already
// finished (or does not exist).
func (s *Store) FinishJob(ctx context.Context, id string, status JobStatus, reason string, c Counts, now time.Time) (finished bool, err error) {
	if status == JobRunning {
		return false, fmt.Errorf("ledger: finish job %s: %s is not a final status", id, status)
	}
	_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table),
		Key:       jobKey(id, "job"),
		UpdateExpression: aws.String("SET #status = :status, finished_at = :now, reason = :reason, " +
			"tasks_expected = :e, tasks_done = :d, files_listed = :l, files_succeeded = :s, files_failed = :f, bytes = :b"),
		ConditionExpression:      aws.String("#status = :running"),
		ExpressionAttributeNames: map[string]string{"#status": "status"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":status": str(string(status)), ":running": str(string(JobRunning)),
			":now": str(now.UTC().Format(time.RFC3339Nano)), ":reason": str(reason),
			":e": n64(c.Expected), ":d": n64(c.Done), ":l": n64(c.Listed),
			":s": n64(c.Succeeded), ":f": n64(c.Failed), ":b": n64(c.Bytes),
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ledger: finish job %s: %w", id, err)
	}
	return true, nil
}

// TryComplete completes the job if no task is outstanding: exactly one caller gets
// completed = true; the others (and any caller while work remains) get false.
func (s *Store) TryComplete(ctx context.Context, id string, shards int, now time.Time) (completed bool, c Counts, err error) {
	c, err = s.JobCounts(ctx, id, shards)
	if err != nil || c.Outstanding() != 0 {
		return false, c, err
	}
	completed, err = s.FinishJob(ctx, id, JobComplete, "", c, now)
	return completed, c, err
}

// MarkNotified records that the job's report was written (at report) and its
// notification sent.
func (s *Store) MarkNotified(ctx context.Context, id, report string, now time.Time) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       jobKey(id, "job"),
		UpdateExpression:          aws.String("SET notified_at = :now, report = :report"),
		ConditionExpression:       aws.String("attribute_exists(pk)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":now": str(now.UTC().Format(time.RFC3339Nano)), ":report": str(report)},
	})
	if err != nil {
		return fmt.Errorf("ledger: job %s notified: %w", id, err)
	}
	return nil
}
