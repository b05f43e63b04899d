package job

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// recordingLedger and recordingQueue count what Submit writes.
type recordingLedger struct{ creates int }

func (l *recordingLedger) CreateJob(context.Context, string, string, int, time.Time) error {
	l.creates++
	return nil
}
func (l *recordingLedger) GetJob(context.Context, string) (ledger.Job, bool, error) {
	return ledger.Job{}, false, nil
}

type recordingQueue struct{ sends int }

func (q *recordingQueue) SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	q.sends++
	return &sqs.SendMessageOutput{}, nil
}

// An invalid spec given to `fileflow submit` (which calls Submit) is refused with every
// problem named, before anything is recorded or sent: the CLI prints the error and
// exits non-zero; no job is left half made.
func TestSubmitRefusesAnInvalidSpecBeforeAnyWrite(t *testing.T) {
	db, q := &recordingLedger{}, &recordingQueue{}
	_, err := Submit(context.Background(), db, q, "jobs", Spec{Kind: KindSplit, Bucket: "in/x", Key: "big.log", Tolerate: "5 percent"}, time.Now())
	assert.ErrorContains(t, err, `job spec: bucket: bucket name "in/x" has '/'`)
	assert.ErrorContains(t, err, "parts = 0: a split job needs 1..10000 parts")
	assert.ErrorContains(t, err, `tolerate "5 percent"`)
	assert.Zero(t, db.creates)
	assert.Zero(t, q.sends)

	id, err := Submit(context.Background(), db, q, "jobs", Spec{Kind: KindPrefix, Bucket: "in"}, time.Now())
	assert.NoError(t, err)
	assert.NotEmpty(t, id)
	assert.Equal(t, 1, db.creates)
	assert.Equal(t, 1, q.sends)
}
