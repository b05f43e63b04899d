package dlq

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// memSQS is an in-memory queue server: enough SQS for the redrive loop.
type memSQS struct {
	SQS
	mu     sync.Mutex
	n      int
	queues map[string][]*memMsg
	// bounce, if set, dead-letters every copy sent to the source queue at once.
	bounce bool
}

type memMsg struct {
	id, body, handle string
	attrs            map[string]types.MessageAttributeValue
	hiddenUntil      time.Time
}

func (s *memSQS) put(url, body string, attrs map[string]types.MessageAttributeValue) string {
	s.n++
	id := fmt.Sprintf("m%d", s.n)
	s.queues[url] = append(s.queues[url], &memMsg{id: id, body: body, attrs: attrs})
	return id
}

func (s *memSQS) ReceiveMessage(_ context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &sqs.ReceiveMessageOutput{}
	for _, m := range s.queues[aws.ToString(in.QueueUrl)] {
		if len(out.Messages) == int(in.MaxNumberOfMessages) {
			break
		}
		if time.Now().Before(m.hiddenUntil) {
			continue
		}
		s.n++
		m.handle, m.hiddenUntil = strconv.Itoa(s.n), time.Now().Add(time.Duration(in.VisibilityTimeout)*time.Second)
		out.Messages = append(out.Messages, types.Message{MessageId: aws.String(m.id), Body: aws.String(m.body), ReceiptHandle: aws.String(m.handle),
			MessageAttributes: m.attrs, Attributes: map[string]string{"SentTimestamp": "1", "ApproximateReceiveCount": "1"}})
	}
	return out, nil
}

func (s *memSQS) ChangeMessageVisibilityBatch(_ context.Context, in *sqs.ChangeMessageVisibilityBatchInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range in.Entries {
		for _, m := range s.queues[aws.ToString(in.QueueUrl)] {
			if m.handle == aws.ToString(e.ReceiptHandle) {
				m.hiddenUntil = time.Now().Add(time.Duration(e.VisibilityTimeout) * time.Second)
			}
		}
	}
	return &sqs.ChangeMessageVisibilityBatchOutput{}, nil
}

func (s *memSQS) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	url := aws.ToString(in.QueueUrl)
	if s.bounce {
		url = q.DLQURL
	}
	return &sqs.SendMessageOutput{MessageId: aws.String(s.put(url, aws.ToString(in.MessageBody), in.MessageAttributes))}, nil
}

func (s *memSQS) DeleteMessage(_ context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	url := aws.ToString(in.QueueUrl)
	for i, m := range s.queues[url] {
		if m.handle == aws.ToString(in.ReceiptHandle) {
			s.queues[url] = append(s.queues[url][:i], s.queues[url][i+1:]...)
		}
	}
	return &sqs.DeleteMessageOutput{}, nil
}

func (s *memSQS) GetQueueAttributes(_ context.Context, in *sqs.GetQueueAttributesInput, _ ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, f := 0, 0
	for _, m := range s.queues[aws.ToString(in.QueueUrl)] {
		if time.Now().Before(m.hiddenUntil) {
			f++
		} else {
			v++
		}
	}
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{"QueueArn": "arn:" + aws.ToString(in.QueueUrl),
		"ApproximateNumberOfMessages": strconv.Itoa(v), "ApproximateNumberOfMessagesNotVisible": strconv.Itoa(f)}}, nil
}

func (s *memSQS) StartMessageMoveTask(context.Context, *sqs.StartMessageMoveTaskInput, ...func(*sqs.Options)) (*sqs.StartMessageMoveTaskOutput, error) {
	return nil, &smithy.GenericAPIError{Code: "InvalidAction", Message: "Unknown action"}
}

// memLedger keeps redrive markers; it knows no files or jobs.
type memLedger struct {
	Ledger
	mu    sync.Mutex
	marks map[string]ledger.RedriveMark
}

func (l *memLedger) Records(context.Context, []ledger.Key) (map[ledger.Key]ledger.Record, error) {
	return map[ledger.Key]ledger.Record{}, nil
}

func (l *memLedger) GetRedrive(_ context.Context, id string) (ledger.RedriveMark, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.marks[id]
	return m, ok, nil
}

func (l *memLedger) ClaimRedrive(_ context.Context, m ledger.RedriveMark) (ledger.RedriveMark, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.marks[m.MessageID]; ok {
		return old, false, nil
	}
	m.State = ledger.RedriveSending
	l.marks[m.MessageID] = m
	return m, true, nil
}

func (l *memLedger) MarkRedriven(_ context.Context, id, run, newID string, _ time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.marks[id]
	if m.Run != run {
		return ledger.ErrRedriveTaken
	}
	m.State, m.NewMessageID = ledger.RedriveSent, newID
	l.marks[id] = m
	return nil
}

func (l *memLedger) TakeOverRedrive(_ context.Context, id, from, to string, _ time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.marks[id]
	if m.Run != from || m.State != ledger.RedriveSending {
		return ledger.ErrRedriveTaken
	}
	m.Run = to
	l.marks[id] = m
	return nil
}

func newMem(n int) (*memSQS, *memLedger) {
	s := &memSQS{queues: map[string][]*memMsg{}}
	for i := range n {
		s.put(q.DLQURL, fmt.Sprintf(`{"v":1,"job_id":"j%d","task_id":"t%d","files":[{"bucket":"in","key":"f%d"}]}`, i%2, i, i), nil)
	}
	return s, &memLedger{marks: map[string]ledger.RedriveMark{}}
}

// A copy that fails again and comes back while the redrive runs is not sent round again;
// a filter's leftovers are visible again at the end.
func TestRedriveLoop(t *testing.T) {
	s, l := newMem(6)
	s.bounce = true
	res, err := (&Redriver{SQS: s, Ledger: l}).Redrive(context.Background(), Options{Queue: q, Rate: 1000, MoveTask: true})
	require.NoError(t, err)
	assert.Equal(t, 6, res.Moved)
	assert.Equal(t, 6, res.Returned)
	assert.Equal(t, 6, res.Left, "the returned copies stay, visible")
	assert.Contains(t, res.MoveTaskUnavailable, "InvalidAction")

	s, l = newMem(6)
	res, err = (&Redriver{SQS: s, Ledger: l}).Redrive(context.Background(), Options{Queue: q, Rate: 1000, Filter: Filter{JobID: "j1"}})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Moved)
	assert.Equal(t, 3, res.Skipped)
	v, f, _ := Depth(context.Background(), s, q.DLQURL)
	assert.Equal(t, [2]int{3, 0}, [2]int{v, f}, "the others are visible again")
	assert.Len(t, s.queues[q.URL], 3)
	for _, m := range s.queues[q.URL] {
		require.NotNil(t, m.attrs[RedrivenFrom].StringValue)
		assert.Equal(t, ledger.RedriveSent, l.marks[*m.attrs[RedrivenFrom].StringValue].State)
	}

	// --max, and the rate: 4 messages at 20/s take about 150 ms.
	s, l = newMem(6)
	began := time.Now()
	res, err = (&Redriver{SQS: s, Ledger: l}).Redrive(context.Background(), Options{Queue: q, Rate: 20, Max: 4})
	require.NoError(t, err)
	assert.Equal(t, 4, res.Moved)
	assert.GreaterOrEqual(t, time.Since(began), 140*time.Millisecond)
	v, _, _ = Depth(context.Background(), s, q.DLQURL)
	assert.Equal(t, 2, v)
}
