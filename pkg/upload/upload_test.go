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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type fakeAPI struct {
	puts, creates, parts, completes, aborts, copies int
	partSizes                                       []int
	meta                                            map[string]string
	ctype                                           string
	failPart                                        int
}

func (f *fakeAPI) PutObject(_ context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	f.puts++
	f.meta, f.ctype = in.Metadata, aws.ToString(in.ContentType)
	_, _ = io.Copy(io.Discard, in.Body)
	return &s3.PutObjectOutput{ETag: aws.String("e")}, nil
}
func (f *fakeAPI) CreateMultipartUpload(_ context.Context, in *s3.CreateMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	f.creates++
	f.ctype = aws.ToString(in.ContentType)
	return &s3.CreateMultipartUploadOutput{UploadId: aws.String("u")}, nil
}
func (f *fakeAPI) UploadPart(_ context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	f.parts++
	if f.failPart == f.parts {
		return nil, errors.New("part failed")
	}
	b, _ := io.ReadAll(in.Body)
	f.partSizes = append(f.partSizes, len(b))
	return &s3.UploadPartOutput{ETag: aws.String("p")}, nil
}
func (f *fakeAPI) CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	f.completes++
	return &s3.CompleteMultipartUploadOutput{ETag: aws.String("m")}, nil
}
func (f *fakeAPI) AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	f.aborts++
	return &s3.AbortMultipartUploadOutput{}, nil
}
func (f *fakeAPI) CopyObject(_ context.Context, in *s3.CopyObjectInput, _ ...func(*s3.Options)) (*s3.CopyObjectOutput, error) {
	f.copies++
	f.meta = in.Metadata
	return &s3.CopyObjectOutput{}, nil
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
		assert.True(t, res.MetadataSet)
		if tt.puts == 0 {
			assert.Equal(t, 1, api.copies, "late metadata by one copy")
		}
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
