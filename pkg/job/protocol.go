package job

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// The accounting protocol. Every handler that finishes a task of a job — the worker a
// task message of files, the dispatcher a fan-out task — reports it with
// [Engine.Report] and acts only on the answer. Report, in this order:
//
//  1. writes the task's report lines to a part of this delivery's own, before the task
//     is counted: a counted task always has its lines, and its marker names the part,
//     so a later delivery (a duplicate, another run's copy) never rewrites the lines
//     that were counted;
//  2. counts the batch's tasks in one settlement (see [ledger.Store.Settle]): a marker
//     per task, so a duplicate counts nothing; its parent's marker, counted by the run
//     that sent it, checked; its children added to the expected tasks;
//  3. checks each job once for completion, or for failures past its tolerance.
//
// An error before counting leaves the task uncounted (NotCounted: it is tried again). An
// error after counting never un-counts it and never fails the job (CheckFailed: the
// task is sent again so the check is repeated, and the reconciler repeats it anyway).

// TaskResult is one finished task of a job, as its handler reports it.
type TaskResult struct {
	JobID  string
	TaskID string
	// Parent is the fan-out task that sent this one, and ParentRun that task's run.
	Parent, ParentRun string
	// Run is this delivery's run id: the children it sent carry it (fan-out tasks).
	Run string
	// Messages and Plans are the children it sent: task messages, fan-out tasks.
	Messages, Plans int64
	Listed          int64 // files it found (fan-out tasks)
	// The files it finished, and their source bytes.
	Succeeded, Failed, Bytes int64
	// Superseded are the files a newer revision of their key replaced (counted apart
	// from failures: they do not count against the job's tolerance).
	Superseded int64
	Lines      []Line // one per file it finished, and per bad entry
}

// Verdict is the engine's answer for one task.
type Verdict int

// The verdicts of [Engine.Report] and [Engine.TaskState].
const (
	Go          Verdict = iota // TaskState: not counted yet, and its parent is: do the work
	Counted                    // counted now, and its job checked
	Duplicate                  // counted before: nothing more to do
	WaitParent                 // its parent is not counted yet: send it again after a wait
	Orphan                     // a run of its parent that was not counted sent it: drop it
	Gone                       // its job does not exist (never created, expired) or finished before it: drop it
	NotCounted                 // not counted: a step failed (Answer.Err); try again after a backoff
	CheckFailed                // counted, but its job's check failed (Answer.Err): send again to check
)

func (v Verdict) String() string {
	return [...]string{"go", "counted", "duplicate", "wait for parent", "orphan", "gone", "not counted", "check failed"}[v]
}

// Answer is the engine's answer for one task: a verdict and, for NotCounted and
// CheckFailed, why.
type Answer struct {
	Verdict Verdict
	Err     error
}

// partWriters bounds the report parts one Report call writes at once.
const partWriters = 8

// Report counts a batch of finished tasks (see the protocol above) and answers each.
func (e *Engine) Report(ctx context.Context, results []TaskResult) []Answer {
	answers := make([]Answer, len(results))
	parts := make([]string, len(results))
	// 1. Lines first, each delivery's to its own part.
	var wg sync.WaitGroup
	sem := make(chan struct{}, partWriters)
	for i, r := range results {
		if len(r.Lines) == 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		parts[i] = partName(r.TaskID)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := e.WritePart(ctx, r.JobID, parts[i], r.Lines); err != nil {
				answers[i] = Answer{Verdict: NotCounted, Err: err}
			}
		}()
	}
	wg.Wait()

	// 2. Count what has its lines.
	var idx []int
	var settlements []ledger.Settlement
	for i, r := range results {
		if answers[i].Verdict == NotCounted {
			continue
		}
		j, err := e.Job(ctx, r.JobID)
		if err != nil && !isUnknown(err) {
			answers[i] = Answer{Verdict: NotCounted, Err: err}
			continue
		}
		idx = append(idx, i)
		settlements = append(settlements, ledger.Settlement{
			JobID: r.JobID, TaskID: r.TaskID, Parent: r.Parent, ParentRun: r.ParentRun, Run: r.Run,
			Shards: max(j.Shards, 1), Messages: r.Messages, Plans: r.Plans, Listed: r.Listed,
			Succeeded: r.Succeeded, Failed: r.Failed, Superseded: r.Superseded, Bytes: r.Bytes,
			Lines: int64(len(r.Lines)), Part: parts[i],
		})
	}
	if len(settlements) == 0 {
		return answers
	}
	outcomes, err := e.Ledger.Settle(ctx, e.now(), settlements)
	if err != nil {
		for _, i := range idx {
			answers[i] = Answer{Verdict: NotCounted, Err: fmt.Errorf("count task %s: %w", results[i].TaskID, err)}
		}
		return answers
	}

	// A part that was not counted is never read: remove it (best effort; the output
	// bucket's expiry removes what is left).
	for n, i := range idx {
		if outcomes[n] != ledger.Counted && parts[i] != "" {
			e.removePart(ctx, results[i].JobID, parts[i])
		}
	}

	// 3. Check each job that a counted (or duplicate) task belongs to, once.
	check := map[string][]int{}
	var order []string
	for n, i := range idx {
		switch outcomes[n] {
		case ledger.Counted, ledger.Duplicate:
			v := Counted
			if outcomes[n] == ledger.Duplicate {
				v = Duplicate
			}
			answers[i] = Answer{Verdict: v}
			id := results[i].JobID
			if _, ok := check[id]; !ok {
				order = append(order, id)
			}
			check[id] = append(check[id], i)
		case ledger.ParentPending:
			answers[i] = Answer{Verdict: WaitParent}
		case ledger.Orphan:
			answers[i] = Answer{Verdict: Orphan}
		default:
			answers[i] = Answer{Verdict: Gone}
		}
	}
	for _, id := range order {
		if err := e.Check(ctx, id); err != nil {
			for _, i := range check[id] {
				answers[i] = Answer{Verdict: CheckFailed, Err: fmt.Errorf("check job %s: %w", id, err)}
			}
		}
	}
	return answers
}

// TaskState tells a task, before it does any work, whether it should: Go (not counted
// yet, and its parent is), Duplicate (counted before), WaitParent (its parent is not
// counted yet) or Orphan (its parent was counted by another run). A root task has
// parent "".
func (e *Engine) TaskState(ctx context.Context, jobID, taskID, parent, parentRun string) (Verdict, error) {
	o, err := e.Ledger.TaskState(ctx, jobID, taskID, parent, parentRun)
	if err != nil {
		return NotCounted, err
	}
	switch o {
	case ledger.Duplicate:
		return Duplicate, nil
	case ledger.ParentPending:
		return WaitParent, nil
	case ledger.Orphan:
		return Orphan, nil
	}
	return Go, nil
}

// partName names one delivery's report part of a task: the task id and a random suffix.
func partName(taskID string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return taskID + "." + hex.EncodeToString(b[:])
}
