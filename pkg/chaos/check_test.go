package chaos

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// The judge is tested on a small observation made by hand that keeps every guarantee;
// each case breaks one thing and asserts the violations it must give, exactly.

const (
	goodKey  = "ev/d00/f000001.txt"                    // an event file that succeeded
	badKey   = "ev/d01/f000002.exe"                    // poison: Rejected
	overKey  = "ev/d02/f000003.log.gz"                 // written twice; the newest succeeded
	goneKey  = "ev/d03/f000004.txt"                    // deleted before it was read: NoSuchKey
	aKey     = "prefix-0/d0/e0/f000000.txt"            // prefix-0's good file
	bKey     = "prefix-0/d1/e0/f000001-corrupt.log.gz" // prefix-0's poison file
	zipKey   = "archives/archive-0.zip"
	itemName = "e0/item-00000.txt"
	splitKey = "splits/split-0.jsonl"
)

func good(etag, versionID, outKey, body string, notified bool) version {
	return version{etag: etag, versionID: versionID, notified: notified, content: content{outKey: outKey, outSHA: sha([]byte(body))}}
}

func poison(etag, code string, notified bool) version {
	return version{etag: etag, notified: notified, content: content{code: code}}
}

func record(key string, status ledger.Status, etag, versionID, code string) ledger.Record {
	return ledger.Record{Bucket: "ingest", Key: key, Status: status, ETag: etag, VersionID: versionID, Code: code}
}

func okLine(key string) job.Line {
	return job.Line{Bucket: "ingest", Key: key, Status: job.Succeeded, HTTPStatus: 200, Message: "s3://output/out/" + key}
}

func failLine(key, code, msg string) job.Line {
	return job.Line{Bucket: "ingest", Key: key, Status: job.Failed, ErrorCode: code, HTTPStatus: failure.StatusOf(code), Message: msg}
}

// finishedJob is a job that finished as status with final counts, reported with lines
// and notified once.
func finishedJob(p *jobPlan, status ledger.JobStatus, final ledger.Counts, lines ...job.Line) jobObs {
	return jobObs{
		plan: p, found: true, counts: final, lines: lines,
		job: ledger.Job{ID: p.spec.ID, Status: status, Notified: true, Final: final,
			Report: "s3://output/out/reports/" + p.spec.ID + "/manifest.json"},
		notifications: []job.Notification{{JobID: p.spec.ID, Status: string(status)}},
	}
}

// consistent is an observation that keeps every guarantee: four event files (a good one
// succeeded, a poison one failed with its code, one written twice whose newest version
// succeeded, one deleted and failed NoSuchKey), a prefix job, an archive job and a split
// job, each COMPLETE, notified once, its report its counts.
func consistent() *observed {
	o := &observed{
		inputs: map[string]*input{}, members: map[string]member{}, records: map[string]ledger.Record{},
		outputs: map[string]object{}, dlqKeys: map[string]int{}, outputPrefix: "out/", ingest: "ingest", output: "output",
	}

	o.inputs[goodKey] = &input{key: goodKey, versions: []version{good("e-good", "v-good", goodKey, "good", true)}}
	o.records[goodKey] = record(goodKey, ledger.StatusSucceeded, "e-good", "v-good", "")
	o.outputs["out/"+goodKey] = object{sha: sha([]byte("good")), revision: "v:v-good"}

	o.inputs[badKey] = &input{key: badKey, versions: []version{poison("e-bad", failure.Rejected, true)}}
	o.records[badKey] = record(badKey, ledger.StatusFailed, "e-bad", "", failure.Rejected)

	over := "ev/d02/f000003.log"
	o.inputs[overKey] = &input{key: overKey, versions: []version{
		good("e-over1", "", over, "over 1", true), good("e-over2", "", over, "over 2", true)}}
	o.records[overKey] = record(overKey, ledger.StatusSucceeded, "e-over2", "", "")
	o.outputs["out/"+over] = object{sha: sha([]byte("over 2")), revision: "e:e-over2"}

	o.inputs[goneKey] = &input{key: goneKey, versions: []version{good("e-gone", "", goneKey, "gone", true)}, deleted: true}
	o.records[goneKey] = record(goneKey, ledger.StatusFailed, "e-gone", "", failure.NoSuchKey)

	// prefix-0 lists its two files (preloaded, no events): one succeeds, one fails.
	prefix := &jobPlan{name: "prefix-0", spec: job.Spec{ID: "chaos-1-prefix-0", Kind: job.KindPrefix, Bucket: "ingest", Key: "prefix-0/"},
		want: []ledger.JobStatus{ledger.JobComplete}, listed: 2, failed: 1, files: []string{aKey, bKey}}
	o.inputs[aKey] = &input{key: aKey, versions: []version{good("e-a", "", aKey, "a", false)}, jobs: []string{"prefix-0"}}
	o.records[aKey] = record(aKey, ledger.StatusSucceeded, "e-a", "", "")
	o.outputs["out/"+aKey] = object{sha: sha([]byte("a")), revision: "e:e-a"}
	o.inputs[bKey] = &input{key: bKey, versions: []version{poison("e-b", failure.Corrupt, false)}, jobs: []string{"prefix-0"}}
	o.records[bKey] = record(bKey, ledger.StatusFailed, "e-b", "", failure.Corrupt)
	o.jobs = append(o.jobs, finishedJob(prefix, ledger.JobComplete,
		ledger.Counts{Expected: 1, Done: 1, Listed: 2, Succeeded: 1, Failed: 1},
		okLine(aKey), failLine(bKey, failure.Corrupt, "not gzip")))
	o.outputs["out/reports/chaos-1-prefix-0/results/succeeded.csv"] = object{}

	// archive-0: a good entry, one refused (named by its line's reason), one corrupt.
	archive := &jobPlan{name: "archive-0", spec: job.Spec{ID: "chaos-1-archive-0", Kind: job.KindArchive, Bucket: "ingest", Key: zipKey},
		want: []ledger.JobStatus{ledger.JobComplete}, listed: 3, failed: 2}
	escape := "../../escape-archive-0.txt"
	for _, m := range []member{
		{zipKey: zipKey, name: itemName, outSHA: sha([]byte("item"))},
		{zipKey: zipKey, name: escape, code: failure.InvalidEntry},
		{zipKey: zipKey, name: "e0/broken.log.gz", code: failure.Corrupt},
	} {
		o.members[zipKey+"!/"+m.name] = m
	}
	o.outputs["out/"+zipKey+"!/"+itemName] = object{sha: sha([]byte("item")), revision: "e:e-zip"}
	o.jobs = append(o.jobs, finishedJob(archive, ledger.JobComplete,
		ledger.Counts{Expected: 1, Done: 1, Listed: 3, Succeeded: 1, Failed: 2},
		okLine(zipKey+"!/"+itemName),
		failLine(zipKey+"!/e0/broken.log.gz", failure.Corrupt, "not gzip"),
		failLine(zipKey, failure.InvalidEntry, `entry "`+escape+`" leaves its folder`)))

	// split-0: three parts, merged back into the input's bytes.
	split := &jobPlan{name: "split-0", spec: job.Spec{ID: "chaos-1-split-0", Kind: job.KindSplit, Bucket: "ingest", Key: splitKey, Parts: 3},
		want: []ledger.JobStatus{ledger.JobComplete}, listed: 3, splitKey: splitKey, splitSHA: sha([]byte("split"))}
	o.outputs["out/"+splitKey] = object{sha: sha([]byte("split")), revision: "e:e-split"}
	o.jobs = append(o.jobs, finishedJob(split, ledger.JobComplete,
		ledger.Counts{Expected: 4, Done: 4, Listed: 3, Succeeded: 3},
		okLine(splitKey+"#bytes=0-9"), okLine(splitKey+"#bytes=10-19"), okLine(splitKey+"#bytes=20-29")))
	return o
}

// addStopped adds a job that stopped as status (over its tolerance, or cancelled): one
// file failed and is reported; the other was processed but never committed, and has no
// record.
func addStopped(o *observed, status ledger.JobStatus) {
	p := &jobPlan{name: "tolerance", spec: job.Spec{ID: "chaos-1-tolerance", Kind: job.KindPrefix, Bucket: "ingest", Key: "tolerance/"},
		want: []ledger.JobStatus{ledger.JobFailed, ledger.JobCancelled}, listed: -1}
	a, b := "tolerance/d0/e0/f000000.exe", "tolerance/d0/e0/f000001.txt"
	o.inputs[a] = &input{key: a, versions: []version{poison("e-ta", failure.Rejected, false)}, jobs: []string{p.name}}
	o.records[a] = record(a, ledger.StatusFailed, "e-ta", "", failure.Rejected)
	o.inputs[b] = &input{key: b, versions: []version{good("e-tb", "", b, "tb", false)}, jobs: []string{p.name}}
	o.outputs["out/"+b] = object{sha: sha([]byte("tb")), revision: "e:e-tb"}
	o.jobs = append(o.jobs, finishedJob(p, status, ledger.Counts{Expected: 2, Done: 1, Listed: 2, Failed: 1},
		failLine(a, failure.Rejected, "rejected by rule")))
}

func jobOf(o *observed, name string) *jobObs {
	for i := range o.jobs {
		if o.jobs[i].plan.name == name {
			return &o.jobs[i]
		}
	}
	panic("check_test: the fixture has no job " + name + " (a mistyped name in the test)")
}

func setRecord(o *observed, key string, f func(*ledger.Record)) {
	r := o.records[key]
	f(&r)
	o.records[key] = r
}

func setOutput(o *observed, key string, f func(*object)) {
	obj := o.outputs[key]
	f(&obj)
	o.outputs[key] = obj
}

// The consistent observation is OK, every input and entry accounted for.
func TestJudgeConsistent(t *testing.T) {
	r := judge(consistent())
	assert.True(t, r.OK(), "violations: %v", r.Violations)
	assert.Equal(t, &Report{
		Inputs: 6, Versions: 7, Superseded: 1, Deleted: 1, Members: 3,
		Succeeded: 3, Failed: 3, FailedByCode: map[string]int{failure.Rejected: 1, failure.Corrupt: 1, failure.NoSuchKey: 1},
		MembersAccounted: 3, AccountedPercent: 100, OutputsChecked: 4,
		Jobs: 3, JobsByStatus: map[string]int{string(ledger.JobComplete): 3},
	}, r)
}

// Each case breaks one guarantee; the judge must give exactly these violations.
func TestJudgeViolations(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(o *observed)
		want   map[string]int // violations by kind, exactly
		says   string         // in one of the violations
		then   func(t *testing.T, r *Report)
	}{
		// Inputs.
		{
			name:   "an input with no record is lost",
			mutate: func(o *observed) { delete(o.records, goodKey); delete(o.outputs, "out/"+goodKey) },
			want:   map[string]int{"lost": 1}, says: goodKey + ": no final record",
			then: func(t *testing.T, r *Report) {
				assert.Equal(t, 1, r.Lost)
				assert.Less(t, r.AccountedPercent, 100.0)
			},
		},
		{
			name: "a record still retrying is lost",
			mutate: func(o *observed) {
				setRecord(o, badKey, func(r *ledger.Record) { r.Status, r.Code = ledger.StatusRetrying, "" })
			},
			want: map[string]int{"lost": 1}, says: `no final record (status "RETRYING")`,
		},
		{
			name: "the newest version with no outcome is lost; the older one's output is stray",
			mutate: func(o *observed) {
				setRecord(o, overKey, func(r *ledger.Record) { r.ETag = "e-over1" })
				o.outputs["out/ev/d02/f000003.log"] = object{sha: sha([]byte("over 1")), revision: "e:e-over1"}
			},
			want: map[string]int{"lost": 1, "stray output": 1}, says: "its newest version (ETag e-over2) has no outcome",
		},
		{
			name: "a file of a stopped job that has its own event is lost, not skipped",
			mutate: func(o *observed) {
				addStopped(o, ledger.JobFailed)
				o.inputs["tolerance/d0/e0/f000001.txt"].versions[0].notified = true
				delete(o.outputs, "out/tolerance/d0/e0/f000001.txt")
			},
			want: map[string]int{"lost": 1}, says: "notified true",
		},
		{
			name: "a deleted job file its report names is lost, not deleted before listing",
			mutate: func(o *observed) {
				k := "prefix-0/d2/e0/f000002.txt"
				o.inputs[k] = &input{key: k, versions: []version{good("e-c", "", k, "c", false)}, deleted: true, jobs: []string{"prefix-0"}}
				jo := jobOf(o, "prefix-0")
				jo.lines = append(jo.lines, failLine(k, failure.NoSuchKey, "deleted"))
				jo.job.Final.Failed++
				jo.counts.Failed++
				jo.plan.failed++
			},
			want: map[string]int{"lost": 1}, says: "reported true",
		},
		{
			name:   "a deleted event file with no record is lost (its event must end in an outcome)",
			mutate: func(o *observed) { delete(o.records, goneKey) },
			want:   map[string]int{"lost": 1}, says: goneKey + ": no final record",
		},
		{
			name: "a job's file (not deleted) with no record and in no report is lost",
			mutate: func(o *observed) {
				k := "prefix-0/d2/e0/f000002.txt"
				o.inputs[k] = &input{key: k, versions: []version{good("e-c", "", k, "c", false)}, jobs: []string{"prefix-0"}}
			},
			want: map[string]int{"lost": 1}, says: "prefix-0/d2/e0/f000002.txt: no final record",
		},
		{
			name:   "a record naming an ETag never written",
			mutate: func(o *observed) { setRecord(o, goneKey, func(r *ledger.Record) { r.ETag = "e-never" }) },
			want:   map[string]int{"wrong outcome": 1}, says: "the record names ETag e-never, never written",
		},
		{
			name: "a poison file succeeded",
			mutate: func(o *observed) {
				setRecord(o, badKey, func(r *ledger.Record) { r.Status, r.Code = ledger.StatusSucceeded, "" })
			},
			want: map[string]int{"wrong outcome": 1}, says: "poison (Rejected) succeeded",
		},
		{
			name:   "a poison file failed with another code",
			mutate: func(o *observed) { setRecord(o, badKey, func(r *ledger.Record) { r.Code = failure.Internal }) },
			want:   map[string]int{"wrong outcome": 1}, says: "failed with " + failure.Internal + ", want Rejected",
		},
		{
			name: "a good file failed",
			mutate: func(o *observed) {
				setRecord(o, goodKey, func(r *ledger.Record) { r.Status, r.Code = ledger.StatusFailed, failure.Internal })
				delete(o.outputs, "out/"+goodKey)
			},
			want: map[string]int{"wrong outcome": 1}, says: "a good file failed",
		},
		{
			name: "a good file that was not deleted failed NoSuchKey",
			mutate: func(o *observed) {
				setRecord(o, goodKey, func(r *ledger.Record) { r.Status, r.Code = ledger.StatusFailed, failure.NoSuchKey })
				delete(o.outputs, "out/"+goodKey)
			},
			want: map[string]int{"wrong outcome": 1}, says: "a good file failed: NoSuchKey",
		},
		{
			name:   "a succeeded file's output is missing",
			mutate: func(o *observed) { delete(o.outputs, "out/"+goodKey) },
			want:   map[string]int{"wrong output": 1}, says: "does not exist",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 1, r.WrongOutputs) },
		},
		{
			name:   "an output with other bytes",
			mutate: func(o *observed) { setOutput(o, "out/"+goodKey, func(x *object) { x.sha = sha([]byte("tampered")) }) },
			want:   map[string]int{"wrong output": 1}, says: "has other bytes than its version e-good makes",
		},
		{
			name: "an output saying an older revision (it landed last)",
			mutate: func(o *observed) {
				setOutput(o, "out/ev/d02/f000003.log", func(x *object) { x.revision = "e:e-over1" })
			},
			want: map[string]int{"wrong output": 1}, says: `says revision "e:e-over1"`,
		},
		{
			name:   "an output saying another version id",
			mutate: func(o *observed) { setOutput(o, "out/"+goodKey, func(x *object) { x.revision = "v:v-other" }) },
			want:   map[string]int{"wrong output": 1}, says: `says revision "v:v-other", the record "v:v-good"`,
		},
		{
			name: "an output no input accounts for",
			mutate: func(o *observed) {
				o.outputs["out/ev/d00/f000001.txt.copy"] = object{sha: sha([]byte("good")), revision: "v:v-good"}
			},
			want: map[string]int{"stray output": 1}, says: "no input's outcome accounts for it",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 1, r.StrayOutputs) },
		},
		{
			name:   "a poison file's output",
			mutate: func(o *observed) { o.outputs["out/"+badKey] = object{revision: "e:e-bad"} },
			want:   map[string]int{"stray output": 1}, says: badKey,
		},

		// Jobs.
		{
			name: "a job never created",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.found, jo.job, jo.lines, jo.notifications = false, ledger.Job{}, nil, nil
			},
			want: map[string]int{"job": 1}, says: "prefix-0 (chaos-1-prefix-0): never created",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 1, r.JobsNeverFinished) },
		},
		{
			name: "a job still running",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.job.Status, jo.job.Notified = ledger.JobRunning, false
			},
			want: map[string]int{"job": 1}, says: "never finished (status RUNNING",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 1, r.JobsNeverFinished) },
		},
		{
			name:   "a job finished but never reported and notified",
			mutate: func(o *observed) { jobOf(o, "prefix-0").job.Notified = false },
			want:   map[string]int{"job": 1}, says: "never finished (status COMPLETE, notified false",
		},
		{
			name: "a job ended with a status its plan does not allow",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.job.Status, jo.job.Reason = ledger.JobFailed, "over the tolerance"
				jo.notifications[0].Status = string(ledger.JobFailed)
			},
			want: map[string]int{"job": 1}, says: "FAILED (over the tolerance), want [COMPLETE]",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 1, r.JobsWrongStatus) },
		},
		{
			name:   "a job's reason does not say why",
			mutate: func(o *observed) { jobOf(o, "prefix-0").plan.reason = "over the tolerance" },
			want:   map[string]int{"job": 1}, says: `reason "" does not say "over the tolerance"`,
			then: func(t *testing.T, r *Report) { assert.Equal(t, 1, r.JobsWrongStatus) },
		},
		{
			name:   "a job with no notification",
			mutate: func(o *observed) { jobOf(o, "prefix-0").notifications = nil },
			want:   map[string]int{"job": 1}, says: "no notification",
		},
		{
			name:   "a job notified as another status",
			mutate: func(o *observed) { jobOf(o, "prefix-0").notifications[0].Status = string(ledger.JobCancelled) },
			want:   map[string]int{"job": 1}, says: "finished as COMPLETE, notified as map[CANCELLED:1]",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 1, r.JobsFinishedTwice) },
		},
		{
			name: "a job finished twice (notified as two statuses)",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.notifications = append(jo.notifications, job.Notification{JobID: jo.plan.spec.ID, Status: string(ledger.JobFailed)})
			},
			want: map[string]int{"job": 1}, says: "notified as map[COMPLETE:1 FAILED:1]",
			then: func(t *testing.T, r *Report) {
				assert.Equal(t, 1, r.JobsFinishedTwice)
				assert.Zero(t, r.DuplicateNotifications)
			},
		},
		{
			name:   "a job's report cannot be read",
			mutate: func(o *observed) { jo := jobOf(o, "prefix-0"); jo.reportErr, jo.lines = "no report", nil },
			want:   map[string]int{"job": 1}, says: "report: no report",
		},
		{
			name:   "a file twice in a report",
			mutate: func(o *observed) { jo := jobOf(o, "prefix-0"); jo.lines = append(jo.lines, jo.lines[0]) },
			// once for the repeated line, once for more lines than counted files
			want: map[string]int{"double count": 2}, says: "ingest/" + aKey + "@ is in the report 2 times",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 2, r.DoubleCounts) },
		},
		{
			name: "the same refused archive entry twice in a report",
			mutate: func(o *observed) {
				jo := jobOf(o, "archive-0")
				jo.lines = append(jo.lines, jo.lines[2])
				jo.job.Final.Failed++
				jo.counts.Failed++
				jo.plan.failed++
			},
			want: map[string]int{"double count": 1}, says: "is in the report 2 times",
		},
		{
			name: "a report with more lines than counted files",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.lines = append(jo.lines, okLine("prefix-0/d2/e0/f000002.txt"))
			},
			want: map[string]int{"double count": 1}, says: "3 report lines for 2 counted files",
		},
		{
			name:   "a report line missing",
			mutate: func(o *observed) { jo := jobOf(o, "prefix-0"); jo.lines = jo.lines[:1] },
			// fewer lines than counted files, and the planned file not in the report
			want: map[string]int{"report": 2}, says: "1 report lines for 2 counted files",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 2, r.ReportLinesMissing) },
		},
		{
			name:   "a report naming counted tasks whose lines were missing",
			mutate: func(o *observed) { jobOf(o, "prefix-0").job.ReportMissing = 1 },
			want:   map[string]int{"report": 1}, says: "names 1 counted tasks whose lines were missing",
		},
		{
			name:   "a planned file not in the report (another in its place)",
			mutate: func(o *observed) { jobOf(o, "prefix-0").lines[1].Key = "prefix-0/d1/e0/other.log.gz" },
			want:   map[string]int{"report": 1}, says: bKey + " is not in the report",
		},
		{
			name: "counts doubled after the job finished",
			mutate: func(o *observed) {
				c := &jobOf(o, "prefix-0").counts
				c.Expected, c.Done, c.Listed, c.Succeeded, c.Failed = 2*c.Expected, 2*c.Done, 2*c.Listed, 2*c.Succeeded, 2*c.Failed
			},
			want: map[string]int{"double count": 1}, says: "2 files counted after it finished COMPLETE with 2",
			then: func(t *testing.T, r *Report) { assert.Equal(t, 2, r.DoubleCounts) },
		},
		{
			name:   "counts that went back after the job finished",
			mutate: func(o *observed) { jobOf(o, "prefix-0").counts.Succeeded = 0 },
			want:   map[string]int{"double count": 1}, says: "-1 files counted after it finished",
			then: func(t *testing.T, r *Report) { assert.Zero(t, r.DoubleCounts) },
		},
		{
			name: "a job COMPLETE with tasks outstanding",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.job.Final.Done, jo.counts.Done = 0, 0
			},
			want: map[string]int{"job": 1}, says: "COMPLETE with 0 of 1 tasks done",
		},
		{
			name: "a job that listed other than its files",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.job.Final.Listed, jo.counts.Listed = 3, 3
			},
			want: map[string]int{"job": 1}, says: "listed 3 files, want 2",
		},
		{
			name:   "a job with other than its failures",
			mutate: func(o *observed) { jobOf(o, "prefix-0").plan.failed = 2 },
			want:   map[string]int{"job": 1}, says: "1 files failed, want 2",
		},
		{
			name: "a split job's merged output with other bytes",
			mutate: func(o *observed) {
				setOutput(o, "out/"+splitKey, func(x *object) { x.sha = sha([]byte("parts out of order")) })
			},
			want: map[string]int{"wrong output": 1}, says: "the merged output out/" + splitKey + " is missing or not the input's bytes",
		},
		{
			name:   "a split job's merged output missing",
			mutate: func(o *observed) { delete(o.outputs, "out/"+splitKey) },
			want:   map[string]int{"wrong output": 1}, says: "the merged output",
		},

		// Archive entries.
		{
			name: "an archive entry not in its job's report",
			mutate: func(o *observed) {
				jo := jobOf(o, "archive-0")
				jo.lines = jo.lines[1:]
				jo.job.Final.Succeeded, jo.counts.Succeeded = 0, 0
				delete(o.outputs, "out/"+zipKey+"!/"+itemName)
			},
			want: map[string]int{"lost": 1}, says: "entry " + zipKey + "!/" + itemName + " is not in its job's report",
			then: func(t *testing.T, r *Report) {
				assert.Equal(t, 2, r.MembersAccounted)
				assert.Less(t, r.AccountedPercent, 100.0)
			},
		},
		{
			name:   "a refused entry whose line does not name it",
			mutate: func(o *observed) { jobOf(o, "archive-0").lines[2].Message = "bad entry" },
			want:   map[string]int{"lost": 1}, says: "escape-archive-0.txt is not in its job's report",
		},
		{
			name: "an entry that must fail succeeded",
			mutate: func(o *observed) {
				l := &jobOf(o, "archive-0").lines[1]
				l.Status, l.ErrorCode, l.HTTPStatus = job.Succeeded, "", 200
			},
			want: map[string]int{"wrong outcome": 1}, says: "want Failed CorruptContent",
		},
		{
			name: "a good entry failed",
			mutate: func(o *observed) {
				l := &jobOf(o, "archive-0").lines[0]
				l.Status, l.ErrorCode = job.Failed, failure.Internal
			},
			want: map[string]int{"wrong outcome": 1}, says: "entry " + zipKey + "!/" + itemName + " failed: " + failure.Internal,
		},
		{
			name: "an entry's output with other bytes",
			mutate: func(o *observed) {
				setOutput(o, "out/"+zipKey+"!/"+itemName, func(x *object) { x.sha = sha([]byte("other")) })
			},
			want: map[string]int{"wrong output": 1}, says: "missing or not the entry's bytes",
		},
		{
			name:   "an entry's output missing",
			mutate: func(o *observed) { delete(o.outputs, "out/"+zipKey+"!/"+itemName) },
			want:   map[string]int{"wrong output": 1}, says: "missing or not the entry's bytes",
		},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := consistent()
			c.mutate(o)
			r := judge(o)
			assert.False(t, r.OK())
			assert.Equal(t, c.want, r.ViolationsByKind, "violations: %v", r.Violations)
			var all []string
			for _, vs := range r.Violations {
				all = append(all, vs...)
			}
			assert.True(t, slices.ContainsFunc(all, func(v string) bool { return strings.Contains(v, c.says) }),
				"no violation says %q: %v", c.says, r.Violations)
			if c.then != nil {
				c.then(t, r)
			}
		})
		for k := range c.want {
			covered[k] = true
		}
	}

	// Every kind the judge can give is exercised above (the harness's own, "run" and
	// "harness", are not the judge's).
	src, err := os.ReadFile("check.go")
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`r\.violate\("([^"]+)"`).FindAllStringSubmatch(string(src), -1) {
		if k := m[1]; k != "run" && k != "harness" {
			assert.True(t, covered[k], "no case gives a %q violation", k)
		}
	}
}

// What looks like a fault but is not one: accounted for, counted, no violation.
func TestJudgeAccounted(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(o *observed)
		check  func(t *testing.T, r *Report)
	}{
		{
			name: "a file in the task DLQ with no final record, and its unfinished output",
			mutate: func(o *observed) {
				delete(o.records, goodKey)
				o.dlqKeys[goodKey] = 1
			},
			check: func(t *testing.T, r *Report) {
				assert.Equal(t, 1, r.InDLQ)
				assert.Zero(t, r.Lost)
				assert.Equal(t, 1, r.UnfinishedOutputs)
				assert.Zero(t, r.StrayOutputs)
				assert.Equal(t, 2, r.Succeeded)
				assert.Equal(t, 100.0, r.AccountedPercent)
			},
		},
		{
			name: "an output naming another version of the same content (a job's listed file and the event of that content share one record)",
			mutate: func(o *observed) {
				in := o.inputs[goodKey]
				in.versions = append([]version{good("e-good", "v-same", goodKey, "good", true)}, in.versions...)
				setRecord(o, goodKey, func(r *ledger.Record) { r.VersionID = "" }) // the record is "e:e-good"
				setOutput(o, "out/"+goodKey, func(x *object) { x.revision = "v:v-same" })
			},
			check: func(t *testing.T, r *Report) { assert.Zero(t, r.WrongOutputs) },
		},
		{
			name: "a dead-lettered record, and its unfinished output",
			mutate: func(o *observed) {
				setRecord(o, goodKey, func(r *ledger.Record) { r.Status = ledger.StatusDeadLettered })
			},
			check: func(t *testing.T, r *Report) {
				assert.Equal(t, 1, r.InDLQ)
				assert.Equal(t, 1, r.UnfinishedOutputs)
				assert.Equal(t, 100.0, r.AccountedPercent)
			},
		},
		{
			name: "a job's file deleted before its job listed it",
			mutate: func(o *observed) {
				k := "prefix-0/d2/e0/f000002.txt"
				o.inputs[k] = &input{key: k, versions: []version{good("e-c", "", k, "c", false)}, deleted: true, jobs: []string{"prefix-0"}}
			},
			check: func(t *testing.T, r *Report) {
				assert.Equal(t, 1, r.DeletedUnlisted)
				assert.Equal(t, 2, r.Deleted)
				assert.Zero(t, r.Lost)
				assert.Equal(t, 100.0, r.AccountedPercent)
			},
		},
		{
			name:   "a failed job's files without a record are skipped; their outputs unfinished",
			mutate: func(o *observed) { addStopped(o, ledger.JobFailed) },
			check: func(t *testing.T, r *Report) {
				assert.Equal(t, 1, r.Skipped)
				assert.Equal(t, 1, r.UnfinishedOutputs)
				assert.Zero(t, r.StrayOutputs)
				assert.Equal(t, 4, r.Failed)
				assert.Equal(t, 1, r.JobsByStatus[string(ledger.JobFailed)])
				assert.Equal(t, 100.0, r.AccountedPercent)
			},
		},
		{
			name:   "a cancelled job's files without a record are skipped",
			mutate: func(o *observed) { addStopped(o, ledger.JobCancelled) },
			check: func(t *testing.T, r *Report) {
				assert.Equal(t, 1, r.Skipped)
				assert.Equal(t, 1, r.UnfinishedOutputs)
				assert.Equal(t, 1, r.JobsByStatus[string(ledger.JobCancelled)])
			},
		},
		{
			name: "a repeated notification (SNS is at least once)",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.notifications = append(jo.notifications, jo.notifications[0])
			},
			check: func(t *testing.T, r *Report) { assert.Equal(t, 1, r.DuplicateNotifications) },
		},
		{
			name: "a deleted key whose record is for an older version",
			mutate: func(o *observed) {
				o.inputs[overKey].deleted = true
				setRecord(o, overKey, func(r *ledger.Record) { r.ETag = "e-over1" })
				o.outputs["out/ev/d02/f000003.log"] = object{sha: sha([]byte("over 1")), revision: "e:e-over1"}
			},
			check: func(t *testing.T, r *Report) {
				assert.Equal(t, 2, r.Deleted)
				assert.Equal(t, 3, r.Succeeded)
			},
		},
		{
			name: "a deleted poison file failed NoSuchKey (the GET comes before the rules)",
			mutate: func(o *observed) {
				o.inputs[badKey].deleted = true
				setRecord(o, badKey, func(r *ledger.Record) { r.Code = failure.NoSuchKey })
			},
			check: func(t *testing.T, r *Report) { assert.Equal(t, 2, r.FailedByCode[failure.NoSuchKey]) },
		},
		{
			name: "two refused archive entries, told apart by their reasons, are not one counted twice",
			mutate: func(o *observed) {
				other := "/abs/other.txt"
				o.members[zipKey+"!/"+other] = member{zipKey: zipKey, name: other, code: failure.InvalidEntry}
				jo := jobOf(o, "archive-0")
				jo.lines = append(jo.lines, failLine(zipKey, failure.InvalidEntry, `entry "`+other+`" is absolute`))
				jo.job.Final.Failed++
				jo.job.Final.Listed++
				jo.counts = jo.job.Final
				jo.plan.failed++
				jo.plan.listed++
			},
			check: func(t *testing.T, r *Report) {
				assert.Zero(t, r.DoubleCounts)
				assert.Equal(t, 4, r.MembersAccounted)
			},
		},
		{
			name: "each archive job accounts for its own entries only",
			mutate: func(o *observed) {
				zip1, name := "archives/archive-1.zip", "e1/only.txt"
				o.members[zip1+"!/"+name] = member{zipKey: zip1, name: name, outSHA: sha([]byte("only"))}
				o.outputs["out/"+zip1+"!/"+name] = object{sha: sha([]byte("only"))}
				p := &jobPlan{name: "archive-1", spec: job.Spec{ID: "chaos-1-archive-1", Kind: job.KindArchive, Bucket: "ingest", Key: zip1},
					want: []ledger.JobStatus{ledger.JobComplete}, listed: 1}
				o.jobs = append(o.jobs, finishedJob(p, ledger.JobComplete,
					ledger.Counts{Expected: 1, Done: 1, Listed: 1, Succeeded: 1}, okLine(zip1+"!/"+name)))
			},
			check: func(t *testing.T, r *Report) {
				assert.Equal(t, 4, r.Members)
				assert.Equal(t, 4, r.MembersAccounted)
				assert.Equal(t, 5, r.OutputsChecked)
			},
		},
		{
			name:   "an output naming the ETag where the record also has a version id",
			mutate: func(o *observed) { setOutput(o, "out/"+goodKey, func(x *object) { x.revision = "e:e-good" }) },
			check:  func(t *testing.T, r *Report) { assert.Equal(t, 4, r.OutputsChecked) },
		},
		{
			name: "report objects are not outputs; split scratch is counted, not stray",
			mutate: func(o *observed) {
				o.outputs["out/reports/chaos-1-prefix-0/parts/t1.csv"] = object{}
				o.outputs["out/"+splitKey+".parts/0"] = object{sha: sha([]byte("part"))}
			},
			check: func(t *testing.T, r *Report) {
				assert.Equal(t, 1, r.ScratchLeft)
				assert.Zero(t, r.StrayOutputs)
			},
		},
		{
			name: "a job whose listing changed is not held to its planned counts",
			mutate: func(o *observed) {
				jo := jobOf(o, "prefix-0")
				jo.plan.listed, jo.plan.failed = -1, 0
				jo.job.Final.Listed, jo.counts.Listed = 5, 5
				jo.plan.files = append(jo.plan.files, "prefix-0/d2/e0/f000002.txt")
			},
			check: func(t *testing.T, r *Report) { assert.Zero(t, r.ReportLinesMissing) },
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := consistent()
			c.mutate(o)
			r := judge(o)
			assert.True(t, r.OK(), "violations: %v", r.Violations)
			c.check(t, r)
		})
	}
}
