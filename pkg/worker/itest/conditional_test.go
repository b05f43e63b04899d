package itest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/upload"
)

// The uploader's owner check rests on S3's conditional writes (AWS documents
// If-None-Match and If-Match on PutObject and CompleteMultipartUpload): the local S3
// server must refuse a write whose condition fails, or the race the condition closes
// (review 13, finding 2) is open here and no test can see it.
func TestLocalS3HonoursConditionalWrites(t *testing.T) {
	st := newStack(t, stackOptions{})
	ctx := context.Background()
	key := aws.String("cond/k.bin")
	refused := func(t *testing.T, err error, what string) {
		t.Helper()
		var api smithy.APIError
		require.Error(t, err, what)
		require.True(t, errors.As(err, &api), "%s: %v", what, err)
		assert.Equal(t, "PreconditionFailed", api.ErrorCode(), what)
	}
	put, err := st.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.out), Key: key, Body: bytes.NewReader([]byte("one")), IfNoneMatch: aws.String("*")})
	require.NoError(t, err, "If-None-Match on a new key")
	_, err = st.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.out), Key: key, Body: bytes.NewReader([]byte("two")), IfNoneMatch: aws.String("*")})
	refused(t, err, "PutObject If-None-Match over an object")
	_, err = st.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.out), Key: key, Body: bytes.NewReader([]byte("two")), IfMatch: aws.String(`"0123456789abcdef0123456789abcdef"`)})
	refused(t, err, "PutObject If-Match another ETag")
	put, err = st.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.out), Key: key, Body: bytes.NewReader([]byte("two")), IfMatch: put.ETag})
	require.NoError(t, err, "PutObject If-Match its ETag")

	complete := func(cond func(*s3.CompleteMultipartUploadInput)) error {
		mpu, err := st.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(st.out), Key: key})
		require.NoError(t, err)
		part, err := st.s3.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(st.out), Key: key, UploadId: mpu.UploadId, PartNumber: aws.Int32(1),
			Body: bytes.NewReader(make([]byte, upload.MinPartSize))})
		require.NoError(t, err)
		in := &s3.CompleteMultipartUploadInput{Bucket: aws.String(st.out), Key: key, UploadId: mpu.UploadId,
			MultipartUpload: &s3types.CompletedMultipartUpload{Parts: []s3types.CompletedPart{{ETag: part.ETag, PartNumber: aws.Int32(1)}}}}
		cond(in)
		_, err = st.s3.CompleteMultipartUpload(ctx, in)
		if err != nil {
			_, _ = st.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(st.out), Key: key, UploadId: mpu.UploadId})
		}
		return err
	}
	refused(t, complete(func(in *s3.CompleteMultipartUploadInput) { in.IfNoneMatch = aws.String("*") }), "CompleteMultipartUpload If-None-Match over an object")
	refused(t, complete(func(in *s3.CompleteMultipartUploadInput) {
		in.IfMatch = aws.String(`"0123456789abcdef0123456789abcdef"`)
	}), "CompleteMultipartUpload If-Match another ETag")
	require.NoError(t, complete(func(in *s3.CompleteMultipartUploadInput) { in.IfMatch = put.ETag }), "CompleteMultipartUpload If-Match its ETag")
	head, err := st.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.out), Key: key})
	require.NoError(t, err)
	assert.EqualValues(t, upload.MinPartSize, aws.ToInt64(head.ContentLength), "the conditional complete landed")
}
