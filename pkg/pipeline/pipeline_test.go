package pipeline_test

import (
	"encoding/json"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/policy"
)

func code() map[string]pipeline.Code {
	return map[string]pipeline.Code{"worker": {
		Archive: pulumi.NewAssetArchive(map[string]any{"bootstrap": pulumi.NewStringAsset("test binary")}),
		Hash:    "dGVzdA==",
	}}
}

func run(t *testing.T, args *pipeline.Args) *plan.Graph {
	t.Helper()
	g, err := plan.Run("fileflow", "test", func(ctx *pulumi.Context) error {
		_, err := pipeline.New(ctx, "files", args)
		return err
	})
	require.NoError(t, err)
	return g
}

func TestGraphSmoke(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code()})
	b, _ := json.MarshalIndent(g.Counts(), "", " ")
	t.Log(string(b))
	assert.NotEmpty(t, g.Resources)
}

func TestNoViolationsSmoke(t *testing.T) {
	g := run(t, &pipeline.Args{Code: code()})
	for _, v := range policy.Check(g.Policy()) {
		t.Errorf("%s %s: %s", v.Rule, v.Name, v.Message)
	}
}
