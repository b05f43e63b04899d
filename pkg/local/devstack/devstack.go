// Package devstack brings up the whole pipeline on one machine: the local AWS-API
// servers, the resources the component declares for a stage (provisioned from its
// graph under Pulumi mocks), the S3-notification bridge, and the real handler binaries
// behind a local Lambda runtime with SQS event source mappings that scale with queue
// depth and back to zero. The binaries are the ones `fileflow package` builds, for this
// machine's architecture (Lambda runs arm64; this machine may not), taken from the zips.
package devstack

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/fileflow/fileflow/pkg/build"
	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/iamcheck"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/jobctl"
	"github.com/fileflow/fileflow/pkg/local"
	"github.com/fileflow/fileflow/pkg/local/bridge"
	"github.com/fileflow/fileflow/pkg/local/lambda"
	"github.com/fileflow/fileflow/pkg/local/provision"
	"github.com/fileflow/fileflow/pkg/meter"
	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/policy"
	"github.com/fileflow/fileflow/pkg/stack"
	"github.com/fileflow/fileflow/pkg/stage"
)

// Options configure [Start].
type Options struct {
	Root      string            // module root; default: found from the working directory
	Stage     string            // default "dev"
	Overrides map[string]string // fileflow:* settings over the stage file's (tests use them)
	CacheDir  string            // where the servers are installed
	Log       *slog.Logger      // the stack's own log; default discards
	// FunctionLogs receives the functions' log lines (their EMF lines are counted, not
	// written). Nil discards them.
	FunctionLogs io.Writer
	// S3Delay injects latency into the functions' S3 requests (a slow dependency), for
	// chaos tests. Nil: none.
	S3Delay func(r *http.Request) time.Duration
	// DynamoDBDelay holds the functions' DynamoDB requests (told apart by their JSON
	// body); a request whose function is stopped meanwhile is never forwarded. Nil: none.
	DynamoDBDelay func(r *http.Request, body []byte) time.Duration
	// Idle is how long an execution environment waits for work before it is stopped.
	Idle time.Duration
	// NoMeter points the functions straight at the servers: no counting proxies (their
	// extra hop costs CPU on a small machine), so Calls stays empty. Benchmarks use it.
	NoMeter bool
	// Paused leaves the event source mappings stopped until [Stack.Resume]: messages
	// queue up (a burst), then are drained.
	Paused bool
	// ReconcileEvery is how often the reconcile message (fnenv.ReconcileBody) is sent to
	// the jobs queue, as the component's schedule does in AWS; default the schedule's
	// rate (job.ReconcileEvery). Negative: never.
	ReconcileEvery time.Duration
	// Faults, if set, picks a fault (pkg/meter) for each AWS call a function's handler
	// makes: function is its handler ("worker", "dispatch"), service "S3", "SQS", "SNS"
	// or "DynamoDB", op the operation. FaultHang and FaultSlowBy tune Timeout and Slow.
	Faults                 func(function, service, op string, r *http.Request) meter.Fault
	FaultHang, FaultSlowBy time.Duration
	// DynamoDBOnDisk keeps the ledger's table on disk, so that
	// Servers.RestartDynamoDB keeps it (chaos: an outage of DynamoDB mid-run).
	DynamoDBOnDisk bool
	// DuplicateEvent, if set, says which objects' S3 events are delivered twice.
	DuplicateEvent func(bucket, key string) bool
	// BuildTags are build tags for the functions' binaries, and FunctionEnv extra
	// environment for their processes: the benchmarks build with "fileflowprofile" and
	// set FILEFLOW_CPUPROFILE to profile the functions (functions/*/profile.go).
	BuildTags   []string
	FunctionEnv []string
	// Record, if set, records every AWS call each function makes (its handler's, and
	// its event source mapping's, which Lambda makes with the function's role) as the
	// IAM requests AWS would authorize: function, action, resource ARN (in the plan's
	// account and region). The functions get their own counting proxies for it. The
	// stack's graph is kept with them ([iamcheck.Recorder.Graph]).
	Record *Recording
}

// Recording is what Options.Record collects: the calls, and the graph whose policies
// they are judged against.
type Recording struct {
	*iamcheck.Recorder
	mu      sync.Mutex
	graph   *plan.Graph
	emitted map[string]bool // "function namespace metric dimension,…" from EMF lines
}

// Emitted lists the metrics the functions' EMF lines defined, as "function namespace
// metric dimension,dimension" (dimension sets sorted), sorted.
func (r *Recording) Emitted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.emitted))
	for k := range r.emitted {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// observeEMF notes the metrics an EMF line defines.
func (r *Recording) observeEMF(function, line string) {
	if !strings.Contains(line, `"_aws"`) {
		return
	}
	var doc struct {
		AWS struct {
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name string }
			}
		} `json:"_aws"`
	}
	if json.Unmarshal([]byte(line), &doc) != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.emitted == nil {
		r.emitted = map[string]bool{}
	}
	for _, cm := range doc.AWS.CloudWatchMetrics {
		for _, dims := range cm.Dimensions {
			d := slices.Clone(dims)
			slices.Sort(d)
			for _, m := range cm.Metrics {
				r.emitted[function+" "+cm.Namespace+" "+m.Name+" "+strings.Join(d, ",")] = true
			}
		}
	}
}

// NewRecording returns an empty recording.
func NewRecording() *Recording { return &Recording{Recorder: iamcheck.NewRecorder()} }

// Graph is the plan of the first stack that recorded into it.
func (r *Recording) Graph() *plan.Graph {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.graph
}

func (r *Recording) setGraph(g *plan.Graph) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.graph == nil {
		r.graph = g
	}
}

// Stack is the running local pipeline.
type Stack struct {
	Servers   *local.Servers
	Resources *provision.Stack
	Graph     *plan.Graph
	Bridge    *bridge.Bridge
	// S3Endpoint is the stack's S3 endpoint for clients (uploads through it are
	// notified, as in AWS); S3 is a client for it.
	S3Endpoint string
	Mappings   []*lambda.Mapping
	// CompletionsQueueURL receives the completion topic's notifications (raw).
	CompletionsQueueURL string
	// Calls counts the functions' API calls (through counting proxies) and the event
	// source mappings' SQS calls, by "Service.Operation".
	Calls *meter.Calls
	// Metrics sums the functions' EMF metrics (FilesSucceeded, FilesFailed, …).
	Metrics *Metrics

	AWS      aws.Config // for the stack's own clients
	S3       *s3.Client // through S3Endpoint: uploads are notified
	S3Direct *s3.Client // straight to the server: no notification, no counting
	SQS      *sqs.Client
	SNS      *sns.Client
	DynamoDB *dynamodb.Client

	cancel  context.CancelFunc
	resume  chan struct{}
	resumed sync.Once
	wg      sync.WaitGroup
	proxies []*meter.Proxy
	tmp     string
	log     *slog.Logger
}

// Metrics are the functions' EMF counters, summed.
type Metrics struct {
	mu     sync.Mutex
	values map[string]float64
	lines  atomic.Int64
}

// Get returns one metric's sum.
func (m *Metrics) Get(name string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.values[name]
}

func (m *Metrics) add(line string) bool {
	if !strings.Contains(line, `"_aws"`) {
		return false
	}
	var doc map[string]any
	if json.Unmarshal([]byte(line), &doc) != nil {
		return false
	}
	aw, _ := doc["_aws"].(map[string]any)
	cms, _ := aw["CloudWatchMetrics"].([]any)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.values == nil {
		m.values = map[string]float64{}
	}
	for _, cm := range cms {
		c, _ := cm.(map[string]any)
		ms, _ := c["Metrics"].([]any)
		for _, x := range ms {
			def, _ := x.(map[string]any)
			name, _ := def["Name"].(string)
			if v, ok := doc[name].(float64); ok {
				m.values[name] += v
			}
		}
	}
	m.lines.Add(1)
	return true
}

// Start brings the stack up. On error everything started is stopped again.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Stage == "" {
		o.Stage = "dev"
	}
	if o.Idle == 0 {
		o.Idle = 3 * time.Second
	}
	if o.Root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		if o.Root, err = stack.ModuleRoot(wd); err != nil {
			return nil, err
		}
	}
	st := &Stack{Calls: &meter.Calls{}, Metrics: &Metrics{}, log: o.Log}
	defer func() {
		if err != nil {
			st.Stop()
		}
	}()
	if st.tmp, err = os.MkdirTemp("", "fileflow-dev-"); err != nil {
		return nil, err
	}

	// 1. The component for the stage, under mocks, with host-architecture binaries.
	g, binaries, err := planStage(ctx, o, st.tmp)
	if err != nil {
		return nil, err
	}
	st.Graph = g
	if vs := policy.Mandatory(policy.Check(g.Policy())); len(vs) > 0 {
		return nil, fmt.Errorf("devstack: stage %s violates %d policies, first: %s: %s", o.Stage, len(vs), vs[0].Rule, vs[0].Message)
	}

	// 2. The servers.
	if st.Servers, err = local.Start(ctx, local.Options{CacheDir: o.CacheDir, DynamoDBOnDisk: o.DynamoDBOnDisk}); err != nil {
		return nil, err
	}
	// The SDK's own warnings go to the stack's log (not straight to stderr, where they
	// would tear a progress bar).
	sdkLog := logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
		st.log.Warn("aws-sdk: "+fmt.Sprintf(format, v...), "class", string(c))
	})
	if st.AWS, err = st.Servers.AWSConfig(ctx, config.WithLogger(sdkLog)); err != nil {
		return nil, err
	}
	st.S3Direct, st.SQS, st.DynamoDB = st.Servers.S3Client(st.AWS), st.Servers.SQSClient(st.AWS), st.Servers.DynamoDBClient(st.AWS)
	st.SNS = st.Servers.SNSClient(st.AWS)

	// 3. What the component declares, on the servers.
	if st.Resources, err = provision.Apply(ctx, provision.Clients{S3: st.S3Direct, SQS: st.SQS, SNS: st.SNS, DynamoDB: st.DynamoDB}, g); err != nil {
		return nil, err
	}
	// A queue subscribed to the completion topic, so the stack's users can see job
	// notifications (in AWS: an e-mail, a queue or a function of the user's).
	if topic := st.CompletionTopic(); topic != "" {
		q, err := st.SQS.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("fileflow-completions-observer")})
		if err != nil {
			return nil, fmt.Errorf("devstack: completions queue: %w", err)
		}
		attrs, err := st.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl,
			AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
		if err != nil {
			return nil, fmt.Errorf("devstack: completions queue: %w", err)
		}
		if _, err := st.SNS.Subscribe(ctx, &sns.SubscribeInput{TopicArn: aws.String(topic), Protocol: aws.String("sqs"),
			Endpoint:   aws.String(attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)]),
			Attributes: map[string]string{"RawMessageDelivery": "true"}}); err != nil {
			return nil, fmt.Errorf("devstack: subscribe to completions: %w", err)
		}
		st.CompletionsQueueURL = aws.ToString(q.QueueUrl)
	}
	var routes []bridge.Route
	for _, n := range st.Resources.Notifications {
		routes = append(routes, bridge.Route{Bucket: n.Bucket, Prefix: n.Prefix, Suffix: n.Suffix, QueueURL: n.Queue.URL})
		// S3 sends a test event when a notification configuration is created.
		if _, err := st.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(n.Queue.URL), MessageBody: aws.String(bridge.TestEvent(n.Bucket))}); err != nil {
			return nil, fmt.Errorf("devstack: test event: %w", err)
		}
	}
	st.Bridge = bridge.New(st.SQS, st.S3Direct, routes, local.Region, o.Log)
	st.Bridge.Duplicate = o.DuplicateEvent

	// 4. S3 endpoints that notify: one for clients (uploads), one counting the
	// functions' calls; counting proxies for the functions' SQS and DynamoDB calls.
	front, err := meter.StartProxy("S3", st.Servers.S3, &meter.Calls{})
	if err != nil {
		return nil, err
	}
	front.After = st.Bridge.Observe
	st.proxies = append(st.proxies, front)
	st.S3Endpoint = front.URL
	st.S3 = s3.NewFromConfig(st.AWS, func(so *s3.Options) { so.BaseEndpoint = aws.String(front.URL); so.UsePathStyle = true })
	if o.Record != nil {
		o.Record.setGraph(g)
	}
	// Each function gets its own proxies, so that recorded calls name their caller.
	fnEnvs := map[string][]string{}
	for _, fn := range st.Resources.Functions {
		env, err := st.functionEnv(fn.Handler, o)
		if err != nil {
			return nil, err
		}
		fnEnvs[fn.Name] = env
	}

	// 5. The event source mappings, each running its function's real binary.
	logs := o.FunctionLogs
	var logMu sync.Mutex
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st.cancel = cancel
	st.resume = make(chan struct{})
	if !o.Paused {
		close(st.resume)
	}
	for _, fn := range st.Resources.Functions {
		bin, ok := binaries[fn.Handler]
		if !ok {
			return nil, fmt.Errorf("devstack: no binary for function %s (functions/%s)", fn.Name, fn.Handler)
		}
		esmCfg := st.AWS.Copy()
		st.Calls.Attach(&esmCfg) // the mapping's own SQS calls (billed in AWS too)
		if o.Record != nil {
			o.Record.AttachSQS(&esmCfg, iamcheck.ARNs{Account: plan.Account, Region: plan.Region}, fn.Handler)
		}
		esmSQS := st.Servers.SQSClient(esmCfg)
		for _, src := range fn.Mappings {
			m := &lambda.Mapping{
				Config: lambda.Config{Function: fn, Binary: bin, Env: fnEnvs[fn.Name], Logs: func(function string, env int, line string) {
					if o.Record != nil {
						o.Record.observeEMF(fn.Handler, line)
					}
					if st.Metrics.add(line) || logs == nil {
						return
					}
					logMu.Lock()
					fmt.Fprintf(logs, "%s[%d] %s\n", function, env, line)
					logMu.Unlock()
				}},
				Source: src, SQS: esmSQS, Log: o.Log, Region: local.Region, Idle: o.Idle,
			}
			st.Mappings = append(st.Mappings, m)
			st.wg.Add(1)
			go func() {
				defer st.wg.Done()
				select {
				case <-st.resume:
					m.Run(mctx)
				case <-mctx.Done():
				}
			}()
		}
	}
	if jobs, err := st.JobsQueue(); err == nil && o.ReconcileEvery >= 0 {
		every := o.ReconcileEvery
		if every == 0 {
			every = job.ReconcileEvery
		}
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-mctx.Done():
					return
				case <-t.C:
					if _, err := st.SQS.SendMessage(mctx, &sqs.SendMessageInput{QueueUrl: aws.String(jobs.URL), MessageBody: aws.String(fnenv.ReconcileBody)}); err != nil && mctx.Err() == nil {
						st.log.Warn("devstack: cannot send the reconcile message", "error", err)
					}
				}
			}
		}()
	}
	return st, nil
}

// functionEnv starts one function's proxies (counting, fault injection, recording) and
// returns its environment: the servers' credentials and region, endpoints through the
// proxies.
func (st *Stack) functionEnv(handler string, o Options) ([]string, error) {
	endpoints := map[string]string{}
	for _, p := range []struct{ service, target, env string }{
		{"S3", st.Servers.S3, "AWS_ENDPOINT_URL_S3"},
		{"SQS", st.Servers.SQS, "AWS_ENDPOINT_URL_SQS"},
		{"SNS", st.Servers.SQS, "AWS_ENDPOINT_URL_SNS"}, // fauxqs serves SNS on its SQS port
		{"DynamoDB", st.Servers.DynamoDB, "AWS_ENDPOINT_URL_DYNAMODB"},
	} {
		if o.NoMeter && o.Record == nil && o.Faults == nil && (p.service != "S3" || o.S3Delay == nil) && (p.service != "DynamoDB" || o.DynamoDBDelay == nil) {
			endpoints[p.env] = p.target
			continue
		}
		px, err := meter.StartProxy(p.service, p.target, st.Calls)
		if err != nil {
			return nil, err
		}
		if p.service == "S3" {
			px.Delay = o.S3Delay
			px.After = st.Bridge.Observe
		}
		if p.service == "DynamoDB" {
			px.DelayBody = o.DynamoDBDelay
		}
		if faults, service := o.Faults, p.service; faults != nil {
			px.Fault = func(r *http.Request, op string) meter.Fault { return faults(handler, service, op, r) }
			px.Hang, px.SlowBy = o.FaultHang, o.FaultSlowBy
		}
		if rec, service := o.Record, p.service; rec != nil {
			arns := iamcheck.ARNs{Account: plan.Account, Region: plan.Region}
			px.Record = func(r *http.Request, body []byte, status int) {
				rec.Add(iamcheck.FromHTTP(arns, handler, service, r, body, status)...)
			}
		}
		st.proxies = append(st.proxies, px)
		endpoints[p.env] = px.URL
	}
	env := slices.Clone(o.FunctionEnv)
	for _, kv := range st.Servers.Env() {
		k, _, _ := strings.Cut(kv, "=")
		if v, ok := endpoints[k]; ok {
			kv = k + "=" + v
		}
		env = append(env, kv)
	}
	return env, nil
}

// planStage runs the stack program for the stage (file + overrides) under mocks, with
// zips built for this machine, and extracts each zip's bootstrap.
func planStage(ctx context.Context, o Options, tmp string) (*plan.Graph, map[string]string, error) {
	path := stack.StageFile(o.Root, o.Stage)
	values, err := stage.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	maps.Copy(values, o.Overrides)
	fns, err := build.Functions(o.Root)
	if err != nil {
		return nil, nil, err
	}
	args, err := stage.Parse(values, filepath.Base(path), fns)
	if err != nil {
		return nil, nil, err
	}
	code := map[string]pipeline.Code{}
	binaries := map[string]string{}
	for _, fn := range fns {
		out := filepath.Join(o.Root, "dist", "local-"+runtime.GOARCH)
		if len(o.BuildTags) > 0 {
			out += "-" + strings.Join(o.BuildTags, "-") // never in place of the plain build
		}
		a, err := build.Function(ctx, build.Options{ModuleDir: o.Root, Function: fn, OutDir: out, GOARCH: runtime.GOARCH, Tags: o.BuildTags})
		if err != nil {
			return nil, nil, err
		}
		bin, err := extractBootstrap(a.Path, filepath.Join(tmp, fn))
		if err != nil {
			return nil, nil, err
		}
		code[fn] = pipeline.Code{Archive: pulumi.NewFileArchive(a.Path), Hash: a.SHA256}
		binaries[fn] = bin
	}
	g, err := plan.Run(stack.Project, o.Stage, stack.Program(args, code))
	if err != nil {
		return nil, nil, err
	}
	return g, binaries, nil
}

// extractBootstrap writes the zip's bootstrap entry to dir/bootstrap, executable.
func extractBootstrap(zipPath, dir string) (string, error) {
	data, err := os.ReadFile(zipPath)
	if err != nil {
		return "", err
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return "", fmt.Errorf("devstack: %s: %w", zipPath, err)
	}
	for _, f := range zr.File {
		if f.Name != "bootstrap" {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return "", err
		}
		defer rc.Close()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		out := filepath.Join(dir, "bootstrap")
		w, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			return "", err
		}
		if _, err := io.Copy(w, rc); err != nil {
			w.Close()
			return "", err
		}
		return out, w.Close()
	}
	return "", fmt.Errorf("devstack: %s has no bootstrap", zipPath)
}

// Resume starts the event source mappings of a stack started Paused, or paused since.
func (s *Stack) Resume() {
	for _, m := range s.Mappings {
		m.Resume()
	}
	s.resumed.Do(func() {
		select {
		case <-s.resume:
		default:
			close(s.resume)
		}
	})
}

// Pause stops every event source mapping's polling (as disabling them does on AWS) and
// waits until no environment runs: each finishes its batch first. Messages sent from
// here on wait in their queues until Resume.
func (s *Stack) Pause(ctx context.Context) error {
	for _, m := range s.Mappings {
		m.Pause()
	}
	for s.Stats().Environments > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("devstack: pause: %d environments still running: %w", s.Stats().Environments, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// SetMaxConcurrency sets the maximum concurrency of the event source mappings of the
// functions with this handler ("worker", "dispatch"), while the stack runs.
func (s *Stack) SetMaxConcurrency(handler string, n int) error {
	found := false
	for _, m := range s.Mappings {
		if m.Config.Function.Handler == handler {
			m.SetMaxConcurrency(n)
			found = true
		}
	}
	if !found {
		return fmt.Errorf("devstack: no event source mapping of a %s function", handler)
	}
	return nil
}

// Stats sums the mappings' statistics.
func (s *Stack) Stats() lambda.Stats {
	var t lambda.Stats
	for _, m := range s.Mappings {
		st := m.Stats()
		t.Environments += st.Environments
		t.MaxEnvironments += st.MaxEnvironments
		t.Invocations += st.Invocations
		t.FunctionErrors += st.FunctionErrors
		t.Messages += st.Messages
		t.ItemFailures += st.ItemFailures
		t.Deleted += st.Deleted
		t.ColdStarts += st.ColdStarts
		t.Kills += st.Kills
	}
	return t
}

// CollectNotifications reads the completion topic's subscription queue until ctx ends,
// giving each job notification to got and deleting its message.
func (s *Stack) CollectNotifications(ctx context.Context, got func(job.Notification)) {
	url := aws.String(s.CompletionsQueueURL)
	for ctx.Err() == nil {
		out, err := s.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, m := range out.Messages {
			var n job.Notification
			if json.Unmarshal([]byte(aws.ToString(m.Body)), &n) == nil {
				got(n)
			}
			_, _ = s.SQS.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: url, ReceiptHandle: m.ReceiptHandle})
		}
	}
}

// Kill ends one busy execution environment with SIGKILL (pick chooses the mapping among
// those with a busy environment, then the environment), as a crash would: only of a
// function whose kills so far stay within share of its invocations (share <= 0: any).
// It returns the function's name, or "" when no environment was busy.
func (s *Stack) Kill(pick func(n int) int, share float64) string {
	var order []int
	for i, m := range s.Mappings {
		st := m.Stats()
		if share <= 0 || float64(st.Kills+1) <= share*float64(st.Invocations) {
			order = append(order, i)
		}
	}
	for len(order) > 0 {
		i := pick(len(order))
		m := s.Mappings[order[i]]
		if m.Kill(pick) {
			return m.Config.Function.Name
		}
		order = append(order[:i], order[i+1:]...)
	}
	return ""
}

// Stop ends everything Start started. It is safe to call more than once.
func (s *Stack) Stop() {
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
		s.cancel = nil
	}
	for _, p := range s.proxies {
		_ = p.Close()
	}
	s.proxies = nil
	if s.Servers != nil {
		if err := s.Servers.Stop(); err != nil {
			s.log.Warn("devstack: stop servers", "error", err)
		}
		s.Servers = nil
	}
	if s.tmp != "" {
		_ = os.RemoveAll(s.tmp)
		s.tmp = ""
	}
}

var errNoQueue = errors.New("devstack: stage has no tasks queue")

// TasksQueue is the queue the worker consumes.
// Target describes the stack for job clients (`fileflow submit --local` and co.).
func (s *Stack) Target() jobctl.Target {
	t := jobctl.Target{Table: s.Resources.Table, IngestBucket: s.Resources.IngestBucket, OutputBucket: s.Resources.OutputBucket,
		CompletionTopicARN: s.CompletionTopic(), Region: local.Region, AccessKey: local.AccessKey, SecretKey: local.SecretKey,
		Endpoints: map[string]string{"s3": s.S3Endpoint, "sqs": s.Servers.SQS, "sns": s.Servers.SQS, "dynamodb": s.Servers.DynamoDB}}
	if q, err := s.JobsQueue(); err == nil {
		t.JobsQueueURL = q.URL
		if q.DLQ != nil {
			t.JobsDLQURL = q.DLQ.URL
		}
	}
	if q, err := s.TasksQueue(); err == nil {
		t.TasksQueueURL = q.URL
		if q.DLQ != nil {
			t.TasksDLQURL = q.DLQ.URL
		}
	}
	for _, fn := range s.Resources.Functions {
		if fn.Handler == "worker" {
			t.OutputPrefix = fn.Env[fnenv.OutputPrefix]
		}
	}
	return t
}

// JobsQueue is the dispatcher's queue: where jobs are submitted.
func (s *Stack) JobsQueue() (*provision.Queue, error) {
	for _, fn := range s.Resources.Functions {
		if fn.Handler == "dispatch" && len(fn.Mappings) > 0 {
			return fn.Mappings[0].Queue, nil
		}
	}
	return nil, errNoQueue
}

// CompletionTopic is the local ARN of the job completion topic.
func (s *Stack) CompletionTopic() string {
	for name, arn := range s.Resources.Topics {
		if strings.HasSuffix(name, "-completions") {
			return arn
		}
	}
	return ""
}

func (s *Stack) TasksQueue() (*provision.Queue, error) {
	for _, fn := range s.Resources.Functions {
		if fn.Handler == "worker" && len(fn.Mappings) > 0 {
			return fn.Mappings[0].Queue, nil
		}
	}
	return nil, errNoQueue
}
