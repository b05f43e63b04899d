package task

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// This file decodes the other shapes an S3 event reaches a queue in:
//
//   - S3 → SNS → SQS, raw message delivery off: an SNS notification whose Message is the
//     S3 event notification (or the s3:TestEvent) as a JSON string. Its keys are
//     URL-encoded like any S3 notification's. Other SNS message types (a subscription
//     confirmation, sent to a queue subscribed from another account) are not files:
//     they are invalid, with the type, so an operator sees them.
//   - S3 → EventBridge → SQS: the EventBridge event itself, "source": "aws.s3". An
//     "Object Created" event names one file; its key is NOT URL-encoded (AWS documents
//     the encoding for notifications only, and EventBridge events carry keys as they
//     are). Other S3 object events ("Object Deleted", "Object Restore Completed", …)
//     name no file, like a notification's ObjectRemoved records; any other event is
//     invalid, naming its source and detail-type.
//
// Sources: testdata/README.md.

// wrapperFields tell the wrapped shapes apart in [Decode]'s envelope.
type wrapperFields struct {
	SNSType    string `json:"Type"`        // an SNS message
	Source     string `json:"source"`      // an EventBridge event
	DetailType string `json:"detail-type"` // an EventBridge event
}

// snsMessage is an SNS message as SQS receives it without raw message delivery.
type snsMessage struct {
	Type     string  `json:"Type"`
	TopicArn string  `json:"TopicArn"`
	Message  *string `json:"Message"`
}

// decodeSNS reads an SNS message whose Message is an S3 event.
func decodeSNS(body []byte) (Decoded, error) {
	var m snsMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return Decoded{}, invalid("SNS message: malformed", err)
	}
	what := "SNS " + m.Type
	if m.TopicArn != "" {
		what += " from " + m.TopicArn
	}
	switch {
	case m.Type != "Notification":
		return Decoded{}, invalid(fmt.Sprintf("SNS message of type %q is not a notification (from topic %q)", m.Type, m.TopicArn), nil)
	case m.Message == nil:
		return Decoded{}, invalid(what+`: no "Message"`, nil)
	}
	inner := []byte(*m.Message)
	var probe struct {
		SNSType string `json:"Type"`
	}
	if json.Unmarshal(inner, &probe) == nil && probe.SNSType != "" {
		return Decoded{}, invalid(what+": its Message is itself an SNS message", nil)
	}
	d, err := Decode(inner)
	if err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			return Decoded{}, invalid(what+": its Message: "+inv.Reason, inv.Err)
		}
		return Decoded{}, err
	}
	if d.Kind == KindTask {
		return Decoded{}, invalid(what+": its Message is a fileflow task message (send those to the queue itself)", nil)
	}
	return d, nil
}

// eventBridgeEvent is an EventBridge event as an SQS target receives it; detail is an
// S3 object event's.
type eventBridgeEvent struct {
	Source     string `json:"source"`
	DetailType string `json:"detail-type"`
	Detail     *struct {
		Bucket struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object struct {
			Key       *string `json:"key"`
			Size      int64   `json:"size"`
			ETag      string  `json:"etag"`
			VersionID string  `json:"version-id"`
			Sequencer string  `json:"sequencer"`
		} `json:"object"`
	} `json:"detail"`
}

// decodeEventBridge reads an EventBridge event from S3.
func decodeEventBridge(body []byte) (Decoded, error) {
	var ev eventBridgeEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return Decoded{}, invalid(fmt.Sprintf("EventBridge event (source %q, detail-type %q): malformed", ev.Source, ev.DetailType), err)
	}
	what := fmt.Sprintf("EventBridge event (source %q, detail-type %q)", ev.Source, ev.DetailType)
	switch {
	case ev.Source != "aws.s3":
		return Decoded{}, invalid(what+" is not from S3", nil)
	case ev.DetailType == "Object Created":
	case strings.HasPrefix(ev.DetailType, "Object "):
		return Decoded{Kind: KindS3Event}, nil // deleted, restored, tagged, …: not a file to process
	default:
		return Decoded{}, invalid(what+" is not an S3 object event", nil)
	}
	det := ev.Detail
	switch {
	case det == nil:
		return Decoded{}, invalid(what+`: no "detail"`, nil)
	case det.Bucket.Name == "":
		return Decoded{}, invalid(what+": no detail.bucket.name", nil)
	case det.Object.Key == nil || *det.Object.Key == "":
		return Decoded{}, invalid(what+": no detail.object.key", nil)
	case det.Object.Size < 0:
		return Decoded{}, invalid(fmt.Sprintf("%s: negative detail.object.size %d", what, det.Object.Size), nil)
	case CheckBucket(det.Bucket.Name) != nil:
		return Decoded{}, invalid(what+": detail.bucket.name", CheckBucket(det.Bucket.Name))
	case CheckKey(*det.Object.Key) != nil:
		return Decoded{}, invalid(what+": detail.object.key", CheckKey(*det.Object.Key))
	}
	return Decoded{Kind: KindS3Event, Files: []File{{
		Bucket:    det.Bucket.Name,
		Key:       *det.Object.Key, // as it is: EventBridge does not URL-encode keys
		VersionID: det.Object.VersionID,
		ETag:      strings.Trim(det.Object.ETag, `"`),
		Size:      det.Object.Size,
		Sequencer: det.Object.Sequencer,
	}}}, nil
}

// unknownShape is the error for a JSON object of no known shape: it names the object's
// top-level keys (a few, shortened), which is usually enough to tell what sent it.
func unknownShape(body []byte) error {
	var top map[string]json.RawMessage
	_ = json.Unmarshal(body, &top) // an object: Decode has parsed it already
	seen := "an empty JSON object"
	if len(top) > 0 {
		const maxKeys, maxKey = 8, 40
		keys := slices.Sorted(maps.Keys(top))
		var b bytes.Buffer
		for i, k := range keys[:min(len(keys), maxKeys)] {
			if i > 0 {
				b.WriteByte(' ')
			}
			if len(k) > maxKey {
				k = strings.ToValidUTF8(k[:maxKey], "") + "…"
			}
			fmt.Fprintf(&b, "%q", k)
		}
		if len(keys) > maxKeys {
			fmt.Fprintf(&b, " and %d more", len(keys)-maxKeys)
		}
		seen = "a JSON object with the keys " + b.String()
	}
	return invalid("unknown message shape: "+seen+` (want an S3 event notification ("Records"), an s3:TestEvent, an SNS notification, an EventBridge S3 event or a fileflow task message ("v"))`, nil)
}
