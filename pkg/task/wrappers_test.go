package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// S3 events wrapped by SNS and EventBridge's S3 events decode to the same files as the
// notifications they carry (testdata/README.md says where each payload comes from).
func TestDecodeWrapped(t *testing.T) {
	happyFace := File{Bucket: "mybucket", Key: "HappyFace.jpg", VersionID: "096fKKXTRTtl3on89fVO.nfljtsv6qko",
		ETag: "d41d8cd98f00b204e9800998ecf8427e", Size: 1024, Sequencer: "0055AED6DCD90281E5"}
	encoded := happyFace
	encoded.Key = "photos/Happy Face (1)+.jpg"
	tests := []struct {
		file  string
		kind  Kind
		files []File
	}{
		{"sns-s3-put.json", KindS3Event, []File{happyFace}},
		{"sns-s3-put-encoded-key.json", KindS3Event, []File{encoded}},
		{"sns-s3-test-event.json", KindTestEvent, nil},
		{"eventbridge-object-created.json", KindS3Event, []File{{Bucket: "DOC-EXAMPLE-BUCKET1", Key: "example-key",
			VersionID: "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e", ETag: "b1946ac92492d2347c6235b4d2611184", Size: 5, Sequencer: "617f08299329d189"}}},
		{"eventbridge-object-created-raw-key.json", KindS3Event, []File{{Bucket: "DOC-EXAMPLE-BUCKET1", Key: "reports/2021-11-12T00:00:00/Q3 (final)+v2 100%.csv",
			ETag: "9b2cf535f27731c974343645a3985328-9", Size: 73400320, Sequencer: "617f08299329d18a00"}}},
		{"eventbridge-object-deleted.json", KindS3Event, nil},
		{"eventbridge-object-restore-completed.json", KindS3Event, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			d, err := Decode(readTestdata(t, tt.file))
			require.NoError(t, err)
			assert.Equal(t, tt.kind, d.Kind)
			assert.Equal(t, tt.files, d.Files)
			assert.Empty(t, d.JobID)
		})
	}
}

// An SNS message or EventBridge event that is not an S3 event, and any object of no
// known shape, is a permanent InvalidError that names what was seen.
func TestDecodeWrappedInvalid(t *testing.T) {
	snsOf := func(message string) string {
		b, _ := json.Marshal(map[string]string{"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads", "Message": message})
		return string(b)
	}
	eb := func(source, detailType, detail string) string {
		return fmt.Sprintf(`{"version":"0","source":%q,"detail-type":%q,"detail":%s}`, source, detailType, detail)
	}
	tests := map[string]struct {
		body string
		want string
	}{
		"subscription confirmation": {string(readTestdata(t, "sns-subscription-confirmation.json")),
			`SNS message of type "SubscriptionConfirmation" is not a notification (from topic "arn:aws:sns:us-west-2:123456789012:MyTopic")`},
		"SNS without a message":    {`{"Type":"Notification","TopicArn":"arn:t"}`, `SNS Notification from arn:t: no "Message"`},
		"SNS message not JSON":     {snsOf("Hello world!"), "SNS Notification from arn:aws:sns:us-east-1:123456789012:uploads: its Message: body is not a JSON object"},
		"SNS message unknown":      {snsOf(`{"eventType":"Bounce"}`), `its Message: unknown message shape: a JSON object with the keys "eventType"`},
		"SNS message bad record":   {snsOf(`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a%zz"}}}]}`), `its Message: record 0: object key "a%zz" is not URL-encoded`},
		"SNS in SNS":               {snsOf(snsOf(`{"Records":[]}`)), "its Message is itself an SNS message"},
		"task message in SNS":      {snsOf(`{"v":1,"files":[{"bucket":"b","key":"k"}]}`), "its Message is a fileflow task message"},
		"SNS message not a string": {`{"Type":"Notification","Message":{"Records":[]}}`, "SNS message: malformed"},
		"EventBridge, not S3": {eb("aws.ec2", "EC2 Instance State-change Notification", `{"instance-id":"i-1","state":"running"}`),
			`EventBridge event (source "aws.ec2", detail-type "EC2 Instance State-change Notification") is not from S3`},
		"EventBridge S3, not an object event": {eb("aws.s3", "AWS API Call via CloudTrail", `{"eventName":"PutObject"}`),
			`EventBridge event (source "aws.s3", detail-type "AWS API Call via CloudTrail") is not an S3 object event`},
		"Object Created without detail": {`{"source":"aws.s3","detail-type":"Object Created"}`, `no "detail"`},
		"Object Created without bucket": {eb("aws.s3", "Object Created", `{"object":{"key":"k"}}`), "no detail.bucket.name"},
		"Object Created without key":    {eb("aws.s3", "Object Created", `{"bucket":{"name":"b"},"object":{"size":1}}`), "no detail.object.key"},
		"Object Created, negative size": {eb("aws.s3", "Object Created", `{"bucket":{"name":"b"},"object":{"key":"k","size":-1}}`), "negative detail.object.size -1"},
		"Object Created, size a string": {eb("aws.s3", "Object Created", `{"bucket":{"name":"b"},"object":{"key":"k","size":"5"}}`), "malformed"},
		"empty object":                  {`{}`, "unknown message shape: an empty JSON object"},
		"many keys": {`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"` + strings.Repeat("x", 100) + `":0}`,
			`keys "k1" "k2" "k3" "k4" "k5" "k6" "k7" "k8" and 2 more`},
		"a long key": {`{"` + strings.Repeat("é", 30) + `":0}`, `keys "` + strings.Repeat("é", 20) + `…"`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body))
			var inv *InvalidError
			require.ErrorAs(t, err, &inv)
			assert.True(t, inv.Permanent())
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// snsWrap is body as the Message of an SNS notification, as SNS delivers it to SQS.
func snsWrap(body []byte) []byte {
	b, _ := json.Marshal(map[string]string{
		"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
		"TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic", "Subject": "Amazon S3 Notification",
		"Message": string(body), "Timestamp": "2012-05-02T00:54:06.655Z", "SignatureVersion": "1",
	})
	return b
}

// FuzzDecodeSNSWrapped: an S3 event or test event decodes the same wrapped in an SNS
// notification as on its own; a body that does not decode on its own does not decode
// wrapped either (with an InvalidError); a task message or an SNS message is refused
// wrapped.
func FuzzDecodeSNSWrapped(f *testing.F) {
	for _, name := range testdataFiles(f) {
		f.Add(readTestdata(f, name))
	}
	f.Add([]byte(`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a+b%2Bc"}}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		plain, perr := Decode(body)
		wrapped, werr := Decode(snsWrap(body))
		var inv *InvalidError
		if werr != nil && !errors.As(werr, &inv) {
			t.Fatalf("wrapped: error is not an InvalidError: %v", werr)
		}
		switch {
		case perr != nil:
			if werr == nil {
				t.Fatalf("decodes wrapped (%+v) but not on its own: %v", wrapped, perr)
			}
		case plain.Kind == KindTask:
			if werr == nil {
				t.Fatalf("a task message decoded from SNS: %+v", wrapped)
			}
		case isSNS(body):
			if werr == nil || !strings.Contains(werr.Error(), "itself an SNS message") {
				t.Fatalf("an SNS message in an SNS message: %+v, %v", wrapped, werr)
			}
		case werr != nil:
			t.Fatalf("decodes on its own (%+v) but not wrapped: %v", plain, werr)
		default:
			assert.Equal(t, plain, wrapped)
		}
	})
}

func isSNS(body []byte) bool {
	var probe struct {
		Type string `json:"Type"`
	}
	return json.Unmarshal(body, &probe) == nil && probe.Type != ""
}
