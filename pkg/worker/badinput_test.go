package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// A key S3 holds (up to 1,024 bytes) whose output key would not fit — the output prefix
// or a processor's suffix makes it longer — fails at once with the reason and the
// KeyTooLongError code, instead of PUTs S3 refuses until the message reaches the DLQ. A
// key that still fits is processed.
func TestOutputKeyOverS3sLimitFailsAtOnce(t *testing.T) {
	e := newEnv(t, nil) // output prefix "processed/" (10 bytes)
	fits := strings.Repeat("k", 1024-len("processed/"))
	over := strings.Repeat("o", 1024-len("processed/")+1)
	e.s3.put("in", fits, []byte("fits"))
	e.s3.put("in", over, []byte("does not fit"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		s3Message("fits", 1, "in", fits), s3Message("over", 1, "in", over),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures, "nothing comes back")
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[ledger.Key{Bucket: "in", Key: fits}])
	_, _, ok := e.s3.get("out", "processed/"+fits)
	assert.True(t, ok, "an output key of exactly 1,024 bytes is written")

	k := ledger.Key{Bucket: "in", Key: over}
	assert.Equal(t, ledger.StatusFailed, e.ledger.status[k])
	assert.Contains(t, e.ledger.reasons[k], `output key of 1025 bytes ("processed/ooo`)
	assert.Contains(t, e.ledger.reasons[k], `is over S3's limit of 1024: shorten the key or the output prefix ("processed/")`)
	assert.Equal(t, 1, e.ledger.attempts[k], "one attempt, no retries")
}
