package fanout

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strings"
	"testing"

	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/source"
	"github.com/fileflow/fileflow/pkg/task"
)

// manifestEntry is what Read gave for one manifest row: a file or a bad entry.
type manifestEntry struct {
	line int
	file *task.File
	bad  string
}

func readManifest(data []byte, f Format) ([]manifestEntry, error) {
	var out []manifestEntry
	err := Read(bytes.NewReader(data), f, "default-bucket", func(fl task.File) error {
		out = append(out, manifestEntry{line: -1, file: &fl})
		return nil
	}, func(e *EntryError) error {
		out = append(out, manifestEntry{line: e.Line, bad: e.Reason})
		return nil
	})
	return out, err
}

// FuzzReadManifest: every row of a manifest, in any of its three formats, yields a file
// S3 could hold (a bucket name, a key of at most 1,024 bytes of UTF-8) or a bad entry
// naming its row, in order — never silence. For CSV without quotes and for JSON Lines,
// the rows are exactly the non-blank lines, and a bad entry names the line it is on. A
// JSON array that is valid JSON never fails as a whole; one that does fail, fails for
// good (it will not read better next time), naming where. Seeds: S3 Batch Operations
// CSV manifests (quoted, URL-encoded keys, version ids), JSON arrays and JSON Lines.
func FuzzReadManifest(f *testing.F) {
	for _, s := range []string{
		"in,plain.txt\nin,\"with%2C comma+and space.csv\",v1\nin,caf%C3%A9/r%C3%A9sum%C3%A9.pdf\nin,1%2B1%3D2.txt\nonly-one-field\nin,bad%zz\n,no-bucket.txt\n",
		"examplebucket,photos/2026/img%20001.jpg,3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY\r\nexamplebucket,photos/2026/img%20002.jpg\r\n",
		"\ufeffin,a.txt\n\nin,b.txt\n",
		"in,\"unterminated\nin,b\nin,c\n",
		"in,a\"b\nin,c\n",
		"in,caf%E9.txt\nin/x,k\n in ,k\nin," + strings.Repeat("k", 1025) + "\n",
		`[{"bucket":"b","key":"a b.txt","etag":"e1"},{"key":"k2","size":3}]`,
		`[{"bucket":"b","key":5},{"key":"ok"},1,null,{"bucket":"a/b","key":"x"}]`,
		`[{"key":"a"},{"key":"b"}`, `[{"key":"a"}] [{"key":"b"}]`, `[{"key":"a"} {"key":"b"}]`, `{"key":"a"}`, ``,
		"{\"bucket\":\"b\",\"key\":\"x\"}\n\nnot json\n{\"bucket\":\"b\"}\n{\"key\":7}\n",
		"{\"key\":\"a\"}\r\n  \r\n{\"key\":\"\\u00e9\"}",
	} {
		for format := range 3 {
			f.Add([]byte(s), uint8(format))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, format uint8) {
		fm := Format(format%3 + 1)
		entries, err := readManifest(data, fm)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fanout: ") {
				t.Fatalf("%s: the error does not name the manifest: %v", fm, err)
			}
			if retry.Classify(err) != retry.Permanent {
				t.Fatalf("%s: a manifest that cannot be read is retried: %v", fm, err)
			}
			if fm == FormatJSONArray {
				var elems []json.RawMessage
				if json.Unmarshal(data, &elems) == nil {
					t.Fatalf("a valid JSON array fails as a whole: %v", err)
				}
			}
		}
		last := 0
		for _, e := range entries {
			if e.file != nil {
				if err := task.CheckBucket(e.file.Bucket); err != nil {
					t.Fatalf("%s: a file with no bucket name: %+v: %v", fm, *e.file, err)
				}
				if err := task.CheckKey(e.file.Key); err != nil {
					t.Fatalf("%s: a key S3 cannot hold: %+v: %v", fm, *e.file, err)
				}
				continue
			}
			if e.line < 1 || e.line < last {
				t.Fatalf("%s: bad entry at line %d after line %d: %s", fm, e.line, last, e.bad)
			}
			last = e.line
		}
		switch {
		case fm == FormatCSV && !bytes.ContainsRune(data, '"'):
			checkRows(t, data, entries, func(line string) string { return strings.TrimSuffix(line, "\r") })
		case fm == FormatJSONLines && err == nil:
			checkRows(t, data, entries, func(line string) string { return strings.TrimSpace(line) })
		case fm == FormatJSONArray && err == nil:
			var elems []json.RawMessage
			if json.Unmarshal(bytes.TrimPrefix(data, []byte("\ufeff")), &elems) == nil && len(entries) != len(elems) {
				t.Fatalf("%d elements gave %d files and bad entries", len(elems), len(entries))
			}
		}
	})
}

// checkRows checks that entries are one per non-blank line of data (blank as trim says),
// bad entries naming theirs: each row is a file or a bad entry, none is skipped or read
// twice. Rows start at the first line; the UTF-8 byte order mark before it is not a row's.
func checkRows(t *testing.T, data []byte, entries []manifestEntry, trim func(string) string) {
	t.Helper()
	lines := strings.Split(strings.TrimPrefix(string(data), "\ufeff"), "\n")
	var rows []int
	for i, l := range lines {
		if trim(l) != "" {
			rows = append(rows, i+1)
		}
	}
	if len(rows) != len(entries) {
		t.Fatalf("%d non-blank lines gave %d files and bad entries: %+v", len(rows), len(entries), entries)
	}
	for i, e := range entries {
		if e.file == nil && e.line != rows[i] {
			t.Fatalf("row %d is line %d, but its bad entry says line %d: %s", i+1, rows[i], e.line, e.bad)
		}
	}
}

// FuzzManifestCSVRow: a bucket, key and version id written as an S3 Batch Operations
// manifest row (fields quoted as needed, the key URL-encoded) read back as that file —
// whether spaces are encoded '+' or "%20" — or, if S3 could not hold it, as a bad entry
// of row 1 that says why.
func FuzzManifestCSVRow(f *testing.F) {
	f.Add("examplebucket", "photos/2026/img 001.jpg", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")
	f.Add("in", "with, comma\"quote\"\nnewline+plus%.csv", "")
	f.Add("in", "café/résumé.pdf", "v1")
	f.Add("in", "\xff", "")
	f.Add("in/x", "k", "")
	f.Fuzz(func(t *testing.T, bucket, key, version string) {
		percent20 := func(s string) string { return strings.ReplaceAll(url.PathEscape(s), "+", "%2B") }
		for _, encode := range []func(string) string{url.QueryEscape, percent20} {
			var b bytes.Buffer
			w := csv.NewWriter(&b)
			row := []string{bucket, encode(key)}
			if version != "" {
				row = append(row, version)
			}
			_ = w.Write(row)
			w.Flush()
			entries, err := readManifest(b.Bytes(), FormatCSV)
			if err != nil {
				t.Fatalf("%q: %v", b.String(), err)
			}
			want := task.File{Bucket: bucket, Key: key, VersionID: strings.ReplaceAll(version, "\r\n", "\n")}
			if want.Bucket == "" {
				want.Bucket = "default-bucket"
			}
			switch {
			case len(entries) == 0 && strings.TrimSpace(b.String()) == "":
			case len(entries) != 1:
				t.Fatalf("%q: %d entries", b.String(), len(entries))
			case entries[0].file != nil:
				if *entries[0].file != want {
					t.Fatalf("%q read as %+v, want %+v", b.String(), *entries[0].file, want)
				}
			case entries[0].line != 1:
				t.Fatalf("%q: bad entry at line %d", b.String(), entries[0].line)
			case task.CheckKey(key) == nil && task.CheckBucket(want.Bucket) == nil && key != "":
				t.Fatalf("%q: a good row is a bad entry: %s", b.String(), entries[0].bad)
			}
		}
	})
}

// zipSeeds are archives a zip listing meets: nested folders, every kind of bad name, an
// encrypted and an unsupported entry, a duplicate, a bomb, an empty archive.
func zipSeeds(t testing.TB) [][]byte {
	good := []zipEntry{{name: "a/"}, {name: "a/b/c.txt", data: bytes.Repeat([]byte("hello\n"), 100), method: zip.Deflate},
		{name: "a/d.txt", data: []byte("stored\n"), method: zip.Store}, {name: "empty.txt", method: zip.Deflate}}
	var bad []zipEntry
	for _, n := range []string{"../evil.txt", "a/../../evil.txt", "/abs.txt", `a\b.txt`, "C:/win.txt", "bad\xff.txt", "nul\x00.txt", "", "a//b", "./a", "rtl\u202etxt.exe"} {
		bad = append(bad, zipEntry{name: n, data: []byte("x")})
	}
	bad = append(bad,
		zipEntry{name: "secret.txt", data: []byte("x"), method: zip.Deflate, flags: 0x1, raw: true},
		zipEntry{name: "data.bz2", data: []byte("x"), method: 12, raw: true},
		zipEntry{name: "a/d.txt", data: []byte("again\n"), method: zip.Store},
		zipEntry{name: "zeros.bin", data: make([]byte, 2<<20), method: zip.Deflate})
	return [][]byte{buildZip(t, good), buildZip(t, append(good, bad...)), buildZip(t, nil), []byte("PK\x05\x06" + strings.Repeat("\x00", 18))}
}

// FuzzListZip: any bytes, listed as a zip through ranged GETs, give members that are
// safe to extract and lie inside the archive — a name CheckEntryName accepts (no ".."
// element, no leading '/'), unique, stored or deflated, its compressed bytes within the
// object, its sizes within the limits — and bad entries naming a place in the archive;
// or the listing fails, for good if the archive is not a zip, naming the archive.
func FuzzListZip(f *testing.F) {
	for _, z := range zipSeeds(f) {
		f.Add(z)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		obj := &fakeObject{data: data, etag: "e"}
		limits := source.Limits{MaxMemberBytes: 1 << 20, MaxRatio: 100}
		var members []task.File
		var bad []*EntryError
		err := ListZip(context.Background(), obj, "in", "drops/x.zip", "e", int64(len(data)), ZipOptions{Limits: limits},
			func(f task.File) error { members = append(members, f); return nil },
			func(e *EntryError) error { bad = append(bad, e); return nil })
		if err != nil {
			if !strings.Contains(err.Error(), "s3://in/drops/x.zip") {
				t.Fatalf("the error does not name the archive: %v", err)
			}
			if errors.Is(err, zip.ErrFormat) && retry.Classify(err) != retry.Permanent {
				t.Fatalf("a corrupt archive is retried: %v", err)
			}
			return
		}
		names := map[string]bool{}
		for _, m := range members {
			mm := m.Member
			switch {
			case task.CheckEntryName(mm.Name) != nil:
				t.Fatalf("listed an unsafe name: %v", task.CheckEntryName(mm.Name))
			case names[mm.Name]:
				t.Fatalf("listed %q twice", mm.Name)
			case mm.Method != zip.Store && mm.Method != zip.Deflate:
				t.Fatalf("listed %q of method %d", mm.Name, mm.Method)
			case mm.Offset < 0 || mm.CompressedSize < 0 || mm.Offset > int64(len(data))-mm.CompressedSize:
				t.Fatalf("listed %q at [%d, +%d) of a %d-byte archive", mm.Name, mm.Offset, mm.CompressedSize, len(data))
			case limits.Check(mm.Size, mm.CompressedSize) != nil:
				t.Fatalf("listed %q over the limits: %v", mm.Name, limits.Check(mm.Size, mm.CompressedSize))
			case mm.Method == zip.Store && mm.Size != mm.CompressedSize:
				// The worker refuses these; listing them is harmless but wasteful.
			case m.Bucket != "in" || m.Key != "drops/x.zip" || m.ETag != "e" || m.Size != mm.Size:
				t.Fatalf("member %+v", m)
			}
			names[mm.Name] = true
		}
		for _, e := range bad {
			if e.Line < 1 || e.Line > math.MaxInt32 || e.Reason == "" {
				t.Fatalf("bad entry %+v", *e)
			}
		}
	})
}

// FuzzSplitRanges: the parts of a split tile the file — in order, from 0 to its size,
// no gap, no overlap, none empty — at most the parts asked for, each but the last ending
// just after a newline (so each part is whole lines), numbered from 0.
func FuzzSplitRanges(f *testing.F) {
	f.Add([]byte("a\nb\nc\n"), uint16(2))
	f.Add([]byte("first line\nsecond line\n"), uint16(10))
	f.Add(bytes.Repeat([]byte("y"), 1000), uint16(5))
	f.Add(bytes.Repeat([]byte("\n"), 100), uint16(8))
	f.Add([]byte{}, uint16(3))
	f.Add([]byte("{\"a\":1}\n{\"a\":2}\r\n{\"a\":3}"), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, parts uint16) {
		obj := &fakeObject{data: data, etag: "e"}
		rs, err := SplitRanges(context.Background(), obj, "b", "k", "e", int64(len(data)), int(parts))
		if parts == 0 {
			if err == nil || !strings.Contains(err.Error(), "s3://b/k") {
				t.Fatalf("0 parts: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) > int(parts) || len(data) > 0 && len(rs) == 0 {
			t.Fatalf("%d bytes in %d parts asked gave %d", len(data), parts, len(rs))
		}
		at := int64(0)
		for i, r := range rs {
			switch {
			case r.Part != i:
				t.Fatalf("range %d numbered %d", i, r.Part)
			case r.Start != at:
				t.Fatalf("range %d starts at %d, not %d: a gap or an overlap", i, r.Start, at)
			case r.End <= r.Start:
				t.Fatalf("range %d is empty: [%d, %d)", i, r.Start, r.End)
			case i < len(rs)-1 && data[r.End-1] != '\n':
				t.Fatalf("range %d ends inside a line, at %d", i, r.End)
			}
			at = r.End
		}
		if at != int64(len(data)) {
			t.Fatalf("ranges end at %d of %d", at, len(data))
		}
		if want := wantSplit(data, int(parts)); fmt.Sprint(want) != fmt.Sprint(rs) {
			t.Fatalf("got %v, want %v", rs, want)
		}
	})
}

// FuzzLineChunk: over the nominal chunks of any size, every line of a manifest is read
// exactly once, whole, by the chunk its first byte is in — so parallel chunk tasks
// neither skip nor repeat a row.
func FuzzLineChunk(f *testing.F) {
	f.Add([]byte("abc\ndef\nghi"), int64(4))
	f.Add([]byte(strings.Repeat("123456789\n", 30)), int64(10))
	f.Add([]byte("\n\n\nx\n"), int64(1))
	f.Add([]byte("no newline at all"), int64(3))
	f.Fuzz(func(t *testing.T, data []byte, chunk int64) {
		if chunk < 1 || chunk > int64(len(data))+10 {
			chunk = 1 + (chunk&math.MaxInt64)%(int64(len(data))+10)
		}
		var got [][]byte
		for _, r := range ManifestChunks(int64(len(data)), chunk) {
			b, err := io.ReadAll(LineChunk(bytes.NewReader(data[max(r.Start-1, 0):]), r.Start, r.End))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b)
			if n := len(bytes.Join(got, nil)); len(b) > 0 && n < len(data) && b[len(b)-1] != '\n' {
				t.Fatalf("chunk [%d, %d) ends inside a line: %q", r.Start, r.End, b)
			}
		}
		if joined := bytes.Join(got, nil); !bytes.Equal(joined, data) {
			t.Fatalf("chunks of %d: read %q, not %q", chunk, joined, data)
		}
	})
}
