package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/benchmark"
	"github.com/fileflow/fileflow/pkg/local/demo"
	"github.com/fileflow/fileflow/pkg/local/devstack"
)

func benchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks on the local stack (loopback only; they stop by themselves)"}
	cmd.AddCommand(benchRawCmd(), benchCompareCmd(), benchReportCmd(), benchProfileCmd())
	return cmd
}

type benchFlags struct {
	files, concurrency int
	meter              bool
	set                map[string]string
}

func (f *benchFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.files, "files", 5000, "files (1 KB to a few KB each, as in fileflow dev)")
	cmd.Flags().IntVar(&f.concurrency, "concurrency", 32, "raw loop goroutines")
	cmd.Flags().BoolVar(&f.meter, "meter", false, "count the functions' API calls through proxies (costs CPU)")
	cmd.Flags().StringToStringVar(&f.set, "set", nil, "override fileflow:* settings of the dev stage, e.g. --set fileflow:workerMaxConcurrency=4")
}

// startAndUpload brings up the local stack (no poison files, so every file is a success
// in both loops) and returns it with the generated files.
func startBench(cmd *cobra.Command, warn, meterCalls bool, overrides map[string]string) (*devstack.Stack, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	level := slog.LevelInfo
	if warn {
		level = slog.LevelWarn
	}
	return devstack.Start(cmd.Context(), devstack.Options{Root: root, Paused: true, NoMeter: !meterCalls, Overrides: overrides, Log: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))})
}

// benchBucket creates a bucket without notifications for the raw loop's inputs.
// warmUp runs the benchmark's warm-up (benchmark.WarmUp: DynamoDB Local's JVM keeps
// getting faster for tens of thousands of requests) and returns the raw loop's bucket.
func warmUp(cmd *cobra.Command, st *devstack.Stack, f benchFlags) (string, error) {
	rates, err := benchmark.WarmUp(cmd.Context(), st, benchmark.WarmUpFiles, benchmark.WarmUpPasses)
	if err != nil {
		return "", err
	}
	slog.Info("warm-up", "raw loop files/s by pass", rates)
	return benchmark.RawBucket, nil
}

func benchRawCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "raw",
		Short: "The floor: S3 GET + PUT + one conditional DynamoDB write per file in a plain loop, no orchestration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := startBench(cmd, true, false, f.set)
			if err != nil {
				return err
			}
			defer st.Stop()
			ctx := cmd.Context()
			bucket, err := warmUp(cmd, st, f)
			if err != nil {
				return err
			}
			files := demo.Generate(demo.Options{Files: f.files, PoisonEvery: -1, Seed: 1})
			keys, err := demo.UploadOnly(ctx, st, bucket, files, 16)
			if err != nil {
				return err
			}
			res, err := demo.RawLoop(ctx, st.S3Direct, st.DynamoDB, bucket, st.Resources.OutputBucket, st.Resources.Table, keys, f.concurrency)
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(res, "", "  ")
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func benchCompareCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "The pipeline (fileflow dev) and the raw loop on the same servers in one run, and their ratio",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := startBench(cmd, false, f.meter, f.set)
			if err != nil {
				return err
			}
			defer st.Stop()
			if _, err := warmUp(cmd, st, f); err != nil {
				return err
			}
			files := demo.Generate(demo.Options{Files: f.files, PoisonEvery: -1, Seed: 2})
			sum, err := demo.Run(ctx, st, files, demo.Options{Files: f.files, Timeout: 8 * time.Minute, Burst: true})
			if err != nil {
				return err
			}
			keys := make([]string, len(files))
			for i, fl := range files {
				keys[i] = fl.Key
			}
			raw, err := demo.RawLoop(ctx, st.S3Direct, st.DynamoDB, st.Resources.IngestBucket, st.Resources.OutputBucket, st.Resources.Table, keys, f.concurrency)
			if err != nil {
				return err
			}
			out := map[string]any{"pipeline": sum, "raw": raw, "ratio": sum.FilesPerSec / raw.FilesPerSec,
				"ratio_processing": sum.ProcessingPerSec / raw.FilesPerSec}
			b, _ := json.MarshalIndent(out, "", "  ")
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
