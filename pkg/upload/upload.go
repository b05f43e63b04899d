// Package upload streams an io.Reader of unknown length to S3 with bounded memory.
//
// A stream that fits in one part is sent with a single PutObject, carrying metadata that
// is only known once the stream has been read (checksums computed on the way). A longer
// stream becomes a multipart upload, one part buffer at a time, created with the metadata
// known after its first part. What is known only at the end is not on such an object and
// the result names it ([Result.Late]): S3 cannot add metadata to an object without
// copying it whole, which costs another PUT-class request and the object's size again in
// time (the caller keeps those values elsewhere; the worker, in the ledger's record).
// Only if a value the object already carries changed by the end (a header, an entry) is
// it corrected, with one server-side CopyObject: a wrong label is worse than a missing one.
//
// An upload with an [Owner] writes on a condition (If-None-Match, or If-Match on the
// ETag its owner check saw), single PUT and multipart alike, so that another input's
// output that lands at the key meanwhile is never replaced.
// Memory per upload is one part buffer, whatever the object's size, and a stream of at
// most [SmallSize] bytes takes only a small buffer: most files are small, and a part
// buffer each would keep the heap (and the pages it touches) 32 times larger.
//
// A write that an S3-API server over a POSIX file system refuses because its key
// collides with another object's (one is a prefix of the other: see [retry.KeyConflict])
// fails with a [*ConflictError] naming the key: a permanent failure.
package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/retry"
)

// API is the part of the S3 client the uploader calls.
type API interface {
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	CreateMultipartUpload(context.Context, *s3.CreateMultipartUploadInput, ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(context.Context, *s3.UploadPartInput, ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
	CopyObject(context.Context, *s3.CopyObjectInput, ...func(*s3.Options)) (*s3.CopyObjectOutput, error)
}

// Limits of S3 multipart uploads and of CopyObject.
const (
	MinPartSize     = 5 << 20
	DefaultPartSize = 8 << 20
	MaxParts        = 10_000
	MaxCopySize     = 5 << 30 // larger objects can't be copied in one request
)

// SmallSize is the buffer a stream is read into first: one that ends within it is sent
// from it, and only a longer one takes a part buffer.
const SmallSize = 256 << 10

// Uploader uploads streams. Its zero value is not usable; use [New].
type Uploader struct {
	api      API
	partSize int
	pool     sync.Pool // *[]byte of partSize
	small    sync.Pool // *[]byte of SmallSize
}

// New returns an uploader with parts of partSize bytes (0 means [DefaultPartSize]).
func New(api API, partSize int) (*Uploader, error) {
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < MinPartSize {
		return nil, fmt.Errorf("upload: part size %d is below S3's minimum of %d bytes", partSize, MinPartSize)
	}
	u := &Uploader{api: api, partSize: partSize}
	u.pool.New = func() any { b := make([]byte, partSize); return &b }
	u.small.New = func() any { b := make([]byte, SmallSize); return &b }
	return u, nil
}

// Object describes what to write.
type Object struct {
	Bucket string
	Key    string
	// Describe returns the object's headers and metadata. It is called after the first
	// part has been read (so values a processor learns from the head of the stream, like
	// a sniffed content type, are known) and again once the body has been read to the end
	// (so values computed over the whole stream, like checksums, are known). A single
	// PUT carries the second answer; a multipart object the first, and [Result.Late]
	// names the entries only the second has (a value the second changes or drops is
	// corrected by a copy). Nil: none.
	Describe func() Description
	// Owner, if set, is the metadata entry that names the input the object is the output
	// of. An existing object at Key that another input owns is never overwritten: the
	// upload fails with an [*OwnedError] (two inputs whose outputs would share a key).
	// A new object costs nothing more (a conditional PUT); an existing one one HEAD.
	Owner *Owner
	// Describe must then put Owner's entry in the metadata.
}

// Owner is a metadata entry naming an object's input.
type Owner struct{ Key, Value string }

// OwnedError: the key is already the output of another input.
type OwnedError struct {
	Key   string // the key written
	Owner string // the input whose output it is
}

func (e *OwnedError) Error() string {
	return fmt.Sprintf("output key %q is already the output of %s: two inputs map to one output (see the processing rules' renaming)", e.Key, e.Owner)
}

// Permanent marks the error as one that retrying cannot fix.
func (e *OwnedError) Permanent() bool { return true }

// FailureCode is the report's code for the file (pkg/failure).
func (e *OwnedError) FailureCode() string { return failure.OutputConflict }

// header is the HEAD call an owner check needs (an API with it: the S3 client).
type header interface {
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
}

// condition is what a write of obj's key may replace: nothing (If-None-Match: *), or
// the object with this ETag (If-Match), which is obj's input's own output, or one that
// names no owner (written before owners were). Zero: no owner check, no condition.
type condition struct {
	ifNoneMatch bool
	ifMatch     string
}

// ownerCondition says whether obj may overwrite what is at its key, and on what
// condition: a write that lands only if the key still holds what was seen, so that
// another input's output written since is never replaced.
func (u *Uploader) ownerCondition(ctx context.Context, obj Object) (condition, error) {
	h, ok := u.api.(header)
	if !ok || obj.Owner == nil {
		return condition{}, nil
	}
	out, err := h.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(obj.Bucket), Key: aws.String(obj.Key)})
	var api smithy.APIError
	if errors.As(err, &api) && (api.ErrorCode() == "NotFound" || api.ErrorCode() == "NoSuchKey") {
		return condition{ifNoneMatch: true}, nil
	}
	if err != nil {
		return condition{}, fmt.Errorf("upload %s: head: %w", obj.Key, err)
	}
	if other, ok := out.Metadata[obj.Owner.Key]; ok && other != obj.Owner.Value {
		return condition{}, &OwnedError{Key: obj.Key, Owner: other}
	}
	if aws.ToString(out.ETag) == "" {
		return condition{}, nil
	}
	return condition{ifMatch: aws.ToString(out.ETag)}, nil
}

func (c condition) apply(ifNoneMatch, ifMatch **string) {
	*ifNoneMatch, *ifMatch = nil, nil
	if c.ifNoneMatch {
		*ifNoneMatch = aws.String("*")
	}
	if c.ifMatch != "" {
		*ifMatch = aws.String(c.ifMatch)
	}
}

// preconditionFailed says whether err is S3's 412: the key no longer holds what the
// write's condition names.
func preconditionFailed(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "PreconditionFailed"
}

// Description is an object's headers and user metadata.
type Description struct {
	ContentType     string
	ContentEncoding string
	Metadata        map[string]string
}

func (o Object) describe() Description {
	if o.Describe == nil {
		return Description{}
	}
	return o.Describe()
}

// ConflictError is a write refused because its key and an existing object's cannot
// both exist on the server (one is a prefix of the other's "directory"). It is
// permanent: the same write fails until one of the objects is removed.
type ConflictError struct {
	Key      string // the key written
	Conflict retry.Conflict
	Err      error // the API error
}

func (e *ConflictError) Error() string {
	const why = "(a POSIX-backed S3 server cannot hold both)"
	if e.Conflict == retry.KeyIsPrefix {
		return fmt.Sprintf("output key %q conflicts with existing objects under %q %s: %v", e.Key, e.Key+"/", why, e.Err)
	}
	return fmt.Sprintf("output key %q conflicts with an existing object that is a prefix of it %s: %v", e.Key, why, e.Err)
}

func (e *ConflictError) Unwrap() error { return e.Err }

// Permanent marks the error as one that retrying cannot fix.
func (e *ConflictError) Permanent() bool { return true }

// FailureCode is the report's code for the file (pkg/failure).
func (e *ConflictError) FailureCode() string { return failure.OutputConflict }

// writeError wraps the error of a write of key: a key conflict becomes a
// [*ConflictError].
func writeError(key, step string, err error) error {
	if c := retry.KeyConflict(err); c != retry.NoConflict {
		err = &ConflictError{Key: key, Conflict: c, Err: err}
	}
	return fmt.Errorf("upload %s: %s: %w", key, step, err)
}

// Result says what was written.
type Result struct {
	ETag  string
	Size  int64
	Parts int // 0 for a single PutObject
	// Late are the metadata entries that Describe returned only once the stream had been
	// read, and that a multipart object therefore does not carry (sorted; nil for a single
	// PutObject, and for a multipart object corrected by a copy, which carry them all).
	Late []string
}

// Upload reads body to the end and writes it to obj.Bucket/obj.Key.
func (u *Uploader) Upload(ctx context.Context, obj Object, body io.Reader) (Result, error) {
	smallp := u.small.Get().(*[]byte)
	n, eof, err := fill(body, *smallp)
	if err != nil {
		u.small.Put(smallp)
		return Result{}, fmt.Errorf("upload %s: read: %w", obj.Key, err)
	}
	if eof {
		defer u.small.Put(smallp)
		return u.putSingle(ctx, obj, (*smallp)[:n])
	}

	// Longer than the small buffer: go on in a part buffer.
	bufp := u.pool.Get().(*[]byte)
	defer u.pool.Put(bufp)
	buf := *bufp
	n = copy(buf, (*smallp)[:n])
	u.small.Put(smallp)
	m, eof, err := fill(body, buf[n:])
	n += m
	if err != nil {
		return Result{}, fmt.Errorf("upload %s: read: %w", obj.Key, err)
	}
	if eof {
		return u.putSingle(ctx, obj, buf[:n])
	}
	// The stream is at least one part long: is there more?
	var probe [1]byte
	m, eof, err = fill(body, probe[:])
	if err != nil {
		return Result{}, fmt.Errorf("upload %s: read: %w", obj.Key, err)
	}
	if eof && m == 0 {
		return u.putSingle(ctx, obj, buf[:n])
	}
	return u.putMultipart(ctx, obj, buf, io.MultiReader(bytes.NewReader(probe[:m]), body))
}

func (u *Uploader) putSingle(ctx context.Context, obj Object, data []byte) (Result, error) {
	in := &s3.PutObjectInput{
		Bucket: aws.String(obj.Bucket),
		Key:    aws.String(obj.Key),
		Body:   bytes.NewReader(data),
	}
	d := obj.describe()
	setHeaders(d, &in.ContentType, &in.ContentEncoding)
	in.Metadata = d.Metadata
	if obj.Owner != nil {
		in.IfNoneMatch = aws.String("*") // a new output: no other call
	}
	out, err := u.api.PutObject(ctx, in)
	if obj.Owner != nil && preconditionFailed(err) {
		// Something is there: overwrite it only if it is this input's output, and only
		// if it still is when the PUT lands.
		cond, err := u.ownerCondition(ctx, obj)
		if err != nil {
			return Result{}, err
		}
		cond.apply(&in.IfNoneMatch, &in.IfMatch)
		in.Body = bytes.NewReader(data)
		if out, err = u.api.PutObject(ctx, in); err != nil {
			return Result{}, writeError(obj.Key, "put", err)
		}
		return Result{ETag: aws.ToString(out.ETag), Size: int64(len(data))}, nil
	}
	if err != nil {
		return Result{}, writeError(obj.Key, "put", err)
	}
	return Result{ETag: aws.ToString(out.ETag), Size: int64(len(data))}, nil
}

// putMultipart uploads first (a full part) then the rest of body, one part at a time. The
// object gets the metadata Describe returns now, after the first part: every output is
// labelled from the moment it exists.
func (u *Uploader) putMultipart(ctx context.Context, obj Object, first []byte, rest io.Reader) (_ Result, err error) {
	cond, err := u.ownerCondition(ctx, obj)
	if err != nil {
		return Result{}, err
	}
	early := obj.describe()
	create := &s3.CreateMultipartUploadInput{Bucket: aws.String(obj.Bucket), Key: aws.String(obj.Key), Metadata: early.Metadata}
	setHeaders(early, &create.ContentType, &create.ContentEncoding)
	mpu, err := u.api.CreateMultipartUpload(ctx, create)
	if err != nil {
		return Result{}, writeError(obj.Key, "create multipart upload", err)
	}
	completed := false
	defer func() {
		if err != nil && !completed {
			// Abort even when ctx is done, or the parts linger (and cost) until a lifecycle rule.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_, _ = u.api.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(obj.Bucket), Key: aws.String(obj.Key), UploadId: mpu.UploadId})
		}
	}()

	var parts []types.CompletedPart
	var size int64
	buf := first
	for part := int32(1); ; part++ {
		if part > MaxParts {
			return Result{}, fmt.Errorf("upload %s: more than %d parts of %d bytes", obj.Key, MaxParts, len(first))
		}
		out, err := u.api.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(obj.Bucket), Key: aws.String(obj.Key), UploadId: mpu.UploadId,
			PartNumber: aws.Int32(part), Body: bytes.NewReader(buf),
		})
		if err != nil {
			return Result{}, fmt.Errorf("upload %s: part %d: %w", obj.Key, part, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(part)})
		size += int64(len(buf))

		n, eof, rerr := fill(rest, first[:cap(first)])
		if rerr != nil {
			return Result{}, fmt.Errorf("upload %s: read part %d: %w", obj.Key, part+1, rerr)
		}
		if n == 0 && eof {
			break
		}
		buf = first[:n]
	}
	// Complete on the owner check's condition: another input's output that landed at the
	// key since the check is never replaced (it would be by an unconditional complete).
	complete := &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(obj.Bucket), Key: aws.String(obj.Key), UploadId: mpu.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	cond.apply(&complete.IfNoneMatch, &complete.IfMatch)
	done, err := u.api.CompleteMultipartUpload(ctx, complete)
	if obj.Owner != nil && preconditionFailed(err) {
		// Something else is there now: complete over it only if it is this input's own.
		if cond, err = u.ownerCondition(ctx, obj); err != nil {
			return Result{}, err
		}
		cond.apply(&complete.IfNoneMatch, &complete.IfMatch)
		done, err = u.api.CompleteMultipartUpload(ctx, complete)
	}
	if err != nil {
		return Result{}, writeError(obj.Key, "complete multipart upload", err)
	}
	completed = true
	res := Result{ETag: aws.ToString(done.ETag), Size: size, Parts: len(parts)}

	final := obj.describe()
	if !changed(early, final) {
		res.Late = added(early.Metadata, final.Metadata)
		return res, nil
	}
	// A value the object carries is not the final one (a processor settled it at the end):
	// a wrong label is worse than a missing one, so correct it with one copy, on the
	// condition that the object is still the one just completed.
	if size > MaxCopySize {
		return Result{}, failure.Newf(failure.TooLarge, "upload %s: the output's headers or metadata changed after its upload began, and S3 cannot copy an object of %d bytes (over 5 GiB) to correct them", obj.Key, size)
	}
	cp := &s3.CopyObjectInput{
		Bucket:            aws.String(obj.Bucket),
		Key:               aws.String(obj.Key),
		CopySource:        aws.String(CopySource(obj.Bucket, obj.Key)),
		CopySourceIfMatch: done.ETag,
		MetadataDirective: types.MetadataDirectiveReplace,
		Metadata:          final.Metadata,
	}
	setHeaders(final, &cp.ContentType, &cp.ContentEncoding)
	copied, err := u.api.CopyObject(ctx, cp)
	if err != nil {
		return Result{}, writeError(obj.Key, "correct the metadata by copy", err)
	}
	if copied.CopyObjectResult != nil && copied.CopyObjectResult.ETag != nil {
		res.ETag = aws.ToString(copied.CopyObjectResult.ETag)
	}
	return res, nil
}

// changed says whether final gives another value for something early put on the object:
// a header, or a metadata entry changed or dropped (an entry only final has is late, not
// wrong).
func changed(early, final Description) bool {
	if early.ContentType != final.ContentType || early.ContentEncoding != final.ContentEncoding {
		return true
	}
	for k, v := range early.Metadata {
		if have, ok := final.Metadata[k]; !ok || have != v {
			return true
		}
	}
	return false
}

// added are the keys of final that early does not have.
func added(early, final map[string]string) []string {
	var keys []string
	for k := range final {
		if _, ok := early[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// fill reads into buf until it is full or the reader ends. Only io.EOF from r means the
// end: any other error, io.ErrUnexpectedEOF from a body cut short included, is returned,
// so a truncated stream is never uploaded as if it were complete.
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		switch {
		case err == io.EOF: // exactly EOF: wrapped or unexpected EOFs are errors
			return n, true, nil
		case err != nil:
			return n, false, err
		}
	}
	return n, false, nil
}

func setHeaders(d Description, contentType, contentEncoding **string) {
	if d.ContentType != "" {
		*contentType = aws.String(d.ContentType)
	}
	if d.ContentEncoding != "" {
		*contentEncoding = aws.String(d.ContentEncoding)
	}
}

// CopySource is the x-amz-copy-source value for bucket/key: each key segment
// percent-encoded, with '+' as %2B (a bare '+' would be read as a space).
func CopySource(bucket, key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
	}
	return bucket + "/" + strings.Join(segs, "/")
}
