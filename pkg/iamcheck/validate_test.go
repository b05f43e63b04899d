package iamcheck_test

import (
	"context"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/iamcheck"
	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/stack"
)

func checker(t *testing.T) *iamcheck.Checker {
	t.Helper()
	c, err := iamcheck.New(context.Background(), "")
	require.NoError(t, err, "install the IAM checkers")
	return c
}

// Every policy document both stages declare passes the independent validator: trust
// policies by the trust-policy rules (no Resource), role policies by the identity rules,
// bucket, queue, topic and key policies by the resource-policy rules.
func TestStagePoliciesPassTheValidator(t *testing.T) {
	c := checker(t)
	root, err := stack.ModuleRoot(".")
	require.NoError(t, err)
	total := 0
	for _, st := range []string{"dev", "prod"} {
		t.Run(st, func(t *testing.T) {
			g, _, err := stack.Plan(context.Background(), root, st)
			require.NoError(t, err)
			docs := iamcheck.Documents(g)
			kinds := map[iamcheck.Kind]int{}
			for _, d := range docs {
				kinds[d.Kind]++
			}
			require.Positive(t, kinds[iamcheck.Trust], "trust policies")
			require.Positive(t, kinds[iamcheck.Identity], "identity policies")
			require.Positive(t, kinds[iamcheck.Resource], "resource policies")
			findings, err := c.Validate(context.Background(), docs)
			require.NoError(t, err)
			assert.Empty(t, findings, "validator findings")
			t.Logf("stage %s: %d documents validated (%v), %d findings", st, len(docs), kinds, len(findings))
			total += len(docs)
		})
	}
	t.Logf("both stages: %d documents validated", total)
}

// The validator is not a rubber stamp: each kind's own mistakes are found.
func TestValidatorFindsEachKindsMistakes(t *testing.T) {
	c := checker(t)
	docs := []iamcheck.Document{
		{ID: "trust with Resource", Kind: iamcheck.Trust, Policy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":["sts:AssumeRole"],"Resource":null}]}`},
		{ID: "identity with Principal", Kind: iamcheck.Identity, Policy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::b/*"]}]}`},
		{ID: "resource with an action without service", Kind: iamcheck.Resource, Policy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":["SendMessage"],"Resource":["arn:aws:sqs:us-east-1:123456789012:q"]}]}`},
		{ID: "not JSON", Kind: iamcheck.Identity, Policy: `{`},
	}
	findings, err := c.Validate(context.Background(), docs)
	require.NoError(t, err)
	found := map[string]bool{}
	for _, f := range findings {
		found[f.Document] = true
	}
	for _, d := range docs {
		assert.True(t, found[d.ID], "%s: no finding", d.ID)
	}
}

// Component variants the stages don't use (customer-managed key, ingest through
// EventBridge, two pipelines in one program) pass too.
func TestComponentVariantsPassTheValidator(t *testing.T) {
	c := checker(t)
	code := func(names ...string) map[string]pipeline.Code {
		out := map[string]pipeline.Code{}
		for _, n := range names {
			out[n] = pipeline.Code{Archive: pulumi.NewAssetArchive(map[string]any{"bootstrap": pulumi.NewStringAsset(n)}), Hash: "eA=="}
		}
		return out
	}
	variants := map[string]func(ctx *pulumi.Context) error{
		"worker only": func(ctx *pulumi.Context) error {
			_, err := pipeline.New(ctx, "files", &pipeline.Args{Code: code("worker"), IngestPrefix: "in/"})
			return err
		},
		"key, EventBridge, provisioned concurrency, tracing": func(ctx *pulumi.Context) error {
			_, err := pipeline.New(ctx, "files", &pipeline.Args{Code: code("worker", "dispatch"), CustomerManagedKey: true,
				Ingest: pipeline.IngestEventBridge, IngestSuffix: ".csv", Tracing: true, OutputPrefix: "out/",
				Functions: map[string]pipeline.FunctionArgs{"worker": {ProvisionedConcurrency: 2}}})
			return err
		},
		"two pipelines": func(ctx *pulumi.Context) error {
			for _, n := range []string{"a", "b"} {
				if _, err := pipeline.New(ctx, n, &pipeline.Args{Code: code("worker", "dispatch")}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	for name, program := range variants {
		t.Run(name, func(t *testing.T) {
			g, err := plan.Run("fileflow", "test", program)
			require.NoError(t, err)
			docs := iamcheck.Documents(g)
			require.NotEmpty(t, docs)
			findings, err := c.Validate(context.Background(), docs)
			require.NoError(t, err)
			assert.Empty(t, findings)
			t.Logf("%d documents, %d findings", len(docs), len(findings))
		})
	}
}
