package benchmark

import (
	"archive/zip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fileflow/fileflow/pkg/build"
	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/lambda"
	"github.com/fileflow/fileflow/pkg/local/provision"
	"github.com/fileflow/fileflow/pkg/process"
)

// initLimit bounds one init, as Lambda does (10 s for an on-demand function).
const initLimit = 10 * time.Second

// ColdStarts is section 5: for every function of the module ([build.Functions]), the
// size of the zip that is deployed and its init time under the local Lambda runtime
// (package lambda), runs times, each in a fresh process, one after the other.
//
// ZipBytes is the size of the reproducible linux/arm64 zip [build.Function] makes, the
// one Pulumi deploys. An arm64 binary can't run on another host, so the timing runs the
// same function built by [build.Function] for this machine's architecture (linux, same
// flags, ldflags, tags and pinned toolchain; only GOARCH differs), its bootstrap taken
// from that zip. On an arm64 host the two are the same build.
//
// Init time is Lambda's Init Duration for an OS-only runtime (provided.al2023): from
// the process's launch ([lambda.Config.ColdStart]) to its first GET …/invocation/next
// ([lambda.Config.Next]). No event is handed over: the request is held until the
// process is killed, so the invocation is not part of the figure.
//
// Each function gets a minimal valid environment — the variables the component sets
// (see pkg/pipeline's environment and package fnenv) and the local stack's credentials
// and region — with every AWS endpoint on a loopback listener that closes each
// connection at once. Init must not call AWS: a connection to it during init is an
// error naming the function.
func ColdStarts(ctx context.Context, moduleDir string, runs int) ([]ColdStart, error) {
	if runs < 1 {
		return nil, fmt.Errorf("benchmark: cold start: runs = %d: want at least 1", runs)
	}
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("benchmark: cold start: the local runtime runs linux binaries; this is %s", runtime.GOOS)
	}
	names, err := build.Functions(moduleDir)
	if err != nil {
		return nil, fmt.Errorf("benchmark: cold start: %w", err)
	}
	tmp, err := os.MkdirTemp("", "fileflow-coldstart-")
	if err != nil {
		return nil, fmt.Errorf("benchmark: cold start: %w", err)
	}
	defer os.RemoveAll(tmp)
	aws, err := newSink()
	if err != nil {
		return nil, fmt.Errorf("benchmark: cold start: %w", err)
	}
	defer aws.Close()

	out := make([]ColdStart, 0, len(names))
	for _, name := range names {
		cs, err := coldStart(ctx, moduleDir, name, runs, filepath.Join(tmp, name), aws)
		if err != nil {
			return nil, fmt.Errorf("benchmark: cold start %s: %w", name, err)
		}
		out = append(out, cs)
	}
	return out, nil
}

// coldStart builds one function (arm64 for the size, the host's arch to run) and times
// its inits.
func coldStart(ctx context.Context, moduleDir, name string, runs int, dir string, aws *sink) (ColdStart, error) {
	deployed, err := build.Function(ctx, build.Options{ModuleDir: moduleDir, Function: name, OutDir: filepath.Join(dir, "arm64"), GOARCH: "arm64"})
	if err != nil {
		return ColdStart{}, err
	}
	host := deployed
	if runtime.GOARCH != "arm64" {
		host, err = build.Function(ctx, build.Options{ModuleDir: moduleDir, Function: name, OutDir: filepath.Join(dir, runtime.GOARCH), GOARCH: runtime.GOARCH})
		if err != nil {
			return ColdStart{}, err
		}
	}
	bin, err := extractBootstrap(host.Path, dir)
	if err != nil {
		return ColdStart{}, err
	}
	fn := &provision.Function{
		Name:      "fileflow-" + name,
		Handler:   name,
		Timeout:   initLimit,
		MemoryMB:  512, // the component's default (pipeline.DefaultFunction)
		Env:       functionEnv(name, aws.url),
		LogFormat: "JSON", // as the component configures every function
	}
	env := append((&local.Servers{S3: aws.url, SQS: aws.url, DynamoDB: aws.url}).Env(),
		// Keep the host's AWS profile and files out of it: their reading is no part of
		// a Lambda's init, and a profile that doesn't exist here would fail it.
		"AWS_PROFILE=",
		"AWS_CONFIG_FILE="+filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "no-aws-credentials"),
	)
	cs := ColdStart{Function: name, ZipBytes: deployed.Size, InitMs: make([]float64, 0, runs)}
	for i := range runs {
		d, err := initOnce(ctx, fn, bin, env, aws)
		if err != nil {
			return ColdStart{}, fmt.Errorf("run %d: %w", i+1, err)
		}
		cs.InitMs = append(cs.InitMs, float64(d)/float64(time.Millisecond))
	}
	cs.MedianMs = Median(cs.InitMs)
	return cs, nil
}

// initOnce launches the function in a fresh environment, waits for its first /next
// and kills it, whatever happened.
func initOnce(ctx context.Context, fn *provision.Function, bin string, env []string, aws *sink) (time.Duration, error) {
	var (
		mu      sync.Mutex
		started time.Time
	)
	ready := make(chan time.Time, 1)
	release := make(chan struct{})
	logs := &tail{}
	e := lambda.NewEnvironment(lambda.Config{
		Function: fn,
		Binary:   bin,
		Env:      env,
		Logs:     func(_ string, _ int, line string) { logs.add(line) },
		ColdStart: func() {
			mu.Lock()
			started = time.Now()
			mu.Unlock()
		},
		Next: func() {
			select {
			case ready <- time.Now():
			default:
			}
			<-release // hold the request: no event, no invocation
		},
	}, 0)
	calls := aws.conns.Load()

	ictx, cancel := context.WithCancel(ctx)
	invoked := make(chan error, 1)
	go func() {
		_, err := e.Invoke(ictx, []byte("{}"))
		invoked <- err
	}()
	var (
		at       time.Time
		err      error
		returned bool
	)
	select {
	case at = <-ready:
	case err = <-invoked: // the process exited, or its init ran past initLimit
		returned = true
	case <-ctx.Done():
		err = ctx.Err()
	}
	// Tear down in an order that leaves nothing behind: once Invoke has returned (the
	// held invocation ends with the cancellation) nothing launches a process any more;
	// Close kills the one there is (its process group) and waits for it; then the held
	// /next handler may return.
	cancel()
	if !returned {
		<-invoked
	}
	e.Close()
	close(release)

	if n := aws.conns.Load() - calls; n > 0 {
		return 0, fmt.Errorf("init called AWS: %d connection(s) to the stub endpoints while it ran, with no event sent (init must not make network calls)%s", n, logs.String())
	}
	if err != nil {
		return 0, fmt.Errorf("init: %w%s", err, logs.String())
	}
	mu.Lock()
	d := at.Sub(started)
	mu.Unlock()
	if started.IsZero() || d <= 0 {
		return 0, fmt.Errorf("init: no launch time recorded (%v)", d)
	}
	return d, nil
}

// functionEnv is the minimal valid environment of a function: what pkg/pipeline's
// environment sets for it (defaults for the values a stage chooses), with every queue
// and topic on the stub endpoint.
func functionEnv(name, endpoint string) map[string]string {
	queue := func(q string) string { return endpoint + "/000000000000/fileflow-" + q }
	env := map[string]string{
		fnenv.Table:           "fileflow-ledger",
		fnenv.OutputBucket:    "fileflow-output",
		fnenv.MaxReceiveCount: "5",
		fnenv.LedgerTTLDays:   "30",
		fnenv.CompletionTopic: "arn:aws:sns:" + local.Region + ":000000000000:fileflow-completion",
	}
	switch name {
	case "worker":
		rules, _ := json.Marshal(process.DefaultRules) // plain strings: can't fail
		env[fnenv.Rules] = string(rules)
		env[fnenv.Concurrency] = "10"
		env[fnenv.MinItemTime] = "5s"
		env[fnenv.JobsQueueURL] = queue("jobs")
	case "dispatch":
		env[fnenv.TasksQueueURL] = queue("tasks")
		env[fnenv.JobsQueueURL] = queue("jobs")
		env[fnenv.TasksDLQURL] = queue("tasks-dlq")
		env[fnenv.JobsDLQURL] = queue("jobs-dlq")
	}
	return env
}

// extractBootstrap writes the zip's bootstrap entry to dir/bootstrap, executable.
func extractBootstrap(zipPath, dir string) (string, error) {
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		return "", err
	}
	defer zr.Close()
	for _, f := range zr.File {
		if f.Name != "bootstrap" {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return "", fmt.Errorf("%s: %w", zipPath, err)
		}
		defer rc.Close()
		out := filepath.Join(dir, "bootstrap")
		w, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
		if err != nil {
			return "", err
		}
		if _, err := io.Copy(w, rc); err != nil {
			w.Close()
			return "", fmt.Errorf("%s: %w", zipPath, err)
		}
		if err := w.Close(); err != nil {
			return "", err
		}
		return out, nil
	}
	return "", fmt.Errorf("%s has no bootstrap", zipPath)
}

// sink is the functions' AWS endpoint: a loopback listener that closes every connection
// at once and counts them.
type sink struct {
	l     net.Listener
	url   string
	conns atomic.Int64
	done  chan struct{}
}

func newSink() (*sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{l: l, url: "http://" + l.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			c.Close()
		}
	}()
	return s, nil
}

// Close stops the listener and waits for its loop.
func (s *sink) Close() {
	s.l.Close()
	<-s.done
}

// tail keeps a process's last lines for an error message.
type tail struct {
	mu    sync.Mutex
	lines []string
}

const tailLines = 20

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

// String is the lines, indented under a heading, or "" for none.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	return "\n  its output:\n    " + strings.Join(t.lines, "\n    ")
}
