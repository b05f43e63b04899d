// Package source opens the bytes a task file names: a whole S3 object, a byte range of
// one, or one member of a zip archive, read through a ranged GET of its compressed bytes
// and checked against its size and CRC-32 as it is read.
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

	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

// Getter is the part of the S3 client Open calls.
type Getter interface {
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
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
// them.
func Open(ctx context.Context, api Getter, f task.File) (*Object, error) {
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
		return openMember(ctx, api, in, f)
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
func openMember(ctx context.Context, api Getter, in *s3.GetObjectInput, f task.File) (*Object, error) {
	m := f.Member
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
	mr := &memberReader{f: f, body: out.Body, r: out.Body, crc: crc32.NewIEEE()}
	if m.Method == 8 {
		mr.inflate = flate.NewReader(out.Body)
		mr.r = mr.inflate
	}
	obj := object(out, mr, m.Size)
	obj.ContentType = ""
	return obj, nil
}

// memberReader yields a member's uncompressed bytes and checks, at the end, that there
// were as many as the archive says and that their CRC-32 matches.
type memberReader struct {
	f       task.File
	body    io.ReadCloser // the ranged GET's body
	inflate io.ReadCloser // nil for a stored member
	r       io.Reader     // inflate or body
	crc     hash.Hash32
	n       int64
	err     error
}

func (m *memberReader) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	n, err := m.r.Read(p)
	m.n += int64(n)
	m.crc.Write(p[:n])
	if bad := m.corrupt(err); bad != nil {
		m.err = retry.MarkPermanent(fmt.Errorf("source: read %s: corrupt archive member: %w", m.f, bad))
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
		return fmt.Errorf("longer than the %d bytes the archive says", want.Size)
	case errors.As(err, &inflate):
		return err
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
