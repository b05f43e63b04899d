// Package jobctl is the client side of fileflow jobs — what `fileflow submit`, `watch`,
// `status` and `cancel` do — against a deployed stack (its Pulumi stack outputs) or the
// local stack `fileflow dev --keep` runs (its state file).
package jobctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/progress"
)

// Target is a running fileflow stack: where jobs go and where their state is.
type Target struct {
	Table              string `json:"tableName"`
	JobsQueueURL       string `json:"jobsQueueUrl"`
	IngestBucket       string `json:"ingestBucket"`
	OutputBucket       string `json:"outputBucket"`
	OutputPrefix       string `json:"outputPrefix"`
	CompletionTopicARN string `json:"completionTopicArn"`
	TasksQueueURL      string `json:"tasksQueueUrl,omitempty"` // the worker's queue (fileflow replay)
	TasksDLQURL        string `json:"tasksDlqUrl,omitempty"`   // the dead-letter queues (fileflow dlq)
	JobsDLQURL         string `json:"jobsDlqUrl,omitempty"`

	// For the local stack only: endpoints and static credentials.
	Region    string            `json:"region,omitempty"`
	Endpoints map[string]string `json:"endpoints,omitempty"` // "s3", "sqs", "sns", "dynamodb"
	AccessKey string            `json:"accessKey,omitempty"`
	SecretKey string            `json:"secretKey,omitempty"`
}

// FromStackOutputs reads `pulumi stack output --json`.
func FromStackOutputs(b []byte) (Target, error) {
	var o struct {
		IngestBucket       string            `json:"ingestBucket"`
		OutputBucket       string            `json:"outputBucket"`
		OutputPrefix       string            `json:"outputPrefix"`
		TableName          string            `json:"tableName"`
		QueueURLs          map[string]string `json:"queueUrls"`
		CompletionTopicARN string            `json:"completionTopicArn"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return Target{}, fmt.Errorf("stack outputs: %w", err)
	}
	t := Target{Table: o.TableName, JobsQueueURL: o.QueueURLs["jobs"], IngestBucket: o.IngestBucket,
		OutputBucket: o.OutputBucket, OutputPrefix: o.OutputPrefix, CompletionTopicARN: o.CompletionTopicARN,
		TasksQueueURL: o.QueueURLs["tasks"], TasksDLQURL: o.QueueURLs["tasks-dlq"], JobsDLQURL: o.QueueURLs["jobs-dlq"]}
	return t, t.check("stack outputs")
}

func (t Target) check(where string) error {
	var missing []string
	if t.Table == "" {
		missing = append(missing, "tableName")
	}
	if t.JobsQueueURL == "" {
		missing = append(missing, "queueUrls.jobs (is functions/dispatch deployed?)")
	}
	if t.OutputBucket == "" {
		missing = append(missing, "outputBucket")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: missing %s", where, strings.Join(missing, ", "))
	}
	return nil
}

// LocalStatePath is where `fileflow dev --keep` describes the running local stack:
// $FILEFLOW_DEV_STATE, else dev-stack.json in the cache directory ($FILEFLOW_CACHE, else
// the user cache directory + "/fileflow").
func LocalStatePath() (string, error) {
	if p := os.Getenv("FILEFLOW_DEV_STATE"); p != "" {
		return p, nil
	}
	dir := os.Getenv("FILEFLOW_CACHE")
	if dir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no cache directory (set FILEFLOW_DEV_STATE): %w", err)
		}
		dir = filepath.Join(d, "fileflow")
	}
	return filepath.Join(dir, "dev-stack.json"), nil
}

// SaveLocal writes the local stack's target.
func (t Target) SaveLocal(path string) error {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// LoadLocal reads the local stack's target.
func LoadLocal(path string) (Target, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Target{}, fmt.Errorf("no local stack is running (%s not found): start one with `fileflow dev --keep` (or `make dev DEVFLAGS=--keep`)", path)
	}
	if err != nil {
		return Target{}, err
	}
	var t Target
	if err := json.Unmarshal(b, &t); err != nil {
		return Target{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, t.check(path)
}

// Client submits and follows jobs on one target.
type Client struct {
	Target Target
	DB     *ledger.Store
	SQS    *sqs.Client
	S3     *s3.Client
	Engine *job.Engine
	// Logs, if set, are printed above Watch's progress bar.
	Logs *progress.Logs
}

// New builds the clients: for a local target with its endpoints and keys, otherwise
// with the default AWS configuration (profile, region, credentials chain).
func New(ctx context.Context, t Target) (*Client, error) {
	var opts []func(*config.LoadOptions) error
	if t.Region != "" {
		opts = append(opts, config.WithRegion(t.Region))
	}
	if t.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(t.AccessKey, t.SecretKey, "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	ep := func(name string) *string {
		if u := t.Endpoints[name]; u != "" {
			return aws.String(u)
		}
		return nil
	}
	db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = ep("dynamodb") })
	q := sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = ep("sqs") })
	objects := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = ep("s3")
		o.UsePathStyle = t.Endpoints["s3"] != ""
	})
	topic := sns.NewFromConfig(cfg, func(o *sns.Options) { o.BaseEndpoint = ep("sns") })
	store := ledger.New(db, t.Table, 0)
	return &Client{Target: t, DB: store, SQS: q, S3: objects, Engine: &job.Engine{Ledger: store, Objects: objects, Topic: topic,
		TopicARN: t.CompletionTopicARN, OutputBucket: t.OutputBucket, OutputPrefix: t.OutputPrefix, StatusTTL: time.Nanosecond,
		Queue: q, JobsQueueURL: t.JobsQueueURL}}, nil
}

// Submit sends a job.
func (c *Client) Submit(ctx context.Context, spec job.Spec) (string, error) {
	return job.Submit(ctx, c.DB, c.SQS, c.Target.JobsQueueURL, spec, time.Now())
}

// Status is a job's state as `fileflow status --json` prints it.
type Status struct {
	JobID      string        `json:"job_id"`
	Status     string        `json:"status"`
	Reason     string        `json:"reason,omitempty"`
	Kind       string        `json:"kind"`
	Source     string        `json:"source"`
	Tolerate   string        `json:"tolerate,omitempty"`
	Counts     ledger.Counts `json:"counts"`
	CreatedAt  time.Time     `json:"created_at"`
	FinishedAt *time.Time    `json:"finished_at,omitempty"`
	DurationMS int64         `json:"duration_ms"`
	Report     string        `json:"report,omitempty"`
	// What the periodic reconciler last found: when it looked, and how many of the
	// job's tasks sat in a dead-letter queue then (redrive them to let the job finish).
	ReconciledAt *time.Time `json:"reconciled_at,omitempty"`
	StuckTasks   int        `json:"stuck_tasks"`
	// ReportMissing: counted tasks whose report lines were missing when the report was
	// written (its manifest names them).
	ReportMissing int `json:"report_missing,omitempty"`
}

// Done says whether the job has finished and been reported.
func (s Status) Done() bool { return s.Status != string(ledger.JobRunning) && s.Report != "" }

// Status reads the job and its live counts.
func (c *Client) Status(ctx context.Context, id string) (Status, error) {
	j, ok, err := c.DB.GetJob(ctx, id)
	if err != nil {
		return Status{}, err
	}
	if !ok {
		return Status{}, fmt.Errorf("job %s: %w", id, job.ErrUnknownJob)
	}
	spec, err := job.SpecOf(j)
	if err != nil {
		return Status{}, err
	}
	s := Status{JobID: id, Status: string(j.Status), Reason: j.Reason, Kind: spec.Kind, Source: spec.Source(),
		Tolerate: spec.Tolerate, CreatedAt: j.CreatedAt, Report: j.Report, StuckTasks: j.StuckTasks, ReportMissing: j.ReportMissing}
	if !j.ReconciledAt.IsZero() {
		r := j.ReconciledAt
		s.ReconciledAt = &r
	}
	if j.Status == ledger.JobRunning {
		if s.Counts, err = c.DB.JobCounts(ctx, id, j.Shards); err != nil {
			return Status{}, err
		}
		s.DurationMS = time.Since(j.CreatedAt).Milliseconds()
	} else {
		s.Counts = j.Final
		f := j.FinishedAt
		s.FinishedAt = &f
		s.DurationMS = j.FinishedAt.Sub(j.CreatedAt).Milliseconds()
	}
	return s, nil
}

// Cancel cancels a running job; the dispatcher then writes its report and sends its
// notification (Status.Report is empty until it has).
func (c *Client) Cancel(ctx context.Context, id string) (Status, error) {
	if _, err := c.Engine.Cancel(ctx, id, "cancelled by "+user()); err != nil {
		return Status{}, err
	}
	return c.Status(ctx, id)
}

func user() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "fileflow cancel"
}

// Watch shows the job's progress every interval until it is done (or ctx ends): a live
// bar on a terminal, with c.Logs printed above it, else a plain line every few seconds;
// listed, done, failed, rate and ETA.
func (c *Client) Watch(ctx context.Context, id string, w io.Writer, interval time.Duration) (Status, error) {
	d := progress.Start(w, progress.Options{Logs: c.Logs})
	var eta progress.ETA
	for {
		s, err := c.Status(ctx, id)
		if err != nil {
			d.Finish(0, 0, err.Error())
			return s, err
		}
		eta.Observe(time.Now(), finished(s))
		left, known := eta.Left(s.Counts.Listed)
		text := Line(s, eta.Rate(), left, known)
		if s.Done() {
			d.Finish(finished(s), s.Counts.Listed, text)
			return s, nil
		}
		d.Update(finished(s), s.Counts.Listed, text)
		select {
		case <-ctx.Done():
			d.Finish(finished(s), s.Counts.Listed, text)
			return s, ctx.Err()
		case <-time.After(interval):
		}
	}
}

func finished(s Status) int64 { return s.Counts.Finished() }

// Line is the text beside the progress bar: listed, done, failed, rate and the time
// left (the job's status once it has ended; "—" while unknown).
func Line(s Status, rate float64, left time.Duration, known bool) string {
	eta := progress.FormatLeft(left, known)
	if s.Status != string(ledger.JobRunning) {
		eta = s.Status
	}
	listing := ""
	if s.Status == string(ledger.JobRunning) && s.Counts.Outstanding() > 0 && s.Counts.Listed == finished(s) {
		listing = " (listing…)"
	}
	return fmt.Sprintf("listed %d%s  done %d  failed %d  %.0f files/s  ETA %s",
		s.Counts.Listed, listing, s.Counts.Succeeded, s.Counts.Failed, rate, eta)
}
