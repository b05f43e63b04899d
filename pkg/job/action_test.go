package job

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sentMessages records what Apply sends.
type sentMessages struct{ in []*sqs.SendMessageInput }

func (s *sentMessages) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
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
