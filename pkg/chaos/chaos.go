// Package chaos runs the local pipeline under faults injected at configured rates and
// then accounts for every input. The faults: SDK-level failures of the functions' S3,
// SQS, SNS and DynamoDB calls (throttling, 500s, resets, responses lost after the call
// took effect, timeouts, slow answers, sends delivered twice — pkg/meter), kill -9 of
// execution environments mid-batch, S3 events delivered twice, jobs submitted twice,
// keys overwritten or deleted while their events are in flight, poison files and bad
// manifest rows, prefix jobs whose listing changes while they run, cancels and
// tolerance failures mid-job, and optionally an outage of the DynamoDB server.
//
// The run's account is judged against what the harness did (every write, with the
// version S3 gave it): the ledger's record of every key, the output bucket, every job's
// record, report and notifications, and the dead-letter queues. Lost files, wrong or
// stale outputs, stray outputs, double counts, jobs finished twice or never, and report
// lines missing are violations; [Report.OK] is false if there is any.
//
// The seed fixes the workload and the faults' draws; the interleavings are the
// machine's, so a failing seed reproduces the same workload and fault mix, not the
// same schedule.
package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/local/devstack"
)

// Config configures a run. Zero values take the defaults noted.
type Config struct {
	Seed  uint64 // the workload and the faults' draws
	Files int    // inputs (half through S3 events, half in jobs of every kind); default 100,000
	// FaultRate is the share of the functions' AWS calls that get a fault (default 0.10);
	// PoisonRate the share of files that must fail (default 0.01). For every rate, zero
	// means the default and a negative value none.
	FaultRate, PoisonRate float64
	// DuplicateRate: the share of keys whose S3 events are delivered twice (default 0.02).
	DuplicateRate float64
	// OverwriteRate and DeleteRate: the share of event files overwritten while their
	// event is in flight (default 0.02) and deleted right after they were written
	// (default 0.005).
	OverwriteRate, DeleteRate float64
	// KillEvery is how often a busy execution environment is killed with SIGKILL
	// (default 3 s, ± half; negative: never).
	KillEvery time.Duration
	// KillShare caps each function's kills at this share of its invocations so far
	// (default 0.05; negative: no cap). Without it, a run's tail, when one environment
	// is busy, would have every invocation killed (the first 100,000-file run killed 114
	// of the dispatcher's ~180): each kill holds its batch for the visibility timeout and
	// spends one of its receives, which no deployment sees.
	KillShare float64
	// RestartDynamoDB stops the DynamoDB server for DynamoDBDown (default 5 s) once half
	// of the event files are uploaded, and starts it again with its data.
	RestartDynamoDB bool
	DynamoDBDown    time.Duration
	// FunctionTimeout is the worker's and the dispatcher's timeout (default 20 s, not
	// the dev stage's 60 s): a killed batch's messages come back after the visibility
	// timeout it gives (6 x), so it sets the tail of a run with kills. It still leaves
	// the worker's final writes their margin (a tenth of the invocation) under 10% faults.
	FunctionTimeout time.Duration
	// Timeout bounds the whole run after the stack is up (default 60 min); Stall ends
	// the wait when nothing has moved for this long with the queues empty (default 2 min).
	Timeout, Stall time.Duration

	Root, CacheDir string       // module root (default: found), where the servers are installed
	Log            *slog.Logger // the harness's and the stack's log; default discards
	FunctionLogs   io.Writer    // the functions' log lines; nil discards
	Progress       io.Writer    // a progress line every few seconds; nil: none
}

func (c Config) withDefaults() Config {
	if c.Files == 0 {
		c.Files = 100_000
	}
	rate := func(v *float64, def float64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	rate(&c.FaultRate, 0.10)
	rate(&c.PoisonRate, 0.01)
	rate(&c.DuplicateRate, 0.02)
	rate(&c.OverwriteRate, 0.02)
	rate(&c.DeleteRate, 0.005)
	if c.KillEvery == 0 {
		c.KillEvery = 3 * time.Second
	}
	if c.FunctionTimeout == 0 {
		c.FunctionTimeout = 20 * time.Second
	}
	rate(&c.KillShare, 0.05)
	if c.KillShare == 0 {
		c.KillShare = 1e9 // negative: no cap
	}
	if c.DynamoDBDown == 0 {
		c.DynamoDBDown = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 60 * time.Minute
	}
	if c.Stall == 0 {
		c.Stall = 2 * time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Validate reports a configuration that cannot run.
func (c Config) Validate() error {
	var errs []string
	if c.Files < 0 {
		errs = append(errs, fmt.Sprintf("files = %d: must be positive", c.Files))
	}
	for name, v := range map[string]float64{"fault rate": c.FaultRate, "poison rate": c.PoisonRate, "duplicate rate": c.DuplicateRate,
		"overwrite rate": c.OverwriteRate, "delete rate": c.DeleteRate} {
		if v > 1 {
			errs = append(errs, fmt.Sprintf("%s = %g: must be at most 1 (negative: none)", name, v))
		}
	}
	if c.OverwriteRate+c.DeleteRate > 1 {
		errs = append(errs, "overwrite rate + delete rate: must be at most 1")
	}
	if c.FunctionTimeout != 0 && (c.FunctionTimeout < 5*time.Second || c.FunctionTimeout > 900*time.Second) {
		errs = append(errs, fmt.Sprintf("function timeout = %s: must be 5s..15m (Lambda's limit is 15m)", c.FunctionTimeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("chaos: %s", strings.Join(errs, "; "))
	}
	return nil
}

// overrides are the stage settings a chaos run uses over the dev stage's.
func (c Config) overrides() map[string]string {
	secs := strconv.Itoa(int(c.FunctionTimeout.Round(time.Second) / time.Second))
	return map[string]string{"fileflow:workerTimeoutSeconds": secs, "fileflow:dispatchTimeoutSeconds": secs}
}

type harness struct {
	cfg    Config
	st     *devstack.Stack
	plan   *plan
	truth  *truth
	inj    *injector
	db     *ledger.Store
	engine *job.Engine
	rng    *rand.Rand // the actors' draws; guarded by rngMu
	rngMu  sync.Mutex
	log    *slog.Logger

	uploaded, preloaded   atomic.Int64
	kills, dupSubmits     atomic.Int64
	refusedConflicts      atomic.Int64
	listingChanges        atomic.Int64
	cancelled             atomic.Int64
	dynamoRestart         string // what happened to the DynamoDB restart
	dynamoMu              sync.Mutex
	notifyMu              sync.Mutex
	notifications         map[string][]job.Notification
	submitted             map[string]string // plan name → job id
	submittedMu           sync.Mutex
	actorErrs             []string
	actorErrMu            sync.Mutex
	started, settledAt    time.Time
	outputPrefix          string
	jobsQueue, tasksQueue string
	jobsDLQ, tasksDLQ     string
	operatorRedrives      int          // redrives done for the operator (settle's goroutine only)
	redriven              atomic.Int64 // messages they moved
	settleReason          string
	lastPending           pending
}

func (h *harness) intn(n int) int {
	h.rngMu.Lock()
	defer h.rngMu.Unlock()
	return h.rng.IntN(n)
}

func (h *harness) actorError(format string, args ...any) {
	h.actorErrMu.Lock()
	defer h.actorErrMu.Unlock()
	msg := fmt.Sprintf(format, args...)
	h.actorErrs = append(h.actorErrs, msg)
	h.log.Warn("chaos: " + msg)
}

// Run brings up the local stack with the configured faults, runs the workload, waits
// until everything has settled, and returns the account. An error means the run could
// not be made or judged; violations are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	h := &harness{cfg: cfg, truth: newTruth(), inj: newInjector(cfg.Seed, cfg.FaultRate), log: cfg.Log,
		rng: rand.New(rand.NewPCG(cfg.Seed, 0xac7)), notifications: map[string][]job.Notification{}, submitted: map[string]string{}}
	overrides := cfg.overrides()
	var fnEnv []string
	if cfg.FunctionLogs != nil {
		// Debug lines too (each output write and commit): a violation's sequence can then
		// be read from the function log.
		fnEnv = []string{"AWS_LAMBDA_LOG_LEVEL=DEBUG"}
	}
	st, err := devstack.Start(ctx, devstack.Options{
		FunctionEnv: fnEnv,
		Root:        cfg.Root, Stage: "dev", Overrides: overrides, CacheDir: cfg.CacheDir, Log: cfg.Log, FunctionLogs: cfg.FunctionLogs,
		Idle: 2 * time.Second, ReconcileEvery: 15 * time.Second,
		Faults: h.inj.pick, FaultHang: 1500 * time.Millisecond, FaultSlowBy: 300 * time.Millisecond,
		DuplicateEvent: func(_, key string) bool { return duplicated(cfg.Seed, cfg.DuplicateRate, key) },
		DynamoDBOnDisk: cfg.RestartDynamoDB,
	})
	if err != nil {
		return nil, fmt.Errorf("chaos: start the local stack: %w", err)
	}
	defer st.Stop()
	h.st = st
	if err := h.wire(); err != nil {
		return nil, err
	}
	h.plan = makePlan(cfg, st.Resources.IngestBucket)

	runCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	h.started = time.Now()
	var bg sync.WaitGroup
	bgCtx, stopBg := context.WithCancel(runCtx)
	bg.Add(2)
	go func() { defer bg.Done(); h.collectNotifications(bgCtx) }()
	go func() { defer bg.Done(); h.report(bgCtx) }()
	if cfg.KillEvery > 0 {
		bg.Add(1)
		go func() { defer bg.Done(); h.killer(bgCtx) }()
	}

	if err := h.preload(runCtx); err != nil {
		stopBg()
		bg.Wait()
		return nil, err
	}
	var actors sync.WaitGroup
	actors.Add(2)
	go func() { defer actors.Done(); h.runJobs(runCtx) }()
	go func() { defer actors.Done(); h.runEvents(runCtx) }()
	actors.Wait()
	h.settle(runCtx)
	h.settledAt = time.Now()
	h.inj.enabled.Store(false)
	stopBg()
	bg.Wait()

	// The account is read with the faults off and nothing running but the stack.
	obsCtx, cancelObs := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Minute)
	defer cancelObs()
	obs, err := h.observe(obsCtx)
	if err != nil {
		return nil, fmt.Errorf("chaos: read the account: %w", err)
	}
	return h.check(obs), nil
}

// wire finds the stack's queues and builds the harness's own ledger and job clients
// (straight to the servers: never faulted).
func (h *harness) wire() error {
	tasks, err := h.st.TasksQueue()
	if err != nil {
		return err
	}
	jobs, err := h.st.JobsQueue()
	if err != nil {
		return err
	}
	h.tasksQueue, h.jobsQueue = tasks.URL, jobs.URL
	if tasks.DLQ != nil {
		h.tasksDLQ = tasks.DLQ.URL
	}
	if jobs.DLQ != nil {
		h.jobsDLQ = jobs.DLQ.URL
	}
	h.outputPrefix = h.st.Target().OutputPrefix
	h.db = ledger.New(h.st.DynamoDB, h.st.Resources.Table, 0)
	h.engine = &job.Engine{Ledger: h.db, Objects: h.st.S3Direct, Topic: h.st.SNS, TopicARN: h.st.CompletionTopic(),
		OutputBucket: h.st.Resources.OutputBucket, OutputPrefix: h.outputPrefix, Log: h.log}
	if h.st.CompletionsQueueURL == "" {
		return errors.New("chaos: the stage has no completion topic to watch")
	}
	return nil
}

// retry runs fn until it succeeds, ctx ends or 60 tries (the harness's own calls may
// meet the DynamoDB outage).
func retry(ctx context.Context, fn func() error) error {
	var err error
	for range 60 {
		if err = fn(); err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return err
}

// put writes one object and notes the version S3 gave it.
func (h *harness) put(ctx context.Context, notified bool, key string, c content, jobName string) error {
	client := h.st.S3Direct
	if notified {
		client = h.st.S3
	}
	var out *s3.PutObjectOutput
	err := retry(ctx, func() error {
		var err error
		out, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(h.st.Resources.IngestBucket), Key: aws.String(key), Body: bytes.NewReader(c.body)})
		return err
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if c.code != "" || c.outKey != "" { // an input (not a manifest, archive or split source)
		h.truth.wrote(key, c, aws.ToString(out.ETag), aws.ToString(out.VersionId), notified, jobName)
	}
	return nil
}

// preload puts the jobs' inputs (not notified: they are there before the jobs start).
func (h *harness) preload(ctx context.Context) error {
	for _, ms := range h.plan.archives {
		for _, m := range ms {
			h.truth.addMember(m)
		}
	}
	work := make(chan preloadFile)
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if err := h.put(ctx, false, f.key, f.c, f.jobName); err != nil {
					errMu.Lock()
					firstErr = err
					errMu.Unlock()
				}
				h.preloaded.Add(1)
			}
		}()
	}
	for _, f := range h.plan.preload {
		work <- f
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("chaos: preload: %w", firstErr)
	}
	return nil
}

// runEvents uploads the event files through the notifying endpoint; some are
// overwritten while their events are in flight, some deleted right away. Half way,
// the DynamoDB server is restarted if so configured.
func (h *harness) runEvents(ctx context.Context) {
	work := make(chan eventFile)
	var wg sync.WaitGroup
	var later sync.WaitGroup
	r := rand.New(rand.NewPCG(h.cfg.Seed, 0xe7e))
	contents := make([]content, len(h.plan.events))
	for i, ef := range h.plan.events {
		contents[i] = makeContent(r, ef.key, ef.poison)
	}
	index := map[string]int{}
	for i, ef := range h.plan.events {
		index[ef.key] = i
	}
	half := int64(len(h.plan.events) / 2)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ef := range work {
				c := contents[index[ef.key]]
				if err := h.put(ctx, true, ef.key, c, ""); err != nil {
					h.actorError("%v", err)
					continue
				}
				contents[index[ef.key]] = content{} // its bytes are no longer needed
				if n := h.uploaded.Add(1); n == half && h.cfg.RestartDynamoDB {
					later.Add(1)
					go func() { defer later.Done(); h.restartDynamoDB(ctx) }()
				}
				if ef.overwrite > 0 || ef.delete {
					later.Add(1)
					go func() { defer later.Done(); h.mutate(ctx, ef) }()
				}
			}
		}()
	}
	for _, ef := range h.plan.events {
		select {
		case work <- ef:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	later.Wait()
}

// mutate overwrites a key (new content; a gzip may turn poison or be fixed) or deletes
// it, soon after its first write.
func (h *harness) mutate(ctx context.Context, ef eventFile) {
	time.Sleep(time.Duration(h.intn(1500)) * time.Millisecond)
	if ef.delete {
		if _, err := h.st.S3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(h.st.Resources.IngestBucket), Key: aws.String(ef.key)}); err != nil {
			h.actorError("delete %s: %v", ef.key, err)
			return
		}
		h.truth.deletedKey(ef.key)
		return
	}
	for range ef.overwrite {
		h.rngMu.Lock()
		poison := strings.HasSuffix(ef.key, ".gz") && h.rng.IntN(3) == 0
		c := makeContent(h.rng, ef.key, poison)
		h.rngMu.Unlock()
		if err := h.put(ctx, true, ef.key, c, ""); err != nil {
			h.actorError("%v", err)
			return
		}
		time.Sleep(time.Duration(h.intn(800)) * time.Millisecond)
	}
}

func (h *harness) restartDynamoDB(ctx context.Context) {
	h.log.Info("chaos: stopping the DynamoDB server", "down", h.cfg.DynamoDBDown)
	began := time.Now()
	err := h.st.Servers.RestartDynamoDB(ctx, h.cfg.DynamoDBDown)
	h.dynamoMu.Lock()
	defer h.dynamoMu.Unlock()
	if err != nil {
		h.dynamoRestart = "failed: " + err.Error()
		h.actorError("restart DynamoDB: %v", err)
		return
	}
	h.dynamoRestart = fmt.Sprintf("down %.1fs, back after %.1fs", h.cfg.DynamoDBDown.Seconds(), time.Since(began).Seconds())
}

// killer kills a busy execution environment every KillEvery (± half), at most
// KillShare of its function's invocations so far.
func (h *harness) killer(ctx context.Context) {
	for {
		d := h.cfg.KillEvery/2 + time.Duration(h.intn(int(h.cfg.KillEvery)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		if fn := h.st.Kill(h.intn, h.cfg.KillShare); fn != "" {
			h.kills.Add(1)
		}
	}
}

// collectNotifications keeps every job notification the completion topic delivers.
func (h *harness) collectNotifications(ctx context.Context) {
	h.st.CollectNotifications(ctx, func(n job.Notification) {
		h.notifyMu.Lock()
		h.notifications[n.JobID] = append(h.notifications[n.JobID], n)
		h.notifyMu.Unlock()
	})
}

// report writes a progress line every 5 s.
func (h *harness) report(ctx context.Context) {
	if h.cfg.Progress == nil {
		return
	}
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stats := h.st.Stats()
		faults, calls, _ := h.inj.injected()
		var nf int64
		for _, v := range faults {
			nf += v
		}
		fmt.Fprintf(h.cfg.Progress, "chaos %5.0fs  preloaded %d/%d  uploaded %d/%d  files done %d  environments %d  faults %d of %d calls  kills %d  jobs notified %d/%d\n",
			time.Since(h.started).Seconds(), h.preloaded.Load(), len(h.plan.preload), h.uploaded.Load(), len(h.plan.events),
			int64(h.st.Metrics.Get("FilesSucceeded")+h.st.Metrics.Get("FilesFailed")), stats.Environments, nf, calls, h.kills.Load(),
			h.notifiedJobs(), len(h.plan.jobs))
	}
}

func (h *harness) notifiedJobs() int {
	h.notifyMu.Lock()
	defer h.notifyMu.Unlock()
	return len(h.notifications)
}
