package fanout

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/source"
	"github.com/fileflow/fileflow/pkg/task"
)

// fakeObject serves ranged GETs of one object from memory and records each Range and
// If-Match it was asked for.
type fakeObject struct {
	data []byte
	etag string

	mu      sync.Mutex
	ranges  []string
	ifMatch []string
}

func (o *fakeObject) GetObject(_ context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	o.mu.Lock()
	o.ranges = append(o.ranges, aws.ToString(in.Range))
	o.ifMatch = append(o.ifMatch, aws.ToString(in.IfMatch))
	o.mu.Unlock()
	if m := aws.ToString(in.IfMatch); m != "" && m != `"`+o.etag+`"` {
		return nil, &smithy.GenericAPIError{Code: "PreconditionFailed", Message: "At least one of the pre-conditions you specified did not hold"}
	}
	var a, b int64
	if _, err := fmt.Sscanf(aws.ToString(in.Range), "bytes=%d-%d", &a, &b); err != nil {
		return nil, fmt.Errorf("fake: bad range %q: %w", aws.ToString(in.Range), err)
	}
	size := int64(len(o.data))
	if a > b || a >= size {
		return nil, &smithy.GenericAPIError{Code: "InvalidRange"}
	}
	b = min(b, size-1)
	return &s3.GetObjectOutput{
		Body:          io.NopCloser(bytes.NewReader(o.data[a : b+1])),
		ContentLength: aws.Int64(b + 1 - a),
		ContentRange:  aws.String(fmt.Sprintf("bytes %d-%d/%d", a, b, size)),
		ETag:          aws.String(`"` + o.etag + `"`),
	}, nil
}

func (o *fakeObject) gets() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.ranges)
}

func TestObjectReaderReadAt(t *testing.T) {
	data := make([]byte, 3*readerBlockSize+1234)
	for i := range data {
		data[i] = byte(i * 7)
	}
	obj := &fakeObject{data: data, etag: "abc"}
	r := NewObjectReader(context.Background(), obj, "b", "k", "abc", int64(len(data)))
	size := int64(len(data))

	for _, tc := range []struct {
		name    string
		off     int64
		n       int
		wantN   int
		wantEOF bool
	}{
		{"within a block", 10, 100, 100, false},
		{"across blocks", readerBlockSize - 5, 10, 10, false},
		{"across three blocks", 100, 2*readerBlockSize + 5, 2*readerBlockSize + 5, false},
		{"to the end exactly", size - 10, 10, 10, false},
		{"past the end", size - 10, 20, 10, true},
		{"at the end", size, 5, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := make([]byte, tc.n)
			n, err := r.ReadAt(p, tc.off)
			assert.Equal(t, tc.wantN, n)
			if tc.wantEOF {
				assert.ErrorIs(t, err, io.EOF)
			} else {
				assert.NoError(t, err)
			}
			assert.Equal(t, data[tc.off:tc.off+int64(n)], p[:n])
		})
	}
	assert.Equal(t, 4, r.Gets(), "each of the 4 blocks is fetched once")
	assert.Equal(t, obj.gets(), r.Gets())
	assert.Equal(t, fmt.Sprintf("bytes=%d-%d", 3*readerBlockSize, size-1), obj.ranges[len(obj.ranges)-1])
	assert.Equal(t, `"abc"`, obj.ifMatch[0])

	_, err := NewObjectReader(context.Background(), obj, "b", "k", "changed", size).ReadAt(make([]byte, 1), 0)
	var api smithy.APIError
	require.ErrorAs(t, err, &api)
	assert.Equal(t, "PreconditionFailed", api.ErrorCode())
}

type zipEntry struct {
	name    string
	data    []byte
	method  uint16
	flags   uint16
	raw     bool // written with CreateRaw: data is already "compressed"
	invalid string
}

func buildZip(t testing.TB, entries []zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: e.method, Flags: e.flags}
		var w io.Writer
		var err error
		if e.raw {
			h.CRC32, h.CompressedSize64, h.UncompressedSize64 = crc32.ChecksumIEEE(e.data), uint64(len(e.data)), uint64(len(e.data))
			w, err = zw.CreateRaw(h)
		} else {
			w, err = zw.CreateHeader(h)
		}
		require.NoError(t, err, e.name)
		_, err = w.Write(e.data)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestListZip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	entries := []zipEntry{
		{name: "a/"},
		{name: "a/b/"},
		{name: "big.bin", data: randomBytes(rng, 2<<20), method: zip.Store}, // 8 blocks to skip over
		{name: "a/b/c.txt", data: bytes.Repeat([]byte("hello, world\n"), 1000), method: zip.Deflate},
		{name: "a/d.txt", data: []byte("stored\n"), method: zip.Store},
		{name: "empty.txt", method: zip.Deflate},
		{name: "café/naïve.txt", data: []byte("utf-8\n"), method: zip.Deflate},
		{name: "../evil.txt", data: []byte("x"), invalid: `entry "../evil.txt": name has a ".." path element`},
		{name: "a/../../evil.txt", data: []byte("x"), invalid: `".." path element`},
		{name: "/abs.txt", data: []byte("x"), invalid: `entry "/abs.txt": name is an absolute path`},
		{name: `a\b.txt`, data: []byte("x"), invalid: "backslash"},
		{name: "C:/win.txt", data: []byte("x"), invalid: "Windows drive letter"},
		{name: "bad\xff.txt", data: []byte("x"), invalid: "not valid UTF-8"},
		{name: "nul\x00.txt", data: []byte("x"), invalid: "control character"},
		{name: "bell\a.txt", data: []byte("x"), invalid: "control character"},
		{name: "", data: []byte("x"), invalid: "empty name"},
		{name: "secret.txt", data: []byte("x"), method: zip.Deflate, flags: 0x1, raw: true, invalid: `entry "secret.txt" is encrypted`},
		{name: "data.bz2", data: []byte("x"), method: 12, raw: true, invalid: "compression method 12 is not supported"},
	}
	for i := range 500 {
		entries = append(entries, zipEntry{name: fmt.Sprintf("many/%03d.txt", i), data: fmt.Appendf(nil, "file %d\n", i), method: zip.Deflate})
	}
	data := buildZip(t, entries)
	obj := &fakeObject{data: data, etag: "e1"}

	var files []task.File
	var bad []*EntryError
	err := ListZip(context.Background(), obj, "bkt", "in/x.zip", `"e1"`, int64(len(data)), ZipOptions{},
		func(f task.File) error { files = append(files, f); return nil },
		func(e *EntryError) error { bad = append(bad, e); return nil })
	require.NoError(t, err)

	var wantBad []zipEntry
	got := map[string]task.File{}
	for _, f := range files {
		got[f.Member.Name] = f
	}
	for i, e := range entries {
		if e.invalid != "" {
			wantBad = append(wantBad, e)
			continue
		}
		if e.name[len(e.name)-1] == '/' {
			assert.NotContains(t, got, e.name, "directories are skipped")
			continue
		}
		f, ok := got[e.name]
		if !assert.True(t, ok, "listed: %s (entry %d)", e.name, i+1) {
			continue
		}
		m := f.Member
		assert.Equal(t, task.File{Bucket: "bkt", Key: "in/x.zip", ETag: "e1", Size: int64(len(e.data)), Member: m}, f)
		assert.Equal(t, e.method, m.Method)
		assert.Equal(t, crc32.ChecksumIEEE(e.data), m.CRC32)
		compressed := data[m.Offset : m.Offset+m.CompressedSize]
		if m.Method == zip.Deflate {
			compressed, err = io.ReadAll(flate.NewReader(bytes.NewReader(compressed)))
			require.NoError(t, err)
		}
		assert.True(t, bytes.Equal(e.data, compressed), "the member's bytes are at its Offset: %s", e.name)
	}
	assert.Len(t, files, len(entries)-2-len(wantBad))
	require.Len(t, bad, len(wantBad))
	for i, e := range wantBad {
		assert.Contains(t, bad[i].Reason, e.invalid, "entry %q", e.name)
		assert.Equal(t, e.name, entries[bad[i].Line-1].name, "Line is the 1-based entry index")
	}

	// The 2 MiB member is skipped over: a few GETs for the directory and the headers.
	blocks := (len(data) + readerBlockSize - 1) / readerBlockSize
	t.Logf("%d entries in %d bytes (%d blocks) listed with %d GETs", len(entries), len(data), blocks, obj.gets())
	assert.LessOrEqual(t, obj.gets(), 3)
	for _, im := range obj.ifMatch {
		assert.Equal(t, `"e1"`, im)
	}
}

func TestListZipStops(t *testing.T) {
	data := buildZip(t, []zipEntry{{name: "../x", data: []byte("x")}, {name: "a", data: []byte("a")}, {name: "b", data: []byte("b")}})
	obj := &fakeObject{data: data, etag: "e"}
	stop := errors.New("stop")

	err := ListZip(context.Background(), obj, "b", "k", "e", int64(len(data)), ZipOptions{}, func(task.File) error { return nil }, func(*EntryError) error { return stop })
	assert.ErrorIs(t, err, stop, "bad can stop the listing")

	n := 0
	err = ListZip(context.Background(), obj, "b", "k", "e", int64(len(data)), ZipOptions{}, func(task.File) error { n++; return stop }, func(*EntryError) error { return nil })
	assert.ErrorIs(t, err, stop, "fn can stop the listing")
	assert.Equal(t, 1, n)
}

func TestListZipErrors(t *testing.T) {
	ctx := context.Background()
	nop := func(task.File) error { return nil }
	nopBad := func(*EntryError) error { return nil }

	notZip := &fakeObject{data: bytes.Repeat([]byte("not a zip\n"), 100), etag: "e"}
	err := ListZip(ctx, notZip, "b", "k.zip", "e", int64(len(notZip.data)), ZipOptions{}, nop, nopBad)
	require.ErrorIs(t, err, zip.ErrFormat)
	assert.Equal(t, retry.Permanent, retry.Classify(err), "a corrupt archive is not retried")
	assert.Contains(t, err.Error(), "s3://b/k.zip")

	data := buildZip(t, []zipEntry{{name: "a", data: []byte("a")}})
	changed := &fakeObject{data: data, etag: "new"}
	err = ListZip(ctx, changed, "b", "k.zip", "old", int64(len(data)), ZipOptions{}, nop, nopBad)
	var api smithy.APIError
	require.ErrorAs(t, err, &api, "the GET's error is wrapped")
	assert.Equal(t, "PreconditionFailed", api.ErrorCode())
}

// An archive of large entries: the local headers are read with small blocks, so listing
// fetches a small fraction of the archive, whatever the entries' sizes.
func TestListZipLargeEntriesReadsLittle(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var entries []zipEntry
	for i := range 60 {
		entries = append(entries, zipEntry{name: fmt.Sprintf("dir/%02d.bin", i), data: randomBytes(rng, 300<<10), method: zip.Store})
	}
	data := buildZip(t, entries)
	obj := &fakeObject{data: data, etag: "e"}
	var files []task.File
	require.NoError(t, ListZip(context.Background(), obj, "b", "k.zip", "e", int64(len(data)), ZipOptions{},
		func(f task.File) error { files = append(files, f); return nil },
		func(e *EntryError) error { t.Errorf("bad entry: %v", e); return nil }))
	require.Len(t, files, 60)
	var fetched int64
	obj.mu.Lock()
	for _, r := range obj.ranges {
		var a, b int64
		_, err := fmt.Sscanf(r, "bytes=%d-%d", &a, &b)
		require.NoError(t, err)
		fetched += b + 1 - a
	}
	gets := len(obj.ranges)
	obj.mu.Unlock()
	t.Logf("%d entries, %d bytes: %d GETs fetched %d bytes (%.1f%%)", len(files), len(data), gets, fetched, 100*float64(fetched)/float64(len(data)))
	assert.Less(t, fetched, int64(len(data)/20), "under 5% of the archive")
	for _, f := range files {
		assert.Equal(t, entriesByName(entries)[f.Member.Name], data[f.Member.Offset:f.Member.Offset+f.Member.CompressedSize])
	}
}

func entriesByName(es []zipEntry) map[string][]byte {
	m := map[string][]byte{}
	for _, e := range es {
		m[e.name] = e.data
	}
	return m
}

// An entry whose local header offset points past the end is a bad entry, not a
// failure of the whole archive.
func TestListZipEntryOffsetPastEnd(t *testing.T) {
	data := buildZip(t, []zipEntry{{name: "a.txt", data: []byte("a"), method: zip.Store}, {name: "b.txt", data: []byte("b"), method: zip.Store}})
	// The central directory record of b.txt: signature, then the local header offset
	// at byte 42 of the record.
	sig := []byte{0x50, 0x4b, 0x01, 0x02}
	at := bytes.LastIndex(data, sig)
	require.Positive(t, at)
	binary.LittleEndian.PutUint32(data[at+42:], uint32(len(data)+1000))
	obj := &fakeObject{data: data, etag: "e"}
	var good []string
	var bad []*EntryError
	require.NoError(t, ListZip(context.Background(), obj, "b", "k.zip", "e", int64(len(data)), ZipOptions{},
		func(f task.File) error { good = append(good, f.Member.Name); return nil },
		func(e *EntryError) error { bad = append(bad, e); return nil }))
	assert.Equal(t, []string{"a.txt"}, good)
	require.Len(t, bad, 1)
	assert.Contains(t, bad[0].Reason, `"b.txt"`)
}

// Entries over the limits — by their central directory sizes, before any of their data
// is read — are bad entries with the limit in the reason, never tasks; the defaults
// apply when no limits are given.
func TestListZipLimits(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	entries := []zipEntry{
		{name: "ok.txt", data: []byte("fine\n"), method: zip.Deflate},
		{name: "zeros.bin", data: make([]byte, 4<<20), method: zip.Deflate},         // ~1000:1
		{name: "small-zeros.bin", data: make([]byte, 512<<10), method: zip.Deflate}, // as high a ratio, but small
		{name: "random.bin", data: randomBytes(rng, 3<<20), method: zip.Store},
		{name: "text.log", data: logLines(rng, 60_000), method: zip.Deflate}, // ~5:1
	}
	data := buildZip(t, entries)
	obj := &fakeObject{data: data, etag: "e"}
	for _, tc := range []struct {
		name   string
		opts   ZipOptions
		listed []string
		bad    map[string]string // entry -> reason
	}{
		{
			name:   "defaults",
			listed: []string{"ok.txt", "small-zeros.bin", "random.bin", "text.log"},
			bad:    map[string]string{"zeros.bin": `entry "zeros.bin": expands`},
		},
		{
			name:   "max member bytes",
			opts:   ZipOptions{Limits: source.Limits{MaxMemberBytes: 2 << 20, MaxRatio: 5000}},
			listed: []string{"ok.txt", "small-zeros.bin"},
			bad: map[string]string{
				"zeros.bin":  `entry "zeros.bin": uncompressed size 4194304 bytes is over the limit of 2097152 bytes per member (max_member_bytes)`,
				"random.bin": `entry "random.bin": uncompressed size 3145728 bytes is over the limit`,
				"text.log":   "(max_member_bytes)",
			},
		},
		{
			name:   "a low ratio",
			opts:   ZipOptions{Limits: source.Limits{MaxRatio: 2}},
			listed: []string{"ok.txt", "small-zeros.bin", "random.bin"},
			bad:    map[string]string{"zeros.bin": "(max_ratio)", "text.log": "over the limit of 2 (max_ratio)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var listed []string
			bad := map[string]string{}
			require.NoError(t, ListZip(context.Background(), obj, "b", "k.zip", "e", int64(len(data)), tc.opts,
				func(f task.File) error { listed = append(listed, f.Member.Name); return nil },
				func(e *EntryError) error { bad[entries[e.Line-1].name] = e.Reason; return nil }))
			assert.Equal(t, tc.listed, listed)
			require.Len(t, bad, len(tc.bad))
			for name, want := range tc.bad {
				assert.Contains(t, bad[name], want, name)
			}
		})
	}
}

func logLines(rng *rand.Rand, n int) []byte {
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, "2026-11-26T10:%02d:%02d.%03dZ INFO request %d served in %dms\n", i/3600%60, i/60%60, rng.IntN(1000), i, rng.IntN(900))
	}
	return b
}

// A name that appears twice (zip -u appends, unzip keeps the last) is ambiguous: every
// copy is a bad entry, naming how often; neither is processed at random.
func TestListZipDuplicateNames(t *testing.T) {
	data := buildZip(t, []zipEntry{{name: "a.txt", data: []byte("one")}, {name: "b.txt", data: []byte("b")}, {name: "a.txt", data: []byte("two")}})
	obj := &fakeObject{data: data, etag: "e"}
	var listed []string
	var bad []*EntryError
	require.NoError(t, ListZip(context.Background(), obj, "b", "k.zip", "e", int64(len(data)), ZipOptions{},
		func(f task.File) error { listed = append(listed, f.Member.Name); return nil },
		func(e *EntryError) error { bad = append(bad, e); return nil }))
	assert.Equal(t, []string{"b.txt"}, listed)
	require.Len(t, bad, 2)
	assert.Equal(t, []int{1, 3}, []int{bad[0].Line, bad[1].Line})
	assert.Equal(t, `entry "a.txt" appears 2 times in the archive`, bad[0].Reason)
}
