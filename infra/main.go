// Command infra is fileflow's Pulumi stack program (Pulumi.yaml: main: infra/). It reads
// the stage's `fileflow:*` config, builds each function's reproducible zip, and declares
// the pipeline component. `pulumi preview --policy-pack infra/policy` checks it.
package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/fileflow/fileflow/pkg/build"
	"github.com/fileflow/fileflow/pkg/stack"
	"github.com/fileflow/fileflow/pkg/stage"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		root, err := stack.ModuleRoot(wd)
		if err != nil {
			return err
		}
		file := filepath.Base(stack.StageFile(root, ctx.Stack()))
		// Every fileflow key Pulumi knows for this stack (stage file, ESC, --config),
		// plus the stage file's own keys so that a misspelt key is reported, not ignored.
		values := map[string]string{}
		if fromFile, err := stage.ReadFile(stack.StageFile(root, ctx.Stack())); err == nil {
			for k, v := range fromFile {
				if strings.HasPrefix(k, stage.Namespace+":") {
					values[k] = v
				}
			}
		}
		for _, k := range stage.KeyNames() {
			if v, ok := ctx.GetConfig(stage.Namespace + ":" + k); ok {
				values[stage.Namespace+":"+k] = v
			}
		}
		fns, err := build.Functions(root)
		if err != nil {
			return err
		}
		args, err := stage.Parse(maps.Clone(values), file, fns)
		if err != nil {
			return fmt.Errorf("stage config:\n%w", err)
		}
		code, err := stack.Code(context.Background(), root)
		if err != nil {
			return err
		}
		return stack.Program(args, code)(ctx)
	})
}
