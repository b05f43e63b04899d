package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
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
	// FinalizeRequested is when a finalize task was last sent (zero: never).
	FinalizeRequested time.Time
}

// Settlement counts one finished task: the children it enqueued and the files it
// accounted for, on one shard.
type Settlement struct {
	JobID  string
	TaskID string
	Parent string // "" for a job's root task
	Shards int    // the job's shard count (one is picked at random)
	// Index is the task's place among its parent's children of its kind (the task id's
	// first letter: "m" task messages, "l" planning tasks). The parent's marker records
	// how many of each it sent when it was counted, so a child that a re-run of the
	// parent sent beyond those (the listing changed between runs) is an orphan, never
	// counted: otherwise it would count done without ever being expected.
	Index int
	// Messages and Plans are the children it enqueued, by kind.
	Messages, Plans int64
	Children        int64 // other children (tests; counted in expected, not indexed)
	Listed          int64 // files it found (planning) or carried (a task message: 0)
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
	Orphan                           // the parent was counted without this child: never counted
)

func (o Outcome) String() string {
	return map[Outcome]string{Counted: "counted", Duplicate: "duplicate", ParentPending: "parent pending", UnknownJob: "unknown job", Orphan: "orphan"}[o]
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
	// The same task twice in one batch: the copy shares the first one's fate (a
	// duplicate of a counted task; otherwise the same outcome).
	first := map[string]int{}
	copyOf := map[int]int{}
	for i, st := range all {
		k := st.JobID + "\x00" + st.TaskID
		if j, ok := first[k]; ok {
			copyOf[i] = j
			out[i] = -1 // decided at the end
			continue
		}
		first[k] = i
	}
	defer func() {
		for i, j := range copyOf {
			switch out[j] {
			case Counted, Duplicate:
				out[i] = Duplicate
			default:
				out[i] = out[j]
			}
		}
	}()
	for round := 0; ; round++ {
		var undecided []int
		for i, o := range out {
			if o == 0 {
				undecided = append(undecided, i)
			}
		}
		if len(undecided) == 0 {
			return out, nil
		}
		// A transaction holds at most 100 items; a settlement takes up to two (marker,
		// parent check) and each job one more.
		const chunk = 30
		for start := 0; start < len(undecided); start += chunk {
			part := undecided[start:min(start+chunk, len(undecided))]
			batch := make([]Settlement, len(part))
			for n, i := range part {
				batch[n] = all[i]
			}
			o, err := s.settle(ctx, now, batch)
			if err != nil {
				return out, err
			}
			for n, i := range part {
				out[i] = o[n]
			}
		}
		if err := s.sortPending(ctx, all, out, round >= 2); err != nil {
			return out, err
		}
	}
}

// sortPending looks at the parent of each settlement whose parent check failed: not
// counted yet (ParentPending stays), counted without this child (Orphan), or counted
// with it — a sibling failed the shared check, or the parent was counted meanwhile —
// to be tried again (unless final).
func (s *Store) sortPending(ctx context.Context, all []Settlement, out []Outcome, final bool) error {
	for i, o := range out {
		if o != ParentPending {
			continue
		}
		st := all[i]
		res, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: jobKey(st.JobID, "t#"+st.Parent), ConsistentRead: aws.Bool(true)})
		if err != nil {
			return fmt.Errorf("ledger: parent of task %s: %w", st.TaskID, err)
		}
		switch attr := childCountAttr(st.TaskID); {
		case res.Item == nil:
		case attr != "" && res.Item[attr] != nil && num(res.Item[attr]) <= int64(st.Index):
			out[i] = Orphan
		case !final:
			out[i] = 0
		}
	}
	return nil
}

func (s *Store) settle(ctx context.Context, now time.Time, all []Settlement) ([]Outcome, error) {
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
		live = deferChildren(all, live, out)
		if len(live) == 0 {
			return out, nil
		}
		items, owners := s.settleItems(now, all, live)
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

// deferChildren leaves out of this transaction the tasks whose parent is in it: they
// wait (ParentPending) until the parent is counted, then are checked against its
// marker like any other child.
func deferChildren(all []Settlement, live []int, out []Outcome) []int {
	inTx := map[string]bool{}
	for _, i := range live {
		inTx[all[i].JobID+"\x00"+all[i].TaskID] = true
	}
	kept := live[:0:0]
	for _, i := range live {
		if st := all[i]; st.Parent != "" && inTx[st.JobID+"\x00"+st.Parent] {
			out[i] = ParentPending
			continue
		}
		kept = append(kept, i)
	}
	return kept
}

// owner says which settlements a transaction item belongs to, and their outcome if its
// condition fails.
type owner struct {
	settlements []int
	onFail      Outcome
}

// childCountAttr is the parent marker's attribute that counts children of the task's
// kind: "msgs" for task messages ("m…"), "plans" for planning tasks ("l…"); "" for
// other ids (not indexed).
func childCountAttr(taskID string) string {
	switch {
	case strings.HasPrefix(taskID, "m"):
		return "msgs"
	case strings.HasPrefix(taskID, "l"):
		return "plans"
	}
	return ""
}

func (s *Store) settleItems(now time.Time, all []Settlement, live []int) ([]types.TransactWriteItem, []owner) {
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
		m["msgs"], m["plans"] = n64(st.Messages), n64(st.Plans)
		if s.ttl > 0 {
			m[AttrTTL] = s.expires(now)
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{
			TableName: table, Item: m, ConditionExpression: aws.String("attribute_not_exists(pk)"),
		}})
		owners = append(owners, owner{[]int{i}, Duplicate})
		if st.Parent != "" {
			k := st.JobID + "\x00" + st.Parent + "\x00" + childCountAttr(st.TaskID) + "\x00" + strconv.Itoa(st.Index)
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
		a.children += st.Children + st.Messages + st.Plans
		a.done++
		a.listed += st.Listed
		a.succeeded += st.Succeeded
		a.failed += st.Failed
		a.bytes += st.Bytes
	}
	// One check per parent item: it exists, and covers the highest index of each kind.
	type need struct {
		job, parent string
		max         map[string]int
		idx         []int
	}
	needs := map[string]*need{}
	var order []string
	for _, k := range parentOrder {
		f := strings.Split(k, "\x00")
		item := f[0] + "\x00" + f[1]
		n, ok := needs[item]
		if !ok {
			n = &need{job: f[0], parent: f[1], max: map[string]int{}}
			needs[item] = n
			order = append(order, item)
		}
		if f[2] != "" {
			idx, _ := strconv.Atoi(f[3])
			if cur, ok := n.max[f[2]]; !ok || idx > cur {
				n.max[f[2]] = idx
			}
		}
		n.idx = append(n.idx, parents[k]...)
	}
	for _, item := range order {
		n := needs[item]
		cc := &types.ConditionCheck{TableName: table, Key: jobKey(n.job, "t#"+n.parent), ConditionExpression: aws.String("attribute_exists(pk)")}
		for _, attr := range []string{"msgs", "plans"} {
			if idx, ok := n.max[attr]; ok {
				// A marker from before child counts were recorded covers every index.
				cc.ConditionExpression = aws.String(*cc.ConditionExpression + " AND (attribute_not_exists(" + attr + ") OR " + attr + " > :" + attr + ")")
				if cc.ExpressionAttributeValues == nil {
					cc.ExpressionAttributeValues = map[string]types.AttributeValue{}
				}
				cc.ExpressionAttributeValues[":"+attr] = n64(int64(idx))
			}
		}
		items = append(items, types.TransactWriteItem{ConditionCheck: cc})
		owners = append(owners, owner{n.idx, ParentPending})
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

// JobCounts reads every shard in one serializable snapshot.
func (s *Store) JobCounts(ctx context.Context, id string, shards int) (Counts, error) {
	var gets []types.TransactGetItem
	for n := range shards {
		gets = append(gets, types.TransactGetItem{Get: &types.Get{TableName: aws.String(s.table), Key: jobKey(id, shardSK(n))}})
	}
	var out *dynamodb.TransactGetItemsOutput
	var err error
	for attempt := 0; ; attempt++ {
		out, err = s.api.TransactGetItems(ctx, &dynamodb.TransactGetItemsInput{TransactItems: gets})
		var tce *types.TransactionCanceledException
		if err == nil || !errors.As(err, &tce) || attempt == 6 {
			break
		}
		// A concurrent settlement on a shard: read the snapshot again.
		if err := sleep(ctx, time.Duration(1+rand.Int64N(int64(10*time.Millisecond<<attempt)))); err != nil {
			return Counts{}, err
		}
	}
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
	j.FinalizeRequested, _ = time.Parse(time.RFC3339Nano, text(it["finalize_requested_at"]))
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

// ClaimFinalize takes the right to write a finished job's report and notification until
// lease runs out: only one finalizer works at a time, and one that dies is replaced when
// its lease ends. It returns the lease's token (for [Store.ReleaseFinalize]), or ok =
// false if the job is running, already notified, or leased by another.
func (s *Store) ClaimFinalize(ctx context.Context, id string, now time.Time, lease time.Duration) (token int64, ok bool, err error) {
	token = now.Add(lease).UnixMilli()
	_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:        aws.String(s.table),
		Key:              jobKey(id, "job"),
		UpdateExpression: aws.String("SET lease_until = :until"),
		ConditionExpression: aws.String("attribute_exists(pk) AND #status <> :running AND attribute_not_exists(notified_at) " +
			"AND (attribute_not_exists(lease_until) OR lease_until < :now)"),
		ExpressionAttributeNames: map[string]string{"#status": "status"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":until": n64(token), ":now": n64(now.UnixMilli()), ":running": str(string(JobRunning)),
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("ledger: claim finalize of job %s: %w", id, err)
	}
	return token, true, nil
}

// ReleaseFinalize gives back the lease taken with token after a failed finalize, so a
// retry can claim it at once. A lease that ran out and was taken by another finalizer is
// left alone.
func (s *Store) ReleaseFinalize(ctx context.Context, id string, token int64) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: jobKey(id, "job"), UpdateExpression: aws.String("REMOVE lease_until"),
		ConditionExpression:       aws.String("lease_until = :mine"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":mine": n64(token)},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("ledger: release finalize of job %s: %w", id, err)
	}
	return nil
}

// MarkFinalizeRequested records that a finished job's finalize task was sent.
func (s *Store) MarkFinalizeRequested(ctx context.Context, id string, now time.Time) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: jobKey(id, "job"), UpdateExpression: aws.String("SET finalize_requested_at = :now"),
		ConditionExpression:       aws.String("attribute_exists(pk)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":now": str(now.UTC().Format(time.RFC3339Nano))},
	})
	if err != nil {
		return fmt.Errorf("ledger: job %s finalize requested: %w", id, err)
	}
	return nil
}

// PeekCounts sums the shards with strongly consistent reads, but not as one snapshot:
// cheap, and never conflicting with settlements. Use it to decide whether the snapshot
// of [Store.JobCounts] is worth taking: once no task is outstanding nothing writes, so
// the peek then shows it.
func (s *Store) PeekCounts(ctx context.Context, id string, shards int) (Counts, error) {
	keys := make([]map[string]types.AttributeValue, 0, shards)
	for n := range shards {
		keys = append(keys, jobKey(id, shardSK(n)))
	}
	var c Counts
	for len(keys) > 0 {
		out, err := s.api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
			s.table: {Keys: keys, ConsistentRead: aws.Bool(true)},
		}})
		if err != nil {
			return Counts{}, fmt.Errorf("ledger: job %s counts: %w", id, err)
		}
		for _, it := range out.Responses[s.table] {
			c.Expected += num(it["expected"])
			c.Done += num(it["done"])
			c.Listed += num(it["listed"])
			c.Succeeded += num(it["succeeded"])
			c.Failed += num(it["failed"])
			c.Bytes += num(it["bytes"])
		}
		keys = out.UnprocessedKeys[s.table].Keys
	}
	return c, nil
}

// TaskState tells a planning task, before it does any work, whether it may: it was
// counted already (Duplicate), its parent is not counted yet (ParentPending), its parent
// was counted without it (Orphan), or 0: go ahead. A root task has parent "".
func (s *Store) TaskState(ctx context.Context, jobID, taskID, parent string, index int) (Outcome, error) {
	keys := []map[string]types.AttributeValue{jobKey(jobID, "t#"+taskID)}
	if parent != "" {
		keys = append(keys, jobKey(jobID, "t#"+parent))
	}
	out, err := s.api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
		s.table: {Keys: keys, ConsistentRead: aws.Bool(true)},
	}})
	if err != nil {
		return 0, fmt.Errorf("ledger: state of task %s: %w", taskID, err)
	}
	if len(out.UnprocessedKeys) > 0 {
		return 0, fmt.Errorf("ledger: state of task %s: read throttled", taskID)
	}
	var self, par map[string]types.AttributeValue
	for _, it := range out.Responses[s.table] {
		switch text(it[AttrSK]) {
		case "t#" + taskID:
			self = it
		case "t#" + parent:
			par = it
		}
	}
	attr := childCountAttr(taskID)
	switch {
	case self != nil:
		return Duplicate, nil
	case parent == "":
		return 0, nil
	case par == nil:
		return ParentPending, nil
	case attr != "" && par[attr] != nil && num(par[attr]) <= int64(index):
		return Orphan, nil
	}
	return 0, nil
}
