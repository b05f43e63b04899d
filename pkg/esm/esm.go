// Package esm does what Lambda's SQS event source mapping does for one batch: receive up
// to a batch of messages, hand them to a handler as an events.SQSEvent, and delete the
// ones the handler did not report as batch item failures (ReportBatchItemFailures
// semantics). The failures stay on the queue and come back after their visibility
// timeout; after the queue's maxReceiveCount SQS moves them to the dead-letter queue.
//
// It lets tests and the local stack drive the real handlers against a real SQS-API
// server. It polls; it does not scale (the local stack's poller builds on it).
package esm

import (
	"context"
	"fmt"
	"strconv"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// API is the part of the SQS client a mapping calls.
type API interface {
	ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
}

// HandlerFunc is the Lambda handler signature for SQS with partial batch responses.
type HandlerFunc func(context.Context, events.SQSEvent) (events.SQSEventResponse, error)

// Mapping connects a queue to a handler.
type Mapping struct {
	API       API
	QueueURL  string
	QueueARN  string
	Region    string
	BatchSize int32 // 1..10 per receive; default 10
	WaitTime  int32 // long-poll seconds, 0..20
}

// Result is what one [Mapping.Once] did.
type Result struct {
	Received int
	Failed   int // reported as batch item failures (left on the queue)
	Deleted  int
}

// Once receives one batch and, if it got any message, invokes h and deletes the
// successes. A handler error fails the whole batch, as in Lambda: nothing is deleted.
func (m Mapping) Once(ctx context.Context, h HandlerFunc) (Result, error) {
	size := m.BatchSize
	if size <= 0 || size > 10 {
		size = 10
	}
	out, err := m.API.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(m.QueueURL),
		MaxNumberOfMessages:         size,
		WaitTimeSeconds:             m.WaitTime,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		MessageAttributeNames:       []string{"All"},
	})
	if err != nil {
		return Result{}, fmt.Errorf("esm: receive from %s: %w", m.QueueURL, err)
	}
	res := Result{Received: len(out.Messages)}
	if len(out.Messages) == 0 {
		return res, nil
	}
	ev := events.SQSEvent{Records: make([]events.SQSMessage, 0, len(out.Messages))}
	handles := make(map[string]string, len(out.Messages))
	for _, msg := range out.Messages {
		ev.Records = append(ev.Records, m.toEvent(msg))
		handles[aws.ToString(msg.MessageId)] = aws.ToString(msg.ReceiptHandle)
	}
	resp, err := h(ctx, ev)
	if err != nil {
		res.Failed = len(out.Messages)
		return res, nil
	}
	for _, f := range resp.BatchItemFailures {
		if _, ok := handles[f.ItemIdentifier]; !ok {
			// As Lambda does: an identifier that is not in the batch fails the whole batch.
			res.Failed = len(out.Messages)
			return res, nil
		}
	}
	for _, f := range resp.BatchItemFailures {
		if _, ok := handles[f.ItemIdentifier]; ok {
			delete(handles, f.ItemIdentifier)
			res.Failed++
		}
	}
	var entries []types.DeleteMessageBatchRequestEntry
	for _, rh := range handles {
		entries = append(entries, types.DeleteMessageBatchRequestEntry{
			Id: aws.String(strconv.Itoa(len(entries))), ReceiptHandle: aws.String(rh),
		})
	}
	if len(entries) > 0 {
		del, err := m.API.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(m.QueueURL), Entries: entries})
		if err != nil {
			return res, fmt.Errorf("esm: delete from %s: %w", m.QueueURL, err)
		}
		res.Deleted = len(del.Successful)
		if len(del.Failed) > 0 {
			return res, fmt.Errorf("esm: delete from %s: %d of %d failed, first: %s",
				m.QueueURL, len(del.Failed), len(entries), aws.ToString(del.Failed[0].Message))
		}
	}
	return res, nil
}

// toEvent converts a received message to the shape Lambda passes to the handler.
func (m Mapping) toEvent(msg types.Message) events.SQSMessage {
	attrs := make(map[string]string, len(msg.Attributes))
	for k, v := range msg.Attributes {
		attrs[k] = v
	}
	ev := events.SQSMessage{
		MessageId:      aws.ToString(msg.MessageId),
		ReceiptHandle:  aws.ToString(msg.ReceiptHandle),
		Body:           aws.ToString(msg.Body),
		Md5OfBody:      aws.ToString(msg.MD5OfBody),
		Attributes:     attrs,
		EventSource:    "aws:sqs",
		EventSourceARN: m.QueueARN,
		AWSRegion:      m.Region,
	}
	if len(msg.MessageAttributes) > 0 {
		ev.MessageAttributes = make(map[string]events.SQSMessageAttribute, len(msg.MessageAttributes))
		for k, v := range msg.MessageAttributes {
			ev.MessageAttributes[k] = events.SQSMessageAttribute{
				DataType: aws.ToString(v.DataType), StringValue: v.StringValue, BinaryValue: v.BinaryValue,
			}
		}
	}
	return ev
}
