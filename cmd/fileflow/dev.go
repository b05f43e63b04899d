package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/jobctl"
	"github.com/fileflow/fileflow/pkg/local/demo"
	"github.com/fileflow/fileflow/pkg/local/devstack"
	"github.com/fileflow/fileflow/pkg/progress"
)

func devCmd() *cobra.Command {
	var (
		files, poisonEvery, duplicates int
		stageName                      string
		keep, asJSON, verbose, burst   bool
		jobDemo                        bool
		timeout                        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dev [--files N] [--keep] [--json]",
		Short: "Run the whole pipeline locally (real handler binaries, local S3/SQS/DynamoDB) and push a demo load through it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			errOut := cmd.ErrOrStderr()
			logLevel := slog.LevelInfo
			if asJSON && !verbose {
				logLevel = slog.LevelWarn
			}
			// Log lines go above the progress bar while it runs, never through it.
			logs := progress.NewLogs(errOut)
			log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: logLevel}))
			root, err := moduleRoot()
			if err != nil {
				return err
			}
			fnLogPath := filepath.Join(os.TempDir(), "fileflow-dev-functions.log")
			fnLog, err := os.Create(fnLogPath)
			if err != nil {
				return err
			}
			defer fnLog.Close()
			fmt.Fprintf(errOut, "fileflow dev: stage %s — building functions, starting local S3/SQS/DynamoDB, provisioning from the component…\n", stageName)
			began := time.Now()
			st, err := devstack.Start(ctx, devstack.Options{Root: root, Stage: stageName, Log: log, FunctionLogs: fnLog, Paused: burst})
			if err != nil {
				return err
			}
			defer st.Stop()
			fmt.Fprintf(errOut, "fileflow dev: up in %.1fs; function logs: %s\n", time.Since(began).Seconds(), fnLogPath)
			var progressOut io.Writer
			if !asJSON {
				progressOut = errOut
			}
			fs := demo.Generate(demo.Options{Files: files, PoisonEvery: poisonEvery, Duplicates: duplicates, Seed: uint64(time.Now().UnixNano())})
			sum, err := demo.Run(ctx, st, fs, demo.Options{Files: files, Timeout: timeout, Progress: progressOut, Logs: logs, Burst: burst})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, err := sum.JSON()
				if err != nil {
					return err
				}
				fmt.Fprintln(out, string(b))
			} else {
				fmt.Fprint(out, sum.Text())
			}
			if jobDemo && !asJSON {
				// The same files again, as one fan-out job: listed in parallel, each file
				// already processed is a duplicate (counted, not redone), the poison files
				// fail again, and the job reports and notifies once.
				c, err := jobctl.New(ctx, st.Target())
				if err != nil {
					return err
				}
				c.Logs = logs
				ingest := "s3://" + st.Resources.IngestBucket + "/demo/"
				fmt.Fprintf(out, "\nfileflow submit --local --prefix %s --watch\n", ingest)
				id, err := c.Submit(ctx, job.Spec{Kind: job.KindPrefix, Bucket: st.Resources.IngestBucket, Key: "demo/"})
				if err != nil {
					return err
				}
				s, err := c.Watch(ctx, id, errOut, 500*time.Millisecond)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "job %s %s: listed %d, succeeded %d, failed %d in %s\nreport: %s\n", id, s.Status,
					s.Counts.Listed, s.Counts.Succeeded, s.Counts.Failed, time.Duration(s.DurationMS)*time.Millisecond, s.Report)
			}
			if keep {
				printEndpoints(out, st)
				path, err := jobctl.LocalStatePath()
				if err != nil {
					return err
				}
				if err := st.Target().SaveLocal(path); err != nil {
					return err
				}
				defer os.Remove(path)
				fmt.Fprintf(out, "Jobs: fileflow submit --local --prefix s3://%s/<prefix> --watch   (state: %s)\n", st.Resources.IngestBucket, path)
				fmt.Fprintln(out, "Running until Ctrl-C; environments scale down to zero when idle.")
				<-ctx.Done()
			}
			if sum.Lost > 0 || len(sum.OutputMismatches) > 0 {
				return fmt.Errorf("%d files lost, %d outputs wrong", sum.Lost, len(sum.OutputMismatches))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&files, "files", 1000, "files to generate and upload")
	cmd.Flags().IntVar(&poisonEvery, "poison-every", 50, "every n-th file is poison (corrupt gzip or a rejected .exe); -1: none")
	cmd.Flags().IntVar(&duplicates, "duplicates", 20, "files whose S3 event is delivered twice")
	cmd.Flags().StringVar(&stageName, "stack", "dev", "stage to run locally")
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the stack running and print how to use it")
	cmd.Flags().BoolVar(&jobDemo, "job", true, "then run the same files again as one fan-out job (prefix demo/)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "log scaling events even with --json")
	cmd.Flags().BoolVar(&burst, "burst", false, "upload everything first, then let the pipeline drain the backlog")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up waiting after this long")
	return cmd
}

func printEndpoints(w io.Writer, st *devstack.Stack) {
	fmt.Fprintln(w, "\nThe local stack is up:")
	for _, kv := range st.Servers.Env() {
		if strings.HasPrefix(kv, "AWS_ENDPOINT_URL_S3=") {
			kv = "AWS_ENDPOINT_URL_S3=" + st.S3Endpoint // the notifying endpoint
		}
		if strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "AWS_SESSION") {
			fmt.Fprintf(w, "  export %s\n", kv)
		}
	}
	fmt.Fprintf(w, "  ingest bucket: %s   output bucket: %s   ledger table: %s\n", st.Resources.IngestBucket, st.Resources.OutputBucket, st.Resources.Table)
	fmt.Fprintf(w, "Drop a file in (any S3 client; with the AWS CLI):\n  aws s3 cp ./report.csv s3://%s/report.csv\n", st.Resources.IngestBucket)
	fmt.Fprintf(w, "and read the result:\n  aws s3 cp s3://%s/report.csv -\n", st.Resources.OutputBucket)
}
