package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Credentials and region the local servers accept. versitygw checks SigV4 signatures
// against these; the others accept any.
const (
	AccessKey = "fileflowlocal"
	SecretKey = "fileflowlocalsecret"
	Region    = "us-east-1"
)

// Options configure [Start].
type Options struct {
	// CacheDir is where servers are installed; empty means [DefaultCacheDir].
	CacheDir string
	// S3EventWebhook, when set, makes versitygw POST its object events to this URL.
	// The URL must already accept requests when Start is called.
	S3EventWebhook string
	// ReadyTimeout bounds how long each server may take to answer; default 90 s.
	ReadyTimeout time.Duration
	// DynamoDBOnDisk keeps DynamoDB Local's tables in a file (-dbPath) instead of in
	// memory, so that [Servers.RestartDynamoDB] keeps them. Slower.
	DynamoDBOnDisk bool
}

// Servers is a running set of local S3, SQS and DynamoDB servers.
type Servers struct {
	S3       string // S3 endpoint URL, http://127.0.0.1:PORT
	SQS      string // SQS endpoint URL
	DynamoDB string // DynamoDB endpoint URL
	Dir      string // scratch dir: versitygw's data and each server's log

	mu     sync.Mutex
	procs  []*proc
	dynamo struct {
		onDisk  bool
		command func() *exec.Cmd
		proc    *proc
	}
	readyTimeout time.Duration
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
}

// Start installs (first run only) and starts the three servers on free loopback ports,
// and waits until each answers a real API call. On error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Servers, err error) {
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	in, err := Install(ctx, opts.CacheDir)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fileflow-local-")
	if err != nil {
		return nil, fmt.Errorf("local: scratch dir: %w", err)
	}
	s := &Servers{Dir: dir, readyTimeout: opts.ReadyTimeout}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	s.S3 = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	s.SQS = "http://127.0.0.1:" + strconv.Itoa(ports[1])
	s.DynamoDB = "http://127.0.0.1:" + strconv.Itoa(ports[2])

	data := filepath.Join(dir, "s3")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("local: s3 data dir: %w", err)
	}
	gwArgs := []string{"--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", "127.0.0.1:" + strconv.Itoa(ports[0]), "--quiet"}
	// Not --keep-alive, though without it versitygw answers every request with
	// Connection: close and each S3 call dials anew (14% of the worker processes' CPU in
	// bench profile): with it, an error answered before a PUT's body was read (a
	// conditional write refused, a key a POSIX directory holds) reaches the client as a
	// connection reset, never as the error (pkg/fanout/itest.TestMemberOutputsBesideTheArchive).
	if opts.S3EventWebhook != "" {
		gwArgs = append(gwArgs, "--event-webhook-url", opts.S3EventWebhook)
	}
	// With a versioning directory, buckets can be versioned (PutBucketVersioning), as the
	// component declares them.
	versions := filepath.Join(dir, "s3-versions")
	if err := os.MkdirAll(versions, 0o755); err != nil {
		return nil, fmt.Errorf("local: s3 versions dir: %w", err)
	}
	gwArgs = append(gwArgs, "posix", "--versioning-dir", versions, data)
	classpath := filepath.Join(in.DynamoDir, "DynamoDBLocal.jar") + string(os.PathListSeparator) +
		filepath.Join(in.DynamoDir, "DynamoDBLocal_lib", "*") + string(os.PathListSeparator) +
		filepath.Join(in.DynamoDir, "classes")

	dynamoArgs := []string{"-inMemory"}
	if opts.DynamoDBOnDisk {
		db := filepath.Join(dir, "dynamodb")
		if err := os.MkdirAll(db, 0o755); err != nil {
			return nil, fmt.Errorf("local: dynamodb data dir: %w", err)
		}
		dynamoArgs = []string{"-dbPath", db}
	}
	s.dynamo.onDisk = opts.DynamoDBOnDisk
	s.dynamo.command = func() *exec.Cmd {
		return exec.Command("java", append([]string{"-Xmx1g", "-XX:+UseParallelGC",
			"-Djava.library.path=" + filepath.Join(in.DynamoDir, "DynamoDBLocal_lib"),
			"-cp", classpath, "LoopbackDynamoDB"},
			append(dynamoArgs, "-sharedDb", "-disableTelemetry", "-port", strconv.Itoa(ports[2]))...)...)
	}
	starts := []struct {
		name string
		cmd  *exec.Cmd
	}{
		{"versitygw", exec.Command(in.VersityGW, gwArgs...)},
		{"fauxqs", exec.Command(in.NodeBinary(), filepath.Join(in.FauxqsDir, "fauxqs-server.mjs"), strconv.Itoa(ports[1]))},
		{"dynamodb-local", s.dynamo.command()},
	}
	exited := make(map[string]<-chan error, len(starts))
	for _, st := range starts {
		p, ch, err := s.launch(st.name, st.cmd)
		if err != nil {
			return nil, err
		}
		exited[st.name] = ch
		if st.name == "dynamodb-local" {
			s.dynamo.proc = p
		}
	}
	for _, st := range starts {
		if err := s.waitReady(ctx, st.name, exited[st.name]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// launch starts one server with its output in <Dir>/<name>.log; the channel gets its
// exit.
func (s *Servers) launch(name string, cmd *exec.Cmd) (*proc, <-chan error, error) {
	logFile, err := os.OpenFile(filepath.Join(s.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("local: %s log: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = s.Dir
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, fmt.Errorf("local: start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	ch := make(chan error, 1)
	go func() {
		ch <- p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, ch, nil
}

// waitReady waits until the named server answers a real API call.
func (s *Servers) waitReady(ctx context.Context, name string, exited <-chan error) error {
	cfg, err := s.AWSConfig(ctx)
	if err != nil {
		return err
	}
	checks := map[string]func(context.Context) error{
		"versitygw": func(ctx context.Context) error {
			_, err := s.S3Client(cfg).ListBuckets(ctx, &s3.ListBucketsInput{})
			return err
		},
		"fauxqs": func(ctx context.Context) error {
			_, err := s.SQSClient(cfg).ListQueues(ctx, &sqs.ListQueuesInput{})
			return err
		},
		"dynamodb-local": func(ctx context.Context) error {
			_, err := s.DynamoDBClient(cfg).ListTables(ctx, &dynamodb.ListTablesInput{})
			return err
		},
	}
	return waitReady(ctx, name, s.readyTimeout, checks[name], exited, filepath.Join(s.Dir, name+".log"))
}

// RestartDynamoDB stops the DynamoDB server (SIGTERM, SIGKILL after 5 s), leaves it
// down for down, and starts it again on the same port with the same data, as an outage
// of the service would look to its clients. The servers must have been started with
// DynamoDBOnDisk: in memory, the tables would be gone.
func (s *Servers) RestartDynamoDB(ctx context.Context, down time.Duration) error {
	if !s.dynamo.onDisk {
		return errors.New("local: DynamoDB Local runs in memory; a restart would lose every table (start it with DynamoDBOnDisk)")
	}
	s.mu.Lock()
	p := s.dynamo.proc
	s.mu.Unlock()
	if p == nil {
		return errors.New("local: DynamoDB Local is not running")
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	s.mu.Lock()
	s.procs = slices.DeleteFunc(s.procs, func(q *proc) bool { return q == p })
	s.mu.Unlock()
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	np, exited, err := s.launch("dynamodb-local", s.dynamo.command())
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.dynamo.proc = np
	s.mu.Unlock()
	return s.waitReady(ctx, "dynamodb-local", exited)
}

func waitReady(ctx context.Context, name string, timeout time.Duration, check func(context.Context) error, exited <-chan error, logPath string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		last = check(attempt)
		cancelAttempt()
		if last == nil {
			return nil
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("local: %s exited before it was ready (%v); its log:\n%s", name, err, tail(out, 4096))
		case <-ctx.Done():
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("local: %s not ready after %s: %w; its log:\n%s", name, timeout, last, tail(out, 4096))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends every server (SIGTERM, then SIGKILL after 5 s) and removes the scratch dir.
func (s *Servers) Stop() error {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for _, p := range procs {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	grace := time.After(5 * time.Second)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-grace:
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // the group may hold children
		<-p.done
	}
	if s.Dir != "" {
		return os.RemoveAll(s.Dir)
	}
	return nil
}

// Env returns the environment that points the AWS SDK (and the handler binaries) at the
// servers: endpoints, static credentials, region.
func (s *Servers) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL_S3=" + s.S3,
		"AWS_ENDPOINT_URL_SQS=" + s.SQS,
		"AWS_ENDPOINT_URL_SNS=" + s.SQS,
		"AWS_ENDPOINT_URL_DYNAMODB=" + s.DynamoDB,
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_SESSION_TOKEN=",
		"AWS_REGION=" + Region,
		"AWS_DEFAULT_REGION=" + Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Setenv applies [Servers.Env] to this process and unsets AWS_PROFILE, so that
// config.LoadDefaultConfig reaches the local servers.
func (s *Servers) Setenv() error {
	_ = os.Unsetenv("AWS_PROFILE")
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("local: setenv %s: %w", k, err)
		}
	}
	return nil
}

// AWSConfig is an SDK config with the local credentials and region. It does not carry
// the endpoints: build clients with [Servers.S3Client], [Servers.SQSClient] and
// [Servers.DynamoDBClient], or use [Servers.Setenv] and config.LoadDefaultConfig.
func (s *Servers) AWSConfig(ctx context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, error) {
	opts := append([]func(*config.LoadOptions) error{
		config.WithRegion(Region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")),
	}, optFns...)
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("local: aws config: %w", err)
	}
	return cfg, nil
}

// S3Client is an S3 client for the local S3 server (path-style addressing).
func (s *Servers) S3Client(cfg aws.Config, optFns ...func(*s3.Options)) *s3.Client {
	return s3.NewFromConfig(cfg, append([]func(*s3.Options){func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.S3)
		o.UsePathStyle = true
	}}, optFns...)...)
}

// SQSClient is an SQS client for the local SQS server.
func (s *Servers) SQSClient(cfg aws.Config, optFns ...func(*sqs.Options)) *sqs.Client {
	return sqs.NewFromConfig(cfg, append([]func(*sqs.Options){func(o *sqs.Options) {
		o.BaseEndpoint = aws.String(s.SQS)
	}}, optFns...)...)
}

// SNSClient is an SNS client for the local SNS server (fauxqs serves SQS and SNS on
// one port).
func (s *Servers) SNSClient(cfg aws.Config, optFns ...func(*sns.Options)) *sns.Client {
	return sns.NewFromConfig(cfg, append([]func(*sns.Options){func(o *sns.Options) {
		o.BaseEndpoint = aws.String(s.SQS)
	}}, optFns...)...)
}

// DynamoDBClient is a DynamoDB client for the local DynamoDB server.
func (s *Servers) DynamoDBClient(cfg aws.Config, optFns ...func(*dynamodb.Options)) *dynamodb.Client {
	return dynamodb.NewFromConfig(cfg, append([]func(*dynamodb.Options){func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(s.DynamoDB)
	}}, optFns...)...)
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("local: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
