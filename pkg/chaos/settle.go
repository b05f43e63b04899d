package chaos

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fileflow/fileflow/pkg/dlq"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// pending is what is not finished yet.
type pending struct {
	queued, jobs, inputs int
	where                string // the queues' counts, when any is not empty
	// idleReconcile: all that is queued is the reconciler's own tick (at most one
	// message on the jobs queue): not progress, so it does not hold off the stall.
	idleReconcile bool
}

func (p pending) zero() bool { return p.queued == 0 && p.jobs == 0 && p.inputs == 0 }

// settle waits until every queue is empty, every job finished and notified and every
// input has a final record for its newest version — or until nothing has moved for
// Stall with the queues empty (what is left is then in a DLQ or lost, and the check
// says which), or the run's timeout.
func (h *harness) settle(ctx context.Context) {
	lastChange := time.Now()
	var dlqSince time.Time // since when a DLQ has held messages
	var last pending
	first := true
	for {
		p, err := h.pendingNow(ctx)
		switch {
		case ctx.Err() != nil:
			h.settleReason = fmt.Sprintf("timeout after %s: %d messages queued (%s), %d jobs and %d files unfinished", h.cfg.Timeout, last.queued, strings.TrimSpace(last.where), last.jobs, last.inputs)
			h.lastPending = last
			return
		case err != nil:
			h.log.Warn("chaos: reading progress", "error", err)
		case p.zero():
			h.settleReason = "settled"
			return
		case h.dlqWaiting(ctx, &dlqSince) && h.operatorRedrives < maxOperatorRedrives && h.redriveDLQs(ctx) > 0:
			// What an operator does when the reconciler reports a job's tasks in a DLQ (a
			// batch killed on its last receive): redrive them. Counted in the report.
			// (Not only once all else is still: a job's tasks whose parent is in a DLQ keep
			// coming back to wait for it, so the queues are never empty.)
			last, lastChange, dlqSince, first = p, time.Now(), time.Time{}, false
		case first || p != last || (p.queued > 0 && !p.idleReconcile):
			last, lastChange, first = p, time.Now(), false
		case time.Since(lastChange) > h.cfg.Stall:
			h.settleReason = fmt.Sprintf("stalled for %s with the queues empty: %d jobs and %d files unfinished", h.cfg.Stall, p.jobs, p.inputs)
			h.lastPending = p
			return
		}
		wait := time.Second
		if p.queued == 0 {
			wait = 5 * time.Second // reading every record is not free
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func (h *harness) pendingNow(ctx context.Context) (pending, error) {
	var p pending
	byQueue := map[string]int{}
	for _, q := range []string{h.tasksQueue, h.jobsQueue} {
		n, attrs, err := depth(ctx, h.st.SQS, q)
		if err != nil {
			return p, err
		}
		if n > 0 {
			p.where += fmt.Sprintf(" %s %v", q[strings.LastIndexByte(q, '/')+1:], attrs)
		}
		p.queued += n
		byQueue[q] = n
	}
	if p.queued > 0 {
		p.idleReconcile = byQueue[h.tasksQueue] == 0 && byQueue[h.jobsQueue] <= 1
		if !p.idleReconcile {
			return p, nil
		}
		p.where = "" // the tick comes and goes: compared as if the queues were empty
		p.queued = 0
	}
	quiet := map[string]bool{} // stopped, or finished and reported
	for _, jp := range h.plan.jobs {
		j, found, err := h.db.GetJob(ctx, jp.spec.ID)
		if err != nil {
			return p, err
		}
		if !found || j.Status == ledger.JobRunning || !j.Notified {
			p.jobs++
		} else {
			quiet[jp.name] = true
		}
		if found && (j.Status == ledger.JobFailed || j.Status == ledger.JobCancelled) {
			quiet[jp.name] = true
		}
	}
	ins, _ := h.truth.snapshot()
	recs, err := h.records(ctx, ins)
	if err != nil {
		return p, err
	}
	for k, in := range ins {
		// A job's file with no event waits only while one of its jobs runs: a job
		// stopped, or finished and reported, does nothing more with it (a file deleted
		// before it was listed is then in no report; the check says which it is).
		if !settled(in, recs[k]) && (in.notified() || len(in.jobs) == 0 || !allStopped(in.jobs, quiet)) {
			p.inputs++
		}
	}
	return p, nil
}

// maxOperatorRedrives bounds the redrives a run does for its operator.
const maxOperatorRedrives = 3

// dlqWaiting says whether a DLQ has held messages for Stall (since *since, which it
// keeps).
func (h *harness) dlqWaiting(ctx context.Context, since *time.Time) bool {
	n := 0
	for _, q := range []string{h.tasksDLQ, h.jobsDLQ} {
		d, _, err := depth(ctx, h.st.SQS, q)
		if err != nil {
			return false
		}
		n += d
	}
	switch {
	case n == 0:
		*since = time.Time{}
		return false
	case since.IsZero():
		*since = time.Now()
		return false
	}
	return time.Since(*since) > h.cfg.Stall
}

// redriveDLQs moves both DLQs' messages back to their queues, as `fileflow dlq redrive`
// does, and returns how many it moved.
func (h *harness) redriveDLQs(ctx context.Context) int {
	h.operatorRedrives++
	moved := 0
	for _, q := range []dlq.Queue{{Name: dlq.Tasks, URL: h.tasksQueue, DLQURL: h.tasksDLQ}, {Name: dlq.Jobs, URL: h.jobsQueue, DLQURL: h.jobsDLQ}} {
		if n, _, err := depth(ctx, h.st.SQS, q.DLQURL); err != nil || n == 0 {
			continue
		}
		r := &dlq.Redriver{SQS: h.st.SQS, Ledger: h.db}
		res, err := r.Redrive(ctx, dlq.Options{Queue: q})
		if err != nil {
			h.log.Warn("chaos: operator redrive", "queue", q.Name, "error", err)
		}
		h.log.Warn("chaos: redrove a DLQ, as the reconciler asks an operator to", "queue", q.Name, "moved", res.Done())
		moved += res.Done()
		h.redriven.Add(int64(res.Done()))
	}
	return moved
}

// final says whether a record's status is a final one.
func final(s ledger.Status) bool {
	return s == ledger.StatusSucceeded || s == ledger.StatusFailed || s == ledger.StatusDeadLettered
}

// settled: the key's newest version has a final record (or, deleted, any final one).
func settled(in *input, rec ledger.Record) bool {
	return final(rec.Status) && (rec.ETag == in.newest().etag || in.deleted)
}

func depth(ctx context.Context, c *sqs.Client, url string) (int, map[string]string, error) {
	out, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible, sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed}})
	if err != nil {
		return 0, nil, fmt.Errorf("queue depth: %w", err)
	}
	n := 0
	for _, v := range out.Attributes {
		x, _ := strconv.Atoi(v)
		n += x
	}
	return n, out.Attributes, nil
}

// records reads every input's record: the key's own, or, where it has none, the one a
// file gets that failed before its revision was known (ledger.ScopeUnread).
func (h *harness) records(ctx context.Context, ins map[string]*input) (map[string]ledger.Record, error) {
	bucket := h.st.Resources.IngestBucket
	var keys []ledger.Key
	for k := range ins {
		keys = append(keys, ledger.Key{Bucket: bucket, Key: k})
	}
	own, err := h.batchGet(ctx, keys)
	if err != nil {
		return nil, err
	}
	keys = keys[:0]
	for k := range ins {
		if _, ok := own[ledger.Key{Bucket: bucket, Key: k}]; !ok {
			keys = append(keys, ledger.Key{Bucket: bucket, Key: k, Scope: ledger.ScopeUnread})
		}
	}
	unread, err := h.batchGet(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]ledger.Record, len(ins))
	for k, r := range own {
		out[k.Key] = r
	}
	for k, r := range unread {
		out[k.Key] = r
	}
	return out, nil
}

// batchGet reads records by key, 100 a request, 8 requests at a time.
func (h *harness) batchGet(ctx context.Context, keys []ledger.Key) (map[ledger.Key]ledger.Record, error) {
	table := h.st.Resources.Table
	out := make(map[ledger.Key]ledger.Record, len(keys))
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for start := 0; start < len(keys); start += 100 {
		part := keys[start:min(start+100, len(keys))]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			byAttrs := map[string]ledger.Key{}
			var req []map[string]ddbtypes.AttributeValue
			for _, k := range part {
				a := k.Attributes()
				byAttrs[attrString(a)] = k
				req = append(req, a)
			}
			items := map[string]ddbtypes.KeysAndAttributes{table: {Keys: req, ConsistentRead: aws.Bool(true)}}
			for len(items) > 0 {
				var resp *dynamodb.BatchGetItemOutput
				err := retry(ctx, func() error {
					var err error
					resp, err = h.st.DynamoDB.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: items})
					return err
				})
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("read the ledger: %w", err)
					mu.Unlock()
					return
				}
				for _, item := range resp.Responses[table] {
					var r ledger.Record
					if err := attributevalue.UnmarshalMap(item, &r); err != nil {
						mu.Lock()
						firstErr = fmt.Errorf("a ledger record: %w", err)
						mu.Unlock()
						return
					}
					k := byAttrs[attrString(map[string]ddbtypes.AttributeValue{ledger.AttrPK: item[ledger.AttrPK], ledger.AttrSK: item[ledger.AttrSK]})]
					mu.Lock()
					out[k] = r
					mu.Unlock()
				}
				items = resp.UnprocessedKeys
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

func attrString(a map[string]ddbtypes.AttributeValue) string {
	s := func(v ddbtypes.AttributeValue) string {
		if x, ok := v.(*ddbtypes.AttributeValueMemberS); ok {
			return x.Value
		}
		return ""
	}
	return s(a[ledger.AttrPK]) + "\x00" + s(a[ledger.AttrSK])
}
