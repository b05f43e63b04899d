// Package source opens the bytes a task file names: a whole S3 object, a byte range of
// one, or one member of a zip archive, read through a ranged GET of its compressed bytes
// and checked against its size and CRC-32 as it is read.
//
// # Zip bombs
//
// An archive member is bounded twice. Before any GET, its declared (central directory)
// size must be within [Limits]: at most MaxMemberBytes, and — above [RatioExemptBytes] —
// at most MaxRatio times its compressed size. The compressed size cannot lie (the ranged
// GET returns exactly that many bytes), but the declared size can, so while inflating the
// reader never produces more than the declared size plus one byte: a member that claims
// 10 bytes and would inflate to a gigabyte is cut off after 11, with the inflater's
// window as the only memory. Exceeding either limit while inflating therefore means
// exceeding the declared size first, and fails as a corrupt member that names it.
package source

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

// Getter is the part of the S3 client Open calls.
type Getter interface {
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// Limits bound what one archive member may expand to. Zero fields take the values of
// [DefaultLimits].
type Limits struct {
	MaxMemberBytes int64   // uncompressed size of one member
	MaxRatio       float64 // uncompressed size / compressed size, above RatioExemptBytes
}

// DefaultLimits: a member may be up to 4 GiB, and expand up to 200 times.
var DefaultLimits = Limits{MaxMemberBytes: 4 << 30, MaxRatio: 200}

// RatioExemptBytes: a member of at most this many uncompressed bytes is never refused
// for its ratio. Small members of repetitive text compress far beyond any sensible
// ratio (64 KiB of spaces is ~100 bytes deflated), yet cannot expand to anything harmful.
const RatioExemptBytes = 1 << 20

// The names of the limits, as [LimitError] reports them (they are the job spec's field
// names too).
const (
	LimitMemberBytes = "max_member_bytes"
	LimitRatio       = "max_ratio"
)

func (l Limits) withDefaults() Limits {
	if l.MaxMemberBytes == 0 {
		l.MaxMemberBytes = DefaultLimits.MaxMemberBytes
	}
	if l.MaxRatio == 0 {
		l.MaxRatio = DefaultLimits.MaxRatio
	}
	return l
}

// Check says whether a member of size uncompressed bytes, stored in compressed bytes, is
// within the limits (zero fields are the defaults): nil, or a [*LimitError].
func (l Limits) Check(size, compressed int64) error {
	l = l.withDefaults()
	switch {
	case size > l.MaxMemberBytes:
		return &LimitError{Limit: LimitMemberBytes, Size: size, Compressed: compressed, Limits: l}
	case size > RatioExemptBytes && float64(size) > l.MaxRatio*float64(compressed):
		return &LimitError{Limit: LimitRatio, Size: size, Compressed: compressed, Limits: l}
	}
	return nil
}

// LimitError says which limit an archive member is over. It is permanent: the member
// will never fit.
type LimitError struct {
	Limit            string // LimitMemberBytes or LimitRatio
	Size, Compressed int64  // the member's declared and compressed sizes
	Limits           Limits
}

func (e *LimitError) Error() string {
	if e.Limit == LimitRatio {
		return fmt.Sprintf("expands %.0f times (%d bytes from %d compressed), over the limit of %g (%s): a possible zip bomb",
			float64(e.Size)/max(float64(e.Compressed), 1), e.Size, e.Compressed, e.Limits.MaxRatio, LimitRatio)
	}
	return fmt.Sprintf("uncompressed size %d bytes is over the limit of %d bytes per member (%s)", e.Size, e.Limits.MaxMemberBytes, LimitMemberBytes)
}

// Permanent marks the error as one that retrying cannot fix.
func (e *LimitError) Permanent() bool { return true }

// FailureCode is the report's code for the member (pkg/failure).
func (e *LimitError) FailureCode() string { return failure.TooLarge }

// Options tune [Open].
type Options struct {
	// Limits bound an archive member: one whose declared size is over them fails before
	// it is read. Zero fields: [DefaultLimits].
	Limits Limits
}

// Object is an opened file.
type Object struct {
	Body        io.ReadCloser
	Size        int64  // the bytes Body yields; -1 if S3 did not say (no Content-Length)
	ETag        string // the object's, unquoted
	ContentType string // the object's; "" for an archive member
}

// Open GETs the file, pinned to its version id, else to its ETag (so a newer revision
// fails the GET instead of being read in its place). A GetObject error is wrapped with
// %w, so callers can still tell a missing key or a failed precondition by errors.As.
// Errors that retrying cannot fix — a bad range, an unsupported compression method, a
// corrupt member — are marked with [retry.MarkPermanent], also when Body's Read returns
// them. An archive member over opts.Limits fails with a [*LimitError] before any GET.
func Open(ctx context.Context, api Getter, f task.File, opts Options) (*Object, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(f.Bucket), Key: aws.String(f.Key)}
	switch {
	case f.VersionID != "":
		in.VersionId = aws.String(f.VersionID)
	case f.ETag != "":
		in.IfMatch = aws.String(`"` + strings.Trim(f.ETag, `"`) + `"`)
	}
	switch {
	case f.Range != nil && f.Member != nil:
		return nil, retry.MarkPermanent(fmt.Errorf("source: open %s: a file is a byte range or an archive member, not both", f))
	case f.Range != nil:
		return openRange(ctx, api, in, f)
	case f.Member != nil:
		return openMember(ctx, api, in, f, opts.Limits)
	}
	out, err := api.GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("source: get %s: %w", f, err)
	}
	size := int64(-1) // unknown: the source reader then does not check the length
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return object(out, out.Body, size), nil
}

func object(out *s3.GetObjectOutput, body io.ReadCloser, size int64) *Object {
	return &Object{Body: body, Size: size, ETag: strings.Trim(aws.ToString(out.ETag), `"`), ContentType: aws.ToString(out.ContentType)}
}

// openRange GETs bytes [Start, End) of the object.
func openRange(ctx context.Context, api Getter, in *s3.GetObjectInput, f task.File) (*Object, error) {
	r := f.Range
	if r.Start < 0 || r.End < r.Start {
		return nil, retry.MarkPermanent(fmt.Errorf("source: open %s: bad range", f))
	}
	if r.End == r.Start {
		return &Object{Body: io.NopCloser(bytes.NewReader(nil)), ETag: strings.Trim(f.ETag, `"`)}, nil
	}
	in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", r.Start, r.End-1))
	out, err := api.GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("source: get %s: %w", f, err)
	}
	if n := aws.ToInt64(out.ContentLength); out.ContentLength != nil && n != r.End-r.Start {
		out.Body.Close()
		return nil, retry.MarkPermanent(fmt.Errorf("source: get %s: got %d bytes: the range runs past the end of the object", f, n))
	}
	return object(out, out.Body, r.End-r.Start), nil
}

// openMember GETs the member's compressed bytes and decompresses them.
func openMember(ctx context.Context, api Getter, in *s3.GetObjectInput, f task.File, limits Limits) (*Object, error) {
	m := f.Member
	if err := limits.Check(m.Size, m.CompressedSize); err != nil {
		return nil, fmt.Errorf("source: open %s: %w", f, err)
	}
	switch {
	case m.Offset < 0 || m.CompressedSize < 0 || m.Size < 0:
		return nil, retry.MarkPermanent(fmt.Errorf("source: open %s: bad member offset or size", f))
	case m.Method != 0 && m.Method != 8:
		return nil, retry.MarkPermanent(fmt.Errorf("source: open %s: compression method %d is not supported (only stored and deflated)", f, m.Method))
	case m.Method == 0 && m.CompressedSize != m.Size:
		return nil, retry.MarkPermanent(fmt.Errorf("source: open %s: stored member of %d bytes has %d compressed bytes", f, m.Size, m.CompressedSize))
	}
	out := &s3.GetObjectOutput{ETag: aws.String(f.ETag), Body: io.NopCloser(bytes.NewReader(nil))}
	if m.CompressedSize > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", m.Offset, m.Offset+m.CompressedSize-1))
		var err error
		if out, err = api.GetObject(ctx, in); err != nil {
			return nil, fmt.Errorf("source: get %s: %w", f, err)
		}
		if n := aws.ToInt64(out.ContentLength); out.ContentLength != nil && n != m.CompressedSize {
			out.Body.Close()
			return nil, retry.MarkPermanent(fmt.Errorf("source: get %s: got %d of %d compressed bytes: the member runs past the end of the archive", f, n, m.CompressedSize))
		}
	}
	body := &bodyReader{r: out.Body}
	mr := &memberReader{f: f, body: out.Body, compressed: body, r: body, crc: crc32.NewIEEE()}
	if m.Method == 8 {
		mr.inflate = flate.NewReader(body)
		mr.r = mr.inflate
	}
	// One byte past the declared size shows the header lied; inflating further is the
	// zip bomb's work, never done.
	mr.r = io.LimitReader(mr.r, m.Size+1)
	obj := object(out, mr, m.Size)
	obj.ContentType = ""
	return obj, nil
}

// memberReader yields a member's uncompressed bytes and checks, at the end, that there
// were as many as the archive says and that their CRC-32 matches.
type memberReader struct {
	f          task.File
	body       io.ReadCloser // the ranged GET's body
	compressed *bodyReader   // reads body, noting its end
	inflate    io.ReadCloser // nil for a stored member
	r          io.Reader     // inflate or compressed, limited to the declared size + 1
	crc        hash.Hash32
	n          int64
	err        error
}

// bodyReader notes whether the body has been read to its end (io.EOF), so an inflater's
// io.ErrUnexpectedEOF can be told apart: a deflate stream cut short inside the member's
// compressed bytes (corrupt), or a body cut short by the connection (retryable).
type bodyReader struct {
	r   io.Reader
	eof bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (m *memberReader) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	n, err := m.r.Read(p)
	m.n += int64(n)
	m.crc.Write(p[:n])
	if bad := m.corrupt(err); bad != nil {
		m.err = failure.New(failure.Corrupt, fmt.Errorf("source: read %s: corrupt archive member: %w", m.f, bad))
		return n, m.err
	}
	switch {
	case errors.Is(err, io.EOF):
		m.err = io.EOF
	case err != nil:
		m.err = fmt.Errorf("source: read %s: %w", m.f, err)
	}
	return n, m.err
}

// corrupt says how the bytes read so far, and the last read's err, show the member is
// corrupt, or returns nil.
func (m *memberReader) corrupt(err error) error {
	want := m.f.Member
	var inflate flate.CorruptInputError
	switch {
	case m.n > want.Size:
		return fmt.Errorf("inflates past the %d bytes the archive says: cut off there (the declared size is what %s and %s were checked against)", want.Size, LimitMemberBytes, LimitRatio)
	case errors.As(err, &inflate):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF) && m.compressed.eof:
		return fmt.Errorf("the deflate stream ends before its last block, after all %d compressed bytes", want.CompressedSize)
	case !errors.Is(err, io.EOF):
		return nil
	case m.n < want.Size:
		return fmt.Errorf("%d bytes, not the %d the archive says", m.n, want.Size)
	case m.crc.Sum32() != want.CRC32:
		return fmt.Errorf("CRC-32 %08x, not the %08x the archive says", m.crc.Sum32(), want.CRC32)
	}
	return nil
}

func (m *memberReader) Close() error {
	if m.inflate != nil {
		m.inflate.Close()
	}
	if err := m.body.Close(); err != nil {
		return fmt.Errorf("source: close %s: %w", m.f, err)
	}
	return nil
}
