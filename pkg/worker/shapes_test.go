package worker

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// S3 events reach the queue wrapped by SNS or as EventBridge events too: both are
// processed like notifications, an EventBridge "Object Deleted" is acknowledged with
// nothing to do, and a body of no known shape is recorded as poison naming its keys.
func TestOtherEventShapes(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.put("in", "via sns.txt", []byte("from SNS"))
	e.s3.overwrite("in", "via eventbridge 1+1%.txt", "e-eb", []byte("from EventBridge"))
	msg := func(id, body string) events.SQSMessage {
		return events.SQSMessage{MessageId: id, ReceiptHandle: "rh-" + id, Body: body, EventSourceARN: queueARN,
			Attributes: map[string]string{"ApproximateReceiveCount": "1"}}
	}
	inner := s3Message("x", 1, "in", "via sns.txt").Body
	sns, err := json.Marshal(map[string]string{"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads", "Message": inner})
	require.NoError(t, err)
	const created = `{"version":"0","source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name":"in"},"object":{"key":"via eventbridge 1+1%.txt","size":16,"etag":"e-eb","sequencer":"617f08299329d189"}}}`
	const deleted = `{"version":"0","source":"aws.s3","detail-type":"Object Deleted","detail":{"bucket":{"name":"in"},"object":{"key":"gone.txt"}}}`

	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		msg("sns", string(sns)), msg("eb", created), msg("deleted", deleted), msg("odd", `{"hello":"world","n":1}`),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	for key, want := range map[string]string{"via sns.txt": "from SNS", "via eventbridge 1+1%.txt": "from EventBridge"} {
		out, _, ok := e.s3.get("out", "processed/"+key)
		require.True(t, ok, key)
		assert.Equal(t, want, string(out))
	}
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[ledger.Key{Bucket: "in", Key: "via eventbridge 1+1%.txt"}])
	assert.Len(t, e.ledger.poison, 1)
	assert.Contains(t, e.ledger.poison["odd"], `unknown message shape: a JSON object with the keys "hello" "n"`)
}
