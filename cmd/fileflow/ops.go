package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/audit"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/jobctl"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/replay"
	"github.com/fileflow/fileflow/pkg/task"
)

// The operator's commands about files: failures, audit, replay (dlq is in dlq.go).

func failuresCmd() *cobra.Command {
	var (
		tf            targetFlags
		jobID, reason string
		since         string
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "failures [--job J] [--since 24h] [--reason TEXT] [--json]",
		Short: "List failed and dead-lettered files and poison messages, with code, reason, attempts and last attempt",
		Long: "List what the ledger's failure index holds for a period: files FAILED (permanently, with their code) or\n" +
			"DEAD_LETTERED (retries used up; their message is in the tasks DLQ, or a job counted them failed), and poison\n" +
			"messages (unreadable bodies, code InvalidEntry). Newest last. --job keeps one job's files (and, without\n" +
			"--since, looks back to the job's start); --reason keeps those whose reason or code contains TEXT.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := tf.client(ctx)
			if err != nil {
				return err
			}
			now := time.Now()
			back, err := parseSince(since)
			if err != nil {
				return err
			}
			from := now.Add(-back)
			if jobID != "" && !cmd.Flags().Changed("since") {
				j, ok, err := c.DB.GetJob(ctx, jobID)
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("job %s: %w", jobID, job.ErrUnknownJob)
				}
				from = j.CreatedAt
			}
			stop := periodic(cmd.ErrOrStderr(), "failures: reading the failure index since "+from.UTC().Format(time.RFC3339)+"…", nil)
			fs, err := audit.Failures(ctx, c.DB, audit.Filter{Since: from, Until: now, JobID: jobID, Reason: reason})
			stop()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, fs)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "LAST ATTEMPT\tSTATUS\tCODE\tATTEMPTS\tFILE\tREASON")
			for _, f := range fs {
				what := f.File
				if f.Scope != "" {
					what += " (" + f.Scope + ")"
				}
				if f.Kind == "poison" {
					what = "message " + f.MessageID + " (poison)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", f.At.UTC().Format(time.RFC3339), f.Status, dash(f.Code), f.Attempts, what, clip(f.Reason, 120))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "%d failures since %s\n", len(fs), from.UTC().Format(time.RFC3339))
			return nil
		},
	}
	tf.add(cmd)
	cmd.Flags().StringVar(&jobID, "job", "", "only the files of this job")
	cmd.Flags().StringVar(&since, "since", "24h", "how far back: a duration such as 90m, 24h or 7d")
	cmd.Flags().StringVar(&reason, "reason", "", "only failures whose reason or code contains this text (any case)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func auditCmd() *cobra.Command {
	var (
		tf      targetFlags
		version string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "audit s3://bucket/key [--version V] [--json]",
		Short: "Show a file's whole history: every attempt, checksums, content type, outputs, jobs, superseded revisions",
		Long: "Show everything the ledger keeps of one file, and its state in S3 now: the key's record (its newest revision\n" +
			"processed) with every attempt the history keeps (time, receive, duration, outcome, revision, error), checksums,\n" +
			"content type and outputs (each checked with a HEAD: present, and holding the record's revision); the jobs that\n" +
			"recorded it; older revisions superseded by a newer one; and whether S3 holds a newer revision not processed\n" +
			"yet. An archive member is s3://bucket/archive.zip!/entry. --version V says what became of that version.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bucket, key, err := job.ParseURI(args[0])
			if err != nil {
				return err
			}
			if key == "" {
				return fmt.Errorf("%s names no key", args[0])
			}
			c, err := tf.client(cmd.Context())
			if err != nil {
				return err
			}
			t, err := audit.TrailOf(cmd.Context(), c.DB, c.S3, bucket, key, version)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), t)
			}
			return printTrail(cmd.OutOrStdout(), t)
		},
	}
	tf.add(cmd)
	cmd.Flags().StringVar(&version, "version", "", "a version id of the key: what became of it")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func printTrail(w io.Writer, t audit.Trail) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("file", "%s", t.File)
	r := t.Record
	if r == nil {
		row("record", "none: the ledger has no record of this key (never processed, or expired)")
	} else {
		rev := r.Rev().String()
		if r.ETag != "" {
			rev += ", etag " + r.ETag
		}
		if r.Sequencer != "" {
			rev += ", sequencer " + r.Sequencer
		}
		row("status", "%s%s", r.Status, codeReason(*r))
		row("revision", "%s", rev)
		if r.PrevETag != "" || r.PrevVersionID != "" {
			row("replaced", "%s", ledger.Revision{VersionID: r.PrevVersionID, ETag: r.PrevETag}.String())
		}
		if r.Status == ledger.StatusSucceeded {
			row("content", "%s, %d bytes in, %d bytes out, processors %s", dash(r.ContentType), r.Size, r.OutputSize, strings.Join(r.Processors, ","))
			row("checksums", "sha256 %s  crc32c %s", dash(r.SHA256), dash(r.CRC32C))
		}
		if len(r.Replays) > 0 {
			row("replayed", "%s", strings.Join(r.Replays, ", "))
		}
		row("updated", "%s", r.UpdatedAt.UTC().Format(time.RFC3339Nano))
	}
	for _, o := range t.Outputs {
		state := "missing"
		switch {
		case o.Matches:
			state = "present, " + o.Revision
		case o.Exists:
			state = "present, but holds " + dash(o.Revision) + " (not the record's revision)"
		}
		row("output", "%s (%s)", o.URI, state)
	}
	row("jobs", "%s", dash(strings.Join(t.Jobs, ", ")))
	switch s := t.Source; {
	case s == nil || !s.Exists:
		row("in S3 now", "no such object (deleted, or never there)")
	case t.Newer:
		row("in S3 now", "%s (a NEWER revision than the record's: not processed yet, or its event is on its way)",
			ledger.Revision{VersionID: s.VersionID, ETag: s.ETag})
	default:
		row("in S3 now", "%s, %d bytes (the record's revision)", ledger.Revision{VersionID: s.VersionID, ETag: s.ETag}, s.Size)
	}
	if v := t.Version; v != nil {
		switch v.State {
		case "current":
			row("version", "%s is the record's revision", v.VersionID)
		case "superseded", "replaced":
			row("version", "%s was %s by %s", v.VersionID, v.State, v.By)
		default:
			row("version", "%s: the ledger does not name it", v.VersionID)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r != nil {
		fmt.Fprintf(w, "\nattempts: %d", r.Attempts)
		if r.Attempts > len(r.History) {
			fmt.Fprintf(w, " (the history keeps the last %d)", len(r.History))
		}
		fmt.Fprintln(w)
		printHistory(w, r.History)
	}
	for _, s := range t.Superseded {
		fmt.Fprintf(w, "\nsuperseded revision %s (by %s): %s\n", s.Rev(), s.SupersededBy, s.Reason)
		printHistory(w, s.History)
	}
	for _, b := range t.Beside {
		fmt.Fprintf(w, "\nrecord %s: %s%s, %d attempts\n", b.Scope(), b.Status, codeReason(b), b.Attempts)
		printHistory(w, b.History)
	}
	return nil
}

func printHistory(w io.Writer, h []ledger.Attempt) {
	if len(h) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tRECEIVE\tDURATION\tOUTCOME\tREVISION\tERROR")
	for _, a := range h {
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\n", a.At.UTC().Format(time.RFC3339Nano), a.Receive,
			(time.Duration(a.DurationMS) * time.Millisecond).String(), a.Outcome, dash(a.Revision), clip(a.Error, 160))
	}
	_ = tw.Flush()
}

func codeReason(r ledger.Record) string {
	if r.Status == ledger.StatusSucceeded || r.Reason == "" {
		return ""
	}
	if code := audit.CodeOf(r); code != "" {
		return " " + code + ": " + r.Reason
	}
	return ": " + r.Reason
}

func replayCmd() *cobra.Command {
	var (
		tf      targetFlags
		jobID   string
		failed  bool
		watch   bool
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay (s3://bucket/key ... | --job J --failed) [--watch]",
		Short: "Process files again, deliberately: their current revision, once per replay",
		Long: "Send the files' current revisions (a HEAD each) to the tasks queue with a fresh replay id: the worker\n" +
			"processes a file again even though it succeeded, once per replay id (a redelivery of the replay is a\n" +
			"duplicate), rewrites its output and adds an attempt to its record. --job J --failed replays the files the\n" +
			"job's report lists in results/failed.csv (or, without a report yet, the job's failures in the ledger),\n" +
			"leaving out entries that are not files, superseded files and split parts. Replays belong to no job: the\n" +
			"job keeps its counts and report. --watch waits for each file's new outcome.",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			switch {
			case jobID != "" && len(args) > 0:
				return errors.New("give files or --job J --failed, not both")
			case jobID != "" && !failed:
				return errors.New("--job replays a job's failed files: add --failed")
			case jobID == "" && len(args) == 0:
				return errors.New("which files? s3://bucket/key ..., or --job J --failed")
			}
			c, err := tf.client(ctx)
			if err != nil {
				return err
			}
			if c.Target.TasksQueueURL == "" {
				return errNoQueueURL("tasks")
			}
			var keys [][2]string
			var skipped []replay.Skip
			for _, a := range args {
				b, k, err := job.ParseURI(a)
				if err != nil {
					return err
				}
				if k == "" {
					return fmt.Errorf("%s names no key", a)
				}
				keys = append(keys, [2]string{b, k})
			}
			if jobID != "" {
				lines, err := failedLines(ctx, c, jobID)
				if err != nil {
					return err
				}
				keys, skipped = replay.Replayable(lines)
			}
			id := replay.NewID(time.Now())
			var files []task.File
			var before []ledger.Record
			for _, k := range keys {
				f, err := replay.Resolve(ctx, c.S3, c.DB, k[0], k[1], id)
				switch {
				case errors.Is(err, replay.ErrGone):
					skipped = append(skipped, replay.Skip{File: "s3://" + k[0] + "/" + k[1], Why: "the object does not exist (any more)"})
					continue
				case errors.Is(err, replay.ErrNotReplayable):
					skipped = append(skipped, replay.Skip{File: "s3://" + k[0] + "/" + k[1], Why: err.Error()})
					continue
				}
				if err != nil {
					return err
				}
				rec, _, err := c.DB.Get(ctx, recordKey(f))
				if err != nil {
					return err
				}
				files = append(files, f)
				before = append(before, rec)
			}
			sent, err := replay.Send(ctx, c.SQS, c.Target.TasksQueueURL, files)
			if err != nil {
				return err
			}
			res := replayResult{ReplayID: id, Sent: sent, Skipped: skipped}
			out := cmd.OutOrStdout()
			if !asJSON {
				for _, m := range sent {
					for _, f := range m.Files {
						fmt.Fprintf(out, "replay %s of %s (%s) in message %s\n", id, f.String(), ledger.Revision{VersionID: f.VersionID, ETag: f.ETag}, m.MessageID)
					}
				}
				for _, s := range skipped {
					fmt.Fprintf(out, "skipped %s: %s\n", s.File, s.Why)
				}
				fmt.Fprintf(out, "%d files sent in %d task messages to the tasks queue; %d skipped\n", len(files), len(sent), len(skipped))
			}
			if watch && len(files) > 0 {
				res.Outcomes, err = watchReplay(ctx, cmd.ErrOrStderr(), c, id, files, before, timeout)
				if !asJSON {
					for _, o := range res.Outcomes {
						fmt.Fprintf(out, "%s %s%s\n", o.File, o.Status, prefixed(": ", o.Reason))
					}
				}
				if err != nil {
					if asJSON {
						_ = printJSON(out, res)
					}
					return err
				}
			}
			if asJSON {
				return printJSON(out, res)
			}
			return nil
		},
	}
	tf.add(cmd)
	cmd.Flags().StringVar(&jobID, "job", "", "replay this job's files (with --failed)")
	cmd.Flags().BoolVar(&failed, "failed", false, "with --job: the files the job's report lists as failed")
	cmd.Flags().BoolVar(&watch, "watch", false, "wait for each file's new outcome")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --watch: how long to wait")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

type replayResult struct {
	ReplayID string          `json:"replay_id"`
	Sent     []replay.Sent   `json:"sent"`
	Skipped  []replay.Skip   `json:"skipped"`
	Outcomes []replayOutcome `json:"outcomes,omitempty"`
}

type replayOutcome struct {
	File     string `json:"file"`
	Status   string `json:"status"` // the record's, or "PENDING" if no new attempt was seen
	Reason   string `json:"reason,omitempty"`
	Attempts int    `json:"attempts"`
}

// recordKey is the ledger record a replayed file's outcome lands in.
func recordKey(f task.File) ledger.Key {
	k, _ := job.FileKey(f, "")
	return k
}

// failedLines is a job's failed report lines, or without a report yet, its failures in
// the ledger as lines.
func failedLines(ctx context.Context, c *jobctl.Client, jobID string) ([]job.Line, error) {
	lines, err := c.Engine.FailedLines(ctx, jobID)
	if !errors.Is(err, job.ErrNoReport) {
		return lines, err
	}
	j, ok, err := c.DB.GetJob(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("job %s: %w", jobID, job.ErrUnknownJob)
	}
	fs, err := audit.Failures(ctx, c.DB, audit.Filter{Since: j.CreatedAt, JobID: jobID})
	if err != nil {
		return nil, err
	}
	for _, f := range fs {
		if f.Kind == "file" {
			lines = append(lines, job.Line{Bucket: f.Bucket, Key: f.Key, Status: job.Failed, ErrorCode: f.Code, Message: f.Reason})
		}
	}
	return lines, nil
}

// watchReplay waits until each file's record shows a new attempt (or the replay id).
func watchReplay(ctx context.Context, w io.Writer, c *jobctl.Client, id string, files []task.File, before []ledger.Record, timeout time.Duration) ([]replayOutcome, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := make([]replayOutcome, len(files))
	done := make([]bool, len(files))
	var mu sync.Mutex
	n := 0
	stop := periodic(w, "", func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("replay %s: %d of %d files have a new outcome", id, n, len(files))
	})
	defer stop()
	for {
		for i, f := range files {
			if done[i] {
				continue
			}
			rec, ok, err := c.DB.Get(ctx, recordKey(f))
			if err != nil && ctx.Err() == nil {
				return out, err
			}
			out[i] = replayOutcome{File: f.String(), Status: "PENDING", Attempts: before[i].Attempts}
			if ok && (slices.Contains(rec.Replays, id) || rec.Attempts > before[i].Attempts) && rec.Status != ledger.StatusRetrying {
				out[i] = replayOutcome{File: f.String(), Status: string(rec.Status), Reason: rec.Reason, Attempts: rec.Attempts}
				mu.Lock()
				done[i], n = true, n+1
				mu.Unlock()
			}
		}
		if n == len(files) {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("replay %s: %d of %d files have no new outcome after %s", id, len(files)-n, len(files), timeout)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// periodic prints a progress line to w every few seconds while a long operation runs
// (the first after two seconds, so quick ones print nothing): first once, then line()
// each time if set. Plain lines, never a carriage return. stop ends it.
func periodic(w io.Writer, first string, line func() string) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		printed := false
		for {
			select {
			case <-done:
				return
			case <-t.C:
				switch {
				case line != nil:
					fmt.Fprintln(w, line())
				case !printed:
					fmt.Fprintln(w, first)
				}
				printed = true
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// parseSince reads a duration, with "d" for days (7d, 1d12h).
func parseSince(s string) (time.Duration, error) {
	var days time.Duration
	if d, rest, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("--since %q: want a duration such as 90m, 24h or 7d", s)
		}
		days, s = time.Duration(n)*24*time.Hour, rest
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--since %q: want a duration such as 90m, 24h or 7d", s)
	}
	return days + d, nil
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

// clip shortens s to n runes for a table cell, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func errNoQueueURL(queue string) error {
	return fmt.Errorf("the target names no %s queue URLs: with --local restart fileflow dev --keep (its state file is older than this CLI); "+
		"with --outputs/--stack the outputs need queueUrls.%s and queueUrls.%s-dlq", queue, queue, queue)
}
