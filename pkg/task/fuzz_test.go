package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// s3Notification is an S3 event notification of one ObjectCreated:Put record, its key
// as given (the caller encodes it as S3 does).
func s3Notification(bucket, encodedKey string, size int64) []byte {
	b, _ := json.Marshal(map[string]any{"Records": []any{map[string]any{
		"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-11-26T10:00:00.000Z",
		"eventName": "ObjectCreated:Put",
		"s3": map[string]any{
			"s3SchemaVersion": "1.0", "bucket": map[string]any{"name": bucket, "arn": "arn:aws:s3:::" + bucket},
			"object": map[string]any{"key": encodedKey, "size": size, "eTag": "0123456789abcdef0123456789abcdef", "sequencer": "0055AED6DCD90281E5"},
		},
	}}})
	return b
}

// eventBridgeCreated is an EventBridge "Object Created" event from S3, its key as it is.
func eventBridgeCreated(bucket, key string, size int64) []byte {
	b, _ := json.Marshal(map[string]any{
		"version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": "Object Created", "source": "aws.s3",
		"account": "111122223333", "time": "2021-11-12T00:00:00Z", "region": "ca-central-1",
		"resources": []string{"arn:aws:s3:::" + bucket},
		"detail": map[string]any{"version": "0", "bucket": map[string]any{"name": bucket},
			"object":     map[string]any{"key": key, "size": size, "etag": "b1946ac92492d2347c6235b4d2611184", "sequencer": "617f08299329d189"},
			"request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012", "source-ip-address": "1.2.3.4", "reason": "PutObject"},
	})
	return b
}

// FuzzS3EventKey: a key reaches the worker as it was uploaded, whichever way its event
// came — a notification (key URL-encoded as S3 does, '+' for a space, with or without
// '/' encoded), the same wrapped by SNS, or an EventBridge event (key as it is) — when
// S3 could hold it (at most 1,024 bytes of UTF-8). Any other key is refused, by every
// shape alike, with an InvalidError that names the record or field. Notifications of
// invalid UTF-8 arrive only URL-encoded ("%FF"); EventBridge's JSON cannot carry them.
func FuzzS3EventKey(f *testing.F) {
	for _, k := range []string{"HappyFace.jpg", "uploads/Quarterly Report (2026).pdf", "café/résumé 1+1.txt",
		"reports/2021-11-12T00:00:00/Q3 (final)+v2 100%.csv", "a!/b!", " lead and trail ", "\x00\x01\r\n",
		strings.Repeat("k", MaxKeyBytes), strings.Repeat("é", MaxKeyBytes/2+1), "\xff\xfe", "%zz", ""} {
		f.Add("fileflow-dev-ingest", k, int64(1024))
	}
	f.Add("DOC-EXAMPLE-BUCKET1", "example-key", int64(5))
	f.Add("a/b", "k", int64(0))
	f.Fuzz(func(t *testing.T, bucket, key string, size int64) {
		valid := CheckKey(key) == nil && CheckBucket(bucket) == nil && size >= 0
		bodies := map[string][]byte{
			"notification":             s3Notification(bucket, url.QueryEscape(key), size),
			"notification, '/' as is":  s3Notification(bucket, strings.ReplaceAll(url.QueryEscape(key), "%2F", "/"), size),
			"notification through SNS": snsWrap(s3Notification(bucket, url.QueryEscape(key), size)),
		}
		if utf8.ValidString(key) && utf8.ValidString(bucket) {
			bodies["EventBridge"] = eventBridgeCreated(bucket, key, size)
		}
		for shape, body := range bodies {
			d, err := Decode(body)
			if !valid {
				var inv *InvalidError
				if !errors.As(err, &inv) {
					t.Fatalf("%s: bucket %q key %q size %d: want an InvalidError, got %+v, %v", shape, bucket, key, size, d, err)
				}
				if !strings.Contains(err.Error(), "record 0") && !strings.Contains(err.Error(), "detail.") {
					t.Fatalf("%s: the error does not say where: %v", shape, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: bucket %q key %q: %v", shape, bucket, key, err)
			}
			if len(d.Files) != 1 || d.Files[0].Key != key || d.Files[0].Bucket != bucket || d.Files[0].Size != size {
				t.Fatalf("%s: key %q decoded as %+v", shape, key, d.Files)
			}
		}
	})
}

// FuzzTaskFileRoundTrip: a file the dispatcher puts in a task message is read back by
// the worker exactly, or — if it is not a file the worker could process — fails alone as
// the message's bad entry 0, naming it, never the whole message.
func FuzzTaskFileRoundTrip(f *testing.F) {
	f.Add("in", "data/a b+c.csv", "", "0cc175b9c0f1b6a831c399e269772661", int64(1), "", uint8(0), int64(0), int64(0), 0, "", uint16(0), uint32(0))
	f.Add("in", "big/events.jsonl", "", "e", int64(100), "", uint8(1), int64(10), int64(60), 3, "", uint16(0), uint32(0))
	f.Add("in", "drops/a.zip", "v1", "e", int64(5), "", uint8(2), int64(30), int64(5), 0, "dir/rows.csv", uint16(8), uint32(0xcafe))
	f.Add("in", "drops/a.zip", "", "", int64(5), "", uint8(2), int64(0), int64(5), 0, "../../etc/passwd", uint16(0), uint32(0))
	f.Add("in", "k", "", "", int64(5), "0A", uint8(3), int64(0), int64(5), 0, "x", uint16(0), uint32(0))
	f.Add("a/b", strings.Repeat("x", MaxKeyBytes+1), "", "", int64(-1), "", uint8(1), int64(5), int64(2), -1, "", uint16(0), uint32(0))
	f.Fuzz(func(t *testing.T, bucket, key, version, etag string, size int64, seq string, shape uint8, a, b int64, part int,
		name string, method uint16, crc uint32) {
		for _, s := range []string{bucket, key, version, etag, seq, name} {
			if !utf8.ValidString(s) {
				return // JSON carries UTF-8 only; invalid bytes become U+FFFD (FuzzDecode covers raw bodies)
			}
		}
		file := File{Bucket: bucket, Key: key, VersionID: version, ETag: etag, Size: size, Sequencer: seq}
		if shape&1 != 0 {
			file.Range = &Range{Start: a, End: b, Part: part}
		}
		if shape&2 != 0 {
			file.Member = &Member{Name: name, Offset: a, CompressedSize: b, Size: size, Method: method, CRC32: crc}
		}
		d, err := Decode(mustEncode(t, Message{JobID: "j1", TaskID: "m1", Parent: RootTask, Files: []File{file}}))
		if err != nil {
			t.Fatalf("one file fails the whole message: %v", err)
		}
		switch {
		case len(d.Files) == 1 && len(d.Bad) == 0:
			checkDecodedFile(t, d.Files[0])
			if !equalFiles(d.Files, []File{file}) {
				t.Fatalf("round trip changed the file:\n%+v\n%+v", file, d.Files[0])
			}
		case len(d.Files) == 0 && len(d.Bad) == 1:
			if bad := d.Bad[0]; bad.Index != 0 || !strings.Contains(bad.Err.Error(), "task file 0") {
				t.Fatalf("the bad entry does not name its place: %+v", bad)
			}
			if fileOK(file) {
				t.Fatalf("a valid file refused: %+v: %v", file, d.Bad[0].Err)
			}
		default:
			t.Fatalf("one file in, %d files and %d bad entries out", len(d.Files), len(d.Bad))
		}
	})
}

// fileOK is what a task file must be, written independently of decodeFile.
func fileOK(f File) bool {
	r, m := f.Range, f.Member
	return CheckBucket(f.Bucket) == nil && CheckKey(f.Key) == nil && f.Size >= 0 &&
		(r == nil || r.Start >= 0 && r.End >= r.Start && r.Part >= 0) &&
		(m == nil || CheckEntryName(m.Name) == nil && m.Offset >= 0 && m.CompressedSize >= 0 && m.Size >= 0) &&
		(r == nil || m == nil)
}

// FuzzEntryName: a name CheckEntryName accepts is a local, clean, relative path — no
// ".." or "." element, no leading '/', no backslash or drive letter, UTF-8, at most
// MaxEntryName bytes — so its output "<prefix><zip key>!/<name>" stays under
// "<prefix><zip key>!/" however a file system or S3 client resolves it. A refused name is
// named in the error.
func FuzzEntryName(f *testing.F) {
	for _, n := range []string{"a/b/c.txt", "café/naïve.txt", "../evil.txt", "a/../../evil.txt", "/abs.txt", `a\b.txt`,
		"C:/win.txt", "c:", "bad\xff.txt", "nul\x00.txt", "a/./b", "a//b", "a/", ".", "..", "...", "..a/b..", "a\u202etxt.exe",
		strings.Repeat("n", MaxEntryName), strings.Repeat("n", MaxEntryName+1), ""} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := CheckEntryName(name)
		if err != nil {
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("entry %q: ", name)) {
				t.Fatalf("the error does not name the entry: %v", err)
			}
			return
		}
		switch {
		case !filepath.IsLocal(name):
			t.Fatalf("accepted %q, which is not a local path", name)
		case path.Clean(name) != name:
			t.Fatalf("accepted %q, which is not clean (%q)", name, path.Clean(name))
		case strings.HasPrefix(name, "/"), strings.Contains(name, `\`), !utf8.ValidString(name), len(name) > MaxEntryName:
			t.Fatalf("accepted %q", name)
		}
		for _, elem := range strings.Split(name, "/") {
			if elem == ".." || elem == "." || elem == "" {
				t.Fatalf("accepted %q with the element %q", name, elem)
			}
		}
		const under = "/out/drops/x.zip!/"
		if p := path.Join(under, name); !strings.HasPrefix(p, under) {
			t.Fatalf("accepted %q, which resolves outside: %q", name, p)
		}
	})
}

// FuzzUniqueNames: no object's output name is an archive member's, and no two members
// (of one archive or two) share one: UniqueName (and so every output name) is one to one.
func FuzzUniqueNames(f *testing.F) {
	f.Add("z/b.zip!/x.txt", "z/b.zip", "x.txt", "z/b.zip", "x.txt!")
	f.Add("a!", "a", "!/b", "a!", "/b")
	f.Add("a!!/b", "a!", "b", "a", "!b")
	f.Fuzz(func(t *testing.T, object, zip1, entry1, zip2, entry2 string) {
		obj := File{Key: object}
		m1 := File{Key: zip1, Member: &Member{Name: entry1}}
		m2 := File{Key: zip2, Member: &Member{Name: entry2}}
		if obj.UniqueName() == m1.UniqueName() {
			t.Fatalf("object %q and member %q of %q share %q", object, entry1, zip1, obj.UniqueName())
		}
		if (zip1 != zip2 || entry1 != entry2) && m1.UniqueName() == m2.UniqueName() {
			t.Fatalf("members %q of %q and %q of %q share %q", entry1, zip1, entry2, zip2, m1.UniqueName())
		}
		if obj2 := (File{Key: zip1}); object != zip1 && obj.UniqueName() == obj2.UniqueName() {
			t.Fatalf("objects %q and %q share %q", object, zip1, obj.UniqueName())
		}
	})
}
