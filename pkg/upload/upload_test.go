package upload

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/retry"
)

type fakeAPI struct {
	puts, creates, parts, completes, aborts int
	partSizes                               []int
	meta                                    map[string]string // of the PUT or the created upload
	ctype                                   string
	failPart                                int
	putErr, createErr, completeErr          error
	written                                 []byte // the bodies of PUTs and parts, in order
}

func (f *fakeAPI) PutObject(_ context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if f.putErr != nil {
		return nil, f.putErr
	}
	f.puts++
	f.meta, f.ctype = in.Metadata, aws.ToString(in.ContentType)
	b, _ := io.ReadAll(in.Body)
	f.written = append(f.written, b...)
	return &s3.PutObjectOutput{ETag: aws.String("e")}, nil
}
func (f *fakeAPI) CreateMultipartUpload(_ context.Context, in *s3.CreateMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	if f.createErr != nil {
		return nil, f.createErr
	}
	f.creates++
	f.meta, f.ctype = in.Metadata, aws.ToString(in.ContentType)
	return &s3.CreateMultipartUploadOutput{UploadId: aws.String("u")}, nil
}
func (f *fakeAPI) UploadPart(_ context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	f.parts++
	if f.failPart == f.parts {
		return nil, errors.New("part failed")
	}
	b, _ := io.ReadAll(in.Body)
	f.partSizes = append(f.partSizes, len(b))
	f.written = append(f.written, b...)
	return &s3.UploadPartOutput{ETag: aws.String("p")}, nil
}
func (f *fakeAPI) CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	if f.completeErr != nil {
		return nil, f.completeErr
	}
	f.completes++
	return &s3.CompleteMultipartUploadOutput{ETag: aws.String("m")}, nil
}
func (f *fakeAPI) AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	f.aborts++
	return &s3.AbortMultipartUploadOutput{}, nil
}

func obj(meta string) Object {
	return Object{Bucket: "b", Key: "k", Describe: func() Description {
		return Description{ContentType: "text/plain", Metadata: map[string]string{"m": meta}}
	}}
}

func TestSizes(t *testing.T) {
	const part = MinPartSize
	tests := []struct {
		size      int
		puts      int
		partSizes []int
	}{
		{0, 1, nil},
		{1, 1, nil},
		{part, 1, nil}, // exactly one part: still a single PUT
		{part + 1, 0, []int{part, 1}},
		{3*part + 7, 0, []int{part, part, part, 7}},
	}
	for _, tt := range tests {
		api := &fakeAPI{}
		u, err := New(api, part)
		require.NoError(t, err)
		res, err := u.Upload(context.Background(), obj("late"), iotest.HalfReader(bytes.NewReader(make([]byte, tt.size))))
		require.NoError(t, err, tt.size)
		assert.Equal(t, int64(tt.size), res.Size)
		assert.Equal(t, tt.puts, api.puts, tt.size)
		assert.Equal(t, tt.partSizes, api.partSizes, tt.size)
		assert.Equal(t, "late", api.meta["m"], "metadata set either way (size %d)", tt.size)
		assert.Equal(t, "text/plain", api.ctype)
		assert.Empty(t, res.Late, "nothing learnt at the end (size %d)", tt.size)
	}
}

// A single PUT carries the metadata Describe returns at the end; a multipart object is
// created with what it returns after the first part, and the result names what only
// the end knew. The object is never copied to add it (the API has no CopyObject).
func TestMultipartCarriesTheMetadataKnownAtItsStart(t *testing.T) {
	const part = MinPartSize
	for _, tt := range []struct {
		size int
		meta map[string]string
		late []string
	}{
		{part, map[string]string{"label": "in/k", "sum": "done", "type": "text/plain"}, nil},
		{2*part + 1, map[string]string{"label": "in/k", "type": "reading"}, []string{"sum", "type"}},
	} {
		api := &fakeAPI{}
		u, err := New(api, part)
		require.NoError(t, err)
		body := bytes.NewReader(make([]byte, tt.size))
		res, err := u.Upload(context.Background(), Object{Bucket: "b", Key: "k", Describe: func() Description {
			m := map[string]string{"label": "in/k", "type": "reading"}
			if body.Len() == 0 { // read to the end: the checksum is known, the type settled
				m["sum"], m["type"] = "done", "text/plain"
			}
			return Description{Metadata: m}
		}}, body)
		require.NoError(t, err, tt.size)
		assert.Equal(t, tt.meta, api.meta, "the object's metadata, %d bytes", tt.size)
		assert.Equal(t, tt.late, res.Late, tt.size)
	}
}

// A stream that ends within SmallSize bytes is sent from the small buffer and takes no
// part buffer; a longer one goes on in a part buffer with the small buffer's bytes first.
func TestSmallStreamsTakeNoPartBuffer(t *testing.T) {
	const part = MinPartSize
	for _, tt := range []struct {
		size      int
		parts     int // part buffers made
		partSizes []int
	}{
		{1 << 10, 0, nil},
		{SmallSize - 1, 0, nil},
		{SmallSize, 1, nil}, // its end is seen only by a read past the small buffer
		{SmallSize + 1, 1, nil},
		{part, 1, nil},
		{part + SmallSize + 3, 1, []int{part, SmallSize + 3}},
	} {
		api := &fakeAPI{}
		u, err := New(api, part)
		require.NoError(t, err)
		made := 0
		u.pool.New = func() any { made++; b := make([]byte, part); return &b }
		data := make([]byte, tt.size)
		for i := range data {
			data[i] = byte(i*7 + i>>13)
		}
		res, err := u.Upload(context.Background(), obj("m"), iotest.OneByteReader(bytes.NewReader(data)))
		require.NoError(t, err, tt.size)
		assert.Equal(t, int64(tt.size), res.Size, tt.size)
		assert.Equal(t, tt.parts, made, "part buffers for %d bytes", tt.size)
		assert.Equal(t, tt.partSizes, api.partSizes, tt.size)
		assert.True(t, bytes.Equal(data, api.written), "%d bytes written as read", tt.size)
	}
}

func TestFailedPartAborts(t *testing.T) {
	api := &fakeAPI{failPart: 2}
	u, err := New(api, MinPartSize)
	require.NoError(t, err)
	_, err = u.Upload(context.Background(), obj("x"), bytes.NewReader(make([]byte, 3*MinPartSize)))
	require.ErrorContains(t, err, "part 2")
	assert.Equal(t, 1, api.aborts)
	assert.Zero(t, api.completes)
}

func TestReadErrorAborts(t *testing.T) {
	api := &fakeAPI{}
	u, err := New(api, MinPartSize)
	require.NoError(t, err)
	body := io.MultiReader(bytes.NewReader(make([]byte, MinPartSize+10)), iotest.ErrReader(errors.New("source broke")))
	_, err = u.Upload(context.Background(), obj("x"), body)
	require.ErrorContains(t, err, "source broke")
	assert.Equal(t, 1, api.aborts)
}

func TestPartSizeBelowMinimum(t *testing.T) {
	_, err := New(&fakeAPI{}, 1024)
	require.ErrorContains(t, err, "below S3's minimum")
}

func TestCopySource(t *testing.T) {
	assert.Equal(t, "b/a%20b%2Bc/%C3%BC%3B%2C%26%3F%23%25.txt", CopySource("b", "a b+c/ü;,&?#%.txt"))
	assert.False(t, strings.Contains(CopySource("b", "x+y"), "+"))
}

// A body that ends with io.ErrUnexpectedEOF (an HTTP body shorter than its
// Content-Length) is an error, never a short but "complete" object.
func TestTruncatedBodyIsAnError(t *testing.T) {
	for _, size := range []int{1000, MinPartSize + 1000} {
		api := &fakeAPI{}
		u, err := New(api, MinPartSize)
		require.NoError(t, err)
		body := io.MultiReader(bytes.NewReader(make([]byte, size)), iotest.ErrReader(io.ErrUnexpectedEOF))
		_, err = u.Upload(context.Background(), obj("x"), body)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "size %d", size)
		assert.Zero(t, api.puts+api.completes, "nothing written for size %d", size)
	}
}

// A write refused because its key collides with another object's on a POSIX-backed
// server — by API error code, on each request that writes the key — is a permanent
// ConflictError naming the key; the multipart upload is aborted.
func TestKeyConflictIsPermanent(t *testing.T) {
	parentIsFile := &smithy.GenericAPIError{Code: "ObjectParentIsFile", Message: "Object parent already exists as a file."}
	isDirectory := &smithy.GenericAPIError{Code: "ExistingObjectIsDirectory", Message: "Existing Object is a directory."}
	for _, tt := range []struct {
		name string
		api  *fakeAPI
		size int
		want string
	}{
		{"put under an object", &fakeAPI{putErr: parentIsFile}, 10, `output key "a.zip/x" conflicts with an existing object that is a prefix of it (a POSIX-backed S3 server cannot hold both)`},
		{"put over a directory", &fakeAPI{putErr: isDirectory}, 10, `output key "a.zip/x" conflicts with existing objects under "a.zip/x/" (a POSIX-backed S3 server cannot hold both)`},
		{"create multipart upload", &fakeAPI{createErr: parentIsFile}, MinPartSize + 1, "prefix of it"},
		{"complete multipart upload", &fakeAPI{completeErr: parentIsFile}, MinPartSize + 1, "prefix of it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, err := New(tt.api, MinPartSize)
			require.NoError(t, err)
			_, err = u.Upload(context.Background(), Object{Bucket: "b", Key: "a.zip/x"}, bytes.NewReader(make([]byte, tt.size)))
			require.ErrorContains(t, err, tt.want)
			var ce *ConflictError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, "a.zip/x", ce.Key)
			assert.Equal(t, retry.Permanent, retry.Classify(err))
			var api smithy.APIError
			require.ErrorAs(t, err, &api, "the API error is kept")
			if tt.size > MinPartSize && tt.api.createErr == nil {
				assert.Equal(t, 1, tt.api.aborts)
			}
		})
	}

	// Any other write error keeps its own class.
	_, err := (&Uploader{api: &fakeAPI{putErr: &smithy.GenericAPIError{Code: "InternalError"}}, partSize: MinPartSize}).putSingle(context.Background(), Object{Bucket: "b", Key: "k"}, nil)
	var ce *ConflictError
	assert.False(t, errors.As(err, &ce))
	assert.Equal(t, retry.Retryable, retry.Classify(err))
}
