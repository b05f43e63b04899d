// Package stack is fileflow's stack program as a library: stage config → function
// archives → the pipeline component → exported outputs. infra/main.go runs it with
// `pulumi up`; `fileflow plan` and the tests run the very same function under mocks.
package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/fileflow/fileflow/pkg/build"
	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/stage"
)

// Project is the Pulumi project name (Pulumi.yaml).
const Project = "fileflow"

// ComponentName is the pipeline's name in the stack.
const ComponentName = "fileflow"

// Program declares the pipeline with args and code and exports its outputs.
func Program(args pipeline.Args, code map[string]pipeline.Code) pulumi.RunFunc {
	return func(ctx *pulumi.Context) error {
		args.Code = code
		p, err := pipeline.New(ctx, ComponentName, &args)
		if err != nil {
			return err
		}
		ctx.Export("ingestBucket", p.IngestBucket)
		ctx.Export("outputBucket", p.OutputBucket)
		ctx.Export("outputPrefix", pulumi.String(args.OutputPrefix)) // job reports go under it
		ctx.Export("tableName", p.TableName)
		ctx.Export("queueUrls", p.QueueURLs)
		ctx.Export("queueArns", p.QueueARNs)
		ctx.Export("functionNames", p.FunctionNames)
		ctx.Export("alarmTopicArn", p.AlarmTopicARN)
		ctx.Export("completionTopicArn", p.CompletionTopicARN)
		ctx.Export("dashboardName", p.DashboardName)
		ctx.Export("roleArns", p.RoleARNs)
		ctx.Export("aliasArns", p.AliasARNs)
		ctx.Export("keyArn", p.KeyARN)
		return nil
	}
}

// ModuleRoot finds the fileflow module root (the directory holding Pulumi.yaml and
// go.mod) from dir upwards.
func ModuleRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "Pulumi.yaml")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return d, nil
			}
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("stack: no Pulumi.yaml with go.mod above %s", dir)
		}
		d = parent
	}
}

// StageFile is the path of a stack's config file.
func StageFile(root, stackName string) string {
	return filepath.Join(root, "Pulumi."+stackName+".yaml")
}

// Code builds every function under root/functions into root/dist (reproducible zips).
func Code(ctx context.Context, root string) (map[string]pipeline.Code, error) {
	names, err := build.Functions(root)
	if err != nil {
		return nil, err
	}
	code := map[string]pipeline.Code{}
	for _, n := range names {
		a, err := build.Function(ctx, build.Options{ModuleDir: root, Function: n, OutDir: filepath.Join(root, "dist")})
		if err != nil {
			return nil, err
		}
		code[n] = pipeline.Code{Archive: pulumi.NewFileArchive(a.Path), Hash: a.SHA256}
	}
	return code, nil
}

// LoadFile parses a stage file (Pulumi.<stack>.yaml) for the functions under root.
func LoadFile(root, stackName string) (pipeline.Args, error) {
	path := StageFile(root, stackName)
	values, err := stage.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return pipeline.Args{}, fmt.Errorf("stack %q: no %s (stages here: %s)", stackName, filepath.Base(path), strings.Join(Stages(root), ", "))
		}
		return pipeline.Args{}, err
	}
	fns, err := build.Functions(root)
	if err != nil {
		return pipeline.Args{}, err
	}
	return stage.Parse(values, filepath.Base(path), fns)
}

// Stages lists the stacks that have a Pulumi.<stack>.yaml under root.
func Stages(root string) []string {
	matches, _ := filepath.Glob(filepath.Join(root, "Pulumi.*.yaml"))
	var out []string
	for _, m := range matches {
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "Pulumi."), ".yaml"))
	}
	return out
}
