// Package lambda runs Lambda functions locally: the real `bootstrap` binaries behind an
// implementation of the Lambda Runtime API (one HTTP endpoint and one process per
// execution environment, one invocation at a time, as in Lambda), and SQS event source
// mappings that poll, batch, report partial batch failures, and scale the number of
// environments with the queue's depth — up to the mapping's maximum concurrency and
// down to zero when idle.
package lambda

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fileflow/fileflow/pkg/local/provision"
)

// Errors an invocation can end with.
var (
	// ErrTimeout: the invocation ran past the function's timeout; the environment was
	// stopped, as Lambda does.
	ErrTimeout = errors.New("lambda: task timed out")
	// ErrCrashed: the process exited during the invocation or its init.
	ErrCrashed = errors.New("lambda: runtime exited")
)

// FunctionError is an error the handler itself returned (POST …/error).
type FunctionError struct {
	Type    string `json:"errorType"`
	Message string `json:"errorMessage"`
}

func (e *FunctionError) Error() string { return "lambda: function error " + e.Type + ": " + e.Message }

// Config is what an environment needs to start the function.
type Config struct {
	Function *provision.Function
	Binary   string   // the bootstrap
	Env      []string // endpoints, credentials, region (KEY=VALUE)
	// Logs receives every line the function writes (stdout and stderr).
	Logs func(function string, env int, line string)
	// ColdStart, if set, is called each time a process is launched.
	ColdStart func()
	// Next, if set, is called each time the process asks for an event (GET …/next),
	// before one is handed over; the request waits for it to return. Its first call
	// after a launch ends the process's init: what Lambda reports as Init Duration for
	// an OS-only runtime (provided.al2023). Package benchmark times cold starts with it.
	Next func()
}

// Environment is one execution environment: one bootstrap process serving one
// invocation at a time through its own Runtime API endpoint.
type Environment struct {
	cfg Config
	id  int

	mu      sync.Mutex
	srv     *http.Server
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{}
	next    chan *invocation
	pending map[string]*invocation
	seq     int
	Cold    int // cold starts (process launches)
}

type invocation struct {
	id       string
	payload  []byte
	deadline time.Time
	done     chan result
}

type result struct {
	body []byte
	err  error
}

// NewEnvironment returns a stopped environment; the first Invoke starts it.
func NewEnvironment(cfg Config, id int) *Environment {
	return &Environment{cfg: cfg, id: id, next: make(chan *invocation), pending: map[string]*invocation{}}
}

// Invoke runs one invocation with the function's timeout.
func (e *Environment) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	exited, err := e.ensureStarted()
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.seq++
	inv := &invocation{
		id:       fmt.Sprintf("%s-%d-%d-%d", e.cfg.Function.Name, e.id, e.Cold, e.seq),
		payload:  payload,
		deadline: time.Now().Add(e.cfg.Function.Timeout),
		done:     make(chan result, 1),
	}
	e.pending[inv.id] = inv
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.pending, inv.id)
		e.mu.Unlock()
	}()

	timer := time.NewTimer(time.Until(inv.deadline))
	defer timer.Stop()
	select { // hand it to the runtime's /next
	case e.next <- inv:
	case <-exited:
		return nil, fmt.Errorf("%w during init of %s", ErrCrashed, e.cfg.Function.Name)
	case <-timer.C:
		e.Stop()
		return nil, fmt.Errorf("%w: init of %s took longer than %s", ErrTimeout, e.cfg.Function.Name, e.cfg.Function.Timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-inv.done:
		return r.body, r.err
	case <-exited:
		return nil, fmt.Errorf("%w during invocation %s", ErrCrashed, inv.id)
	case <-timer.C:
		e.Stop() // Lambda resets the environment after a timeout
		return nil, fmt.Errorf("%w after %s (%s)", ErrTimeout, e.cfg.Function.Timeout, inv.id)
	case <-ctx.Done():
		e.Stop()
		return nil, ctx.Err()
	}
}

// ensureStarted starts the Runtime API endpoint (once) and the process (after a stop).
func (e *Environment) ensureStarted() (<-chan struct{}, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv == nil {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("lambda: runtime api: %w", err)
		}
		e.addr = l.Addr().String()
		mux := http.NewServeMux()
		mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", e.handleNext)
		mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", e.handleResponse)
		mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", e.handleError)
		mux.HandleFunc("POST /2018-06-01/runtime/init/error", e.handleInitError)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		e.srv = srv
		// Serves the server it was started with: Close may clear e.srv before this runs.
		go func() {
			if err := srv.Serve(l); err != nil {
				_ = l.Close()
			}
		}()
	}
	if e.cmd != nil {
		select {
		case <-e.exited:
			e.cmd = nil
		default:
			return e.exited, nil
		}
	}
	fn := e.cfg.Function
	cmd := exec.Command(e.cfg.Binary)
	cmd.Env = append(os.Environ(), e.cfg.Env...)
	cmd.Env = append(cmd.Env,
		"AWS_LAMBDA_RUNTIME_API="+e.addr,
		"AWS_LAMBDA_FUNCTION_NAME="+fn.Name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE="+strconv.Itoa(fn.MemoryMB),
		"AWS_LAMBDA_LOG_GROUP_NAME=/local/"+fn.Name,
		"AWS_LAMBDA_LOG_STREAM_NAME=env-"+strconv.Itoa(e.id),
		"AWS_LAMBDA_LOG_FORMAT="+strings.ToUpper(fn.LogFormat),
		"_HANDLER=bootstrap",
		"TZ=:UTC",
	)
	for k, v := range fn.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lambda: start %s: %w", fn.Name, err)
	}
	e.Cold++
	if e.cfg.ColdStart != nil {
		e.cfg.ColdStart()
	}
	exited := make(chan struct{})
	e.cmd, e.exited = cmd, exited
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if e.cfg.Logs != nil {
				e.cfg.Logs(fn.Name, e.id, sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(exited)
	}()
	return exited, nil
}

func (e *Environment) handleNext(w http.ResponseWriter, r *http.Request) {
	if e.cfg.Next != nil {
		e.cfg.Next()
	}
	select {
	case inv := <-e.next:
		h := w.Header()
		h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
		h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadline.UnixMilli(), 10))
		h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:"+e.cfg.Function.Name)
		h.Set("Lambda-Runtime-Trace-Id", "Root=1-"+strconv.FormatInt(time.Now().Unix(), 16)+"-local;Sampled=0")
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(inv.payload)
	case <-r.Context().Done():
	}
}

func (e *Environment) finish(id string, res result) bool {
	e.mu.Lock()
	inv, ok := e.pending[id]
	e.mu.Unlock()
	if ok {
		inv.done <- res
	}
	return ok
}

func (e *Environment) handleResponse(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 6<<20+1))
	if err == nil && len(body) > 6<<20 {
		err = errors.New("lambda: response larger than 6 MB")
	}
	if !e.finish(r.PathValue("id"), result{body: body, err: err}) {
		http.Error(w, "unknown request id", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (e *Environment) handleError(w http.ResponseWriter, r *http.Request) {
	fe := &FunctionError{Type: "Unknown", Message: "(no body)"}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	_ = json.Unmarshal(body, fe)
	if !e.finish(r.PathValue("id"), result{err: fe}) {
		http.Error(w, "unknown request id", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (e *Environment) handleInitError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if e.cfg.Logs != nil {
		e.cfg.Logs(e.cfg.Function.Name, e.id, "init error: "+string(body))
	}
	w.WriteHeader(http.StatusAccepted)
	go e.Stop()
}

// busy says whether an invocation is running (its process started).
func (e *Environment) busy() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd != nil && len(e.pending) > 0
}

// Stop ends the process (the Runtime API endpoint stays for a restart).
func (e *Environment) Stop() {
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

// Close stops the process and the endpoint.
func (e *Environment) Close() {
	e.Stop()
	e.mu.Lock()
	srv := e.srv
	e.srv = nil
	e.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}
