// Package capacity finds a stage's throughput ceiling limit by limit — the worker's
// concurrency × batch ÷ batch time, DynamoDB per table and per partition, S3 per
// prefix, SQS — says which binds first, and how long a burst of files takes to drain,
// counting the event source mapping's scaling ramp.
//
// Everything is arithmetic over the stage's settings ([workload.Stage]), the workload's
// assumptions ([workload.Workload]) and AWS's limits ([Limits], from AWS-FACTS.md). The
// limits are ceilings in files per second; the smallest binds.
package capacity

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/fileflow/fileflow/pkg/workload"
)

// Limits are AWS's limits the model uses.
type Limits struct {
	AccountConcurrency int // Lambda account default (AWS-FACTS.md: 1,000; new accounts may start lower)
	Unreserved         int // Lambda keeps this much of it unreserved (AWS-FACTS.md: 100)
	MappingStart       int // an SQS mapping starts at this many concurrent invokes (5)
	MappingRampPerMin  int // and adds up to this many a minute (300)
	MappingMaxStandard int // at most this many for a standard queue (1,250)
	PartitionWCU       int // per partition per second (1,000 WCU)
	TableInitialWCU    int // a new on-demand table at once (4,000 WCU/s)
	TableInitialRCU    int // a new on-demand table at once (12,000 RCU/s; NOT in AWS-FACTS.md: from memory)
	TableQuota         int // default table quota (40,000 units/s, each of reads and writes)
	S3PutPerPrefix     int // PUT/COPY/POST/DELETE per partitioned prefix per second (3,500)
	S3GetPerPrefix     int // GET/HEAD per partitioned prefix per second (5,500)
	SQSInFlight        int // a standard queue's in-flight messages (~120,000)
}

// DefaultLimits are AWS-FACTS.md's figures (2026-11-26).
var DefaultLimits = Limits{
	AccountConcurrency: 1000, Unreserved: 100,
	MappingStart: 5, MappingRampPerMin: 300, MappingMaxStandard: 1250,
	PartitionWCU: 1000, TableInitialWCU: 4000, TableInitialRCU: 12000, TableQuota: 40000,
	S3PutPerPrefix: 3500, S3GetPerPrefix: 5500, SQSInFlight: 120000,
}

// Options are what the stage's settings do not say.
type Options struct {
	// Prefixes is how many partitioned S3 prefixes the keys spread over (default 1: a
	// fresh prefix, as S3 partitions by prefix only after sustained load).
	Prefixes int
	// TablePeak is the files per second the on-demand table has served before: it can
	// serve twice its previous peak at once (AWS-FACTS.md), up to the quota. 0: a new
	// table.
	TablePeak float64
}

// Limit is one ceiling.
type Limit struct {
	Service     string  `json:"service"` // Lambda, DynamoDB, S3, SQS
	Name        string  `json:"name"`
	FilesPerSec float64 `json:"files_per_sec"` // +Inf: no ceiling
	Detail      string  `json:"detail"`        // the arithmetic
}

// Result is the stage's capacity.
type Result struct {
	Stage  string  `json:"stage"`
	Limits []Limit `json:"limits"`
	// Binding is the smallest ceiling.
	Binding Limit `json:"binding"`
	// Concurrency is the worker's effective maximum concurrency; FilesPerInvocation and
	// InvocationSeconds one full batch.
	Concurrency        int     `json:"concurrency"`
	FilesPerInvocation int     `json:"files_per_invocation"`
	InvocationSeconds  float64 `json:"invocation_seconds"`
	// RampSeconds is how long the mapping takes from its start to Concurrency.
	RampSeconds float64 `json:"ramp_seconds"`
	// Notes are warnings about the stage's settings.
	Notes []string `json:"notes,omitempty"`
}

// Drain is how long a burst takes.
type Drain struct {
	Files   int64   `json:"files"`
	Seconds float64 `json:"seconds"`
	// RampFiles are the files done while the mapping was still scaling up.
	RampFiles float64 `json:"ramp_files"`
}

// Model computes the stage's ceilings.
func Model(s workload.Stage, w workload.Workload, l Limits, o Options) Result {
	w = w.WithDefaults()
	if o.Prefixes < 1 {
		o.Prefixes = 1
	}
	r := Result{Stage: s.Name, FilesPerInvocation: w.FilesPerInvocation(s), InvocationSeconds: w.InvocationTime(s).Seconds()}
	fpi := float64(r.FilesPerInvocation)

	// Lambda: the mapping's maximum, within the function's reserved concurrency and what
	// the account can reserve.
	c := min(s.Worker.MaxConcurrency, s.Worker.ReservedConcurrency, l.MappingMaxStandard, l.AccountConcurrency-l.Unreserved)
	r.Concurrency = c
	reserved := s.Worker.ReservedConcurrency
	if s.Dispatch != nil {
		reserved += s.Dispatch.ReservedConcurrency
	}
	if reserved > l.AccountConcurrency-l.Unreserved {
		r.Notes = append(r.Notes, fmt.Sprintf("the functions reserve %d concurrency; an account of %d can reserve %d (it keeps %d unreserved)",
			reserved, l.AccountConcurrency, l.AccountConcurrency-l.Unreserved, l.Unreserved))
	}
	perEnv := fpi / r.InvocationSeconds
	r.Limits = append(r.Limits, Limit{"Lambda", "Lambda: concurrency × batch ÷ batch time", float64(c) * perEnv,
		fmt.Sprintf("%d × %d files ÷ %.3g s", c, r.FilesPerInvocation, r.InvocationSeconds)})
	ramp := float64(l.MappingRampPerMin) / 60
	r.RampSeconds = math.Max(0, float64(c-l.MappingStart)/ramp)

	// DynamoDB per table: a commit per file (+ a share of a job's settlements).
	wruPerWrite := math.Ceil(float64(w.RecordBytes) / 1024)
	wru := wruPerWrite
	settleWCU := 2 * float64(s.Worker.BatchSize+2) // a marker per message, the parent's check, a shard; transactional
	if w.Path == workload.Job {
		wru += settleWCU / fpi
	}
	switch {
	case s.Table.Provisioned:
		r.Limits = append(r.Limits, Limit{"DynamoDB", "DynamoDB table writes (provisioned)", float64(s.Table.MaxWrite) / wru,
			fmt.Sprintf("autoscaling up to %d WCU/s ÷ %.3g WRU a file (it scales up over minutes)", s.Table.MaxWrite, wru)})
	default:
		table, detail := onDemand(l.TableInitialWCU, l.TableQuota, o.TablePeak*wru, "WRU")
		r.Limits = append(r.Limits, Limit{"DynamoDB", "DynamoDB table writes (on demand)", table / wru,
			fmt.Sprintf("%s ÷ %.3g WRU a file", detail, wru)})
	}
	if s.Checks(w.Path) {
		rru := math.Ceil(float64(w.RecordBytes) / 4096)
		ceiling, detail := onDemand(l.TableInitialRCU, l.TableQuota, o.TablePeak*rru, "RRU")
		detail = fmt.Sprintf("%s ÷ %.3g RRU a file (the duplicate check)", detail, rru)
		if s.Table.Provisioned {
			ceiling = float64(s.Table.MaxRead)
			detail = fmt.Sprintf("autoscaling up to %d RCU/s ÷ %.3g RRU a file (the duplicate check)", s.Table.MaxRead, rru)
		}
		r.Limits = append(r.Limits, Limit{"DynamoDB", "DynamoDB table reads", ceiling / rru, detail})
	}
	r.Limits = append(r.Limits, Limit{"DynamoDB", "DynamoDB per partition: file records", math.Inf(1),
		fmt.Sprintf("none: each file writes its own item (%s WCU/s caps only rewrites of one key)", count(float64(l.PartitionWCU)))})
	if w.Path == workload.Job {
		// A job's markers, checks and counter shards share its partition key (J#<job>):
		// one partition until DynamoDB splits it for heat.
		per := float64(l.PartitionWCU) / settleWCU
		r.Limits = append(r.Limits, Limit{"DynamoDB", "DynamoDB per partition: one job's counters", per * fpi,
			fmt.Sprintf("%s WCU/s ÷ %.0f WCU a settlement (2 × %d items) × %d files a settlement: its shards share the job's partition key",
				count(float64(l.PartitionWCU)), settleWCU, s.Worker.BatchSize+2, r.FilesPerInvocation)})
	}

	// S3 per prefix.
	p := float64(o.Prefixes)
	r.Limits = append(r.Limits, Limit{"S3", "S3 GETs per prefix (sources)", p * float64(l.S3GetPerPrefix),
		fmt.Sprintf("%d prefix(es) × %s GET/s ÷ 1 GET a file", o.Prefixes, count(float64(l.S3GetPerPrefix)))})
	outReq := float64(workload.OutputRequests(w.SizeBytes, s.PartSizeBytes))
	r.Limits = append(r.Limits, Limit{"S3", "S3 PUTs per prefix (outputs)", p * float64(l.S3PutPerPrefix) / outReq,
		fmt.Sprintf("%d prefix(es) × %s PUT/s ÷ %.0f PUT a file", o.Prefixes, count(float64(l.S3PutPerPrefix)), outReq)})
	if w.Path == workload.Events {
		r.Limits = append(r.Limits, Limit{"S3", "S3 PUTs per prefix (the uploads)", p * float64(l.S3PutPerPrefix),
			fmt.Sprintf("%d prefix(es) × %s PUT/s: files cannot arrive faster", o.Prefixes, count(float64(l.S3PutPerPrefix)))})
	}

	// SQS: throughput nearly unlimited; in-flight messages bound concurrency × batch.
	inflight := float64(l.SQSInFlight) / float64(s.Worker.BatchSize) * perEnv
	r.Limits = append(r.Limits, Limit{"SQS", "SQS in-flight messages", inflight,
		fmt.Sprintf("%s in flight ÷ %d a batch = %s concurrent batches (throughput nearly unlimited)",
			count(float64(l.SQSInFlight)), s.Worker.BatchSize, count(float64(l.SQSInFlight)/float64(s.Worker.BatchSize)))})

	r.Binding = r.Limits[0]
	for _, x := range r.Limits {
		if x.FilesPerSec < r.Binding.FilesPerSec {
			r.Binding = x
		}
	}
	return r
}

// onDemand is an on-demand table's ceiling in units per second: a new table's initial
// throughput, or twice a previous peak, within the quota.
func onDemand(initial, quota int, peak float64, unit string) (float64, string) {
	if peak <= 0 {
		return float64(initial), fmt.Sprintf("a new on-demand table: %s %s/s", count(float64(initial)), unit)
	}
	c := math.Min(math.Max(2*peak, float64(initial)), float64(quota))
	return c, fmt.Sprintf("twice the previous peak of %s %s/s = %s (within the quota of %s)", count(peak), unit, count(c), count(float64(quota)))
}

// count renders a whole number with thousands separators.
func count(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// steadyOther is the lowest ceiling other than Lambda's, which ramps (see Drain).
func (r Result) steadyOther() float64 {
	other := math.Inf(1)
	for _, x := range r.Limits {
		if x.Service != "Lambda" {
			other = math.Min(other, x.FilesPerSec)
		}
	}
	return other
}

// Drain is how long a burst of files (all queued at once) takes: the mapping ramps
// from MappingStart by MappingRampPerMin up to the stage's concurrency, each concurrent
// invocation doing FilesPerInvocation every InvocationSeconds, and no faster than the
// other limits allow.
func (r Result) Drain(files int64, l Limits) Drain {
	perEnv := float64(r.FilesPerInvocation) / r.InvocationSeconds
	return DrainTime(float64(files), perEnv, float64(min(l.MappingStart, r.Concurrency)), float64(l.MappingRampPerMin)/60, float64(r.Concurrency), r.steadyOther())
}

// DrainTime solves for the time T to finish n files when the rate is
// min(other, perEnv × min(maxConc, start + ramp × t)):
//
//	phase 1 (ramping): rate = perEnv × (start + ramp × t), until t1 = the earlier of
//	  reaching maxConc or the other ceiling; files by then F1 = perEnv × (start t1 + ramp t1²/2)
//	phase 2: the steady rate min(other, perEnv × maxConc)
//
// If n <= F1, T solves perEnv × (start T + ramp T²/2) = n.
func DrainTime(n, perEnv, start, ramp, maxConc, other float64) Drain {
	d := Drain{Files: int64(n)}
	if n <= 0 {
		return d
	}
	steady := math.Min(other, perEnv*maxConc)
	t1 := 0.0
	if start < maxConc && perEnv*start < other {
		t1 = (math.Min(maxConc, other/perEnv) - start) / ramp
	}
	f1 := perEnv * (start*t1 + ramp*t1*t1/2)
	if t1 > 0 && n <= f1 {
		// ramp/2 T² + start T - n/perEnv = 0
		a, b, c := ramp/2, start, -n/perEnv
		d.Seconds = (-b + math.Sqrt(b*b-4*a*c)) / (2 * a)
		d.RampFiles = n
		return d
	}
	d.Seconds = t1 + (n-f1)/steady
	d.RampFiles = f1
	return d
}

// Sorted returns the limits from the tightest.
func (r Result) Sorted() []Limit {
	out := slices.Clone(r.Limits)
	slices.SortStableFunc(out, func(a, b Limit) int {
		switch {
		case a.FilesPerSec < b.FilesPerSec:
			return -1
		case a.FilesPerSec > b.FilesPerSec:
			return 1
		}
		return 0
	})
	return out
}

// MarshalJSON writes a limit without a ceiling with "files_per_sec": null.
func (l Limit) MarshalJSON() ([]byte, error) {
	type plain Limit
	v := struct {
		plain
		FilesPerSec *float64 `json:"files_per_sec"`
	}{plain: plain(l)}
	if !math.IsInf(l.FilesPerSec, 1) {
		v.FilesPerSec = &l.FilesPerSec
	}
	return json.Marshal(v)
}
