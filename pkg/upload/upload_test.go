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
	puts, creates, parts, completes, aborts, copies int
	partSizes                                       []int
	meta                                            map[string]string // of the object: its PUT, created upload or copy
	ctype, cenc                                     string
	failPart                                        int
	putErr, createErr, completeErr                  error
	written                                         []byte // the bodies of PUTs and parts, in order
}

func (f *fakeAPI) PutObject(_ context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if f.putErr != nil {
		return nil, f.putErr
	}
	f.puts++
	f.meta, f.ctype, f.cenc = in.Metadata, aws.ToString(in.ContentType), aws.ToString(in.ContentEncoding)
	b, _ := io.ReadAll(in.Body)
	f.written = append(f.written, b...)
	return &s3.PutObjectOutput{ETag: aws.String("e")}, nil
}
func (f *fakeAPI) CreateMultipartUpload(_ context.Context, in *s3.CreateMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	if f.createErr != nil {
		return nil, f.createErr
	}
	f.creates++
	f.meta, f.ctype, f.cenc = in.Metadata, aws.ToString(in.ContentType), aws.ToString(in.ContentEncoding)
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

func (f *fakeAPI) CopyObject(_ context.Context, in *s3.CopyObjectInput, _ ...func(*s3.Options)) (*s3.CopyObjectOutput, error) {
	f.copies++
	f.meta, f.ctype, f.cenc = in.Metadata, aws.ToString(in.ContentType), aws.ToString(in.ContentEncoding)
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
		assert.Empty(t, res.Late, "nothing learnt at the end (size %d)", tt.size)
	}
}

// A single PUT carries the metadata Describe returns at the end; a multipart object is
// created with what it returns after the first part, and the result names what only the
// end added. A value the end changed or dropped, or a header, is corrected by one copy,
// on the condition that the object is still the one completed.
func TestMultipartCarriesTheMetadataKnownAtItsStart(t *testing.T) {
	const part = MinPartSize
	for _, tt := range []struct {
		name   string
		size   int
		settle bool // the end changes the type, not only adds the sum
		meta   map[string]string
		ctype  string
		late   []string
		copies int
	}{
		{"one PUT", part, true, map[string]string{"label": "in/k", "sum": "done", "type": "text/plain"}, "text/plain", nil, 0},
		{"multipart, an entry added", 2*part + 1, false, map[string]string{"label": "in/k", "type": "reading"}, "reading", []string{"sum"}, 0},
		{"multipart, a value changed", 2*part + 1, true, map[string]string{"label": "in/k", "sum": "done", "type": "text/plain"}, "text/plain", nil, 1},
	} {
		api := &fakeAPI{}
		u, err := New(api, part)
		require.NoError(t, err)
		body := bytes.NewReader(make([]byte, tt.size))
		res, err := u.Upload(context.Background(), Object{Bucket: "b", Key: "k", Describe: func() Description {
			d := Description{ContentType: "reading", Metadata: map[string]string{"label": "in/k", "type": "reading"}}
			if body.Len() == 0 { // read to the end: the checksum is known, maybe the type settled
				d.Metadata["sum"] = "done"
				if tt.settle {
					d.ContentType, d.Metadata["type"] = "text/plain", "text/plain"
				}
			}
			return d
		}}, body)
		require.NoError(t, err, tt.name)
		assert.Equal(t, tt.meta, api.meta, "the object's metadata: %s", tt.name)
		assert.Equal(t, tt.ctype, api.ctype, tt.name)
		assert.Equal(t, tt.late, res.Late, tt.name)
		assert.Equal(t, tt.copies, api.copies, tt.name)
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

// condAPI is S3 with one object's owner and ETag at the key, conditional writes checked,
// and a hook that runs before each CompleteMultipartUpload (another writer landing).
type condAPI struct {
	fakeAPI
	exists       bool
	owner, etag  string
	beforeDone   func(*condAPI)
	ifNoneMatch  []string // of each Complete, in order ("" when absent)
	ifMatch      []string
	headsSeen    int
	putsRefused  int
	completesNot int
}

func (c *condAPI) HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	c.headsSeen++
	if !c.exists {
		return nil, &smithy.GenericAPIError{Code: "NotFound"}
	}
	return &s3.HeadObjectOutput{ETag: aws.String(c.etag), Metadata: map[string]string{"in": c.owner}}, nil
}

func (c *condAPI) refused(ifNoneMatch, ifMatch *string) bool {
	return (aws.ToString(ifNoneMatch) == "*" && c.exists) || (ifMatch != nil && (!c.exists || aws.ToString(ifMatch) != c.etag))
}

func (c *condAPI) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if c.refused(in.IfNoneMatch, in.IfMatch) {
		c.putsRefused++
		return nil, &smithy.GenericAPIError{Code: "PreconditionFailed"}
	}
	c.exists, c.owner, c.etag = true, in.Metadata["in"], `"put"`
	return c.fakeAPI.PutObject(ctx, in, o...)
}

func (c *condAPI) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, o ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	if f := c.beforeDone; f != nil {
		c.beforeDone = nil
		f(c)
	}
	c.ifNoneMatch = append(c.ifNoneMatch, aws.ToString(in.IfNoneMatch))
	c.ifMatch = append(c.ifMatch, aws.ToString(in.IfMatch))
	if c.refused(in.IfNoneMatch, in.IfMatch) {
		c.completesNot++
		return nil, &smithy.GenericAPIError{Code: "PreconditionFailed"}
	}
	c.exists, c.owner, c.etag = true, c.meta["in"], `"mpu"`
	return c.fakeAPI.CompleteMultipartUpload(ctx, in, o...)
}

// An owned upload replaces only what its owner check saw: a multipart upload completes
// on If-None-Match: * (nothing there) or If-Match (its own output's ETag). Another
// input's output that lands between the check and the complete is never replaced (the
// upload fails OwnedError and is aborted); its own output landing there (a duplicate
// delivery's) is completed over on that output's ETag. A single PUT refused by
// If-None-Match is sent again on If-Match, not unconditionally.
func TestOwnedWritesReplaceOnlyWhatTheCheckSaw(t *testing.T) {
	const part = MinPartSize
	owned := func() Object {
		return Object{Bucket: "b", Key: "k", Owner: &Owner{Key: "in", Value: "me"}, Describe: func() Description {
			return Description{Metadata: map[string]string{"in": "me"}}
		}}
	}
	t.Run("multipart, nothing there", func(t *testing.T) {
		api := &condAPI{}
		u, err := New(api, part)
		require.NoError(t, err)
		_, err = u.Upload(context.Background(), owned(), bytes.NewReader(make([]byte, part+1)))
		require.NoError(t, err)
		assert.Equal(t, []string{"*"}, api.ifNoneMatch)
		assert.Equal(t, []string{""}, api.ifMatch)
	})
	t.Run("multipart, its own output there", func(t *testing.T) {
		api := &condAPI{exists: true, owner: "me", etag: `"old"`}
		u, err := New(api, part)
		require.NoError(t, err)
		_, err = u.Upload(context.Background(), owned(), bytes.NewReader(make([]byte, part+1)))
		require.NoError(t, err)
		assert.Equal(t, []string{`"old"`}, api.ifMatch)
	})
	t.Run("multipart, another input's output lands meanwhile", func(t *testing.T) {
		api := &condAPI{beforeDone: func(c *condAPI) { c.exists, c.owner, c.etag = true, "other", `"theirs"` }}
		u, err := New(api, part)
		require.NoError(t, err)
		_, err = u.Upload(context.Background(), owned(), bytes.NewReader(make([]byte, part+1)))
		var owned *OwnedError
		require.ErrorAs(t, err, &owned)
		assert.Equal(t, "other", owned.Owner)
		assert.Equal(t, 1, api.completesNot)
		assert.Zero(t, api.completes, "their output stands")
		assert.Equal(t, 1, api.aborts)
	})
	t.Run("multipart, its own output lands meanwhile", func(t *testing.T) {
		api := &condAPI{beforeDone: func(c *condAPI) { c.exists, c.owner, c.etag = true, "me", `"dup"` }}
		u, err := New(api, part)
		require.NoError(t, err)
		_, err = u.Upload(context.Background(), owned(), bytes.NewReader(make([]byte, part+1)))
		require.NoError(t, err)
		assert.Equal(t, []string{"*", ""}, api.ifNoneMatch)
		assert.Equal(t, []string{"", `"dup"`}, api.ifMatch)
		assert.Equal(t, 1, api.completes)
		assert.Zero(t, api.aborts)
	})
	t.Run("single PUT over its own output", func(t *testing.T) {
		api := &condAPI{exists: true, owner: "me", etag: `"old"`}
		u, err := New(api, part)
		require.NoError(t, err)
		_, err = u.Upload(context.Background(), owned(), bytes.NewReader([]byte("small")))
		require.NoError(t, err)
		assert.Equal(t, 1, api.putsRefused, "If-None-Match first")
		assert.Equal(t, 1, api.puts, "then If-Match on the ETag seen")
		api2 := &condAPI{exists: true, owner: "me", etag: `"old"`}
		u2, err := New(&headSwap{condAPI: api2}, part)
		require.NoError(t, err)
		_, err = u2.Upload(context.Background(), owned(), bytes.NewReader([]byte("small")))
		require.Error(t, err, "the object changed after the HEAD: the second PUT's If-Match fails, nothing is replaced")
		assert.Zero(t, api2.puts)
	})
}

// headSwap replaces the object (another writer) right after the owner check's HEAD.
type headSwap struct{ *condAPI }

func (h *headSwap) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	out, err := h.condAPI.HeadObject(ctx, in, o...)
	h.condAPI.owner, h.condAPI.etag = "other", `"theirs"`
	return out, err
}
