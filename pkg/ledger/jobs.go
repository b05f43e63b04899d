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
// Termination detection: every task (a fan-out task, a task message of files) is
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
	// Superseded files: a newer revision of their key was processed instead (not
	// failures: they do not count against a job's tolerance).
	Superseded int64 `json:"files_superseded"`
	Bytes      int64 `json:"bytes"` // source bytes of the succeeded files
}

// Finished is the files that reached an outcome.
func (c Counts) Finished() int64 { return c.Succeeded + c.Failed + c.Superseded }

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
	// ReconciledAt is when the reconciler last looked at the job, and StuckTasks how
	// many of its tasks it then found in a dead-letter queue.
	ReconciledAt time.Time
	StuckTasks   int
	// ReportMissing: counted tasks whose report lines were missing when the report was
	// written (it names them).
	ReportMissing int
	// LeaseUntil is when the finalize lease taken last ends (zero: never taken, or given
	// back).
	LeaseUntil time.Time
}

// Settlement counts one finished task: the children it enqueued and the files it
// accounted for, on one shard.
type Settlement struct {
	JobID  string
	TaskID string
	Parent string // "" for a job's root task
	// ParentRun is the run of the parent that sent this task, and Run this task's own
	// (its children carry it). A parent's marker records the run that was counted; a
	// child sent by another run of its parent (one that died before it was counted, over
	// a listing that has changed since) is an Orphan, never counted: it was never
	// expected. A child's id is its content, so the counted run's children are exactly
	// the work the counted listing found.
	ParentRun string
	Run       string
	Shards    int // the job's shard count (one is picked at random)
	// Messages and Plans are the children it enqueued, by kind.
	Messages, Plans int64
	Children        int64 // other children (tests; counted in expected)
	Listed          int64 // files it found (fan-out) or carried (a task message: 0)
	// The files it finished.
	Succeeded, Failed, Superseded, Bytes int64
	// Lines is how many report lines the task wrote, and Part the name of the part it
	// wrote them to (before it was counted; each delivery writes its own): the report
	// reads exactly the counted delivery's part.
	Lines int64
	Part  string
}

// Outcome is what happened to one settlement.
type Outcome int

// The outcomes of [Store.Settle].
const (
	Counted       Outcome = iota + 1 // counted now
	Duplicate                        // counted before: a duplicate delivery
	ParentPending                    // the parent is not counted yet: try again later
	UnknownJob                       // no such job (never created, or expired)
	Orphan                           // the parent was counted by another run, which did not send it: never counted
	JobStopped                       // the job finished (failed, cancelled) before this task: never counted
)

func (o Outcome) String() string {
	return map[Outcome]string{Counted: "counted", Duplicate: "duplicate", ParentPending: "parent pending", UnknownJob: "unknown job",
		Orphan: "orphan", JobStopped: "job stopped"}[o]
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
	// Open until reported: the reconciler finds it through the sparse index.
	job[AttrGSI1PK] = str(openJobs)
	job[AttrGSI1SK] = str(now.UTC().Format(time.RFC3339Nano) + "#" + id)
	if s.ttl > 0 {
		job[AttrTTL] = s.expires(now)
	}
	items := []types.TransactWriteItem{{Put: &types.Put{
		TableName: aws.String(s.table), Item: job,
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	}}}
	for n := range shards {
		c := jobKey(id, shardSK(n))
		for _, a := range []string{"expected", "done", "listed", "succeeded", "failed", "superseded", "bytes"} {
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

// Settle counts finished tasks in transactions of up to 30: per task a marker (so a
// duplicate counts nothing) and a check that its parent was counted by the run that
// sent it (so a child is never counted before the parent that counts it as expected,
// nor at all if another run of the parent was counted), and per job one shard update
// with the sums. Settlements that cannot be counted get their outcome and are left out;
// the rest are counted together. Conflicts with concurrent transactions are retried.
//
// A transaction names an item once, so a batch holding a task and its child, two
// copies of a task sent by different runs of its parent, or children of one parent
// sent by different runs is counted in rounds.
func (s *Store) Settle(ctx context.Context, now time.Time, all []Settlement) ([]Outcome, error) {
	out := make([]Outcome, len(all))
	// The same task from the same run twice in one batch: the copy shares the first's
	// fate (a duplicate of a counted task; otherwise the same outcome).
	first := map[[3]string]int{}
	copyOf := map[int]int{}
	for i, st := range all {
		k := [3]string{st.JobID, st.TaskID, st.ParentRun}
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
	const maxRounds = 8
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
		final := round >= maxRounds-1
		for _, chunk := range chunks(all, undecided) {
			if err := s.settle(ctx, now, all, chunk, out); err != nil {
				return out, err
			}
		}
		if err := s.sortPending(ctx, all, out, final); err != nil {
			return out, err
		}
		if final {
			for i, o := range out {
				if o == 0 {
					out[i] = ParentPending // undecided after every round: it comes back later
				}
			}
		}
	}
}

// maxSettlements bounds one transaction: 100 items at most; a settlement takes up to
// two (marker, parent check) and each of its jobs one more (a shard).
const maxSettlements = 30

// maxJobsPerTx: 30 settlements × 2 + 10 jobs = 70, well under 100.
const maxJobsPerTx = 10

// chunks groups the undecided settlements into transactions that name each item once:
// a settlement whose marker or parent check would repeat an item already in the
// transaction, or whose parent is counted in it, waits for the next round. A
// settlement left out of every chunk this round stays undecided.
func chunks(all []Settlement, undecided []int) [][]int {
	var out [][]int
	var cur []int
	markers := map[[2]string]bool{}  // job, task: counted in cur
	checks := map[[2]string]string{} // job, parent: the run cur checks it for
	jobs := map[string]bool{}
	var later []int
	for _, i := range undecided {
		st := all[i]
		me := [2]string{st.JobID, st.TaskID}
		par := [2]string{st.JobID, st.Parent}
		if !jobs[st.JobID] && len(jobs) == maxJobsPerTx {
			later = append(later, i) // one job too many for this transaction
			continue
		}
		switch {
		case markers[me]:
			later = append(later, i) // another run's copy of the same task
			continue
		case st.Parent != "" && markers[par]:
			later = append(later, i) // its parent is counted in this transaction
			continue
		}
		if run, ok := checks[par]; st.Parent != "" && ok && run != st.ParentRun {
			later = append(later, i) // siblings of another run of the parent
			continue
		}
		if _, ok := checks[me]; ok {
			later = append(later, i) // it is the parent of a task in this transaction
			continue
		}
		markers[me] = true
		jobs[st.JobID] = true
		if st.Parent != "" {
			checks[par] = st.ParentRun
		}
		cur = append(cur, i)
		if len(cur) == maxSettlements {
			out = append(out, cur)
			cur, markers, checks, jobs = nil, map[[2]string]bool{}, map[[2]string]string{}, map[string]bool{}
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	_ = later // decided in a later round
	return out
}

// sortPending looks at the parent of each settlement whose parent check failed: not
// counted yet (ParentPending stays), counted by another run (Orphan), or counted by its
// run — a sibling failed the shared check, or the parent was counted meanwhile — to be
// tried again (unless final).
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
		switch {
		case res.Item == nil:
		case text(res.Item["run"]) != st.ParentRun:
			out[i] = Orphan
		case !final:
			out[i] = 0
		}
	}
	return nil
}

// settle counts the settlements part (indices into all) in one transaction, writing
// their outcomes into out; those it cannot count are decided and left out.
func (s *Store) settle(ctx context.Context, now time.Time, all []Settlement, part []int, out []Outcome) error {
	for attempt := 0; ; attempt++ {
		var live []int
		for _, i := range part {
			if out[i] == 0 {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			return nil
		}
		items, owners := s.settleItems(now, all, live)
		_, err := s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		if err == nil {
			for _, i := range live {
				out[i] = Counted
			}
			return nil
		}
		var tce *types.TransactionCanceledException
		if !errors.As(err, &tce) {
			return fmt.Errorf("ledger: settle %d tasks: %w", len(live), err)
		}
		decided, conflict := false, false
		for n, r := range tce.CancellationReasons {
			switch aws.ToString(r.Code) {
			case "ConditionalCheckFailed":
				o := owners[n].onFail
				if o == UnknownJob && r.Item != nil {
					o = JobStopped // the shard exists: its job finished
				}
				for _, i := range owners[n].settlements {
					if out[i] == 0 {
						out[i], decided = o, true
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
				return err
			}
		default:
			return fmt.Errorf("ledger: settle %d tasks (attempt %d): %w", len(live), attempt+1, err)
		}
	}
}

// owner says which settlements a transaction item belongs to, and their outcome if its
// condition fails.
type owner struct {
	settlements []int
	onFail      Outcome
}

func (s *Store) settleItems(now time.Time, all []Settlement, live []int) ([]types.TransactWriteItem, []owner) {
	var items []types.TransactWriteItem
	var owners []owner
	table := aws.String(s.table)
	type sum struct {
		idx                                                          []int
		shards                                                       int
		children, done, listed, succeeded, failed, superseded, bytes int64
	}
	sums := map[string]*sum{}
	var jobs []string
	type check struct {
		job, parent, run string
		idx              []int
	}
	checks := map[[2]string]*check{}
	var order [][2]string
	for _, i := range live {
		st := all[i]
		m := jobKey(st.JobID, "t#"+st.TaskID)
		m["at"] = str(now.UTC().Format(time.RFC3339Nano))
		m["msgs"], m["plans"], m["lines"] = n64(st.Messages), n64(st.Plans), n64(st.Lines)
		if st.Part != "" {
			m["part"] = str(st.Part)
		}
		if st.Run != "" {
			m["run"] = str(st.Run)
		}
		if s.ttl > 0 {
			m[AttrTTL] = s.expires(now)
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{
			TableName: table, Item: m, ConditionExpression: aws.String("attribute_not_exists(pk)"),
		}})
		owners = append(owners, owner{[]int{i}, Duplicate})
		if st.Parent != "" {
			k := [2]string{st.JobID, st.Parent}
			c, ok := checks[k]
			if !ok {
				c = &check{job: st.JobID, parent: st.Parent, run: st.ParentRun}
				checks[k] = c
				order = append(order, k)
			}
			c.idx = append(c.idx, i)
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
		a.superseded += st.Superseded
		a.bytes += st.Bytes
	}
	// One check per parent item: it exists, counted by the run that sent the children.
	for _, k := range order {
		c := checks[k]
		cc := &types.ConditionCheck{TableName: table, Key: jobKey(c.job, "t#"+c.parent)}
		if c.run == "" {
			cc.ConditionExpression = aws.String("attribute_exists(pk) AND attribute_not_exists(run)")
		} else {
			cc.ConditionExpression = aws.String("attribute_exists(pk) AND run = :run")
			cc.ExpressionAttributeValues = map[string]types.AttributeValue{":run": str(c.run)}
		}
		items = append(items, types.TransactWriteItem{ConditionCheck: cc})
		owners = append(owners, owner{c.idx, ParentPending})
	}
	for _, job := range jobs {
		a := sums[job]
		items = append(items, types.TransactWriteItem{Update: &types.Update{
			TableName:        table,
			Key:              jobKey(job, shardSK(rand.IntN(a.shards))),
			UpdateExpression: aws.String("ADD expected :e, done :d, listed :l, succeeded :s, failed :f, superseded :x, bytes :b"),
			// A finished job counts nothing more (FinishJob marks every shard stopped): its
			// counts and its report stay as they were when it finished. The shard, not the
			// job's record, carries the mark, so settlements on different shards never
			// meet on one item.
			ConditionExpression:                 aws.String("attribute_exists(pk) AND attribute_not_exists(stopped)"),
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":e": n64(a.children), ":d": n64(a.done), ":l": n64(a.listed),
				":s": n64(a.succeeded), ":f": n64(a.failed), ":x": n64(a.superseded), ":b": n64(a.bytes),
			},
		}})
		owners = append(owners, owner{a.idx, UnknownJob})
	}
	return items, owners
}

// Snapshot is a job's counts read in one serializable snapshot, with each shard's done
// count: [Store.FinishJob] finishes the job only if no task was counted since.
type Snapshot struct {
	Counts
	Done []int64 // per shard
	// Stop, if its Status is set, is a forced finish of the job under way: a shard was
	// stopped by [Store.StopJob]. On a job that still runs, its stopper died before it
	// finished the job: stop it again with the same status and reason.
	Stop Stop
}

// Stop is what [Store.StopJob] wrote on a shard it stopped: the status and reason, and
// when (the earliest, over the shards).
type Stop struct {
	Status JobStatus
	Reason string
	At     time.Time
}

// add adds one shard's item to the snapshot's counts.
func (snap *Snapshot) add(it map[string]types.AttributeValue) (done int64) {
	done = num(it["done"])
	snap.Expected += num(it["expected"])
	snap.Counts.Done += done
	snap.Listed += num(it["listed"])
	snap.Succeeded += num(it["succeeded"])
	snap.Failed += num(it["failed"])
	snap.Superseded += num(it["superseded"])
	snap.Bytes += num(it["bytes"])
	if _, stopping := it["stop_reason"]; stopping {
		at, _ := time.Parse(time.RFC3339Nano, text(it["stop_at"]))
		if snap.Stop.Status == "" || at.Before(snap.Stop.At) {
			snap.Stop = Stop{Status: JobStatus(text(it["stopped"])), Reason: text(it["stop_reason"]), At: at}
		}
	}
	return done
}

// JobCounts reads every shard in one serializable snapshot.
func (s *Store) JobCounts(ctx context.Context, id string, shards int) (Counts, error) {
	snap, err := s.JobSnapshot(ctx, id, shards)
	return snap.Counts, err
}

// JobSnapshot reads every shard in one serializable snapshot (TransactGetItems).
func (s *Store) JobSnapshot(ctx context.Context, id string, shards int) (Snapshot, error) {
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
			return Snapshot{}, err
		}
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("ledger: job %s counts: %w", id, err)
	}
	snap := Snapshot{Done: make([]int64, len(out.Responses))}
	for n, r := range out.Responses {
		snap.Done[n] = snap.add(r.Item)
	}
	return snap, nil
}

// ErrCountsChanged: a task was counted after the snapshot a finish was decided on;
// take the snapshot again and decide again.
var ErrCountsChanged = errors.New("ledger: job counts changed since the snapshot")

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
			Succeeded: num(it["files_succeeded"]), Failed: num(it["files_failed"]), Superseded: num(it["files_superseded"]), Bytes: num(it["bytes"]),
		},
	}
	j.CreatedAt, _ = time.Parse(time.RFC3339Nano, text(it["created_at"]))
	j.ReconciledAt, _ = time.Parse(time.RFC3339Nano, text(it["reconciled_at"]))
	j.StuckTasks = int(num(it["stuck_tasks"]))
	j.ReportMissing = int(num(it["report_missing"]))
	j.FinishedAt, _ = time.Parse(time.RFC3339Nano, text(it["finished_at"]))
	j.FinalizeRequested, _ = time.Parse(time.RFC3339Nano, text(it["finalize_requested_at"]))
	if ms := num(it["lease_until"]); ms > 0 {
		j.LeaseUntil = time.UnixMilli(ms)
	}
	return j, true, nil
}

// FinishJob moves a running job to status (COMPLETE, FAILED or CANCELLED) with the
// snapshot's counts as its final counts: exactly one caller gets finished = true; for
// the others the job was already finished (or does not exist). The job finishes only if
// no task was counted since the snapshot ([ErrCountsChanged]): its final counts are
// exactly the tasks counted, and, since a finished job counts nothing more, its report.
func (s *Store) FinishJob(ctx context.Context, id string, status JobStatus, reason string, snap Snapshot, now time.Time) (finished bool, err error) {
	if status == JobRunning {
		return false, fmt.Errorf("ledger: finish job %s: %s is not a final status", id, status)
	}
	items := []types.TransactWriteItem{{Update: s.finishUpdate(id, status, reason, snap.Counts, now)}}
	for n, done := range snap.Done {
		// Unchanged since the snapshot, and from now on stopped: no settlement counts more.
		items = append(items, types.TransactWriteItem{Update: &types.Update{
			TableName: aws.String(s.table), Key: jobKey(id, shardSK(n)), ConditionExpression: aws.String("done = :done"),
			UpdateExpression:          aws.String("SET stopped = :status"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":done": n64(done), ":status": str(string(status))},
		}})
	}
	_, err = s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
	var tce *types.TransactionCanceledException
	if errors.As(err, &tce) {
		for n, r := range tce.CancellationReasons {
			switch code := aws.ToString(r.Code); {
			case n == 0 && code == "ConditionalCheckFailed":
				return false, nil // finished by another caller
			case code == "ConditionalCheckFailed", code == "TransactionConflict":
				return false, fmt.Errorf("ledger: finish job %s: %w", id, ErrCountsChanged)
			}
		}
	}
	if err != nil {
		return false, fmt.Errorf("ledger: finish job %s: %w", id, err)
	}
	return true, nil
}

// finishUpdate moves the job's record from RUNNING to status with final counts c.
func (s *Store) finishUpdate(id string, status JobStatus, reason string, c Counts, now time.Time) *types.Update {
	return &types.Update{
		TableName: aws.String(s.table),
		Key:       jobKey(id, "job"),
		UpdateExpression: aws.String("SET #status = :status, finished_at = :now, reason = :reason, " +
			"tasks_expected = :e, tasks_done = :d, files_listed = :l, files_succeeded = :s, files_failed = :f, files_superseded = :x, bytes = :b"),
		ConditionExpression:      aws.String("#status = :running"),
		ExpressionAttributeNames: map[string]string{"#status": "status"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":status": str(string(status)), ":running": str(string(JobRunning)),
			":now": str(now.UTC().Format(time.RFC3339Nano)), ":reason": str(reason),
			":e": n64(c.Expected), ":d": n64(c.Done), ":l": n64(c.Listed),
			":s": n64(c.Succeeded), ":f": n64(c.Failed), ":x": n64(c.Superseded), ":b": n64(c.Bytes),
		},
	}
}

// StopJob finishes a running job as status (FAILED or CANCELLED) however busy it is.
// [Store.FinishJob] finishes only if no task was counted since its snapshot, which on a
// busy job may never hold; StopJob instead stops the shards one by one — a stopped shard
// counts nothing more, and its counts are read as it is stopped — and then finishes the
// job with their sum: still exactly the tasks counted. A stopper that dies between the
// shards and the job's record leaves a running job with stopped shards; snapshots show
// it ([Snapshot.Stop]), and a check of the job after a while stops it again (a shard
// stopped already keeps its counts and its status). finished is false if another caller
// finished the job first; snap is the counts the job was finished with by this call.
func (s *Store) StopJob(ctx context.Context, id string, shards int, status JobStatus, reason string, now time.Time) (finished bool, snap Snapshot, err error) {
	if status != JobFailed && status != JobCancelled {
		return false, Snapshot{}, fmt.Errorf("ledger: stop job %s: %s is not FAILED or CANCELLED", id, status)
	}
	snap = Snapshot{Done: make([]int64, shards)}
	for n := range shards {
		it, err := s.stopShard(ctx, id, n, status, reason, now)
		if err != nil {
			return false, Snapshot{}, err
		}
		snap.Done[n] = snap.add(it)
	}
	snap.Stop = Stop{Status: status, Reason: reason, At: now} // this call's, whatever another stopper wrote
	// Every shard is stopped: the counts cannot change, and the record alone is written.
	u := s.finishUpdate(id, status, reason, snap.Counts, now)
	err = retryConflict(ctx, func() error {
		_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: u.TableName, Key: u.Key, UpdateExpression: u.UpdateExpression, ConditionExpression: u.ConditionExpression,
			ExpressionAttributeNames: u.ExpressionAttributeNames, ExpressionAttributeValues: u.ExpressionAttributeValues,
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		})
		return err
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		// Finished by another caller — or by this one: the SDK retried an update that
		// landed but whose response was lost (a plain UpdateItem has no idempotency
		// token). The record then holds exactly what this call wrote.
		it := ccf.Item
		mine := it != nil && text(it["status"]) == string(status) && text(it["reason"]) == reason &&
			text(it["finished_at"]) == text(u.ExpressionAttributeValues[":now"])
		return mine, snap, nil
	}
	if err != nil {
		return false, snap, fmt.Errorf("ledger: stop job %s: %w", id, err)
	}
	return true, snap, nil
}

// stopShard stops one shard of a job and returns its item as it stopped: from then on
// no settlement counts on it. A shard stopped before is left as it is.
func (s *Store) stopShard(ctx context.Context, id string, n int, status JobStatus, reason string, now time.Time) (map[string]types.AttributeValue, error) {
	var item map[string]types.AttributeValue
	err := retryConflict(ctx, func() error {
		out, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(s.table), Key: jobKey(id, shardSK(n)),
			UpdateExpression:    aws.String("SET stopped = :status, stop_reason = :reason, stop_at = :now"),
			ConditionExpression: aws.String("attribute_exists(pk) AND attribute_not_exists(stopped)"),
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":status": str(string(status)), ":reason": str(reason), ":now": str(now.UTC().Format(time.RFC3339Nano)),
			},
			ReturnValues:                        types.ReturnValueAllNew,
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		})
		if err == nil {
			item = out.Attributes
		}
		return err
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		// Stopped already: its counts are final. Or gone: TTL deletes a finished job's
		// items one by one, and a shard that does not exist counts nothing.
		return ccf.Item, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: stop job %s: shard %d: %w", id, n, err)
	}
	return item, nil
}

// retryConflict runs op again while DynamoDB refuses it for a transaction in progress
// on the same item (TransactionConflictException, which the SDK does not retry; see
// "Transaction conflict handling in DynamoDB", https://docs.aws.amazon.com/amazondynamodb/
// latest/developerguide/transaction-apis.html; DynamoDB Local never returned it in our
// runs, so TestAStopRetriesAShardInATransaction injects it): a settlement, which
// ends within milliseconds. A shard near its write rate is inside one often, so op is
// tried for about 5 s.
func retryConflict(ctx context.Context, op func() error) error {
	for attempt := 0; ; attempt++ {
		err := op()
		var tc *types.TransactionConflictException
		if !errors.As(err, &tc) || attempt == 40 {
			return err
		}
		if err := sleep(ctx, time.Duration(1+rand.Int64N(int64(min(5*time.Millisecond<<attempt, 250*time.Millisecond))))); err != nil {
			return err
		}
	}
}

// TryComplete completes the job if no task is outstanding: exactly one caller gets
// completed = true; the others (and any caller while work remains) get false.
func (s *Store) TryComplete(ctx context.Context, id string, shards int, now time.Time) (completed bool, c Counts, err error) {
	snap, err := s.JobSnapshot(ctx, id, shards)
	if err != nil || snap.Outstanding() != 0 || snap.Stop.Status != "" {
		return false, snap.Counts, err // a stop under way is finished by its stopper
	}
	completed, err = s.FinishJob(ctx, id, JobComplete, "", snap, now)
	if errors.Is(err, ErrCountsChanged) {
		return false, snap.Counts, nil // counted meanwhile: not done after all
	}
	return completed, snap.Counts, err
}

// MarkNotified records that the job's report was written (at report) and its
// notification sent: the job is no longer open.
// missing is how many counted tasks' report lines the report lacked.
func (s *Store) MarkNotified(ctx context.Context, id, report string, missing int, now time.Time) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 jobKey(id, "job"),
		UpdateExpression:    aws.String("SET notified_at = :now, report = :report, report_missing = :missing REMOVE gsi1pk, gsi1sk"),
		ConditionExpression: aws.String("attribute_exists(pk)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":now": str(now.UTC().Format(time.RFC3339Nano)),
			":report": str(report), ":missing": n64(int64(missing))},
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
// Its Done per shard is not filled in.
func (s *Store) PeekCounts(ctx context.Context, id string, shards int) (Snapshot, error) {
	keys := make([]map[string]types.AttributeValue, 0, shards)
	for n := range shards {
		keys = append(keys, jobKey(id, shardSK(n)))
	}
	var snap Snapshot
	for len(keys) > 0 {
		out, err := s.api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
			s.table: {Keys: keys, ConsistentRead: aws.Bool(true)},
		}})
		if err != nil {
			return Snapshot{}, fmt.Errorf("ledger: job %s counts: %w", id, err)
		}
		for _, it := range out.Responses[s.table] {
			snap.add(it)
		}
		keys = out.UnprocessedKeys[s.table].Keys
	}
	return snap, nil
}

// TaskState tells a fan-out task, before it does any work, whether it may: it was
// counted already (Duplicate), its parent is not counted yet (ParentPending), its parent
// was counted by another run (Orphan), or 0: go ahead. A root task has parent "".
func (s *Store) TaskState(ctx context.Context, jobID, taskID, parent, parentRun string) (Outcome, error) {
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
	switch {
	case self != nil:
		return Duplicate, nil
	case parent == "":
		return 0, nil
	case par == nil:
		return ParentPending, nil
	case text(par["run"]) != parentRun:
		return Orphan, nil
	}
	return 0, nil
}

// CountedTask is a task's marker: it was counted, with this many report lines, written
// to this part.
type CountedTask struct {
	TaskID string
	Lines  int64
	Part   string
	At     time.Time
}

// CountedTasks lists the tasks of a job that were counted, in task id order.
func (s *Store) CountedTasks(ctx context.Context, jobID string) ([]CountedTask, error) {
	var out []CountedTask
	p := dynamodb.NewQueryPaginator(s.api, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		KeyConditionExpression:    aws.String("pk = :pk AND begins_with(sk, :t)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(jobPK(jobID)), ":t": str("t#")},
		ProjectionExpression:      aws.String("sk, #lines, #at, #part"),
		ExpressionAttributeNames:  map[string]string{"#at": "at", "#lines": "lines", "#part": "part"},
		ConsistentRead:            aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: counted tasks of job %s: %w", jobID, err)
		}
		for _, it := range page.Items {
			t := CountedTask{TaskID: strings.TrimPrefix(text(it[AttrSK]), "t#"), Lines: num(it["lines"]), Part: text(it["part"])}
			t.At, _ = time.Parse(time.RFC3339Nano, text(it["at"]))
			out = append(out, t)
		}
	}
	return out, nil
}

// openJobs is the failure index's partition of jobs not yet reported.
const openJobs = "JOBS#OPEN"

// OpenJobs lists the jobs not yet reported (running, or finished and unreported),
// oldest first, from the sparse index.
func (s *Store) OpenJobs(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.index(ctx, openJobs, func(items []map[string]types.AttributeValue) error {
		for _, it := range items {
			if id, ok := strings.CutPrefix(text(it[AttrPK]), "J#"); ok {
				ids = append(ids, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: open jobs: %w", err)
	}
	return ids, nil
}

// MarkReconciled records the reconciler's look at a job: when, and how many of its
// tasks sat in a dead-letter queue.
func (s *Store) MarkReconciled(ctx context.Context, id string, stuck int, now time.Time) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: jobKey(id, "job"),
		UpdateExpression:          aws.String("SET reconciled_at = :now, stuck_tasks = :n"),
		ConditionExpression:       aws.String("attribute_exists(pk)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":now": str(now.UTC().Format(time.RFC3339Nano)), ":n": n64(int64(stuck))},
	})
	if err != nil {
		return fmt.Errorf("ledger: job %s reconciled: %w", id, err)
	}
	return nil
}
