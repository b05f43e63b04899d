package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// fakeS3 is an in-memory bucket store with just the calls the worker makes.
type fakeS3 struct {
	mu      sync.Mutex
	objects map[string][]byte // bucket/key
	etags   map[string]string // bucket/key -> ETag of an object put with put ("e-<key>" unless set)
	meta    map[string]map[string]string
	ctype   map[string]string
	parts   map[string][][]byte // upload id -> parts
	created map[string]*s3.CreateMultipartUploadInput
	getErr  func(key string) error
	puts    int
	uploads int
	heads   int
	deletes int
}

func newFakeS3() *fakeS3 {
	return &fakeS3{objects: map[string][]byte{}, etags: map[string]string{}, meta: map[string]map[string]string{}, ctype: map[string]string{}, parts: map[string][][]byte{},
		created: map[string]*s3.CreateMultipartUploadInput{}}
}

func (f *fakeS3) put(bucket, key string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[bucket+"/"+key] = data
	f.etags[bucket+"/"+key] = "e-" + key
}

// overwrite replaces an object's content and ETag (a newer revision).
func (f *fakeS3) overwrite(bucket, key, etag string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[bucket+"/"+key] = data
	f.etags[bucket+"/"+key] = etag
}

func (f *fakeS3) precondition(in string, k string) error {
	if in == "" {
		return nil
	}
	if etag, ok := f.etags[k]; ok && `"`+etag+`"` != in {
		return &smithy.GenericAPIError{Code: "PreconditionFailed", Message: "At least one of the pre-conditions you specified did not hold"}
	}
	return nil
}

func (f *fakeS3) get(bucket, key string) ([]byte, map[string]string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objects[bucket+"/"+key]
	return b, f.meta[bucket+"/"+key], ok
}

func (f *fakeS3) GetObject(_ context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	if f.getErr != nil {
		if err := f.getErr(aws.ToString(in.Key)); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := aws.ToString(in.Bucket) + "/" + aws.ToString(in.Key)
	b, ok := f.objects[k]
	if !ok {
		return nil, &types.NoSuchKey{Message: aws.String("no such key")}
	}
	if err := f.precondition(aws.ToString(in.IfMatch), k); err != nil {
		return nil, err
	}
	etag := f.etags[k]
	if etag == "" {
		etag = "etag"
	}
	return &s3.GetObjectOutput{Body: io.NopCloser(bytes.NewReader(b)), ContentLength: aws.Int64(int64(len(b))), ETag: aws.String(`"` + etag + `"`)}, nil
}

func (f *fakeS3) HeadObject(_ context.Context, in *s3.HeadObjectInput, _ ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heads++
	k := aws.ToString(in.Bucket) + "/" + aws.ToString(in.Key)
	b, ok := f.objects[k]
	if !ok {
		return nil, &smithy.GenericAPIError{Code: "NotFound", Message: "Not Found"}
	}
	if err := f.precondition(aws.ToString(in.IfMatch), k); err != nil {
		return nil, err
	}
	var etag *string
	if e, ok := f.etags[k]; ok {
		etag = aws.String(`"` + e + `"`)
	}
	return &s3.HeadObjectOutput{ContentLength: aws.Int64(int64(len(b))), Metadata: f.meta[k], ETag: etag}, nil
}

func (f *fakeS3) DeleteObject(_ context.Context, in *s3.DeleteObjectInput, _ ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := aws.ToString(in.Bucket) + "/" + aws.ToString(in.Key)
	if _, ok := f.objects[k]; ok {
		if err := f.precondition(aws.ToString(in.IfMatch), k); err != nil {
			return nil, err
		}
	}
	delete(f.objects, k)
	delete(f.meta, k)
	delete(f.etags, k)
	f.deletes++
	return &s3.DeleteObjectOutput{}, nil
}

// writeCondition is S3's check of a conditional write of k: If-None-Match: * refuses
// an existing object, If-Match one with another ETag (412 either way).
func (f *fakeS3) writeCondition(k string, ifNoneMatch, ifMatch *string) error {
	_, exists := f.objects[k]
	if aws.ToString(ifNoneMatch) == "*" && exists {
		return &smithy.GenericAPIError{Code: "PreconditionFailed", Message: "At least one of the pre-conditions you specified did not hold"}
	}
	if ifMatch != nil && (!exists || `"`+f.etags[k]+`"` != aws.ToString(ifMatch)) {
		return &smithy.GenericAPIError{Code: "PreconditionFailed", Message: "At least one of the pre-conditions you specified did not hold"}
	}
	return nil
}

func (f *fakeS3) PutObject(_ context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	b, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := aws.ToString(in.Bucket) + "/" + aws.ToString(in.Key)
	if err := f.writeCondition(k, in.IfNoneMatch, in.IfMatch); err != nil {
		return nil, err
	}
	f.objects[k], f.meta[k], f.ctype[k] = b, in.Metadata, aws.ToString(in.ContentType)
	f.puts++
	f.etags[k] = fmt.Sprintf("out-%d", f.puts)
	return &s3.PutObjectOutput{ETag: aws.String(`"` + f.etags[k] + `"`)}, nil
}

func (f *fakeS3) CreateMultipartUpload(_ context.Context, in *s3.CreateMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads++
	id := fmt.Sprintf("up-%d", f.uploads)
	f.parts[id] = nil
	f.created[id] = in
	return &s3.CreateMultipartUploadOutput{UploadId: aws.String(id)}, nil
}

func (f *fakeS3) UploadPart(_ context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	b, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := aws.ToString(in.UploadId)
	f.parts[id] = append(f.parts[id], b)
	return &s3.UploadPartOutput{ETag: aws.String(fmt.Sprintf(`"p%d"`, aws.ToInt32(in.PartNumber)))}, nil
}

// CompleteMultipartUpload makes the object with the created upload's headers and
// metadata; a failed condition leaves the upload open (complete it again or abort it).
func (f *fakeS3) CompleteMultipartUpload(_ context.Context, in *s3.CompleteMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := aws.ToString(in.UploadId)
	created, ok := f.created[id]
	if !ok {
		return nil, &types.NoSuchUpload{Message: aws.String("no such upload " + id)}
	}
	k := aws.ToString(in.Bucket) + "/" + aws.ToString(in.Key)
	if err := f.writeCondition(k, in.IfNoneMatch, in.IfMatch); err != nil {
		return nil, err
	}
	f.objects[k] = bytes.Join(f.parts[id], nil)
	f.meta[k], f.ctype[k] = created.Metadata, aws.ToString(created.ContentType)
	delete(f.parts, id)
	delete(f.created, id)
	f.puts++
	f.etags[k] = fmt.Sprintf("mpu-%d", f.puts)
	return &s3.CompleteMultipartUploadOutput{ETag: aws.String(`"` + f.etags[k] + `"`)}, nil
}

func (f *fakeS3) AbortMultipartUpload(_ context.Context, in *s3.AbortMultipartUploadInput, _ ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.parts, aws.ToString(in.UploadId))
	delete(f.created, aws.ToString(in.UploadId))
	return &s3.AbortMultipartUploadOutput{}, nil
}

// CopyObject onto the same key replaces the headers and metadata (what the uploader
// uses it for), if the source is still the ETag named.
func (f *fakeS3) CopyObject(_ context.Context, in *s3.CopyObjectInput, _ ...func(*s3.Options)) (*s3.CopyObjectOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := aws.ToString(in.Bucket) + "/" + aws.ToString(in.Key)
	if err := f.precondition(aws.ToString(in.CopySourceIfMatch), k); err != nil {
		return nil, err
	}
	f.meta[k], f.ctype[k] = in.Metadata, aws.ToString(in.ContentType)
	f.puts++
	f.etags[k] = fmt.Sprintf("copy-%d", f.puts)
	return &s3.CopyObjectOutput{CopyObjectResult: &types.CopyObjectResult{ETag: aws.String(`"` + f.etags[k] + `"`)}}, nil
}

// fakeLedger keeps records in memory with the store's conditional semantics: one
// record per key, newest revision wins by sequencer, a different revision without an
// order needs Over.
type fakeLedger struct {
	mu         sync.Mutex
	status     map[ledger.Key]ledger.Status
	reasons    map[ledger.Key]string
	codes      map[ledger.Key]string
	jobIDs     map[ledger.Key]string
	attempts   map[ledger.Key]int
	revs       map[ledger.Key]ledger.Revision
	outputs    map[ledger.Key][]string
	sums       map[ledger.Key]string // the committed result's SHA-256
	superseded map[ledger.Key]string // superseded revision's key -> reason
	replays    map[ledger.Key]string
	poison     map[string]string
	writes     int
	failNext   error
}

func newFakeLedger() *fakeLedger {
	return &fakeLedger{status: map[ledger.Key]ledger.Status{}, reasons: map[ledger.Key]string{}, codes: map[ledger.Key]string{}, jobIDs: map[ledger.Key]string{}, attempts: map[ledger.Key]int{},
		revs: map[ledger.Key]ledger.Revision{}, replays: map[ledger.Key]string{}, outputs: map[ledger.Key][]string{}, sums: map[ledger.Key]string{}, superseded: map[ledger.Key]string{}, poison: map[string]string{}}
}

func (l *fakeLedger) Lookup(_ context.Context, keys []ledger.Key) (map[ledger.Key]ledger.State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[ledger.Key]ledger.State{}
	for _, k := range keys {
		if s, ok := l.status[k]; ok {
			out[k] = ledger.State{Status: s, Rev: l.revs[k], Attempts: l.attempts[k]}
		}
	}
	return out, nil
}

func (l *fakeLedger) Write(ctx context.Context, w ledger.Write) error {
	_, err := l.WriteReplacing(ctx, w)
	return err
}

func (l *fakeLedger) WriteReplacing(_ context.Context, w ledger.Write) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.failNext; err != nil {
		l.failNext = nil
		return false, err
	}
	l.writes++ // a refused conditional write costs a write too
	k := w.Key
	replaced := false
	if st, ok := l.status[k]; ok {
		head := ledger.State{Status: st, Rev: l.revs[k], Attempts: l.attempts[k]}
		switch {
		case !k.Ordered() || head.Rev.Same(w.Rev):
			if st == ledger.StatusSucceeded && (w.Replay == "" || l.replays[k] == w.Replay) {
				return false, ledger.ErrAlreadySucceeded
			}
			// A success on this revision's own earlier, unfinished record: as the ledger,
			// its writer checks the key's output.
			replaced = k.Ordered() && st != ledger.StatusSucceeded && w.Status == ledger.StatusSucceeded
		case w.Rev.Older(head.Rev):
			return false, &ledger.SupersededError{Head: head}
		case head.Rev.Older(w.Rev) || (w.Over != nil && *w.Over == head):
			l.attempts[k] = 0
			replaced = true
		default:
			return false, &ledger.OtherRevisionError{Head: head}
		}
	}
	l.status[k], l.reasons[k], l.codes[k], l.jobIDs[k], l.revs[k] = w.Status, w.Reason, w.Code, w.JobID, w.Rev
	if w.Replay != "" {
		l.replays[k] = w.Replay
	}
	l.outputs[k], l.sums[k] = w.Result.Outputs, w.Result.SHA256
	l.attempts[k]++
	return replaced, nil
}

func (l *fakeLedger) Get(_ context.Context, k ledger.Key) (ledger.Record, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.status[k]
	if !ok {
		return ledger.Record{}, false, nil
	}
	r := l.revs[k]
	return ledger.Record{Bucket: k.Bucket, Key: k.Key, Status: st, Reason: l.reasons[k], Code: l.codes[k], JobID: l.jobIDs[k], ETag: r.ETag, VersionID: r.VersionID, Sequencer: r.Sequencer,
		Attempts: l.attempts[k], Result: ledger.Result{Outputs: l.outputs[k]}}, true, nil
}

func (l *fakeLedger) RecordSuperseded(_ context.Context, k ledger.Key, rev, _ ledger.Revision, reason string, _ ledger.Attempt) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.superseded[ledger.SupersededKey(k, rev)] = reason
	return nil
}

func (l *fakeLedger) Advance(context.Context, ledger.Key, ledger.Revision) {}

func (l *fakeLedger) RecordPoison(_ context.Context, p ledger.Poison) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	l.poison[p.MessageID] = p.Reason
	return nil
}

// fakeQueue records visibility changes.
type fakeQueue struct {
	mu         sync.Mutex
	visibility map[string]int32 // receipt handle -> seconds
	urlCalls   int
	sent       []string                                // bodies sent with SendMessage
	delays     []int32                                 // and their DelaySeconds
	attrs      []map[string]events.SQSMessageAttribute // and their message attributes, as delivered
	deleted    []string                                // receipt handles deleted with DeleteMessageBatch
	onDelete   func(receiptHandle string)
}

func (q *fakeQueue) DeleteMessageBatch(_ context.Context, in *sqs.DeleteMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	q.mu.Lock()
	for _, e := range in.Entries {
		q.deleted = append(q.deleted, aws.ToString(e.ReceiptHandle))
	}
	hook := q.onDelete
	q.mu.Unlock()
	if hook != nil {
		for _, e := range in.Entries {
			hook(aws.ToString(e.ReceiptHandle))
		}
	}
	return &sqs.DeleteMessageBatchOutput{}, nil
}

func (q *fakeQueue) deletedHandles() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.deleted...)
}

func (q *fakeQueue) GetQueueUrl(_ context.Context, in *sqs.GetQueueUrlInput, _ ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.urlCalls++
	return &sqs.GetQueueUrlOutput{QueueUrl: aws.String("https://sqs.local/" + aws.ToString(in.QueueOwnerAWSAccountId) + "/" + aws.ToString(in.QueueName))}, nil
}

func (q *fakeQueue) ChangeMessageVisibilityBatch(_ context.Context, in *sqs.ChangeMessageVisibilityBatchInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.visibility == nil {
		q.visibility = map[string]int32{}
	}
	if !strings.HasPrefix(aws.ToString(in.QueueUrl), "https://sqs.local/") {
		return nil, fmt.Errorf("unexpected queue url %q", aws.ToString(in.QueueUrl))
	}
	for _, e := range in.Entries {
		q.visibility[aws.ToString(e.ReceiptHandle)] = e.VisibilityTimeout
	}
	return &sqs.ChangeMessageVisibilityBatchOutput{}, nil
}

func fixedNow() time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) }

func (q *fakeQueue) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sent = append(q.sent, aws.ToString(in.MessageBody))
	q.delays = append(q.delays, in.DelaySeconds)
	attrs := map[string]events.SQSMessageAttribute{}
	for k, v := range in.MessageAttributes {
		attrs[k] = events.SQSMessageAttribute{DataType: aws.ToString(v.DataType), StringValue: v.StringValue}
	}
	q.attrs = append(q.attrs, attrs)
	return &sqs.SendMessageOutput{MessageId: aws.String("sent")}, nil
}

// delivery is the i-th message sent, as the queue delivers it (receive 1).
func (q *fakeQueue) delivery(i int, id string) events.SQSMessage {
	q.mu.Lock()
	defer q.mu.Unlock()
	return events.SQSMessage{MessageId: id, ReceiptHandle: "rh-" + id, Body: q.sent[i], EventSourceARN: queueARN,
		Attributes: map[string]string{"ApproximateReceiveCount": "1"}, MessageAttributes: q.attrs[i]}
}
