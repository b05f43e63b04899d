package upload

// Review 12: probes of the small-buffer-first Upload (ed0dbee) and of the early return
// of the small buffer to its pool (/tmp/early-put.patch). They pass on both: no defect
// was found; they stay as regression tests of the boundaries and of buffer reuse.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// review12Reader counts what was read and, per mode, returns short reads, (0, nil)
// between data, or the last bytes together with io.EOF.
type review12Reader struct {
	data    []byte
	off     int
	mode    string
	calls   int
	errAt   int // > 0: fail once errAt bytes were returned
	errSent bool
}

var errReview12 = errors.New("source broke")

func (r *review12Reader) Read(p []byte) (int, error) {
	r.calls++
	if r.errAt > 0 && r.off >= r.errAt {
		r.errSent = true
		return 0, errReview12
	}
	rest := r.data[r.off:]
	if r.errAt > 0 {
		rest = r.data[r.off:r.errAt]
	}
	n := len(p)
	switch r.mode {
	case "zeronil":
		if r.calls%2 == 0 {
			return 0, nil
		}
	case "short":
		n = min(n, []int{1, 7, 4093, 65537, 300_000}[r.calls%5])
	}
	n = copy(p[:n], rest)
	r.off += n
	if r.mode == "dataeof" && r.off == len(r.data) && r.errAt == 0 {
		return n, io.EOF
	}
	if n == 0 && r.errAt == 0 && len(rest) == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// review12API records the object as S3 would store it, scribbles over every pooled
// buffer it can get before reading a body (another upload taking a buffer that was put
// back early), and can refuse the first conditional PUT to drive the owner re-PUT.
type review12API struct {
	fakeAPI
	u            *Uploader
	preconFirst  bool
	heads        int
	stored       []byte
	parts        [][]byte
	describeSeen []int
}

func (a *review12API) scribble() {
	for _, pool := range []*sync.Pool{&a.u.small, &a.u.pool} {
		p := pool.Get().(*[]byte)
		for i := range *p {
			(*p)[i] = 0xEE
		}
		defer pool.Put(p)
	}
}

func (a *review12API) PutObject(ctx context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	a.puts++
	if a.preconFirst && in.IfNoneMatch != nil {
		return nil, &smithy.GenericAPIError{Code: "PreconditionFailed"}
	}
	a.scribble()
	b, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	a.stored, a.meta = b, in.Metadata
	return &s3.PutObjectOutput{ETag: aws.String("e" + strconv.Itoa(len(b)))}, nil
}

func (a *review12API) HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	a.heads++
	a.scribble()
	return &s3.HeadObjectOutput{Metadata: map[string]string{"in": "me"}}, nil
}

func (a *review12API) UploadPart(_ context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	a.scribble()
	b, _ := io.ReadAll(in.Body)
	a.parts = append(a.parts, b)
	return &s3.UploadPartOutput{ETag: aws.String("p")}, nil
}

func (a *review12API) CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	a.stored = bytes.Join(a.parts, nil)
	return &s3.CompleteMultipartUploadOutput{ETag: aws.String("m")}, nil
}

func TestReview12BoundariesAndBufferReuse(t *testing.T) {
	const part = MinPartSize
	sizes := []int{0, 1, SmallSize - 1, SmallSize, SmallSize + 1, part - 1, part, part + 1,
		part + SmallSize, 2*part + SmallSize - 1}
	for _, mode := range []string{"plain", "onebyte", "dataeof", "zeronil", "short"} {
		for _, size := range sizes {
			for _, owned := range []bool{false, true} {
				if mode == "onebyte" && size > part+1 {
					continue // slow, and nothing new past the first part
				}
				name := fmt.Sprintf("%s/%d/owned=%v", mode, size, owned)
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(i*31 + i>>11 + 1)
				}
				src := &review12Reader{data: data, mode: mode}
				var body io.Reader = src
				if mode == "onebyte" {
					body = iotest.OneByteReader(src)
				}
				api := &review12API{preconFirst: owned}
				u, err := New(api, part)
				require.NoError(t, err)
				api.u = u
				o := Object{Bucket: "b", Key: "k", Describe: func() Description {
					api.describeSeen = append(api.describeSeen, src.off)
					return Description{Metadata: map[string]string{"in": "me", "n": strconv.Itoa(src.off)}}
				}}
				if owned {
					o.Owner = &Owner{Key: "in", Value: "me"}
				}
				res, err := u.Upload(context.Background(), o, body)
				require.NoError(t, err, name)
				assert.True(t, bytes.Equal(data, api.stored), "%s: object stored as read", name)
				assert.Equal(t, int64(size), res.Size, name)
				if size > part {
					assert.Equal(t, (size+part-1)/part, res.Parts, name)
					assert.GreaterOrEqual(t, api.describeSeen[0], part, "%s: first Describe after a part", name)
					// "n" changed after the first Describe unless the first part was the whole
					// stream: a changed value is corrected by one copy.
					copies := 0
					if api.describeSeen[0] < size {
						copies = 1
					}
					assert.Equal(t, copies, api.copies, name)
				}
				assert.Equal(t, strconv.Itoa(size), api.meta["n"], "%s: the object carries the last Describe, after the end", name)
				assert.Empty(t, res.Late, name)
				if size <= part {
					assert.Equal(t, 0, res.Parts, name)
					assert.Equal(t, "e"+strconv.Itoa(size), res.ETag, name)
				}
			}
		}
	}
}

// A source that fails after k bytes writes nothing, whatever the boundary.
func TestReview12ErrorAfterBytes(t *testing.T) {
	const part = MinPartSize
	for _, k := range []int{1, SmallSize - 1, SmallSize, SmallSize + 1, part - 1, part, part + 1, part + SmallSize} {
		for _, mode := range []string{"plain", "short"} {
			data := make([]byte, 2*part+5)
			src := &review12Reader{data: data, mode: mode, errAt: k}
			api := &review12API{}
			u, err := New(api, part)
			require.NoError(t, err)
			api.u = u
			_, err = u.Upload(context.Background(), obj("x"), src)
			require.ErrorIs(t, err, errReview12, "%s/%d", mode, k)
			assert.Nil(t, api.stored, "%s/%d: nothing stored", mode, k)
			assert.Equal(t, 0, api.puts, "%s/%d", mode, k)
			if k > part {
				assert.Equal(t, 1, api.aborts, "%s/%d: multipart aborted", mode, k)
			}
		}
	}
}
