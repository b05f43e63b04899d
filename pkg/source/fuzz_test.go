package source

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

func deflate(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

// FuzzOpenMember: an archive member read through its ranged GET — whatever its
// compressed bytes, and whatever sizes, method and CRC-32 its header claims — yields
// exactly the bytes the archive says (their count and CRC-32 checked) or fails for
// good, as corrupt content or over the limits, naming the member; never more than one
// byte past its declared size (a lying header cannot make the worker inflate a bomb),
// never an error that would be retried (all its bytes were there).
func FuzzOpenMember(f *testing.F) {
	text := bytes.Repeat([]byte("2026-11-26T10:00:00Z INFO request served\n"), 50)
	zeros := make([]byte, 64<<10)
	for _, c := range []struct {
		data       []byte
		size       int64
		method     uint16
		crc        uint32
		compressed int64 // -1: len(data)
	}{
		{deflate(f, text), int64(len(text)), 8, crc32.ChecksumIEEE(text), -1},
		{text, int64(len(text)), 0, crc32.ChecksumIEEE(text), -1},
		{deflate(f, zeros), 10, 8, crc32.ChecksumIEEE(zeros[:10]), -1},               // lies: declares 10 bytes
		{deflate(f, zeros), int64(len(zeros)) + 5, 8, crc32.ChecksumIEEE(zeros), -1}, // lies: declares more
		{deflate(f, text), int64(len(text)), 8, 0xdeadbeef, -1},                      // wrong CRC
		{deflate(f, text)[:20], int64(len(text)), 8, crc32.ChecksumIEEE(text), -1},   // cut short
		{[]byte("not deflate at all"), 18, 8, 0, -1},                                 // corrupt
		{nil, 0, 8, 0, -1}, // empty
		{text, int64(len(text)), 12, crc32.ChecksumIEEE(text), -1},                          // bzip2
		{text, int64(len(text)) - 1, 0, crc32.ChecksumIEEE(text), -1},                       // stored, sizes differ
		{deflate(f, zeros), 2 << 20, 8, 0, -1},                                              // a bomb by its header
		{deflate(f, text), int64(len(text)), 8, crc32.ChecksumIEEE(text), int64(len(text))}, // runs past the end
	} {
		f.Add(c.data, c.size, c.method, c.crc, c.compressed)
	}
	f.Fuzz(func(t *testing.T, data []byte, size int64, method uint16, crc uint32, compressed int64) {
		if compressed < 0 {
			compressed = int64(len(data))
		}
		const prefix = 30 // a local header before the member's data
		archive := append(bytes.Repeat([]byte{'P'}, prefix), data...)
		api := &fakeS3{key: "drops/x.zip", data: archive, etag: "z"}
		m := task.Member{Name: "dir/m.bin", Offset: prefix, CompressedSize: compressed, Size: size, Method: method, CRC32: crc}
		limits := Limits{MaxMemberBytes: 1 << 20, MaxRatio: 1000}
		o, err := Open(context.Background(), api, task.File{Bucket: "in", Key: "drops/x.zip", ETag: "z", Member: &m}, Options{Limits: limits})
		var got []byte
		if err == nil {
			got, err = io.ReadAll(io.LimitReader(o.Body, size+2))
			if cerr := o.Body.Close(); cerr != nil {
				t.Fatalf("close: %v", cerr)
			}
		}
		if int64(len(got)) > size+1 && size >= 0 {
			t.Fatalf("declared %d bytes, yielded %d", size, len(got))
		}
		if err != nil {
			if retry.Classify(err) != retry.Permanent {
				t.Fatalf("a member whose bytes are all there fails retryably: %v", err)
			}
			if !strings.Contains(err.Error(), "s3://in/drops/x.zip!/dir/m.bin") {
				t.Fatalf("the error does not name the member: %v", err)
			}
			var le *LimitError
			if code, _ := failure.CodeOf(err, ""); code != failure.Corrupt && !errors.As(err, &le) && code != "" {
				t.Fatalf("failure code %q: %v", code, err)
			}
			return
		}
		switch {
		case int64(len(got)) != size:
			t.Fatalf("declared %d bytes, read %d without an error", size, len(got))
		case crc32.ChecksumIEEE(got) != crc:
			t.Fatalf("read bytes of CRC-32 %08x, declared %08x, without an error", crc32.ChecksumIEEE(got), crc)
		case limits.Check(size, compressed) != nil:
			t.Fatalf("read a member over the limits: %v", limits.Check(size, compressed))
		case method == 0 && !bytes.Equal(got, data[:compressed]):
			t.Fatal("a stored member is not its bytes")
		case method == 8:
			want, ferr := io.ReadAll(flate.NewReader(bytes.NewReader(data[:compressed])))
			if ferr != nil || !bytes.Equal(want, got) {
				t.Fatalf("a deflated member is not its inflated bytes: %v", ferr)
			}
		}
	})
}
