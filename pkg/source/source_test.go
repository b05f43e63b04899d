package source

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

// fakeS3 serves one object, whole or by range, and records each request.
type fakeS3 struct {
	key  string
	data []byte
	etag string
	ins  []*s3.GetObjectInput
}

func (f *fakeS3) GetObject(_ context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	f.ins = append(f.ins, in)
	if aws.ToString(in.Key) != f.key {
		return nil, &types.NoSuchKey{Message: aws.String("The specified key does not exist.")}
	}
	if m := aws.ToString(in.IfMatch); m != "" && m != `"`+f.etag+`"` {
		return nil, &smithy.GenericAPIError{Code: "PreconditionFailed"}
	}
	out := &s3.GetObjectOutput{ETag: aws.String(`"` + f.etag + `"`), ContentType: aws.String("application/x-ndjson")}
	b := f.data
	if r := aws.ToString(in.Range); r != "" {
		var start, end int
		if _, err := fmt.Sscanf(r, "bytes=%d-%d", &start, &end); err != nil || start > end || start >= len(f.data) {
			return nil, &smithy.GenericAPIError{Code: "InvalidRange"}
		}
		end = min(end, len(f.data)-1)
		b = f.data[start : end+1]
		out.ContentRange = aws.String(fmt.Sprintf("bytes %d-%d/%d", start, end, len(f.data)))
	}
	out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(b)), aws.Int64(int64(len(b)))
	return out, nil
}

func readAll(t *testing.T, o *Object) []byte {
	t.Helper()
	defer o.Body.Close()
	b, err := io.ReadAll(o.Body)
	require.NoError(t, err)
	assert.Equal(t, o.Size, int64(len(b)), "Size is what Body yields")
	return b
}

func TestOpenWhole(t *testing.T) {
	ctx := context.Background()
	api := &fakeS3{key: "k", data: []byte("0123456789"), etag: "e1"}

	o, err := Open(ctx, api, task.File{Bucket: "b", Key: "k", ETag: "e1"}, Options{})
	require.NoError(t, err)
	assert.Equal(t, "0123456789", string(readAll(t, o)))
	assert.Equal(t, "e1", o.ETag)
	assert.Equal(t, "application/x-ndjson", o.ContentType)
	assert.Equal(t, `"e1"`, aws.ToString(api.ins[0].IfMatch), "pinned to the ETag")
	assert.Nil(t, api.ins[0].Range)

	_, err = Open(ctx, api, task.File{Bucket: "b", Key: "k", VersionID: "v7", ETag: "e1"}, Options{})
	require.NoError(t, err)
	assert.Equal(t, "v7", aws.ToString(api.ins[1].VersionId), "pinned to the version")
	assert.Nil(t, api.ins[1].IfMatch)

	_, err = Open(ctx, api, task.File{Bucket: "b", Key: "k", ETag: "old"}, Options{})
	var apiErr smithy.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "PreconditionFailed", apiErr.ErrorCode())
	assert.Contains(t, err.Error(), "s3://b/k")

	_, err = Open(ctx, api, task.File{Bucket: "b", Key: "missing"}, Options{})
	var nsk *types.NoSuchKey
	assert.ErrorAs(t, err, &nsk)
}

func TestOpenRange(t *testing.T) {
	ctx := context.Background()
	api := &fakeS3{key: "k", data: []byte("line 1\nline 2\nline 3\n"), etag: "e1"}
	for _, tc := range []struct {
		name        string
		start, end  int64
		wantRange   string
		want        string
		wantErr     string
		wantNoCalls bool
	}{
		{name: "first line", start: 0, end: 7, wantRange: "bytes=0-6", want: "line 1\n"},
		{name: "middle", start: 7, end: 14, wantRange: "bytes=7-13", want: "line 2\n"},
		{name: "to the end", start: 14, end: 21, wantRange: "bytes=14-20", want: "line 3\n"},
		{name: "one byte", start: 3, end: 4, wantRange: "bytes=3-3", want: "e"},
		{name: "empty", start: 5, end: 5, want: "", wantNoCalls: true},
		{name: "past the end", start: 14, end: 30, wantRange: "bytes=14-29", wantErr: "past the end"},
		{name: "backwards", start: 5, end: 4, wantErr: "bad range", wantNoCalls: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api.ins = nil
			o, err := Open(ctx, api, task.File{Bucket: "b", Key: "k", ETag: "e1", Range: &task.Range{Start: tc.start, End: tc.end}}, Options{})
			if tc.wantNoCalls {
				assert.Empty(t, api.ins)
			} else {
				require.Len(t, api.ins, 1)
				assert.Equal(t, tc.wantRange, aws.ToString(api.ins[0].Range))
				assert.Equal(t, `"e1"`, aws.ToString(api.ins[0].IfMatch))
			}
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.Equal(t, retry.Permanent, retry.Classify(err))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(readAll(t, o)))
		})
	}
}

// member is one entry of a test archive, as ListZip would describe it.
type member struct {
	data []byte
	m    task.Member
}

func buildArchive(t *testing.T, entries map[string]uint16, content func(name string) []byte) ([]byte, map[string]member) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, method := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
		require.NoError(t, err)
		_, err = w.Write(content(name))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	members := map[string]member{}
	for _, f := range zr.File {
		off, err := f.DataOffset()
		require.NoError(t, err)
		members[f.Name] = member{content(f.Name), task.Member{
			Name: f.Name, Offset: off, CompressedSize: int64(f.CompressedSize64), Size: int64(f.UncompressedSize64), Method: f.Method, CRC32: f.CRC32,
		}}
	}
	return buf.Bytes(), members
}

func TestOpenMember(t *testing.T) {
	ctx := context.Background()
	content := func(name string) []byte {
		if name == "empty.txt" || name == "empty-stored.txt" {
			return nil
		}
		return []byte(strings.Repeat(name+" says hello\n", 500))
	}
	archive, members := buildArchive(t, map[string]uint16{
		"a/b/c.txt": zip.Deflate, "a/d.txt": zip.Store, "empty.txt": zip.Deflate, "empty-stored.txt": zip.Store,
	}, content)
	api := &fakeS3{key: "x.zip", data: archive, etag: "z"}

	for name, mb := range members {
		t.Run(name, func(t *testing.T) {
			api.ins = nil
			m := mb.m
			o, err := Open(ctx, api, task.File{Bucket: "b", Key: "x.zip", ETag: "z", Member: &m}, Options{})
			require.NoError(t, err)
			assert.Equal(t, m.Size, o.Size)
			assert.Empty(t, o.ContentType)
			assert.True(t, bytes.Equal(mb.data, readAll(t, o)), "the member's bytes")
			if m.CompressedSize == 0 {
				assert.Empty(t, api.ins, "nothing to GET")
				return
			}
			require.Len(t, api.ins, 1)
			assert.Equal(t, fmt.Sprintf("bytes=%d-%d", m.Offset, m.Offset+m.CompressedSize-1), aws.ToString(api.ins[0].Range))
			assert.Equal(t, `"z"`, aws.ToString(api.ins[0].IfMatch))
		})
	}

	// A member that does not match what the archive's directory says fails the read,
	// permanently: the archive is corrupt, and reading it again will not change that.
	deflated, stored := members["a/b/c.txt"].m, members["a/d.txt"].m
	corrupt := func(m task.Member, change func(*task.Member)) *task.Member { change(&m); return &m }
	for _, tc := range []struct {
		name    string
		m       *task.Member
		wantErr string
	}{
		{"wrong CRC", corrupt(deflated, func(m *task.Member) { m.CRC32++ }), "CRC-32"},
		{"shorter than said", corrupt(deflated, func(m *task.Member) { m.Size++ }), "not the"},
		{"longer than said", corrupt(deflated, func(m *task.Member) { m.Size-- }), "inflates past the"},
		{"deflate stream cut short", corrupt(deflated, func(m *task.Member) { m.CompressedSize -= 20 }), "deflate stream ends before its last block"},
		{"stored, wrong CRC", corrupt(stored, func(m *task.Member) { m.CRC32 ^= 1 }), "CRC-32"},
		{"not deflate data", corrupt(stored, func(m *task.Member) { m.Method = 8 }), "flate: corrupt input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Open(ctx, api, task.File{Bucket: "b", Key: "x.zip", ETag: "z", Member: tc.m}, Options{})
			require.NoError(t, err)
			defer o.Body.Close()
			_, err = io.Copy(io.Discard, o.Body)
			require.ErrorContains(t, err, tc.wantErr)
			assert.ErrorContains(t, err, "corrupt archive member")
			assert.Equal(t, retry.Permanent, retry.Classify(err))
			_, again := o.Body.Read(make([]byte, 10))
			assert.Equal(t, err, again, "the error sticks")
		})
	}

	for _, tc := range []struct {
		name    string
		m       *task.Member
		wantErr string
	}{
		{"bzip2", corrupt(deflated, func(m *task.Member) { m.Method = 12 }), "compression method 12 is not supported"},
		{"stored sizes differ", corrupt(stored, func(m *task.Member) { m.CompressedSize-- }), "compressed bytes"},
		{"past the end", corrupt(deflated, func(m *task.Member) { m.Offset = int64(len(archive)) - 10 }), "past the end of the archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(ctx, api, task.File{Bucket: "b", Key: "x.zip", ETag: "z", Member: tc.m}, Options{})
			require.ErrorContains(t, err, tc.wantErr)
			assert.Equal(t, retry.Permanent, retry.Classify(err))
		})
	}

	m := deflated
	_, err := Open(ctx, api, task.File{Bucket: "b", Key: "x.zip", ETag: "changed", Member: &m}, Options{})
	var apiErr smithy.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "PreconditionFailed", apiErr.ErrorCode())

	_, err = Open(ctx, api, task.File{Bucket: "b", Key: "x.zip", Member: &m, Range: &task.Range{End: 1}}, Options{})
	assert.ErrorContains(t, err, "not both")

}
