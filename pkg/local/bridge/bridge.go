// Package bridge turns the local S3 server's object events into real S3 event
// notifications. versitygw can't store a bucket notification configuration; it POSTs
// every event to one webhook, in its own dialect (eventName "s3:ObjectCreated:Put", keys
// not URL-encoded, a quoted ETag, a bucket ARN with the key in it). The bridge rewrites
// each into AWS's shape (eventName "ObjectCreated:Put", keys URL-encoded with '+' for a
// space), applies the component's prefix/suffix filters, and sends it to the queue the
// component routes the bucket to — exactly what S3 sends to SQS in AWS.
package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Route sends a bucket's ObjectCreated events under Prefix/with Suffix to QueueURL.
type Route struct {
	Bucket, Prefix, Suffix, QueueURL string
}

// Sender is the part of the SQS client the bridge calls.
type Sender interface {
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// Bridge is the webhook server.
type Bridge struct {
	URL    string // give this to versitygw's --event-webhook-url
	routes atomic.Pointer[routing]
	log    *slog.Logger
	srv    *http.Server
	region string

	Received, Sent, Filtered atomic.Int64
}

type routing struct {
	sqs    Sender
	routes []Route
}

// Start listens on a free loopback port. Routes are set later with [Bridge.SetRoutes]
// (versitygw needs the webhook up before it starts, and the queues exist only after);
// until then events are counted and dropped.
func Start(region string, log *slog.Logger) (*Bridge, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	b := &Bridge{URL: "http://" + l.Addr().String() + "/events", log: log, region: region}
	b.routes.Store(&routing{})
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.srv.Serve(l) }()
	return b, nil
}

// SetRoutes replaces the routing table and the queue client.
func (b *Bridge) SetRoutes(sender Sender, rs []Route) {
	b.routes.Store(&routing{sqs: sender, routes: rs})
}

// Close stops the server.
func (b *Bridge) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return b.srv.Shutdown(ctx)
}

// gwEvent is versitygw's webhook payload.
type gwEvent struct {
	Event   string `json:"Event"`
	Records []struct {
		EventTime string `json:"eventTime"`
		EventName string `json:"eventName"`
		S3        struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object struct {
				Key       string  `json:"key"`
				Size      int64   `json:"size"`
				ETag      string  `json:"eTag"`
				VersionID *string `json:"versionId"`
				Sequencer string  `json:"sequencer"`
			} `json:"object"`
		} `json:"s3"`
	} `json:"Records"`
}

func (b *Bridge) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ev gwEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		b.log.Warn("bridge: unreadable webhook event", "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	rt := b.routes.Load()
	for _, rec := range ev.Records {
		b.Received.Add(1)
		bucket, key := rec.S3.Bucket.Name, rec.S3.Object.Key
		name := strings.TrimPrefix(rec.EventName, "s3:")
		if !strings.HasPrefix(name, "ObjectCreated:") {
			b.Filtered.Add(1)
			continue
		}
		for _, route := range rt.routes {
			if route.Bucket != bucket || !strings.HasPrefix(key, route.Prefix) || !strings.HasSuffix(key, route.Suffix) {
				continue
			}
			msg, err := Record(b.region, bucket, key, rec.S3.Object.Size, rec.S3.Object.ETag, rec.S3.Object.VersionID, name, rec.EventTime, rec.S3.Object.Sequencer)
			if err != nil {
				b.log.Error("bridge: encode event", "error", err)
				continue
			}
			if err := b.send(ctx, rt.sqs, route.QueueURL, msg); err != nil {
				// Tell versitygw: an event not delivered is a file nobody processes.
				b.log.Error("bridge: send to queue failed", "bucket", bucket, "key", key, "error", err)
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			b.Sent.Add(1)
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (b *Bridge) send(ctx context.Context, sender Sender, queueURL, body string) error {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt*attempt) * 50 * time.Millisecond)
		}
		_, err = sender.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(queueURL), MessageBody: aws.String(body)})
		if err == nil || errors.Is(err, context.Canceled) {
			return err
		}
	}
	return err
}

// Record returns an S3 event notification in AWS's format for one object.
func Record(region, bucket, key string, size int64, etag string, versionID *string, eventName, eventTime, sequencer string) (string, error) {
	obj := map[string]any{
		"key":       url.QueryEscape(key),
		"size":      size,
		"eTag":      strings.Trim(etag, `"`),
		"sequencer": sequencer,
	}
	if versionID != nil && *versionID != "" && *versionID != "null" {
		obj["versionId"] = *versionID
	}
	if eventTime == "" {
		eventTime = time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	}
	doc := map[string]any{"Records": []any{map[string]any{
		"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region, "eventTime": eventTime,
		"eventName":         eventName,
		"userIdentity":      map[string]string{"principalId": "local"},
		"requestParameters": map[string]string{"sourceIPAddress": "127.0.0.1"},
		"responseElements":  map[string]string{"x-amz-request-id": "local", "x-amz-id-2": "local"},
		"s3": map[string]any{
			"s3SchemaVersion": "1.0", "configurationId": "fileflow-ingest",
			"bucket": map[string]any{"name": bucket, "ownerIdentity": map[string]string{"principalId": "local"}, "arn": "arn:aws:s3:::" + bucket},
			"object": obj,
		},
	}}}
	b, err := json.Marshal(doc)
	return string(b), err
}

// TestEvent is the s3:TestEvent S3 sends to a queue when a notification is configured.
func TestEvent(bucket string) string {
	b, _ := json.Marshal(map[string]string{
		"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": time.Now().UTC().Format(time.RFC3339), "Bucket": bucket,
		"RequestId": "local", "HostId": "local",
	})
	return string(b)
}
