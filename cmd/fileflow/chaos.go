package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/chaos"
)

func chaosCmd() *cobra.Command {
	var (
		cfg    chaos.Config
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "chaos [--files N] [--seed S] [--json]",
		Short: "Run the local pipeline under injected faults and account for every file; non-zero exit on any violation",
		Long: `chaos brings up the local stack (as fileflow dev does) and runs a workload of S3-event
files and jobs of every kind while it injects faults: throttling, 500s, connection resets,
lost responses, timeouts and slow answers on the functions' AWS calls; kill -9 of execution
environments; S3 events and job submissions delivered twice; keys overwritten or deleted
while in flight; poison files and bad manifest rows; prefixes changing under running jobs;
cancels and tolerance failures; a DynamoDB outage. When everything has settled it accounts
for every input from the ledger, the outputs, the job reports, the notifications and the
dead-letter queues, prints the report, and exits non-zero on any violation (lost, wrong or
stray output, double count, a job finished twice or never, report lines missing).

The seed fixes the workload and the faults' draws (not the machine's interleavings).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := moduleRoot()
			if err != nil {
				return err
			}
			cfg.Root = root
			errOut := cmd.ErrOrStderr()
			cfg.Log = slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
			fnLogPath := filepath.Join(os.TempDir(), "fileflow-chaos-functions.log")
			fnLog, err := os.Create(fnLogPath)
			if err != nil {
				return err
			}
			defer fnLog.Close()
			cfg.FunctionLogs, cfg.Progress = fnLog, errOut
			fmt.Fprintf(errOut, "fileflow chaos: seed %d, %d files; function logs: %s\n", cfg.Seed, cfg.Files, fnLogPath)
			r, err := chaos.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if asJSON {
				b, err := r.JSON()
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				fmt.Fprint(errOut, r.Text()) // the same report, for the person watching
			} else {
				fmt.Fprint(cmd.OutOrStdout(), r.Text())
			}
			if !r.OK() {
				return fmt.Errorf("%d violations (replay: fileflow chaos --seed %d --files %d)", r.ViolationCount(), r.Seed, cfg.Files)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint64Var(&cfg.Seed, "seed", uint64(time.Now().UnixNano()), "the workload's and the faults' seed")
	f.IntVar(&cfg.Files, "files", 100_000, "input files: half S3 events, half in jobs of every kind")
	f.Float64Var(&cfg.FaultRate, "fault-rate", 0.10, "share of the functions' AWS calls that get a fault (negative: none)")
	f.Float64Var(&cfg.PoisonRate, "poison-rate", 0.01, "share of files that must fail")
	f.Float64Var(&cfg.DuplicateRate, "duplicate-rate", 0.02, "share of keys whose S3 events are delivered twice")
	f.Float64Var(&cfg.OverwriteRate, "overwrite-rate", 0.02, "share of event files overwritten while in flight")
	f.Float64Var(&cfg.DeleteRate, "delete-rate", 0.005, "share of event files deleted right after they are written")
	f.DurationVar(&cfg.KillEvery, "kill-every", 3*time.Second, "kill a busy execution environment this often (± half); negative: never")
	f.Float64Var(&cfg.KillShare, "kill-share", 0.05, "kill at most this share of each function's invocations so far (negative: no cap)")
	f.BoolVar(&cfg.RestartDynamoDB, "restart-dynamodb", true, "stop the DynamoDB server once mid-run and start it again with its data")
	f.DurationVar(&cfg.DynamoDBDown, "dynamodb-down", 5*time.Second, "how long DynamoDB stays down")
	f.DurationVar(&cfg.FunctionTimeout, "function-timeout", 20*time.Second, "the worker's and dispatcher's timeout; a killed batch comes back after 6x this")
	f.DurationVar(&cfg.Timeout, "timeout", 60*time.Minute, "give up after this long")
	f.DurationVar(&cfg.Stall, "stall", 2*time.Minute, "stop waiting when nothing has moved this long with the queues empty")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON (and as text on stderr)")
	return cmd
}
