package job

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fileflow/fileflow/pkg/retry"
)

// ActionKind is what becomes of one SQS message at the end of a batch.
type ActionKind int

// The actions.
const (
	// Ack: done (processed, counted, a duplicate, an orphan, a skipped task of a stopped
	// job, recorded poison): the message is deleted.
	Ack ActionKind = iota
	// RetryAfter: it comes back after Delay as a batch item failure; this uses one of its
	// receives, and after maxReceiveCount of them SQS moves it to the dead-letter queue.
	RetryAfter
	// SendAgain: a copy is sent to the same queue, delayed by Delay, and this one is
	// acknowledged: waiting uses none of its receives (a task waiting for its parent, a
	// counted task whose job check must be repeated). If the copy cannot be sent, or the
	// message has been sent again MaxSendAgain times, Else applies.
	SendAgain
)

// Action is the one outcome of one message, with the reason (for the log).
type Action struct {
	Kind  ActionKind
	Delay time.Duration
	Why   string
	// Else is what happens if a SendAgain cannot be carried out: RetryAfter (the
	// default), or Ack for a counted task that must never go to a dead-letter queue.
	Else ActionKind
	// Finished: every file of the message was finished by this delivery, each output
	// checked after its commit; a copy says so (AttrFinished), and its files found
	// committed need no second check.
	Finished bool
}

// Acknowledge is an Ack.
func Acknowledge(why string) Action { return Action{Kind: Ack, Why: why} }

// Retry is a RetryAfter d.
func Retry(d time.Duration, why string) Action { return Action{Kind: RetryAfter, Delay: d, Why: why} }

// Again is a SendAgain after d, falling back to a retry after d.
func Again(d time.Duration, why string) Action {
	return Action{Kind: SendAgain, Delay: d, Why: why, Else: RetryAfter}
}

// The SQS message attributes of a copy sent again.
const (
	// AttrSentAgain counts how often a message was sent again.
	AttrSentAgain = "fileflow-sent-again"
	// AttrRounds counts how often it was sent again for a new round of receives
	// ([Resend] with nextRound).
	AttrRounds = "fileflow-rounds"
	// AttrFinished marks a copy of a message whose files were all finished when it was
	// sent (Action.Finished). A copy carries at most these three attributes, each a
	// Number in StringValue, as SQS's MessageAttributeValue reference requires; SQS
	// allows 10 a message.
	AttrFinished = "fileflow-finished"
)

// MaxSendAgain bounds how often one task is sent again (an hour of 5-second waits).
const MaxSendAgain = 720

// Messenger is the part of the SQS client [Apply] calls.
type Messenger interface {
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error)
}

// The ends of an invocation's two phases ([Deadlines]): its work stops WorkReserve
// before the deadline (at most a tenth of what is left), and its answer — the copies
// sent again, the visibility changes — AnswerReserve before it (at most a fiftieth).
const (
	WorkReserve   = 500 * time.Millisecond
	AnswerReserve = 100 * time.Millisecond
)

// Deadlines splits what is left of an invocation: work ends WorkReserve before ctx's
// deadline, and answer, which is not cancelled with work, AnswerReserve before it. A
// handler does its work on work and applies its messages' actions on answer ([Apply]),
// so that calls hung or retrying until their context ends still leave the answer its
// time, and the response goes back before the deadline. Too late is a timeout, and
// Lambda brings the whole batch back, each message using a receive (make chaos: a hung
// send at the end of a worker batch, a reconcile of many jobs). Without a deadline, both
// are ctx.
func Deadlines(ctx context.Context) (work, answer context.Context, cancel context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return ctx, ctx, func() {}
	}
	left := time.Until(d)
	answer, cancelAnswer := context.WithDeadline(context.WithoutCancel(ctx), d.Add(-min(AnswerReserve, left/50)))
	work, cancelWork := context.WithDeadline(ctx, d.Add(-min(WorkReserve, left/10)))
	return work, answer, func() { cancelWork(); cancelAnswer() }
}

// Afterwards is the context of a clean-up that must run even when ctx has ended (an
// abort, a lease given back): not cancelled with ctx, bounded by CleanupTimeout.
func Afterwards(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
}

// CleanupTimeout bounds a clean-up ([Afterwards]).
const CleanupTimeout = 2 * time.Second

// resendsAtOnce bounds the copies [Apply] sends at once (a batch may hold up to 10,000
// messages).
const resendsAtOnce = 16

// Apply carries out one action per message (recs[i] gets acts[i]) on the queue at
// queueURL: it sends the copies, sets the visibility of the messages that come back,
// and returns the batch item failures. The problems it met (a copy or a visibility
// change that failed) are returned for the log; none loses a message: a message whose
// copy was not sent comes back, and one whose visibility was not set comes back after
// the queue's own visibility timeout.
func Apply(ctx context.Context, q Messenger, queueURL string, recs []events.SQSMessage, acts []Action) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	var errs []error
	var vis []sqstypes.ChangeMessageVisibilityBatchRequestEntry
	// The copies are sent side by side: one after another, a batch of ten under 10%
	// faults (a slow answer, a retry's backoff) ran past the invocation's margin and
	// timed out, which brings the whole batch back (make chaos).
	sent, sendErrs := make([]bool, len(recs)), make([]error, len(recs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, resendsAtOnce)
	for i, rec := range recs {
		if acts[i].Kind == SendAgain {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				sent[i], sendErrs[i] = resend(ctx, q, queueURL, rec, acts[i].Delay, false, acts[i].Finished)
			}()
		}
	}
	wg.Wait()
	for i, rec := range recs {
		a := acts[i]
		if a.Kind == SendAgain {
			if err := sendErrs[i]; err != nil {
				errs = append(errs, fmt.Errorf("send message %s again: %w", rec.MessageId, err))
			}
			if sent[i] {
				continue
			}
			a.Kind = a.Else
		}
		if a.Kind == Ack {
			continue
		}
		resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: rec.MessageId})
		vis = append(vis, sqstypes.ChangeMessageVisibilityBatchRequestEntry{
			Id: aws.String(strconv.Itoa(len(vis))), ReceiptHandle: aws.String(rec.ReceiptHandle),
			VisibilityTimeout: retry.VisibilitySeconds(a.Delay),
		})
	}
	for start := 0; start < len(vis); start += 10 {
		out, err := q.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{
			QueueUrl: aws.String(queueURL), Entries: vis[start:min(start+10, len(vis))],
		})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("change visibility: %w", err))
		case len(out.Failed) > 0:
			errs = append(errs, fmt.Errorf("change visibility: %d entries failed, first: %s", len(out.Failed), aws.ToString(out.Failed[0].Message)))
		}
	}
	return resp, errors.Join(errs...)
}

// Resend sends a copy of rec delayed by d, counting the copies in a message attribute,
// and the rounds too if nextRound (a copy in place of the message's last receive, which
// starts a new round of receives); the copy keeps the rounds rec had. It reports false,
// sending nothing, once the message was sent again MaxSendAgain times. [Apply] resends
// with nextRound false; a handler that must know whether its copy was sent calls it.
func Resend(ctx context.Context, q Messenger, queueURL string, rec events.SQSMessage, d time.Duration, nextRound bool) (bool, error) {
	return resend(ctx, q, queueURL, rec, d, nextRound, false)
}

func resend(ctx context.Context, q Messenger, queueURL string, rec events.SQSMessage, d time.Duration, nextRound, finished bool) (bool, error) {
	n := SentAgain(rec)
	if n >= MaxSendAgain {
		return false, nil
	}
	attrs := map[string]sqstypes.MessageAttributeValue{
		AttrSentAgain: {DataType: aws.String("Number"), StringValue: aws.String(strconv.Itoa(n + 1))},
	}
	rounds := Rounds(rec)
	if nextRound {
		rounds++
	}
	if finished {
		attrs[AttrFinished] = sqstypes.MessageAttributeValue{DataType: aws.String("Number"), StringValue: aws.String("1")}
	}
	if rounds > 0 {
		attrs[AttrRounds] = sqstypes.MessageAttributeValue{DataType: aws.String("Number"), StringValue: aws.String(strconv.Itoa(rounds))}
	}
	_, err := q.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: aws.String(queueURL), MessageBody: aws.String(rec.Body), DelaySeconds: min(retry.VisibilitySeconds(d), 900), // whole seconds, rounded as the visibility is
		MessageAttributes: attrs,
	})
	return err == nil, err
}

// SentAgain is how often rec was sent again by [Apply].
func SentAgain(rec events.SQSMessage) int { return numberAttr(rec, AttrSentAgain) }

// Finished says whether rec is a copy of a message whose files were all finished when
// it was sent (Action.Finished).
func Finished(rec events.SQSMessage) bool { return numberAttr(rec, AttrFinished) > 0 }

// Rounds is how often rec was sent again for a new round of receives ([Resend]).
func Rounds(rec events.SQSMessage) int { return numberAttr(rec, AttrRounds) }

func numberAttr(rec events.SQSMessage, name string) int {
	a, ok := rec.MessageAttributes[name]
	if !ok || a.StringValue == nil {
		return 0
	}
	n, _ := strconv.Atoi(*a.StringValue)
	return max(n, 0)
}
