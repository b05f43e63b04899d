package itest

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/fanout"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/source"
	"github.com/fileflow/fileflow/pkg/task"
	"github.com/fileflow/fileflow/pkg/upload"
)

// countingS3 counts the GETs made through it.
type countingS3 struct {
	*s3.Client
	gets atomic.Int64
}

func (c *countingS3) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c.gets.Add(1)
	return c.Client.GetObject(ctx, in, o...)
}

func newBucket(t *testing.T, bucket string) *countingS3 {
	t.Helper()
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	require.NoError(t, err)
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	require.NoError(t, err)
	return &countingS3{Client: c}
}

func put(t *testing.T, c *countingS3, bucket, key string, data []byte) (etag string) {
	t.Helper()
	out, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	require.NoError(t, err)
	return strings.Trim(aws.ToString(out.ETag), `"`)
}

// A zip of ~300 entries in nested folders — deflated and stored, one of 1 MiB, and two
// with unsafe names — is listed through a few ranged GETs of its directory, and each
// member then read on its own through a ranged GET of its compressed bytes.
func TestZipMembersThroughRangedGets(t *testing.T) {
	ctx := context.Background()
	const bucket = "fanout-archive-test"
	c := newBucket(t, bucket)

	rng := rand.New(rand.NewPCG(7, 8))
	want := map[string][]byte{}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, method uint16, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
		require.NoError(t, err, name)
		_, err = w.Write(data)
		require.NoError(t, err)
		if !strings.HasSuffix(name, "/") {
			want[name] = data
		}
	}
	add("a/", zip.Store, nil)
	add("a/b/", zip.Store, nil)
	add("a/b/c.txt", zip.Deflate, []byte(strings.Repeat("c\n", 1000)))
	add("a/d.txt", zip.Store, []byte("d\n"))
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(rng.IntN(16)) + 'a' // compresses, but not to nothing
	}
	add("a/big.bin", zip.Deflate, big)
	add("../evil.txt", zip.Deflate, []byte("escape"))
	add("/abs.txt", zip.Store, []byte("absolute"))
	for i := range 300 {
		method := []uint16{zip.Deflate, zip.Store}[i%2]
		add(fmt.Sprintf("a/b/deep/%02d/file-%03d.json", i%17, i), method, fmt.Appendf(nil, `{"n":%d,"pad":%q}`+"\n", i, strings.Repeat("x", rng.IntN(3000))))
	}
	add("empty.txt", zip.Deflate, nil)
	require.NoError(t, zw.Close())
	archive := buf.Bytes()
	etag := put(t, c, bucket, "in/archive.zip", archive)
	entries := len(want) + 2 // + the two directories

	var files []task.File
	var bad []*fanout.EntryError
	err := fanout.ListZip(ctx, c, bucket, "in/archive.zip", etag, int64(len(archive)), fanout.ZipOptions{},
		func(f task.File) error { files = append(files, f); return nil },
		func(e *fanout.EntryError) error { bad = append(bad, e); return nil })
	require.NoError(t, err)
	listGets := c.gets.Load()
	t.Logf("%d entries, %d bytes: listed with %d ranged GETs", entries, len(archive), listGets)
	assert.LessOrEqual(t, listGets, int64(10), "far fewer GETs than entries, and no full download")

	require.Len(t, bad, 2)
	assert.Equal(t, 6, bad[0].Line)
	assert.Contains(t, bad[0].Reason, `"../evil.txt"`)
	assert.Contains(t, bad[0].Reason, `".." path element`)
	assert.Equal(t, 7, bad[1].Line)
	assert.Contains(t, bad[1].Reason, `"/abs.txt"`)
	assert.Contains(t, bad[1].Reason, "absolute path")
	assert.Len(t, files, len(want)-2)

	c.gets.Store(0)
	for _, f := range files {
		data, ok := want[f.Member.Name]
		require.True(t, ok, f.Member.Name)
		assert.Equal(t, etag, f.ETag)
		obj, err := source.Open(ctx, c, f, source.Options{})
		require.NoError(t, err, f.String())
		got, err := io.ReadAll(obj.Body)
		require.NoError(t, err, f.String())
		require.NoError(t, obj.Body.Close())
		assert.Equal(t, int64(len(data)), obj.Size)
		assert.True(t, bytes.Equal(data, got), "member %s", f.Member.Name)
	}
	assert.LessOrEqual(t, c.gets.Load(), int64(len(files)), "one ranged GET per member, none for empty ones")

	// A member pinned to an older revision of the archive is not read from a newer one.
	put(t, c, bucket, "in/archive.zip", append(archive, 0))
	_, err = source.Open(ctx, c, files[0], source.Options{})
	var api smithy.APIError
	require.ErrorAs(t, err, &api)
	assert.Equal(t, "PreconditionFailed", api.ErrorCode())
}

// A JSON Lines object of ~1 MiB is split into 7 line-aligned ranges that, read on their
// own, put the object back together; nominal chunks read with LineChunk from open-ended
// GETs read each line once.
func TestSplitJSONLines(t *testing.T) {
	ctx := context.Background()
	const bucket = "fanout-split-test"
	c := newBucket(t, bucket)

	rng := rand.New(rand.NewPCG(9, 10))
	var obj []byte
	for i := 0; len(obj) < 1<<20; i++ {
		obj = fmt.Appendf(obj, `{"bucket":"in","key":"k/%d.csv","pad":%q}`+"\n", i, strings.Repeat("p", rng.IntN(400)))
	}
	obj = append(obj, `{"bucket":"in","key":"last-no-newline"}`...)
	etag := put(t, c, bucket, "m.jsonl", obj)

	ranges, err := fanout.SplitRanges(ctx, c, bucket, "m.jsonl", etag, int64(len(obj)), 7)
	require.NoError(t, err)
	require.Len(t, ranges, 7)
	var joined []byte
	for i, r := range ranges {
		o, err := source.Open(ctx, c, task.File{Bucket: bucket, Key: "m.jsonl", ETag: etag, Range: &r}, source.Options{})
		require.NoError(t, err)
		b, err := io.ReadAll(o.Body)
		require.NoError(t, err)
		require.NoError(t, o.Body.Close())
		assert.Equal(t, r.End-r.Start, int64(len(b)))
		if i < len(ranges)-1 {
			assert.Equal(t, byte('\n'), b[len(b)-1], "range %d ends a line", i)
		}
		joined = append(joined, b...)
	}
	assert.True(t, bytes.Equal(obj, joined), "the ranges put the object back together")

	joined = joined[:0]
	for _, r := range fanout.ManifestChunks(int64(len(obj)), 100_000) {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{
			Bucket: aws.String(bucket), Key: aws.String("m.jsonl"), IfMatch: aws.String(`"` + etag + `"`),
			Range: aws.String(fmt.Sprintf("bytes=%d-", max(r.Start-1, 0))),
		})
		require.NoError(t, err)
		b, err := io.ReadAll(fanout.LineChunk(out.Body, r.Start, r.End))
		require.NoError(t, err)
		require.NoError(t, out.Body.Close())
		joined = append(joined, b...)
	}
	assert.True(t, bytes.Equal(obj, joined), "nominal chunks read each line once")
}

// member is one listed archive member and its bytes.
type member struct {
	f    task.File
	data []byte
}

// writeOutput streams a file's bytes (a whole object, or an archive member through a
// ranged GET) to the output key, as the worker does.
func writeOutput(ctx context.Context, c *countingS3, u *upload.Uploader, bucket string, f task.File, key string) error {
	var err error
	for range 3 {
		var obj *source.Object
		if obj, err = source.Open(ctx, c, f, source.Options{}); err != nil {
			return err
		}
		_, err = u.Upload(ctx, upload.Object{Bucket: bucket, Key: key}, obj.Body)
		obj.Body.Close()
		// versitygw may answer a refused PUT before it has read the body: the client then
		// sees its connection reset instead of the answer. Try again for the answer.
		var send *smithyhttp.RequestSendError
		if !errors.As(err, &send) {
			return err
		}
	}
	return err
}

// An archive uploaded normally is processed as a file (its output named after its key)
// and then submitted as an archive job. With members named "<zip key>/<entry>" (the old
// layout) the outputs collide on versitygw, a POSIX-backed server — whichever is written
// second fails, with 409 ObjectParentIsFile or 409 ExistingObjectIsDirectory — and the
// failure is a permanent ConflictError naming the key. With the layout task.File.Name
// uses, "<zip key>!/<entry>", both orders succeed.
func TestMemberOutputsBesideTheArchive(t *testing.T) {
	ctx := context.Background()
	const bucket = "fanout-layout-test"
	c := newBucket(t, bucket)

	rng := rand.New(rand.NewPCG(11, 12))
	big := make([]byte, 6<<20) // over a part: written with a multipart upload
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct {
		name   string
		method uint16
		data   []byte
	}{
		{"readme.txt", zip.Deflate, []byte(strings.Repeat("read me\n", 100))},
		{"data/rows.csv", zip.Deflate, []byte("a,b\n1,2\n")},
		{"data/big.bin", zip.Store, big},
	} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: e.method})
		require.NoError(t, err)
		_, err = w.Write(e.data)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	archive := buf.Bytes()
	const key = "in/bundle.zip"
	etag := put(t, c, bucket, key, archive)
	zipFile := task.File{Bucket: bucket, Key: key, ETag: etag}

	var members []member
	require.NoError(t, fanout.ListZip(ctx, c, bucket, key, etag, int64(len(archive)), fanout.ZipOptions{},
		func(f task.File) error {
			o, err := source.Open(ctx, c, f, source.Options{})
			if err != nil {
				return err
			}
			defer o.Body.Close()
			b, err := io.ReadAll(o.Body)
			members = append(members, member{f, b})
			return err
		},
		func(e *fanout.EntryError) error { return e }))
	require.Len(t, members, 3)

	// Members with 5 MiB parts (big.bin is a multipart upload); the archive, of 6 MiB,
	// with a single PUT: versitygw answers a CompleteMultipartUpload onto a key that has
	// objects under it with a 500 InternalError, not a conflict code.
	u, err := upload.New(c, upload.MinPartSize)
	require.NoError(t, err)
	uZip, err := upload.New(c, 16<<20)
	require.NoError(t, err)
	oldName := func(f task.File) string { return f.Key + "/" + f.Member.Name }

	conflict := func(t *testing.T, err error, key string, want retry.Conflict, code string) {
		t.Helper()
		var ce *upload.ConflictError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, key, ce.Key)
		assert.Equal(t, want, ce.Conflict)
		assert.Equal(t, retry.Permanent, retry.Classify(err), "not retried")
		var api smithy.APIError
		require.ErrorAs(t, err, &api)
		assert.Equal(t, code, api.ErrorCode())
		var re *smithyhttp.ResponseError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 409, re.HTTPStatusCode())
		assert.Contains(t, err.Error(), fmt.Sprintf("output key %q conflicts with", key))
		assert.Contains(t, err.Error(), "(a POSIX-backed S3 server cannot hold both)")
	}

	t.Run("old layout, archive first", func(t *testing.T) {
		require.NoError(t, writeOutput(ctx, c, uZip, bucket, zipFile, "a/"+key))
		for _, m := range members {
			out := "a/" + oldName(m.f)
			err := writeOutput(ctx, c, u, bucket, m.f, out)
			conflict(t, err, out, retry.ParentIsObject, "ObjectParentIsFile")
			assert.Contains(t, err.Error(), "conflicts with an existing object that is a prefix of it")
		}
	})
	t.Run("old layout, members first", func(t *testing.T) {
		for _, m := range members {
			require.NoError(t, writeOutput(ctx, c, u, bucket, m.f, "b/"+oldName(m.f)))
		}
		err := writeOutput(ctx, c, uZip, bucket, zipFile, "b/"+key)
		conflict(t, err, "b/"+key, retry.KeyIsPrefix, "ExistingObjectIsDirectory")
		assert.Contains(t, err.Error(), fmt.Sprintf("conflicts with existing objects under %q", "b/"+key+"/"))
	})
	for _, archiveFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("new layout, archive first %v", archiveFirst), func(t *testing.T) {
			prefix := fmt.Sprintf("new-%v/", archiveFirst)
			if archiveFirst {
				require.NoError(t, writeOutput(ctx, c, uZip, bucket, zipFile, prefix+zipFile.Name()))
			}
			for _, m := range members {
				assert.Equal(t, key+"!/"+m.f.Member.Name, m.f.Name())
				require.NoError(t, writeOutput(ctx, c, u, bucket, m.f, prefix+m.f.Name()))
			}
			if !archiveFirst {
				require.NoError(t, writeOutput(ctx, c, uZip, bucket, zipFile, prefix+zipFile.Name()))
			}
			assert.Equal(t, archive, get(t, c, bucket, prefix+key))
			for _, m := range members {
				assert.True(t, bytes.Equal(m.data, get(t, c, bucket, prefix+m.f.Name())), m.f.Name())
			}
		})
	}
}

func get(t *testing.T, c *countingS3, bucket, key string) []byte {
	t.Helper()
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	require.NoError(t, err, key)
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	require.NoError(t, err)
	return b
}
