package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/jobctl"
)

// targetFlags choose the stack a job command talks to.
type targetFlags struct {
	local   bool
	outputs string
	stack   string
}

func (f *targetFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.local, "local", false, "the local stack started by fileflow dev --keep")
	cmd.Flags().StringVar(&f.outputs, "outputs", "", "`FILE` holding a deployed stack's outputs, as pulumi stack output --json writes them")
	cmd.Flags().StringVar(&f.stack, "stack", "", "a deployed stack `NAME`: its outputs are read with pulumi stack output --json --stack NAME")
}

func (f *targetFlags) client(ctx context.Context) (*jobctl.Client, error) {
	var t jobctl.Target
	var err error
	switch {
	case f.local:
		path, perr := jobctl.LocalStatePath()
		if perr != nil {
			return nil, perr
		}
		t, err = jobctl.LoadLocal(path)
	case f.outputs != "":
		b, rerr := os.ReadFile(f.outputs)
		if rerr != nil {
			return nil, rerr
		}
		t, err = jobctl.FromStackOutputs(b)
	case f.stack != "":
		b, rerr := exec.CommandContext(ctx, "pulumi", "stack", "output", "--json", "--stack", f.stack).Output()
		if rerr != nil {
			return nil, fmt.Errorf("pulumi stack output --stack %s: %w (or pass --outputs FILE)", f.stack, rerr)
		}
		t, err = jobctl.FromStackOutputs(b)
	default:
		return nil, errors.New("which stack? --local, --outputs FILE or --stack NAME")
	}
	if err != nil {
		return nil, err
	}
	return jobctl.New(ctx, t)
}

func submitCmd() *cobra.Command {
	var (
		tf                               targetFlags
		prefix, manifest, archive, split string
		suffix, tolerate, id             string
		parts, filesPerTask              int
		watch                            bool
	)
	cmd := &cobra.Command{
		Use:   "submit (--prefix s3://b/p | --manifest s3://b/m.csv | --archive s3://b/a.zip | --split s3://b/big.jsonl --parts N) [--tolerate 1%] [--watch]",
		Short: "Submit a fan-out job: every object under a prefix, a manifest's list, a zip's entries, or one file's line-aligned parts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec := job.Spec{ID: id, Suffix: suffix, Tolerate: tolerate, Parts: parts, FilesPerTask: filesPerTask}
			var uri string
			n := 0
			for kind, v := range map[string]string{job.KindPrefix: prefix, job.KindManifest: manifest, job.KindArchive: archive, job.KindSplit: split} {
				if v != "" {
					spec.Kind, uri = kind, v
					n++
				}
			}
			if n != 1 {
				return errors.New("give exactly one of --prefix, --manifest, --archive, --split")
			}
			var err error
			if spec.Bucket, spec.Key, err = job.ParseURI(uri); err != nil {
				return err
			}
			if err := spec.Validate(); err != nil {
				return err
			}
			c, err := tf.client(cmd.Context())
			if err != nil {
				return err
			}
			jobID, err := c.Submit(cmd.Context(), spec)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), jobID)
			if !watch {
				return nil
			}
			return watchJob(cmd, c, jobID)
		},
	}
	tf.add(cmd)
	cmd.Flags().StringVar(&prefix, "prefix", "", "every object under s3://bucket/prefix")
	cmd.Flags().StringVar(&manifest, "manifest", "", "the objects a manifest lists (CSV bucket,key[,versionId], JSON array or JSON lines)")
	cmd.Flags().StringVar(&archive, "archive", "", "the entries of a zip archive")
	cmd.Flags().StringVar(&split, "split", "", "one line-delimited file, split into --parts line-aligned byte ranges and merged in order")
	cmd.Flags().IntVar(&parts, "parts", 0, "split jobs: number of parts")
	cmd.Flags().StringVar(&suffix, "suffix", "", "prefix jobs: only keys ending with this")
	cmd.Flags().StringVar(&tolerate, "tolerate", "", "failures accepted before the job fails early: a count (25) or a percentage (1%)")
	cmd.Flags().IntVar(&filesPerTask, "files-per-task", 0, "files per task message (default 100)")
	cmd.Flags().StringVar(&id, "id", "", "job id (default: generated); resubmitting an id is safe")
	cmd.Flags().BoolVar(&watch, "watch", false, "follow the job until it finishes")
	return cmd
}

// watchJob follows a job; the exit status says how it ended.
func watchJob(cmd *cobra.Command, c *jobctl.Client, id string) error {
	s, err := c.Watch(cmd.Context(), id, cmd.ErrOrStderr(), time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %d succeeded, %d failed of %d in %s; report %s\n", id, s.Status,
		s.Counts.Succeeded, s.Counts.Failed, s.Counts.Listed, time.Duration(s.DurationMS)*time.Millisecond, s.Report)
	if s.Status != "COMPLETE" {
		return fmt.Errorf("job %s %s: %s", id, s.Status, s.Reason)
	}
	return nil
}

func watchCmd() *cobra.Command {
	var tf targetFlags
	cmd := &cobra.Command{
		Use:   "watch JOB",
		Short: "Follow a job: listed, done, failed, rate and ETA, until it finishes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := tf.client(cmd.Context())
			if err != nil {
				return err
			}
			return watchJob(cmd, c, args[0])
		},
	}
	tf.add(cmd)
	return cmd
}

func statusCmd() *cobra.Command {
	var tf targetFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status JOB [--json]",
		Short: "Show a job's status, counts, bytes, duration and report",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := tf.client(cmd.Context())
			if err != nil {
				return err
			}
			s, err := c.Status(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, err := json.MarshalIndent(s, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(out, string(b))
				return nil
			}
			fmt.Fprintf(out, "job       %s (%s of %s)\nstatus    %s %s\nfiles     listed %d, succeeded %d, failed %d\nbytes     %d\ntasks     %d of %d done\nduration  %s\nreport    %s\n",
				s.JobID, s.Kind, s.Source, s.Status, s.Reason, s.Counts.Listed, s.Counts.Succeeded, s.Counts.Failed,
				s.Counts.Bytes, s.Counts.Done, s.Counts.Expected, time.Duration(s.DurationMS)*time.Millisecond, s.Report)
			if s.ReconciledAt != nil {
				fmt.Fprintf(out, "checked   by the reconciler %s ago\n", time.Since(*s.ReconciledAt).Round(time.Second))
			}
			if s.StuckTasks > 0 {
				fmt.Fprintf(out, "stuck     %d of its tasks are in a dead-letter queue: the job waits for them (redrive the DLQ; docs/operations.md)\n", s.StuckTasks)
			}
			if s.ReportMissing > 0 {
				fmt.Fprintf(out, "report    %d counted tasks had no report lines when it was written (the manifest names them)\n", s.ReportMissing)
			}
			return nil
		},
	}
	tf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func cancelCmd() *cobra.Command {
	var tf targetFlags
	cmd := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Cancel a running job: its remaining tasks are skipped; it is reported CANCELLED",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := tf.client(cmd.Context())
			if err != nil {
				return err
			}
			s, err := c.Cancel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			report := s.Report
			if report == "" {
				report = "being written (fileflow status " + s.JobID + " shows it)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s with %d succeeded, %d failed of %d listed; report %s\n",
				s.JobID, s.Status, s.Counts.Succeeded, s.Counts.Failed, s.Counts.Listed, report)
			return nil
		},
	}
	tf.add(cmd)
	return cmd
}
