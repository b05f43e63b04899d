package chaos

import (
	"slices"
	"sort"
	"strings"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// check turns the observation into the report, with the run's own facts.
func (h *harness) check(o *observed) *Report {
	r := judge(o)
	r.Seed, r.Files = h.cfg.Seed, h.cfg.Files
	r.WallSeconds = h.settledAt.Sub(h.started).Seconds()
	r.Settled = h.settleReason
	if h.settleReason != "settled" {
		r.violate("run", "did not settle: %s", h.settleReason)
	}
	r.Faults, r.AWSCalls, r.FaultDetail = h.inj.injected()
	stats := h.st.Stats()
	r.Kills, r.Invocations, r.ColdStarts = h.kills.Load(), stats.Invocations, stats.ColdStarts
	r.DuplicateEvents = h.st.Bridge.Duplicated.Load()
	r.OperatorRedrives, r.Redriven = h.operatorRedrives, h.redriven.Load()
	r.DuplicateSubmissions, r.ConflictsRefused = h.dupSubmits.Load(), h.refusedConflicts.Load()
	r.ListingChanges, r.Cancels = h.listingChanges.Load(), h.cancelled.Load()
	h.dynamoMu.Lock()
	r.DynamoDBRestart = h.dynamoRestart
	h.dynamoMu.Unlock()
	h.actorErrMu.Lock()
	for _, e := range h.actorErrs {
		r.violate("harness", "%s", e)
	}
	h.actorErrMu.Unlock()
	return r
}

// judge accounts for every input, member, split and job of the observation.
func judge(o *observed) *Report {
	r := &Report{FailedByCode: map[string]int{}, JobsByStatus: map[string]int{}}
	expected := map[string]bool{}   // output keys some input accounts for
	unfinished := map[string]bool{} // output keys of inputs with no final record
	markUnfinished := func(in *input) {
		for _, v := range in.versions {
			unfinished[o.outputPrefix+v.outKey] = true
		}
	}

	// A job that stopped (failed over its tolerance, cancelled) skips its remaining
	// files: those it alone had are accounted for by its stop.
	stopped := map[string]bool{}
	for _, jo := range o.jobs {
		if jo.found && (jo.job.Status == ledger.JobFailed || jo.job.Status == ledger.JobCancelled) {
			stopped[jo.plan.name] = true
		}
	}
	// Each job's report lines, by key.
	reported := map[string]map[string]job.Line{}
	for _, jo := range o.jobs {
		m := map[string]job.Line{}
		for _, l := range jo.lines {
			m[l.Key] = l
		}
		reported[jo.plan.name] = m
	}
	keys := make([]string, 0, len(o.inputs))
	for k := range o.inputs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		in := o.inputs[k]
		r.Inputs++
		r.Versions += len(in.versions)
		r.Superseded += len(in.versions) - 1
		if in.deleted {
			r.Deleted++
		}
		rec, newest := o.records[k], in.newest()
		switch {
		case !final(rec.Status) && o.dlqKeys[k] > 0:
			r.InDLQ++
			markUnfinished(in)
			continue
		case !final(rec.Status) && !in.notified() && len(in.jobs) > 0 && allStopped(in.jobs, stopped):
			r.Skipped++
			markUnfinished(in)
			continue
		case !final(rec.Status) && in.deleted && !in.notified() && !inReports(k, in.jobs, reported):
			// A job's file deleted before its job listed it: nothing ever named it.
			r.DeletedUnlisted++
			continue
		case !final(rec.Status):
			r.Lost++
			r.violate("lost", "%s: no final record (status %q) and not in a DLQ (deleted %v, notified %v, jobs %v, reported %v)",
				k, rec.Status, in.deleted, in.notified(), in.jobs, inReports(k, in.jobs, reported))
			continue
		case rec.Status == ledger.StatusDeadLettered:
			r.InDLQ++
			markUnfinished(in)
			continue
		case rec.ETag != newest.etag && !in.deleted:
			r.Lost++
			r.violate("lost", "%s: its newest version (ETag %s) has no outcome: the record is %s for ETag %s", k, newest.etag, rec.Status, rec.ETag)
			continue
		}
		v, ok := versionOf(in, rec.ETag)
		if !ok {
			r.violate("wrong outcome", "%s: the record names ETag %s, never written", k, rec.ETag)
			continue
		}
		switch rec.Status {
		case ledger.StatusSucceeded:
			r.Succeeded++
			if v.code != "" {
				r.violate("wrong outcome", "%s: poison (%s) succeeded", k, v.code)
				continue
			}
			out := o.outputPrefix + v.outKey
			expected[out] = true
			r.OutputsChecked++
			obj, ok := o.outputs[out]
			switch {
			case !ok:
				r.WrongOutputs++
				r.violate("wrong output", "%s: succeeded, but its output %s does not exist", k, out)
			case obj.sha != v.outSHA:
				r.WrongOutputs++
				r.violate("wrong output", "%s: output %s has other bytes than its version %s makes", k, out, rec.ETag)
			case obj.revision != task.MetaValue(rec.Rev().String()) && obj.revision != task.MetaValue("e:"+rec.ETag) &&
				!sameContentVersion(in, obj.revision, rec.ETag):
				r.WrongOutputs++
				r.violate("wrong output", "%s: output %s says revision %q, the record %q", k, out, obj.revision, rec.Rev().String())
			}
		case ledger.StatusFailed:
			r.Failed++
			r.FailedByCode[rec.Code]++
			switch {
			case in.deleted && rec.Code == failure.NoSuchKey:
				// Deleted before it was read, poison or not (the GET comes before the rules).
			case v.code != "" && rec.Code != v.code:
				r.violate("wrong outcome", "%s: failed with %s, want %s (%s)", k, rec.Code, v.code, rec.Reason)
			case v.code == "":
				r.violate("wrong outcome", "%s: a good file failed: %s: %s", k, rec.Code, rec.Reason)
			}
		}
	}

	judgeJobs(o, r, expected)

	for k, obj := range o.outputs {
		switch {
		case strings.HasPrefix(k, o.outputPrefix+"reports/"):
		case strings.Contains(k, ".parts/"):
			r.ScratchLeft++
		case !expected[k] && unfinished[k]:
			r.UnfinishedOutputs++
		case !expected[k]:
			r.StrayOutputs++
			r.violate("stray output", "%s (revision %q): no input's outcome accounts for it", k, obj.revision)
		}
	}
	r.DLQMessages, r.JobsDLQMessages = o.dlqMessages, o.jobsDLQMessages
	total := r.Inputs + r.Members
	if total > 0 {
		r.AccountedPercent = 100 * float64(r.Inputs-r.Lost+r.MembersAccounted) / float64(total)
	}
	return r
}

func inReports(key string, jobs []string, reported map[string]map[string]job.Line) bool {
	for _, j := range jobs {
		if _, ok := reported[j][key]; ok {
			return true
		}
	}
	return false
}

func allStopped(jobs []string, stopped map[string]bool) bool {
	for _, j := range jobs {
		if !stopped[j] {
			return false
		}
	}
	return true
}

// sameContentVersion: the output names a version of the key ("v:<id>") whose content is
// the record's (same ETag): a job's listed file and the S3 event of the same content
// share one record, and either may have written the output.
func sameContentVersion(in *input, revision, etag string) bool {
	id, ok := strings.CutPrefix(revision, "v:")
	if !ok {
		return false
	}
	for _, v := range in.versions {
		if task.MetaValue(v.versionID) == id {
			return v.etag == etag
		}
	}
	return false
}

func versionOf(in *input, etag string) (version, bool) {
	for i := len(in.versions) - 1; i >= 0; i-- {
		if in.versions[i].etag == etag {
			return in.versions[i], true
		}
	}
	return version{}, false
}

// judgeJobs checks every job: finished once, with the status its plan allows, one
// notification (at least once: SNS may repeat it), a report whose lines are its counts
// with no file twice, and nothing counted after it finished; archive members and split
// merges by their outputs.
func judgeJobs(o *observed, r *Report, expected map[string]bool) {
	for _, jo := range o.jobs {
		p, j := jo.plan, jo.job
		r.Jobs++
		name := p.name + " (" + p.spec.ID + ")"
		if !jo.found {
			r.JobsNeverFinished++
			r.violate("job", "%s: never created", name)
			continue
		}
		r.JobsByStatus[string(j.Status)]++
		if j.Status == ledger.JobRunning || !j.Notified {
			r.JobsNeverFinished++
			r.violate("job", "%s: never finished (status %s, notified %v, counts %+v)", name, j.Status, j.Notified, jo.counts)
			continue
		}
		if !slices.Contains(p.want, j.Status) {
			r.JobsWrongStatus++
			r.violate("job", "%s: %s (%s), want %v", name, j.Status, j.Reason, p.want)
		}
		if p.reason != "" && !strings.Contains(j.Reason, p.reason) {
			r.JobsWrongStatus++
			r.violate("job", "%s: reason %q does not say %q", name, j.Reason, p.reason)
		}
		statuses := map[string]int{}
		for _, n := range jo.notifications {
			statuses[n.Status]++
		}
		switch {
		case len(jo.notifications) == 0:
			r.violate("job", "%s: no notification", name)
		case len(statuses) > 1 || statuses[string(j.Status)] == 0:
			r.JobsFinishedTwice++
			r.violate("job", "%s: finished as %s, notified as %v", name, j.Status, statuses)
		default:
			r.DuplicateNotifications += len(jo.notifications) - 1
		}
		if jo.reportErr != "" {
			r.violate("job", "%s: report: %s", name, jo.reportErr)
			continue
		}
		// The report is the job's counts: every counted file once.
		seen := map[string]int{}
		for _, l := range jo.lines {
			id := l.Bucket + "/" + l.Key + "@" + l.VersionID
			if l.ErrorCode == failure.InvalidEntry { // bad rows and entries: told apart by their reasons (which name them)
				id += "#" + l.Message
			}
			seen[id]++
		}
		for line, n := range seen {
			if n > 1 {
				r.DoubleCounts += n - 1
				r.violate("double count", "%s: %s is in the report %d times", name, line, n)
			}
		}
		finished := j.Final.Finished()
		if int64(len(jo.lines)) < finished {
			r.ReportLinesMissing += int(finished) - len(jo.lines)
			r.violate("report", "%s: %d report lines for %d counted files", name, len(jo.lines), finished)
		}
		if int64(len(jo.lines)) > finished {
			r.DoubleCounts += len(jo.lines) - int(finished)
			r.violate("double count", "%s: %d report lines for %d counted files", name, len(jo.lines), finished)
		}
		if j.ReportMissing > 0 {
			r.ReportLinesMissing += j.ReportMissing
			r.violate("report", "%s: the report names %d counted tasks whose lines were missing", name, j.ReportMissing)
		}
		if jo.counts.Finished() != finished {
			r.DoubleCounts += int(max(0, jo.counts.Finished()-finished))
			r.violate("double count", "%s: %d files counted after it finished %s with %d", name, jo.counts.Finished()-finished, j.Status, finished)
		}
		if j.Status != ledger.JobComplete {
			continue
		}
		if j.Final.Done != j.Final.Expected {
			r.violate("job", "%s: COMPLETE with %d of %d tasks done", name, j.Final.Done, j.Final.Expected)
		}
		if p.listed >= 0 && j.Final.Listed != p.listed {
			r.violate("job", "%s: listed %d files, want %d", name, j.Final.Listed, p.listed)
		}
		if p.listed >= 0 && j.Final.Failed != p.failed {
			r.violate("job", "%s: %d files failed, want %d", name, j.Final.Failed, p.failed)
		}
		if p.listed >= 0 && len(p.files) > 0 {
			inReport := map[string]bool{}
			for _, l := range jo.lines {
				inReport[l.Key] = true
			}
			for _, k := range p.files {
				if !inReport[k] {
					r.ReportLinesMissing++
					r.violate("report", "%s: %s is not in the report", name, k)
				}
			}
		}
		if p.splitKey != "" {
			out := o.outputPrefix + p.splitKey
			expected[out] = true
			if obj, ok := o.outputs[out]; !ok || obj.sha != p.splitSHA {
				r.WrongOutputs++
				r.violate("wrong output", "%s: the merged output %s is missing or not the input's bytes", name, out)
			}
		}
		if p.spec.Kind == job.KindArchive {
			judgeMembers(o, r, jo, expected)
		}
	}
}

// judgeMembers checks an archive job's entries: each in the report once, as it must
// end; a good one's output beside the archive's, with the entry's bytes.
func judgeMembers(o *observed, r *Report, jo jobObs, expected map[string]bool) {
	byName := map[string]job.Line{}
	for _, l := range jo.lines {
		if _, name, ok := strings.Cut(l.Key, "!/"); ok {
			byName[name] = l
		} else {
			byName[l.Key] = l
		}
	}
	for unique, m := range o.members {
		if m.zipKey != jo.plan.spec.Key {
			continue
		}
		r.Members++
		l, ok := byName[m.name]
		if !ok && m.code == failure.InvalidEntry {
			for _, x := range jo.lines { // a refused entry is named in its reason
				if x.ErrorCode == failure.InvalidEntry && strings.Contains(x.Message, m.name) {
					l, ok = x, true
				}
			}
		}
		if !ok {
			r.violate("lost", "%s: entry %s is not in its job's report", jo.plan.name, unique)
			continue
		}
		r.MembersAccounted++
		if m.code != "" {
			if l.Status != job.Failed || l.ErrorCode != m.code {
				r.violate("wrong outcome", "%s: entry %s: %s %s, want Failed %s", jo.plan.name, unique, l.Status, l.ErrorCode, m.code)
			}
			continue
		}
		out := o.outputPrefix + unique
		expected[out] = true
		r.OutputsChecked++
		if l.Status != job.Succeeded {
			r.violate("wrong outcome", "%s: entry %s failed: %s %s", jo.plan.name, unique, l.ErrorCode, l.Message)
			continue
		}
		if obj, ok := o.outputs[out]; !ok || obj.sha != m.outSHA {
			r.WrongOutputs++
			r.violate("wrong output", "%s: entry %s: output %s missing or not the entry's bytes", jo.plan.name, unique, out)
		}
	}
}
