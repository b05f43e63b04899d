package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// observed is the pipeline's state once the run has settled: what is judged.
type observed struct {
	inputs  map[string]*input
	members map[string]member
	records map[string]ledger.Record // by input key
	outputs map[string]object        // every object in the output bucket, by key
	jobs    []jobObs
	// dlqKeys counts the keys named by the task DLQ's messages; dlqMessages and
	// jobsDLQMessages count the messages in each DLQ.
	dlqKeys                      map[string]int
	dlqMessages, jobsDLQMessages int
	outputPrefix                 string
	ingest, output               string
}

// object is an output object: its digest and the revision it says it was made from.
type object struct {
	sha, revision string
}

type jobObs struct {
	plan          *jobPlan
	job           ledger.Job
	found         bool
	counts        ledger.Counts // the counters now (once finished, they must not move)
	lines         []job.Line    // the report's succeeded.csv and failed.csv
	reportErr     string
	notifications []job.Notification
}

func (h *harness) observe(ctx context.Context) (*observed, error) {
	o := &observed{outputPrefix: h.outputPrefix, ingest: h.st.Resources.IngestBucket, output: h.st.Resources.OutputBucket}
	o.inputs, o.members = h.truth.snapshot()
	var err error
	if o.records, err = h.records(ctx, o.inputs); err != nil {
		return nil, err
	}
	if o.outputs, err = h.readOutputs(ctx); err != nil {
		return nil, err
	}
	for _, jp := range h.plan.jobs {
		jo := jobObs{plan: jp}
		if jo.job, jo.found, err = h.db.GetJob(ctx, jp.spec.ID); err != nil {
			return nil, err
		}
		if jo.found {
			if jo.counts, err = h.db.JobCounts(ctx, jp.spec.ID, jo.job.Shards); err != nil {
				return nil, err
			}
			jo.lines, jo.reportErr = h.reportLines(ctx, jo.job)
		}
		h.notifyMu.Lock()
		jo.notifications = append([]job.Notification(nil), h.notifications[jp.spec.ID]...)
		h.notifyMu.Unlock()
		o.jobs = append(o.jobs, jo)
	}
	o.dlqKeys = map[string]int{}
	if h.tasksDLQ != "" {
		if o.dlqMessages, err = h.readDLQ(ctx, h.tasksDLQ, o.dlqKeys); err != nil {
			return nil, err
		}
	}
	if h.jobsDLQ != "" {
		if o.jobsDLQMessages, err = h.readDLQ(ctx, h.jobsDLQ, nil); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// readOutputs reads every object of the output bucket but the reports: its bytes'
// digest and its revision metadata.
func (h *harness) readOutputs(ctx context.Context) (map[string]object, error) {
	bucket := h.st.Resources.OutputBucket
	var keys []string
	p := s3.NewListObjectsV2Paginator(h.st.S3Direct, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the output bucket: %w", err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	out := make(map[string]object, len(keys))
	var mu sync.Mutex
	var firstErr error
	work := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if strings.HasPrefix(k, h.outputPrefix+"reports/") {
					mu.Lock()
					out[k] = object{}
					mu.Unlock()
					continue
				}
				obj, err := h.st.S3Direct.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)})
				var nsk *s3types.NoSuchKey
				if errors.As(err, &nsk) {
					continue // removed since the listing
				}
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("read output %s: %w", k, err)
					mu.Unlock()
					continue
				}
				d := sha256.New()
				_, err = io.Copy(d, obj.Body)
				obj.Body.Close()
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("read output %s: %w", k, err)
					mu.Unlock()
					continue
				}
				mu.Lock()
				out[k] = object{sha: hex.EncodeToString(d.Sum(nil)), revision: obj.Metadata[task.MetaRevision]}
				mu.Unlock()
			}
		}()
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	return out, firstErr
}

// reportLines reads a finished job's results (succeeded.csv, failed.csv).
func (h *harness) reportLines(ctx context.Context, j ledger.Job) ([]job.Line, string) {
	if j.Report == "" {
		return nil, "no report"
	}
	_, key, err := job.ParseURI(j.Report)
	if err != nil {
		return nil, err.Error()
	}
	var all []job.Line
	for _, status := range []string{job.Succeeded, job.Failed} {
		k := strings.TrimSuffix(key, "manifest.json") + "results/" + status + ".csv"
		obj, err := h.st.S3Direct.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(h.st.Resources.OutputBucket), Key: aws.String(k)})
		if err != nil {
			return all, fmt.Sprintf("read %s: %v", k, err)
		}
		lines, err := job.ReadLines(obj.Body)
		obj.Body.Close()
		if err != nil {
			return all, fmt.Sprintf("read %s: %v", k, err)
		}
		all = append(all, lines...)
	}
	return all, ""
}

// readDLQ reads every message of a dead-letter queue (hiding each for 10 minutes, so
// none is read twice) and counts the keys the task messages name.
func (h *harness) readDLQ(ctx context.Context, url string, keys map[string]int) (int, error) {
	n := 0
	for {
		out, err := h.st.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10, VisibilityTimeout: 600})
		if err != nil {
			return n, fmt.Errorf("read DLQ: %w", err)
		}
		if len(out.Messages) == 0 {
			return n, nil
		}
		for _, m := range out.Messages {
			n++
			if keys == nil {
				continue
			}
			if d, err := task.Decode([]byte(aws.ToString(m.Body))); err == nil {
				for _, f := range d.Files {
					keys[f.Key]++
				}
			}
		}
	}
}
