package dlq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// Redriver moves dead-letter messages back to their source queue.
//
// # Each message, one at a time
//
//  1. receive it from the DLQ (hidden for long enough to finish the next steps);
//  2. claim it: a conditional put of its ledger marker R#<message id>, state "sending"
//     (with the attempt counts of its files that are not final);
//  3. send a copy (same body and attributes, plus fileflow-redriven-from) to the source
//     queue;
//  4. mark the marker "sent", with the copy's message id;
//  5. delete it from the DLQ.
//
// A message is deleted only after its copy was sent and recorded, so nothing is lost:
// a run that stops anywhere leaves the message in the DLQ (visible again at once when
// the run stops on its own, or after the receive's visibility timeout if it died).
//
// # Resuming, and the one window for a second copy
//
// A later run that receives a message with a "sent" marker only deletes it (the copy
// went out before). One with a "sending" marker was left by a run that stopped after
// its claim and before its mark: its copy may or may not have gone out. The ledger
// tells: if every file of the message is final (SUCCEEDED, FAILED) or has had an
// attempt since the claim (its attempt count grew), or, for a fan-out task, the task
// was counted or its job has finished, the copy went out and was processed — the
// message is only deleted. Otherwise the run takes the marker over (conditionally, so
// of two resumed runs one sends) and sends a copy.
//
// So a message is sent twice only if a run stops between a successful SendMessage and
// its mark (a crash, a kill, the network or the ledger failing between two calls a few
// milliseconds apart — an interrupt (ctx) does not: the message in hand finishes its
// steps first), and the next run looks before that copy was processed. That second copy
// is harmless: the worker finds the file committed (no second output, no second
// count), a job counts a task once. A message without files (an undecodable body) is
// always sent again on an ambiguous marker: the worker records it as poison once more.
type Redriver struct {
	SQS    SQS
	Ledger Ledger
	Now    func() time.Time // default time.Now

	// Test hooks: called after a message's send, and after its mark; an error stops the
	// run there, as a crash would (the message stays in the DLQ).
	AfterSend, AfterMark func(messageID string) error

	reader    Reader
	run       string
	pollEvery time.Duration // how often a move task is looked at (default 2 s)
}

// Options configure one redrive.
type Options struct {
	Queue Queue
	// Rate is the most messages moved per second (default 50). SQS's own move task
	// allows up to 500.
	Rate float64
	// Filter selects the messages to move; the others stay in the DLQ.
	Filter Filter
	// Max stops after this many messages (0: all).
	Max int
	// MoveTask, with an empty filter and no Max, asks SQS to move everything
	// (StartMessageMoveTask) and falls back on receive, send, delete where the server
	// does not support it.
	MoveTask bool
	// Progress, if set, is called after each message (and each poll of a move task).
	Progress func(Result)
}

// The outcomes of one message.
const (
	Moved       = "moved"        // sent now, marked, deleted
	AlreadySent = "already-sent" // a redrive had sent it (marker "sent"): deleted only
	Confirmed   = "confirmed"    // marker "sending", the ledger showed it processed: deleted only
	Resent      = "resent"       // marker "sending", not shown processed: sent (again?), deleted
)

// Move is what happened to one message.
type Move struct {
	MessageID    string `json:"message_id"`
	Outcome      string `json:"outcome"`
	NewMessageID string `json:"new_message_id,omitempty"`
	Files        int    `json:"files"`
	JobID        string `json:"job_id,omitempty"`
}

// Result is a redrive's account.
type Result struct {
	Queue  string `json:"queue"`
	Method string `json:"method"` // "receive-send-delete" or "StartMessageMoveTask"
	// MoveTaskUnavailable says why the move task was not used, if it was asked for.
	MoveTaskUnavailable string `json:"move_task_unavailable,omitempty"`
	Moved               int    `json:"moved"`
	AlreadySent         int    `json:"already_sent"`
	Confirmed           int    `json:"confirmed"`
	Resent              int    `json:"resent"`
	// Skipped: messages the filter left in the DLQ (each counted once).
	Skipped int `json:"skipped"`
	// Returned: copies this run sent that failed again and came back to the DLQ while
	// it ran; left there (the cause is not fixed).
	Returned int `json:"returned"`
	// ToMove is the DLQ's depth when the redrive began (approximate).
	ToMove      int     `json:"to_move"`
	Left        int     `json:"left"` // the DLQ's depth at the end (approximate)
	Interrupted bool    `json:"interrupted"`
	Seconds     float64 `json:"seconds"`
	Moves       []Move  `json:"moves,omitempty"`
}

// Done is the messages taken out of the DLQ.
func (r Result) Done() int { return r.Moved + r.AlreadySent + r.Confirmed + r.Resent }

// RedrivenFrom is the message attribute a copy carries: the DLQ message it came from.
const RedrivenFrom = "fileflow-redriven-from"

// Redrive moves the messages of o.Queue's DLQ that pass the filter back to the source
// queue. When ctx ends it finishes the message in hand, makes the others it holds
// visible again and returns with Interrupted set (and ctx's error); running it again
// resumes.
func (r *Redriver) Redrive(ctx context.Context, o Options) (Result, error) {
	if o.Rate <= 0 {
		o.Rate = 50
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.pollEvery <= 0 {
		r.pollEvery = 2 * time.Second
	}
	r.reader = Reader{SQS: r.SQS, Ledger: r.Ledger}
	r.run = newRun()
	start := r.Now()
	res := Result{Queue: o.Queue.Name, Method: "receive-send-delete"}
	if v, f, err := Depth(ctx, r.SQS, o.Queue.DLQURL); err == nil {
		res.ToMove = v + f
	}
	finish := func(err error) (Result, error) {
		res.Seconds = r.Now().Sub(start).Seconds()
		if v, f, derr := Depth(context.WithoutCancel(ctx), r.SQS, o.Queue.DLQURL); derr == nil {
			res.Left = v + f
		}
		if ctx.Err() != nil {
			res.Interrupted = true
			if err == nil {
				err = ctx.Err()
			}
		}
		return res, err
	}
	if o.MoveTask && o.Filter.Empty() && o.Max == 0 {
		used, err := r.moveTask(ctx, o, &res)
		if used || err != nil {
			return finish(err)
		}
	}
	err := r.loop(ctx, o, &res)
	return finish(err)
}

// visibility is how long a received message stays hidden: a batch of ten at the rate,
// and time for its steps.
func visibility(rate float64) int32 {
	return int32(min(43200, math.Ceil(10/rate)+60))
}

func (r *Redriver) loop(ctx context.Context, o Options, res *Result) error {
	vis := visibility(o.Rate)
	held := map[string]sqstypes.Message{} // left by the filter: visible again at the end
	moved := map[string]bool{}            // the DLQ messages this run sent copies of
	defer func() {
		var hs []sqstypes.Message
		for _, m := range held {
			hs = append(hs, m)
		}
		r.reader.release(context.WithoutCancel(ctx), o.Queue.DLQURL, hs)
	}()
	interval := time.Duration(float64(time.Second) / o.Rate)
	next := r.Now()
	empty := 0
	for ctx.Err() == nil && (o.Max == 0 || res.Done() < o.Max) {
		n := int32(10)
		if o.Max > 0 {
			n = int32(min(10, o.Max-res.Done()))
		}
		out, err := r.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(o.Queue.DLQURL), MaxNumberOfMessages: n, VisibilityTimeout: vis, WaitTimeSeconds: 1,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
			MessageAttributeNames:       []string{"All"},
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dlq: receive from %s: %w", o.Queue.DLQURL, err)
		}
		if len(out.Messages) == 0 {
			if empty++; empty >= 2 {
				return nil
			}
			continue
		}
		empty = 0
		msgs, err := r.reader.Describe(ctx, o.Queue, out.Messages)
		if err != nil {
			r.reader.release(context.WithoutCancel(ctx), o.Queue.DLQURL, out.Messages)
			return err
		}
		for i, m := range msgs {
			if _, ok := held[m.ID]; ok {
				held[m.ID] = m.raw // seen before: its visibility ran out; hold it again
				continue
			}
			if from := m.raw.MessageAttributes[RedrivenFrom].StringValue; from != nil && moved[*from] {
				held[m.ID] = m.raw // our own copy, dead-lettered again: not sent round again
				res.Returned++
				continue
			}
			if !o.Filter.Match(m) {
				held[m.ID] = m.raw
				res.Skipped++
				continue
			}
			if wait := next.Sub(r.Now()); wait > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
			}
			if ctx.Err() != nil || (o.Max > 0 && res.Done() >= o.Max) {
				r.releaseFrom(ctx, o.Queue.DLQURL, msgs[i:], held)
				return nil
			}
			next = maxTime(next.Add(interval), r.Now())
			// The message in hand finishes its steps even if ctx ends meanwhile.
			mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			mv, err := r.move(mctx, o.Queue, m)
			cancel()
			if err != nil {
				r.releaseFrom(ctx, o.Queue.DLQURL, msgs[i:], held)
				return fmt.Errorf("dlq: redrive message %s: %w", m.ID, err)
			}
			if mv.Outcome == "" {
				// Another run holds it: leave it to that run.
				held[m.ID] = m.raw
				continue
			}
			res.Moves = append(res.Moves, mv)
			moved[m.ID] = true
			switch mv.Outcome {
			case Moved:
				res.Moved++
			case AlreadySent:
				res.AlreadySent++
			case Confirmed:
				res.Confirmed++
			case Resent:
				res.Resent++
			}
			if o.Progress != nil {
				o.Progress(*res)
			}
		}
	}
	return nil
}

// releaseFrom makes the messages not yet handled (and not held) visible again.
func (r *Redriver) releaseFrom(ctx context.Context, url string, msgs []Message, held map[string]sqstypes.Message) {
	var raw []sqstypes.Message
	for _, m := range msgs {
		if _, ok := held[m.ID]; !ok {
			raw = append(raw, m.raw)
		}
	}
	r.reader.release(context.WithoutCancel(ctx), url, raw)
}

// move takes one message through claim, send, mark, delete (see [Redriver]). An empty
// outcome: another run holds the message.
func (r *Redriver) move(ctx context.Context, q Queue, m Message) (Move, error) {
	mv := Move{MessageID: m.ID, Files: len(m.Files), JobID: m.JobID}
	snapshot := map[string]int{}
	for _, f := range m.Files {
		if !f.Final() {
			snapshot[f.primary.ID()] = f.Attempts
		}
	}
	mark, claimed, err := r.Ledger.ClaimRedrive(ctx, ledger.RedriveMark{MessageID: m.ID, Queue: q.DLQURL, Run: r.run, At: r.Now(), Attempts: snapshot})
	if err != nil {
		return mv, err
	}
	mv.Outcome = Moved
	if !claimed {
		switch mark.State {
		case ledger.RedriveSent:
			mv.Outcome, mv.NewMessageID = AlreadySent, mark.NewMessageID
			return mv, r.delete(ctx, q, m)
		case ledger.RedriveSending:
			done, err := r.processedSince(ctx, q, m, mark)
			if err != nil {
				return mv, err
			}
			if done {
				// The earlier run's copy went out: record it for it, then delete.
				err := r.Ledger.MarkRedriven(ctx, m.ID, mark.Run, "", r.Now())
				if errors.Is(err, ledger.ErrRedriveTaken) {
					return Move{}, nil
				}
				if err != nil {
					return mv, err
				}
				mv.Outcome = Confirmed
				return mv, r.delete(ctx, q, m)
			}
			err = r.Ledger.TakeOverRedrive(ctx, m.ID, mark.Run, r.run, r.Now())
			if errors.Is(err, ledger.ErrRedriveTaken) {
				return Move{}, nil
			}
			if err != nil {
				return mv, err
			}
			mv.Outcome = Resent
		default:
			return mv, fmt.Errorf("marker in unknown state %q", mark.State)
		}
	}
	attrs := map[string]sqstypes.MessageAttributeValue{}
	for k, v := range m.raw.MessageAttributes {
		attrs[k] = v
	}
	if len(attrs) < 10 { // SQS allows ten
		attrs[RedrivenFrom] = sqstypes.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(m.ID)}
	}
	sent, err := r.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(q.URL), MessageBody: m.raw.Body, MessageAttributes: attrs})
	if err != nil {
		return mv, fmt.Errorf("send to %s: %w", q.URL, err)
	}
	mv.NewMessageID = aws.ToString(sent.MessageId)
	if r.AfterSend != nil {
		if err := r.AfterSend(m.ID); err != nil {
			return mv, err
		}
	}
	if err := r.Ledger.MarkRedriven(ctx, m.ID, r.run, mv.NewMessageID, r.Now()); err != nil {
		return mv, err
	}
	if r.AfterMark != nil {
		if err := r.AfterMark(m.ID); err != nil {
			return mv, err
		}
	}
	return mv, r.delete(ctx, q, m)
}

func (r *Redriver) delete(ctx context.Context, q Queue, m Message) error {
	if _, err := r.SQS.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(q.DLQURL), ReceiptHandle: m.raw.ReceiptHandle}); err != nil {
		return fmt.Errorf("delete from %s: %w", q.DLQURL, err)
	}
	return nil
}

// processedSince says whether a message claimed by a run that stopped was sent and
// processed since: every file final or attempted again, or its fan-out task counted or
// its job finished.
func (r *Redriver) processedSince(ctx context.Context, q Queue, m Message, mark ledger.RedriveMark) (bool, error) {
	if m.Shape == ShapeFanout {
		return m.Counted || (m.JobStatus != "" && m.JobStatus != string(ledger.JobRunning)), nil
	}
	if len(m.Files) == 0 {
		return false, nil
	}
	// m was described when this run received it: after the earlier run stopped.
	for _, f := range m.Files {
		if f.Final() {
			continue
		}
		before, ok := mark.Attempts[f.primary.ID()]
		if !ok || f.Attempts <= before {
			return false, nil
		}
	}
	return true, nil
}

// moveTask asks SQS to move every message (StartMessageMoveTask) and follows it.
// used=false: the server does not support it (res says why); the caller falls back.
func (r *Redriver) moveTask(ctx context.Context, o Options, res *Result) (used bool, err error) {
	dlqARN, err := queueARN(ctx, r.SQS, o.Queue.DLQURL)
	if err != nil {
		return false, err
	}
	srcARN, err := queueARN(ctx, r.SQS, o.Queue.URL)
	if err != nil {
		return false, err
	}
	rate := int32(min(500, math.Ceil(o.Rate)))
	started, err := r.SQS.StartMessageMoveTask(ctx, &sqs.StartMessageMoveTaskInput{SourceArn: aws.String(dlqARN), DestinationArn: aws.String(srcARN),
		MaxNumberOfMessagesPerSecond: aws.Int32(rate)})
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		res.MoveTaskUnavailable = describeErr(err)
		return false, nil
	}
	res.Method = "StartMessageMoveTask"
	handle := aws.ToString(started.TaskHandle)
	for {
		select {
		case <-ctx.Done():
			_, cerr := r.SQS.CancelMessageMoveTask(context.WithoutCancel(ctx), &sqs.CancelMessageMoveTaskInput{TaskHandle: aws.String(handle)})
			if cerr != nil {
				return true, fmt.Errorf("dlq: interrupted; cancel the move task %s: %w", handle, cerr)
			}
			return true, ctx.Err()
		case <-time.After(r.pollEvery):
		}
		list, err := r.SQS.ListMessageMoveTasks(ctx, &sqs.ListMessageMoveTasksInput{SourceArn: aws.String(dlqARN), MaxResults: aws.Int32(10)})
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return true, fmt.Errorf("dlq: follow the move task: %w", err)
		}
		for _, t := range list.Results {
			if aws.ToString(t.TaskHandle) != handle && aws.ToString(t.TaskHandle) != "" {
				continue
			}
			res.Moved = int(t.ApproximateNumberOfMessagesMoved)
			if t.ApproximateNumberOfMessagesToMove != nil {
				res.ToMove = int(*t.ApproximateNumberOfMessagesToMove)
			}
			if o.Progress != nil {
				o.Progress(*res)
			}
			switch aws.ToString(t.Status) {
			case "COMPLETED":
				return true, nil
			case "FAILED":
				return true, fmt.Errorf("dlq: the move task failed: %s", aws.ToString(t.FailureReason))
			case "CANCELLED":
				return true, errors.New("dlq: the move task was cancelled")
			}
			break
		}
	}
}

func queueARN(ctx context.Context, q SQS, url string) (string, error) {
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		return "", fmt.Errorf("dlq: ARN of %s: %w", url, err)
	}
	return out.Attributes[string(sqstypes.QueueAttributeNameQueueArn)], nil
}

func describeErr(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return strings.TrimSpace(api.ErrorCode() + ": " + api.ErrorMessage())
	}
	return err.Error()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func newRun() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}
