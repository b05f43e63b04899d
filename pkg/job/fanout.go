package job

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/fanout"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// The steps of fan-out tasks a dispatcher runs.
const (
	StepRoot  = "root"  // the job's first task: decides how to fan out
	StepList  = "list"  // one page of a prefix listing
	StepChunk = "chunk" // one byte range of a manifest
	// StepFinalize writes a finished job's report (and a split job's merged output) and
	// sends its notification: queued by whichever function finished the job, run by the
	// dispatcher with its own timeout and SQS's retries.
	StepFinalize = "finalize"
	// StepReconcile re-checks every open job (fnenv.ReconcileBody, sent by a schedule).
	StepReconcile = "reconcile"
)

// FanoutTask is a fan-out task message on the jobs queue.
type FanoutTask struct {
	V      int    `json:"v"`
	JobID  string `json:"job_id,omitempty"`
	TaskID string `json:"task_id,omitempty"`
	// Parent is the fan-out task that sent this one, and ParentRun its run.
	Parent    string           `json:"parent,omitempty"`
	ParentRun string           `json:"parent_run,omitempty"`
	Step      string           `json:"step"`
	List      *fanout.ListTask `json:"list,omitempty"`
	Chunk     *task.Range      `json:"chunk,omitempty"`
	Format    fanout.Format    `json:"format,omitempty"` // a chunk's manifest format
	ETag      string           `json:"etag,omitempty"`   // a chunk's manifest revision
}

// ContentSum is a hash of the work the fan-out task carries (its step, listing,
// chunk, format and revision): the content its id derives from (see [task.ContentID]).
func (p FanoutTask) ContentSum() []byte {
	b, _ := json.Marshal(struct {
		Step   string           `json:"step"`
		List   *fanout.ListTask `json:"list,omitempty"`
		Chunk  *task.Range      `json:"chunk,omitempty"`
		Format fanout.Format    `json:"format,omitempty"`
		ETag   string           `json:"etag,omitempty"`
	}{p.Step, p.List, p.Chunk, p.Format, p.ETag})
	sum := sha256.Sum256(b)
	return sum[:]
}

// DecodeFanoutTask reads a fan-out task message; the error says what is wrong with it.
func DecodeFanoutTask(body []byte) (FanoutTask, error) {
	var p FanoutTask
	if err := json.Unmarshal(body, &p); err != nil {
		return p, fmt.Errorf("fan-out task: %w", err)
	}
	switch {
	case p.V != 1:
		return p, fmt.Errorf("fan-out task: version %d is not supported", p.V)
	case p.Step == StepReconcile:
		return p, nil
	case p.JobID == "" || p.TaskID == "":
		return p, errors.New("fan-out task: job_id and task_id are required")
	case p.Step == StepList && p.List == nil, p.Step == StepChunk && p.Chunk == nil:
		return p, fmt.Errorf("fan-out task: step %q without its %s", p.Step, p.Step)
	case p.Step == StepChunk && (p.Chunk.Start < 0 || p.Chunk.End <= p.Chunk.Start || p.Chunk.Part < 0):
		return p, fmt.Errorf("fan-out task: chunk [%d, %d) part %d is not a range of the manifest", p.Chunk.Start, p.Chunk.End, p.Chunk.Part)
	case p.Step == StepChunk && p.Format.String() == "":
		return p, fmt.Errorf("fan-out task: chunk of unknown manifest format %d", p.Format)
	case p.Step == StepList && task.CheckBucket(p.List.Bucket) != nil:
		return p, fmt.Errorf("fan-out task: list: %w", task.CheckBucket(p.List.Bucket))
	case p.Step != StepRoot && p.Step != StepList && p.Step != StepChunk && p.Step != StepFinalize:
		return p, fmt.Errorf("fan-out task: unknown step %q", p.Step)
	}
	return p, nil
}

// Creator is the part of the ledger store [Submit] calls.
type Creator interface {
	CreateJob(ctx context.Context, id, spec string, shards int, now time.Time) error
	GetJob(ctx context.Context, id string) (ledger.Job, bool, error)
}

// Sender is the part of the SQS client that sends fan-out tasks.
type Sender interface {
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// ConflictError: a job with the id exists with another spec. Submitting again cannot
// help: the spec needs another id.
type ConflictError struct {
	ID   string
	Spec string // the existing job's
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("submit: job %s exists with another spec (%s)", e.ID, e.Spec)
}

// Permanent: submitting again cannot help.
func (e *ConflictError) Permanent() bool { return true }

// Submit validates the spec, records the job and sends its root task to the jobs queue.
// Submitting a spec whose id exists re-sends the root task (which then counts nothing):
// a retried submission is safe.
func Submit(ctx context.Context, db Creator, q Sender, jobsQueueURL string, spec Spec, now time.Time) (string, error) {
	if err := spec.Validate(); err != nil {
		return "", err
	}
	if spec.ID == "" {
		spec.ID = NewID(now)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	err = db.CreateJob(ctx, spec.ID, string(b), spec.Shards, now)
	if errors.Is(err, ledger.ErrJobExists) {
		// A retried submission re-sends the root task; a different job under the same id
		// is refused.
		j, _, gerr := db.GetJob(ctx, spec.ID)
		if gerr != nil {
			return "", fmt.Errorf("submit: %w", gerr)
		}
		if j.Spec != string(b) {
			return "", &ConflictError{ID: spec.ID, Spec: j.Spec}
		}
	} else if err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	root, err := json.Marshal(FanoutTask{V: 1, JobID: spec.ID, TaskID: task.RootTask, Step: StepRoot})
	if err != nil {
		return "", err
	}
	if _, err := q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(jobsQueueURL), MessageBody: aws.String(string(root))}); err != nil {
		return "", fmt.Errorf("submit: job %s recorded, but its root task was not sent (submit again with id %q): %w", spec.ID, spec.ID, err)
	}
	return spec.ID, nil
}
