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

// A copy counts how often it was sent again and, apart, how many rounds of receives
// it started (NextRound); a plain SendAgain keeps the rounds it had.
func TestCopiesCountTheirRounds(t *testing.T) {
	q := &sentMessages{}
	rec := events.SQSMessage{MessageId: "m", Body: `{"v":1}`}
	steps := []struct {
		act              Action
		sentAgain, round int
	}{
		{Again(time.Second, "wait"), 1, 0},
		{NextRound(time.Second, "last receive"), 2, 1},
		{Again(time.Second, "wait"), 3, 1},
		{NextRound(2*time.Second, "last receive"), 4, 2},
	}
	for i, st := range steps {
		resp, err := Apply(context.Background(), q, "jobs", []events.SQSMessage{rec}, []Action{st.act})
		require.NoError(t, err)
		require.Empty(t, resp.BatchItemFailures, "step %d: sent, not retried", i)
		require.Len(t, q.in, i+1)
		rec = received(q.in[i])
		assert.Equal(t, st.sentAgain, SentAgain(rec), "step %d", i)
		assert.Equal(t, st.round, Rounds(rec), "step %d", i)
		assert.Equal(t, `{"v":1}`, rec.Body)
	}
	assert.Equal(t, int32(2), q.in[3].DelaySeconds)
}

// A malformed or negative count reads as none, never as a round already spent.
func TestRoundsOfAMalformedAttributeAreZero(t *testing.T) {
	for _, v := range []string{"x", "-3", ""} {
		rec := events.SQSMessage{MessageAttributes: map[string]events.SQSMessageAttribute{AttrRounds: {DataType: "Number", StringValue: aws.String(v)}}}
		assert.Zero(t, Rounds(rec), strconv.Quote(v))
	}
}
