package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
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

// A zero-byte file is a file: processed, its empty output written with the checksums
// of nothing, recorded SUCCEEDED.
func TestZeroByteFileIsProcessed(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "empty.txt", nil)
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", 1, "in", "empty.txt")}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[ledger.Key{Bucket: "in", Key: "empty.txt"}])
	out, meta, ok := e.s3.get("out", "processed/empty.txt")
	require.True(t, ok)
	assert.Empty(t, out)
	assert.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", meta[MetaSHA256], "SHA-256 of nothing")
}

// A file no rule matches, and one over its rule's max_size, fail at once with the
// reason (codes NoMatchingRule and EntityTooLarge): no retries.
func TestNoRuleAndOverMaxSizeFailAtOnce(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.Rules = process.Rules{{Suffix: ".csv", MaxSize: 4, Processors: []string{"checksum", "copy"}}}
	})
	e.s3.put("in", "small.csv", []byte("a,b"))
	e.s3.put("in", "big.csv", []byte("a,b,c,d"))
	e.s3.put("in", "notes.txt", []byte("hello"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		s3Message("m", 1, "in", "small.csv", "big.csv", "notes.txt"),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[ledger.Key{Bucket: "in", Key: "small.csv"}])
	for key, want := range map[string]string{
		"big.csv":   "file is 7 bytes, over the rule's max_size of 4",
		"notes.txt": `no processing rule matches key "notes.txt"`,
	} {
		k := ledger.Key{Bucket: "in", Key: key}
		assert.Equal(t, ledger.StatusFailed, e.ledger.status[k], key)
		assert.Contains(t, e.ledger.reasons[k], want, key)
		assert.Equal(t, 1, e.ledger.attempts[k], key)
	}
}

// A job's task message reaching a worker that runs without a job engine cannot be
// counted: it is recorded as poison with the reason and acknowledged, never processed
// uncounted nor retried.
func TestJobTaskWithoutAJobEngineIsPoison(t *testing.T) {
	e := newEnv(t, nil) // no Jobs
	e.s3.put("in", "a.txt", []byte("a"))
	body := `{"v":1,"job_id":"j1","task_id":"m1","parent":"root","files":[{"bucket":"in","key":"a.txt"}]}`
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		{MessageId: "job-task", ReceiptHandle: "rh", Body: body, EventSourceARN: queueARN, Attributes: map[string]string{"ApproximateReceiveCount": "1"}},
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Contains(t, e.ledger.poison["job-task"], "task message of job j1, but this worker runs without a job engine")
	_, _, ok := e.s3.get("out", "processed/a.txt")
	assert.False(t, ok, "not processed")
}
