package job

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sentMessages records what Apply sends.
type sentMessages struct {
	mu sync.Mutex
	in []*sqs.SendMessageInput
}

func (s *sentMessages) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.in = append(s.in, in)
	return &sqs.SendMessageOutput{}, nil
}

func (s *sentMessages) ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	return &sqs.ChangeMessageVisibilityBatchOutput{}, nil
}

// received is the message a copy becomes when it is received.
func received(in *sqs.SendMessageInput) events.SQSMessage {
	rec := events.SQSMessage{MessageId: "m", Body: aws.ToString(in.MessageBody), MessageAttributes: map[string]events.SQSMessageAttribute{}}
	for k, v := range in.MessageAttributes {
		rec.MessageAttributes[k] = events.SQSMessageAttribute{DataType: aws.ToString(v.DataType), StringValue: v.StringValue}
	}
	return rec
}

// A copy counts how often it was sent again and, apart, how many rounds of receives it
// started (Resend with nextRound); a copy Apply sends keeps the rounds it had.
func TestCopiesCountTheirRounds(t *testing.T) {
	ctx := context.Background()
	q := &sentMessages{}
	rec := events.SQSMessage{MessageId: "m", Body: `{"v":1}`}
	apply := func() {
		resp, err := Apply(ctx, q, "jobs", []events.SQSMessage{rec}, []Action{Again(time.Second, "wait")})
		require.NoError(t, err)
		require.Empty(t, resp.BatchItemFailures, "sent, not retried")
	}
	resend := func(d time.Duration) {
		sent, err := Resend(ctx, q, "jobs", rec, d, true)
		require.NoError(t, err)
		require.True(t, sent)
	}
	steps := []struct {
		do               func()
		sentAgain, round int
	}{
		{apply, 1, 0},
		{func() { resend(time.Second) }, 2, 1},
		{apply, 3, 1},
		{func() { resend(2 * time.Second) }, 4, 2},
	}
	for i, st := range steps {
		st.do()
		require.Len(t, q.in, i+1)
		rec = received(q.in[i])
		assert.Equal(t, st.sentAgain, SentAgain(rec), "step %d", i)
		assert.Equal(t, st.round, Rounds(rec), "step %d", i)
		assert.Equal(t, `{"v":1}`, rec.Body)
	}
	assert.Equal(t, int32(2), q.in[3].DelaySeconds)

	rec.MessageAttributes[AttrSentAgain] = events.SQSMessageAttribute{DataType: "Number", StringValue: aws.String(strconv.Itoa(MaxSendAgain))}
	sent, err := Resend(ctx, q, "jobs", rec, time.Second, true)
	require.NoError(t, err)
	assert.False(t, sent, "no copy after MaxSendAgain")
	assert.Len(t, q.in, 4)
}

// A malformed or negative count reads as none, never as a round already spent.
func TestRoundsOfAMalformedAttributeAreZero(t *testing.T) {
	for _, v := range []string{"x", "-3", ""} {
		rec := events.SQSMessage{MessageAttributes: map[string]events.SQSMessageAttribute{AttrRounds: {DataType: "Number", StringValue: aws.String(v)}}}
		assert.Zero(t, Rounds(rec), strconv.Quote(v))
	}
}

// barrierQueue answers a SendMessage only once n of them are in flight together (or
// after a second, with an error): Apply's copies are sent side by side.
type barrierQueue struct {
	sentMessages
	n       int
	arrived chan struct{}
	all     chan struct{}
	once    sync.Once
}

func (b *barrierQueue) SendMessage(ctx context.Context, in *sqs.SendMessageInput, o ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	b.arrived <- struct{}{}
	if len(b.arrived) == b.n {
		b.once.Do(func() { close(b.all) })
	}
	select {
	case <-b.all:
		return b.sentMessages.SendMessage(ctx, in, o...)
	case <-time.After(time.Second):
		return nil, errors.New("sent one after another")
	}
}

// The copies of a batch are sent side by side, not one after another: ten sends that
// each wait for the others all succeed.
func TestApplySendsCopiesSideBySide(t *testing.T) {
	const n = 10
	q := &barrierQueue{n: n, arrived: make(chan struct{}, n), all: make(chan struct{})}
	var recs []events.SQSMessage
	var acts []Action
	for i := range n {
		recs = append(recs, events.SQSMessage{MessageId: strconv.Itoa(i), Body: "b" + strconv.Itoa(i)})
		acts = append(acts, Again(time.Second, "wait"))
	}
	resp, err := Apply(context.Background(), q, "tasks", recs, acts)
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Len(t, q.in, n)
}

func TestDeadlinesLeaveTimeToAnswer(t *testing.T) {
	work, answer, cancel := Deadlines(context.Background())
	defer cancel()
	_, ok := work.Deadline()
	assert.False(t, ok, "no deadline, none added")
	assert.Equal(t, context.Background(), answer)

	for _, left := range []time.Duration{10 * time.Second, time.Second} {
		parent, cancelParent := context.WithTimeout(context.Background(), left)
		d, _ := parent.Deadline()
		work, answer, cancel := Deadlines(parent)
		w, _ := work.Deadline()
		a, ok := answer.Deadline()
		require.True(t, ok)
		assert.InDelta(t, float64(min(WorkReserve, left/10)), float64(d.Sub(w)), float64(20*time.Millisecond), "left %s", left)
		assert.InDelta(t, float64(min(AnswerReserve, left/50)), float64(d.Sub(a)), float64(20*time.Millisecond), "left %s", left)
		cancel()
		cancelParent()
	}

	// The work ending (or failing) does not end the answer.
	parent, cancelParent := context.WithTimeout(context.Background(), time.Minute)
	defer cancelParent()
	work, answer, cancel = Deadlines(parent)
	cancel2, stop := context.WithCancel(work)
	stop()
	assert.Error(t, cancel2.Err())
	assert.NoError(t, answer.Err())
	cancel()
}

// A copy of a finished message says so; a copy of that copy sent for another reason
// does not inherit it (the worker's confirmOutput trusts it to skip a check).
func TestCopiesSayWhetherTheirFilesWereFinished(t *testing.T) {
	ctx := context.Background()
	q := &sentMessages{}
	rec := events.SQSMessage{MessageId: "m", Body: `{"v":1}`}
	finished := Again(time.Second, "its parent is not counted yet")
	finished.Finished = true
	_, err := Apply(ctx, q, "tasks", []events.SQSMessage{rec}, []Action{finished})
	require.NoError(t, err)
	require.Len(t, q.in, 1)
	copy1 := received(q.in[0])
	assert.True(t, Finished(copy1))
	assert.False(t, Finished(rec))

	_, err = Apply(ctx, q, "tasks", []events.SQSMessage{copy1}, []Action{Again(time.Second, "a file is pending")})
	require.NoError(t, err)
	require.Len(t, q.in, 2)
	assert.False(t, Finished(received(q.in[1])), "sent again for a pending file")
	assert.Equal(t, 2, SentAgain(received(q.in[1])))
}
