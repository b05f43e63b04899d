// Package iamcheck checks fileflow's IAM with code fileflow did not write: every policy
// document the component declares is validated by the npm package
// @cloud-copilot/iam-policy (trust, identity and resource policies each by their own
// rules), and every AWS call the handlers made in a local run is simulated by
// @cloud-copilot/iam-simulate against the calling function's role policy and the
// touched resource's policy.
//
// The two packages are installed (pinned, into the user cache, under the local
// servers' install lock) by [local.InstallIAMTools] and run with its Node 22 binary
// through a small script (runner.mjs) that reads JSON on stdin and writes JSON.
//
// # What is checked where
//
//   - [Documents] lists the policy documents of a planned graph; [Checker.Validate]
//     returns the validator's findings (`fileflow plan` lists them with the policy
//     rules' violations; the tests require none).
//   - [FromHTTP] turns one request a function sent to a local AWS-API server into the
//     IAM requests AWS would authorize (action and resource ARN); a [Recorder] collects
//     them per function during a local run; [Checker.Simulate] judges them.
package iamcheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/fileflow/fileflow/pkg/local"
)

//go:embed runner.mjs
var runnerJS []byte

// Kind is the kind of a policy document, which decides the validator's rules.
type Kind string

// The kinds.
const (
	Trust    Kind = "trust"    // a role's assume-role policy: no Resource allowed
	Identity Kind = "identity" // a role's (or managed) policy: no Principal allowed
	Resource Kind = "resource" // a bucket, queue, topic or key policy: Principal required
)

// Document is one policy document to validate.
type Document struct {
	ID     string `json:"id"`   // where it is declared: "<resource name> (<type>)"
	Kind   Kind   `json:"kind"` //
	Policy string `json:"policy"`
}

// Finding is one problem the validator found in a document.
type Finding struct {
	Document string `json:"document"`
	Kind     Kind   `json:"kind"`
	Path     string `json:"path"`
	Message  string `json:"message"`
}

func (f Finding) String() string {
	return fmt.Sprintf("%s (%s policy) %s: %s", f.Document, f.Kind, f.Path, f.Message)
}

// Request is one IAM request to simulate.
type Request struct {
	ID             string            `json:"id"`
	Principal      string            `json:"principal"` // the role's ARN
	Action         string            `json:"action"`    // "s3:GetObject"
	Resource       string            `json:"resource"`  // the ARN touched
	Account        string            `json:"account"`   // the resource's account
	Identity       []string          `json:"identity"`  // the principal's policies (JSON)
	ResourcePolicy string            `json:"resourcePolicy,omitempty"`
	Context        map[string]string `json:"context,omitempty"`
}

// Decisions the simulator returns.
const (
	Allowed          = "Allowed"
	ImplicitlyDenied = "ImplicitlyDenied"
	ExplicitlyDenied = "ExplicitlyDenied"
	Error            = "Error" // the simulator refused the request (unknown action, bad ARN…)
)

// Decision is the simulator's answer to one request.
type Decision struct {
	ID     string `json:"id"`
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

// Checker runs the installed IAM checkers.
type Checker struct {
	tools  *local.IAMTools
	script string
}

// New installs the checkers into cacheDir ("" means the default cache) on first use and
// returns a Checker.
func New(ctx context.Context, cacheDir string) (*Checker, error) {
	tools, err := local.InstallIAMTools(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	// The script must sit in the npm prefix so that node resolves the packages; its name
	// carries its hash so concurrent test processes never see a half-written one.
	sum := sha256.Sum256(runnerJS)
	script := filepath.Join(tools.Dir, "fileflow-iamcheck-"+hex.EncodeToString(sum[:6])+".mjs")
	if _, err := os.Stat(script); err != nil {
		tmp, err := os.CreateTemp(tools.Dir, ".iamcheck-*.mjs")
		if err != nil {
			return nil, fmt.Errorf("iamcheck: write runner: %w", err)
		}
		if _, err := tmp.Write(runnerJS); err != nil {
			tmp.Close()
			return nil, fmt.Errorf("iamcheck: write runner: %w", err)
		}
		if err := tmp.Close(); err != nil {
			return nil, fmt.Errorf("iamcheck: write runner: %w", err)
		}
		if err := os.Rename(tmp.Name(), script); err != nil {
			return nil, fmt.Errorf("iamcheck: write runner: %w", err)
		}
	}
	return &Checker{tools: tools, script: script}, nil
}

type runInput struct {
	Validate []Document `json:"validate"`
	Simulate []Request  `json:"simulate"`
}

type runOutput struct {
	Validate []struct {
		ID       string `json:"id"`
		Findings []struct {
			Path    string `json:"path"`
			Message string `json:"message"`
		} `json:"findings"`
	} `json:"validate"`
	Simulate []Decision `json:"simulate"`
}

func (c *Checker) run(ctx context.Context, in runInput) (*runOutput, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("iamcheck: %w", err)
	}
	cmd := exec.CommandContext(ctx, c.tools.Node, c.script)
	cmd.Dir = c.tools.Dir
	cmd.Stdin = bytes.NewReader(body)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("iamcheck: %s: %w\n%s", filepath.Base(c.script), err, strings.TrimSpace(stderr.String()))
	}
	var out runOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("iamcheck: runner output: %w", err)
	}
	if len(out.Validate) != len(in.Validate) || len(out.Simulate) != len(in.Simulate) {
		return nil, fmt.Errorf("iamcheck: runner answered %d of %d documents, %d of %d requests",
			len(out.Validate), len(in.Validate), len(out.Simulate), len(in.Simulate))
	}
	return &out, nil
}

// Validate runs each document through the validator of its kind and returns every
// finding (none: all valid).
func (c *Checker) Validate(ctx context.Context, docs []Document) ([]Finding, error) {
	if len(docs) == 0 {
		return nil, nil
	}
	for _, d := range docs {
		switch d.Kind {
		case Trust, Identity, Resource:
		default:
			return nil, fmt.Errorf("iamcheck: document %s: unknown kind %q", d.ID, d.Kind)
		}
	}
	out, err := c.run(ctx, runInput{Validate: docs})
	if err != nil {
		return nil, err
	}
	var findings []Finding
	for i, v := range out.Validate {
		for _, f := range v.Findings {
			findings = append(findings, Finding{Document: docs[i].ID, Kind: docs[i].Kind, Path: f.Path, Message: f.Message})
		}
	}
	return findings, nil
}

// Simulate judges each request; the decisions come back in the requests' order. Large
// sets are split over one runner per CPU.
func (c *Checker) Simulate(ctx context.Context, reqs []Request) ([]Decision, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	n := min(runtime.NumCPU(), max(1, len(reqs)/2000))
	size := (len(reqs) + n - 1) / n
	out := make([]Decision, len(reqs))
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		lo, hi := i*size, min((i+1)*size, len(reqs))
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.run(ctx, runInput{Simulate: reqs[lo:hi]})
			if err != nil {
				errs[i] = err
				return
			}
			copy(out[lo:hi], res.Simulate)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
