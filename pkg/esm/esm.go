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
	"errors"
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
	ev := Event(out.Messages, m.QueueARN, m.Region)
	resp, herr := h(ctx, ev)
	return Settle(ctx, m.API, m.QueueURL, ev, resp, herr, true)
}

// Event converts received messages into the event Lambda passes to the handler.
func Event(msgs []types.Message, queueARN, region string) events.SQSEvent {
	ev := events.SQSEvent{Records: make([]events.SQSMessage, 0, len(msgs))}
	for _, msg := range msgs {
		ev.Records = append(ev.Records, toEvent(msg, queueARN, region))
	}
	return ev
}

// DeleteAPI is the part of the SQS client [Settle] calls.
type DeleteAPI interface {
	DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
}

// Settle does what Lambda does after an invocation: if the handler failed, nothing is
// deleted (the whole batch comes back after its visibility timeout); with
// reportItemFailures, every message not reported as a batch item failure is deleted, and
// a reported identifier that is not in the batch fails the whole batch; without it,
// every message is deleted.
func Settle(ctx context.Context, api DeleteAPI, queueURL string, batch events.SQSEvent, resp events.SQSEventResponse, handlerErr error, reportItemFailures bool) (Result, error) {
	res := Result{Received: len(batch.Records)}
	if handlerErr != nil {
		res.Failed = len(batch.Records)
		return res, nil
	}
	handles := make(map[string]string, len(batch.Records))
	for _, r := range batch.Records {
		handles[r.MessageId] = r.ReceiptHandle
	}
	if reportItemFailures {
		for _, f := range resp.BatchItemFailures {
			if _, ok := handles[f.ItemIdentifier]; !ok {
				res.Failed = len(batch.Records)
				return res, nil
			}
		}
		for _, f := range resp.BatchItemFailures {
			if _, ok := handles[f.ItemIdentifier]; ok {
				delete(handles, f.ItemIdentifier)
				res.Failed++
			}
		}
	}
	var entries []types.DeleteMessageBatchRequestEntry
	for _, rh := range handles {
		entries = append(entries, types.DeleteMessageBatchRequestEntry{
			Id: aws.String(strconv.Itoa(len(entries))), ReceiptHandle: aws.String(rh),
		})
	}
	var errs []error
	for start := 0; start < len(entries); start += 10 {
		chunk := entries[start:min(start+10, len(entries))]
		del, err := api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: chunk})
		if err != nil {
			errs = append(errs, fmt.Errorf("esm: delete from %s: %w", queueURL, err))
			continue
		}
		res.Deleted += len(del.Successful)
		if len(del.Failed) > 0 {
			errs = append(errs, fmt.Errorf("esm: delete from %s: %d of %d failed, first: %s",
				queueURL, len(del.Failed), len(chunk), aws.ToString(del.Failed[0].Message)))
		}
	}
	return res, errors.Join(errs...)
}

// toEvent converts a received message to the shape Lambda passes to the handler.
func toEvent(msg types.Message, queueARN, region string) events.SQSMessage {
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
		EventSourceARN: queueARN,
		AWSRegion:      region,
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
