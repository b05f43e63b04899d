package chaos

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Report is a run's account. Its JSON form is `fileflow chaos --json`.
type Report struct {
	Seed        uint64  `json:"seed"`
	Files       int     `json:"files_planned"`
	Settled     string  `json:"settled"`
	WallSeconds float64 `json:"wall_seconds"`

	// Inputs are the keys the run wrote (event files and jobs' files), Versions their
	// writes; Members the archive entries.
	Inputs   int `json:"inputs"`
	Versions int `json:"versions"`
	Members  int `json:"archive_members"`
	// The keys' ends: succeeded, failed (by code), in a DLQ, lost; skipped are the
	// files of stopped jobs (failed over tolerance, cancelled) that nothing else named.
	Succeeded    int            `json:"succeeded"`
	Failed       int            `json:"failed"`
	FailedByCode map[string]int `json:"failed_by_code"`
	Superseded   int            `json:"superseded_versions"` // versions a newer one replaced
	Deleted      int            `json:"deleted_keys"`
	Skipped      int            `json:"skipped_by_stopped_jobs"`
	// DeletedUnlisted: a job's file deleted before its job listed it, never named since.
	DeletedUnlisted int `json:"deleted_before_listed"`
	InDLQ           int `json:"in_dlq"`
	Lost            int `json:"lost"`
	// MembersAccounted: archive entries in their job's report.
	MembersAccounted int     `json:"members_accounted"`
	AccountedPercent float64 `json:"accounted_percent"`

	OutputsChecked int `json:"outputs_checked"`
	WrongOutputs   int `json:"wrong_outputs"`
	// StrayOutputs are output objects no input accounts for: a second output of one
	// input, or an older version's output left behind.
	StrayOutputs int `json:"duplicate_or_stray_outputs"`
	ScratchLeft  int `json:"scratch_objects_left"` // split parts under .parts/ (expire by lifecycle)
	// UnfinishedOutputs are outputs of files with no final record (in a DLQ, or skipped by
	// a stopped job): written before the commit that never came; a redrive settles them.
	UnfinishedOutputs int `json:"outputs_of_unfinished_files"`

	Jobs                   int            `json:"jobs"`
	JobsByStatus           map[string]int `json:"jobs_by_status"`
	JobsNeverFinished      int            `json:"jobs_never_finished"`
	JobsFinishedTwice      int            `json:"jobs_finished_more_than_once"`
	JobsWrongStatus        int            `json:"jobs_wrong_status"`
	DuplicateNotifications int            `json:"duplicate_notifications"` // SNS is at least once; not a violation
	DoubleCounts           int            `json:"double_counts"`
	ReportLinesMissing     int            `json:"report_lines_missing"`
	DLQMessages            int            `json:"dlq_messages"`
	JobsDLQMessages        int            `json:"jobs_dlq_messages"`

	// What was injected.
	Faults               map[string]int64 `json:"faults_by_kind"`
	AWSCalls             int64            `json:"function_aws_calls"`
	FaultDetail          []string         `json:"fault_detail,omitempty"`
	Kills                int64            `json:"kills"`
	Invocations          int64            `json:"invocations"`
	ColdStarts           int64            `json:"cold_starts"`
	DuplicateEvents      int64            `json:"duplicate_s3_events"`
	DuplicateSubmissions int64            `json:"duplicate_job_submissions"`
	ConflictsRefused     int64            `json:"conflicting_submissions_refused"`
	ListingChanges       int64            `json:"listing_changes"`
	Cancels              int64            `json:"cancels"`
	DynamoDBRestart      string           `json:"dynamodb_restart,omitempty"`
	// OperatorRedrives: when the run stalled with messages in a DLQ (a batch killed on
	// its last receive), the harness redrove them as the reconciler asks an operator to
	// (`fileflow dlq redrive`); Redriven is the messages moved.
	OperatorRedrives int   `json:"operator_redrives"`
	Redriven         int64 `json:"redriven_messages"`

	// Violations, by kind: how many, and the first of each with what and where.
	ViolationsByKind map[string]int      `json:"violations_by_kind,omitempty"`
	Violations       map[string][]string `json:"violations,omitempty"`
}

// maxPerKind bounds the violations kept of one kind (the count is kept whole).
const maxPerKind = 20

func (r *Report) violate(kind, format string, args ...any) {
	if r.Violations == nil {
		r.Violations = map[string][]string{}
	}
	if r.ViolationsByKind == nil {
		r.ViolationsByKind = map[string]int{}
	}
	r.ViolationsByKind[kind]++
	if len(r.Violations[kind]) < maxPerKind {
		r.Violations[kind] = append(r.Violations[kind], fmt.Sprintf(format, args...))
	}
}

// ViolationCount is how many violations of every kind the run had.
func (r *Report) ViolationCount() int {
	n := 0
	for _, c := range r.ViolationsByKind {
		n += c
	}
	return n
}

// OK says the run kept every guarantee.
func (r *Report) OK() bool { return r.ViolationCount() == 0 }

// JSON renders the report.
func (r *Report) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// Text renders the report for people.
func (r *Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos run, seed %d: %s in %.0fs\n", r.Seed, r.Settled, r.WallSeconds)
	fmt.Fprintf(&b, "inputs    %d keys (%d versions, %d superseded, %d deleted) and %d archive entries\n", r.Inputs, r.Versions, r.Superseded, r.Deleted, r.Members)
	fmt.Fprintf(&b, "outcomes  succeeded %d  failed %d %s  skipped by stopped jobs %d  deleted before listed %d  in DLQ %d  lost %d  accounted %.3f%%\n",
		r.Succeeded, r.Failed, sortedCounts(r.FailedByCode), r.Skipped, r.DeletedUnlisted, r.InDLQ, r.Lost, r.AccountedPercent)
	fmt.Fprintf(&b, "outputs   %d checked  wrong %d  duplicate or stray %d  (of unfinished files %d, split scratch left %d)\n",
		r.OutputsChecked, r.WrongOutputs, r.StrayOutputs, r.UnfinishedOutputs, r.ScratchLeft)
	fmt.Fprintf(&b, "jobs      %d %s  never finished %d  finished more than once %d  wrong status %d  double counts %d  report lines missing %d  (repeated notifications %d)\n",
		r.Jobs, sortedCounts(r.JobsByStatus), r.JobsNeverFinished, r.JobsFinishedTwice, r.JobsWrongStatus, r.DoubleCounts, r.ReportLinesMissing, r.DuplicateNotifications)
	fmt.Fprintf(&b, "DLQs      tasks %d messages, jobs %d messages at the end", r.DLQMessages, r.JobsDLQMessages)
	if r.OperatorRedrives > 0 {
		fmt.Fprintf(&b, "  (operator redrives %d, %d messages moved)", r.OperatorRedrives, r.Redriven)
	}
	b.WriteString("\n")
	var faults int64
	for _, n := range r.Faults {
		faults += n
	}
	share := 0.0
	if r.AWSCalls > 0 {
		share = 100 * float64(faults) / float64(r.AWSCalls)
	}
	fmt.Fprintf(&b, "injected  %d faults in %d function AWS calls (%.1f%%) %s\n", faults, r.AWSCalls, share, sortedCounts64(r.Faults))
	fmt.Fprintf(&b, "          %d environments killed (of %d invocations, %d cold starts), %d S3 events delivered twice, %d duplicate job submissions, %d conflicting refused, %d listing changes, %d cancels",
		r.Kills, r.Invocations, r.ColdStarts, r.DuplicateEvents, r.DuplicateSubmissions, r.ConflictsRefused, r.ListingChanges, r.Cancels)
	if r.DynamoDBRestart != "" {
		fmt.Fprintf(&b, ", DynamoDB restarted (%s)", r.DynamoDBRestart)
	}
	b.WriteString("\n")
	if r.OK() {
		b.WriteString("no violations: nothing lost, no duplicate outputs, no double counts, every job finished exactly once\n")
		return b.String()
	}
	fmt.Fprintf(&b, "%d VIOLATIONS (seed %d replays this workload and fault mix):\n", r.ViolationCount(), r.Seed)
	kinds := make([]string, 0, len(r.Violations))
	for k := range r.Violations {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %s: %d\n", k, r.ViolationsByKind[k])
		for _, v := range r.Violations[k] {
			fmt.Fprintf(&b, "    %s\n", v)
		}
	}
	return b.String()
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func sortedCounts64(m map[string]int64) string {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = int(v)
	}
	return sortedCounts(c)
}
