package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/build"
	"github.com/fileflow/fileflow/pkg/capacity"
	"github.com/fileflow/fileflow/pkg/cost"
	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/stack"
	"github.com/fileflow/fileflow/pkg/stage"
	"github.com/fileflow/fileflow/pkg/workload"
)

// loadStage reads a stage's settings from Pulumi.<stack>.yaml, with overrides, and
// counts what its plan declares (alarms, dashboards, schedules), running the component
// under mocks with placeholder archives: nothing is built.
func loadStage(stackName string, overrides map[string]string) (workload.Stage, error) {
	root, err := moduleRoot()
	if err != nil {
		return workload.Stage{}, err
	}
	if _, err := stack.LoadFile(root, stackName); err != nil {
		return workload.Stage{}, err // names the stages there are
	}
	path := stack.StageFile(root, stackName)
	values, err := stage.ReadFile(path)
	if err != nil {
		return workload.Stage{}, err
	}
	maps.Copy(values, overrides)
	fns, err := build.Functions(root)
	if err != nil {
		return workload.Stage{}, err
	}
	args, err := stage.Parse(values, filepath.Base(path), fns)
	if err != nil {
		return workload.Stage{}, err
	}
	code := map[string]pipeline.Code{}
	for _, fn := range fns {
		code[fn] = pipeline.Code{Archive: pulumi.NewAssetArchive(map[string]any{"bootstrap": pulumi.NewStringAsset("")}), Hash: "placeholder"}
	}
	g, err := plan.Run(stack.Project, stackName, stack.Program(args, code))
	if err != nil {
		return workload.Stage{}, err
	}
	return workload.NewStage(stackName, args, fns, g.Counts())
}

// workloadFlags are the assumptions both models take.
type workloadFlags struct {
	set                       map[string]string
	size, path                string
	fileMS, checkMS           float64
	recordBytes, filesPerTask int
}

func (f *workloadFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringToStringVar(&f.set, "set", nil, "override the stage's fileflow:* settings, e.g. --set fileflow:duplicateCheck=redelivery")
	cmd.Flags().StringVar(&f.size, "size", "100KB", "`SIZE` of each file: 100KB, 1MiB, ...")
	cmd.Flags().StringVar(&f.path, "path", "events", "how files arrive: events (each upload sends an S3 event) or job (listed by a fan-out job into task messages)")
	cmd.Flags().Float64Var(&f.fileMS, "file-ms", 50, "milliseconds one file takes from GET to ledger commit (AWS-FACTS.md's reference: 50 ms at 100 KB)")
	cmd.Flags().Float64Var(&f.checkMS, "check-ms", 10, "milliseconds of the duplicate check's ledger read before each batch")
	cmd.Flags().IntVar(&f.recordBytes, "record-bytes", workload.DefaultRecordBytes, "bytes of a file's ledger record (1 write unit per KB)")
	cmd.Flags().IntVar(&f.filesPerTask, "files-per-task", workload.DefaultFilesPerTask, "job path: files per task message")
}

func (f *workloadFlags) workload(files int64) (workload.Workload, error) {
	size, err := workload.ParseSize(f.size)
	if err != nil {
		return workload.Workload{}, fmt.Errorf("--size: %w", err)
	}
	w := workload.Workload{Files: files, SizeBytes: size, Path: workload.Path(f.path), FilesPerTask: f.filesPerTask,
		FileTime: time.Duration(f.fileMS * float64(time.Millisecond)), CheckTime: time.Duration(f.checkMS * float64(time.Millisecond)),
		RecordBytes: f.recordBytes}.WithDefaults()
	if f.checkMS == 0 {
		w.CheckTime = 0
	}
	return w, w.Validate()
}

func costCmd() *cobra.Command {
	var (
		wf               workloadFlags
		stackName, files string
		from             string
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "cost [--stack prod] [--files 1e6] [--size 100KB] [--from summary.json]",
		Short: "Dollars for N files by service on a stage, next to a naive design, and what the stage costs while idle",
		Long: `Prices processing files on a stage, service by service: Lambda requests and GB-s, SQS
requests in 64 KB units, DynamoDB write and read units, S3 requests, SNS and CloudWatch.
From the stage's settings (Pulumi.<stack>.yaml) and the API calls per file the local stack
measured (built in; or --from the JSON of fileflow dev --json). The outputs' PUTs are a
line of their own, and the uploads' PUTs are excluded, as in AWS-FACTS.md's reference.
The same model prices a naive design: one message and one invocation per file, three
ledger writes. Then what the stage costs per month with no files, and whether it scales
to zero. Prices: pkg/cost/prices.json (dated, us-east-1, arm64).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := workload.ParseCount(files)
			if err != nil {
				return fmt.Errorf("--files: %w", err)
			}
			w, err := wf.workload(n)
			if err != nil {
				return err
			}
			measured := cost.MeasuredEvents
			if w.Path == workload.Job {
				measured = cost.MeasuredJob
			}
			if from != "" {
				b, err := os.ReadFile(from)
				if err != nil {
					return err
				}
				if measured, err = cost.FromSummary(b, from); err != nil {
					return err
				}
			}
			s, err := loadStage(stackName, wf.set)
			if err != nil {
				return err
			}
			prices, err := cost.DefaultPrices()
			if err != nil {
				return err
			}
			r := costReport{Stage: s.Name, Files: n, SizeBytes: w.SizeBytes, Path: string(w.Path), CallsSource: measured.Source,
				Prices:   prices.Date + " " + prices.Region + " " + prices.Arch,
				Estimate: cost.Price(cost.StageDesign(s, w, measured), n, prices), Naive: cost.Price(cost.NaiveDesign(s, w), n, prices),
				Idle: cost.Idle(s, prices)}
			r.IdleTotal = cost.Total(r.Idle)
			r.ScalesToZero, r.BreaksScaleToZero = cost.ScaleToZero(r.Idle)
			r.GoalPerMillion = costGoal
			r.PerMillion = r.Estimate.Orchestration * 1e6 / float64(n)
			if asJSON {
				b, err := json.MarshalIndent(r, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			return r.text(cmd.OutOrStdout(), s, w)
		},
	}
	cmd.Flags().StringVar(&stackName, "stack", "dev", "the stage `NAME` (its settings: Pulumi.NAME.yaml)")
	cmd.Flags().StringVar(&files, "files", "1e6", "`N` files: 1000000 or 1e6")
	cmd.Flags().StringVar(&from, "from", "", "calls per file from `FILE`, the JSON of fileflow dev --json (or of bench compare --meter)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	wf.add(cmd)
	return cmd
}

// costGoal is issue 11's goal for the orchestration, per million files.
const costGoal = 1.40

type costReport struct {
	Stage             string          `json:"stage"`
	Files             int64           `json:"files"`
	SizeBytes         int64           `json:"size_bytes"`
	Path              string          `json:"path"`
	CallsSource       string          `json:"calls_source"`
	Prices            string          `json:"prices"`
	Estimate          cost.Estimate   `json:"estimate"`
	Naive             cost.Estimate   `json:"naive"`
	PerMillion        float64         `json:"orchestration_usd_per_million"`
	GoalPerMillion    float64         `json:"goal_usd_per_million"`
	Idle              []cost.IdleLine `json:"idle"`
	IdleTotal         float64         `json:"idle_usd_per_month"`
	ScalesToZero      bool            `json:"scales_to_zero"`
	BreaksScaleToZero []string        `json:"breaks_scale_to_zero,omitempty"`
}

func (r costReport) text(out io.Writer, s workload.Stage, w workload.Workload) error {
	fmt.Fprintf(out, "fileflow cost: stage %s, %s files of %s arriving as %s; prices of %s (pkg/cost/prices.json)\n",
		r.Stage, count(r.Files), bytesText(r.SizeBytes), pathText(w), r.Prices)
	fmt.Fprintf(out, "calls per file: %s\n", r.CallsSource)
	inv := w.InvocationTime(s)
	check := ""
	if s.Checks(w.Path) {
		check = fmt.Sprintf(" + %s duplicate check", w.CheckTime)
	}
	fmt.Fprintf(out, "worker: %d MB, %d files an invocation (batch %d × %d a message), %d at once: %s each (waves of %s%s)\n\n",
		s.Worker.MemoryMB, w.FilesPerInvocation(s), s.Worker.BatchSize, w.FilesPerMessage(), s.Parallel, inv, w.FileTime, check)

	// Left-aligned names, right-aligned figures.
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(name, u1, usd1, u2, usd2 string) {
		fmt.Fprintf(tw, "%s\t%22s\t%9s\t%22s\t%9s\n", name, u1, usd1, u2, usd2)
	}
	row("for "+count(r.Files)+" files", r.Stage+": units", "$", "naive design: units", "$")
	for i, l := range r.Estimate.Lines {
		nl := r.Naive.Lines[i]
		row(l.Service, units(l.Units)+" "+l.Unit, cost.FormatUSD(l.USD), units(nl.Units)+" "+nl.Unit, cost.FormatUSD(nl.USD))
	}
	row("orchestration", "", cost.FormatUSD(r.Estimate.Orchestration), "", cost.FormatUSD(r.Naive.Orchestration))
	row(r.Estimate.Outputs.Service, units(r.Estimate.Outputs.Units)+" requests", cost.FormatUSD(r.Estimate.Outputs.USD),
		units(r.Naive.Outputs.Units)+" requests", cost.FormatUSD(r.Naive.Outputs.USD))
	row("with the outputs", "", cost.FormatUSD(r.Estimate.Orchestration+r.Estimate.Outputs.USD), "", cost.FormatUSD(r.Naive.Orchestration+r.Naive.Outputs.USD))
	row(r.Estimate.Ingest.Service, units(r.Estimate.Ingest.Units)+" requests", "("+cost.FormatUSD(r.Estimate.Ingest.USD)+")",
		units(r.Naive.Ingest.Units)+" requests", "("+cost.FormatUSD(r.Naive.Ingest.USD)+")")
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "met"
	if r.PerMillion > r.GoalPerMillion {
		verdict = fmt.Sprintf("missed by %s", cost.FormatUSD(r.PerMillion-r.GoalPerMillion))
	}
	fmt.Fprintf(out, "\norchestration per million files: %s (goal <= %s: %s); naive %s\n", cost.FormatUSD(r.PerMillion), cost.FormatUSD(r.GoalPerMillion), verdict,
		cost.FormatUSD(r.Naive.Orchestration*1e6/float64(r.Files)))
	fmt.Fprintln(out, "AWS-FACTS.md's reference (1M x 100 KB, 512 MB, 50 ms a file): naive ~$4.0, tuned ~$1.9, floor ~$1.2.")
	if len(r.Estimate.NotBilled) > 0 {
		fmt.Fprintf(out, "not billed by AWS as such: %s (the local mapping's depth polls)\n", strings.Join(r.Estimate.NotBilled, ", "))
	}
	if len(r.Estimate.Unpriced) > 0 {
		fmt.Fprintf(out, "NOT PRICED (no rule in pkg/cost): %s\n", strings.Join(r.Estimate.Unpriced, ", "))
	}

	fmt.Fprintf(out, "\nidle: what stage %s costs per month with no files\n", r.Stage)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, l := range r.Idle {
		fmt.Fprintf(tw, "  %s\t%s\t%10s\n", l.What, l.Detail, cost.FormatUSD(l.USDPerMonth))
	}
	fmt.Fprintf(tw, "  total\t\t%10s\n", cost.FormatUSD(r.IdleTotal))
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.ScalesToZero {
		fmt.Fprintln(out, "scale to zero: yes (what is left is the mappings' polling, pennies)")
	} else {
		fmt.Fprintf(out, "scale to zero: no; broken by %s\n", strings.Join(r.BreaksScaleToZero, ", "))
	}
	return nil
}

func pathText(w workload.Workload) string {
	if w.Path == workload.Job {
		return fmt.Sprintf("a fan-out job (%d files a task message)", w.FilesPerTask)
	}
	return "S3 events (one message an upload)"
}

// count renders 1000000 as 1,000,000.
func count(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// units renders a quantity: whole numbers with separators, small ones with 3 digits.
func units(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return count(int64(math.Round(v)))
	}
	return fmt.Sprintf("%.3g", v)
}

func bytesText(n int64) string {
	switch {
	case n >= 1e9 && n%1e9 == 0:
		return fmt.Sprintf("%d GB", n/1e9)
	case n >= 1e6 && n%1e6 == 0:
		return fmt.Sprintf("%d MB", n/1e6)
	case n >= 1e3 && n%1e3 == 0:
		return fmt.Sprintf("%d KB", n/1e3)
	}
	return fmt.Sprintf("%d bytes", n)
}

func capacityCmd() *cobra.Command {
	var (
		wf               workloadFlags
		stackName, burst string
		prefixes, acct   int
		peak             float64
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "capacity [--stack prod] [--burst N]",
		Short: "A stage's throughput ceiling limit by limit, which binds first, and how long a burst takes to drain",
		Long: `The stage's throughput ceiling, limit by limit: the worker's concurrency x batch / batch
time, DynamoDB per table and per partition (a job's counters), S3 per prefix, SQS in
flight; which binds first; and with --burst N how long N files queued at once take to
drain, counting the event source mapping's ramp (5 concurrent, +300 a minute). From the
stage's settings (Pulumi.<stack>.yaml) and AWS's limits (AWS-FACTS.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var n int64
			if burst != "" {
				var err error
				if n, err = workload.ParseCount(burst); err != nil {
					return fmt.Errorf("--burst: %w", err)
				}
			}
			w, err := wf.workload(max(n, 1))
			if err != nil {
				return err
			}
			s, err := loadStage(stackName, wf.set)
			if err != nil {
				return err
			}
			limits := capacity.DefaultLimits
			limits.AccountConcurrency = acct
			r := capacity.Model(s, w, limits, capacity.Options{Prefixes: prefixes, TablePeak: peak})
			var drain *capacity.Drain
			if n > 0 {
				d := r.Drain(n, limits)
				drain = &d
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, err := json.MarshalIndent(struct {
					capacity.Result
					Burst *capacity.Drain `json:"burst,omitempty"`
				}{r, drain}, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(out, string(b))
				return nil
			}
			fmt.Fprintf(out, "fileflow capacity: stage %s, files of %s arriving as %s\n", s.Name, bytesText(w.SizeBytes), pathText(w))
			fmt.Fprintf(out, "worker: up to %d concurrent invocations, each %d files in %.3g s (%s a file, %d at once)\n\n",
				r.Concurrency, r.FilesPerInvocation, r.InvocationSeconds, w.FileTime, s.Parallel)
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "limit\tfiles/s\thow")
			for _, l := range r.Sorted() {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Name, rate(l.FilesPerSec), l.Detail)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "\nbinding: %s at %s files/s\n", r.Binding.Name, rate(r.Binding.FilesPerSec))
			fmt.Fprintf(out, "ramp: the mapping starts at %d concurrent and adds %d a minute: %d after %.0f s\n",
				min(limits.MappingStart, r.Concurrency), limits.MappingRampPerMin, r.Concurrency, r.RampSeconds)
			if drain != nil {
				fmt.Fprintf(out, "burst: %s files queued at once drain in %s (%s of them during the ramp)\n",
					count(n), time.Duration(drain.Seconds*float64(time.Second)).Round(time.Second), count(int64(drain.RampFiles)))
			}
			for _, note := range r.Notes {
				fmt.Fprintf(out, "note: %s\n", note)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stackName, "stack", "dev", "the stage `NAME` (its settings: Pulumi.NAME.yaml)")
	cmd.Flags().StringVar(&burst, "burst", "", "`N` files queued at once (1e6): how long they take to drain")
	cmd.Flags().IntVar(&prefixes, "prefixes", 1, "partitioned S3 prefixes the keys spread over")
	cmd.Flags().Float64Var(&peak, "table-peak", 0, "files/s the ledger table has served before (on demand serves twice its peak at once); 0: a new table")
	cmd.Flags().IntVar(&acct, "account-concurrency", capacity.DefaultLimits.AccountConcurrency, "the account's Lambda concurrency quota")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	wf.add(cmd)
	return cmd
}

func rate(v float64) string {
	if math.IsInf(v, 1) {
		return "no limit"
	}
	return count(int64(math.Round(v)))
}
