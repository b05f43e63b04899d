package dispatch

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeQueue records SendMessageBatch calls; failOnce fails entries once, as SQS does
// when it is busy (not a sender fault), or always (a sender fault).
type fakeQueue struct {
	Queue
	calls       [][]string
	failOnce    map[string]bool
	senderFault bool
}

func (q *fakeQueue) SendMessageBatch(_ context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	var bodies []string
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		body := aws.ToString(e.MessageBody)
		bodies = append(bodies, body)
		if q.failOnce[body] || q.senderFault {
			delete(q.failOnce, body)
			out.Failed = append(out.Failed, sqstypes.BatchResultErrorEntry{Id: e.Id, Code: aws.String("InternalError"),
				Message: aws.String("try again"), SenderFault: q.senderFault})
		}
	}
	q.calls = append(q.calls, bodies)
	return out, nil
}

// Batches stay within SQS's limits — 10 entries, 256 KiB in all — and entries SQS
// failed for its own reasons are sent again; a sender fault is an error at once.
func TestBatchLimitsAndRetries(t *testing.T) {
	ctx := context.Background()
	q := &fakeQueue{failOnce: map[string]bool{}}
	b := &batch{url: "q", api: q}
	var want []string
	for i := range 25 {
		body := strings.Repeat(string(rune('a'+i)), 60<<10) // 60 KiB: four fit in 256 KiB
		want = append(want, body)
		require.NoError(t, b.add(ctx, body))
	}
	for i := range 12 {
		small := string(rune('A' + i))
		want = append(want, small)
		require.NoError(t, b.add(ctx, small))
	}
	q.failOnce[want[len(want)-1]] = true
	require.NoError(t, b.flush(ctx))

	var sent []string
	for _, c := range q.calls {
		total := 0
		for _, body := range c {
			total += len(body)
		}
		assert.LessOrEqual(t, len(c), 10)
		assert.LessOrEqual(t, total, maxBatchBytes)
		sent = append(sent, c...)
	}
	assert.Equal(t, append(want, want[len(want)-1]), sent, "every body in order; the failed one once more")

	q2 := &fakeQueue{senderFault: true}
	b2 := &batch{url: "q", api: q2}
	require.NoError(t, b2.add(ctx, "x"))
	err := b2.flush(ctx)
	assert.ErrorContains(t, err, "InternalError")
	assert.Len(t, q2.calls, 1, "a sender fault is not retried")
}
