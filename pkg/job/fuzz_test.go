package job

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/source"
	"github.com/fileflow/fileflow/pkg/task"
)

// FuzzParseSpec: a spec ParseSpec accepts is one every later step accepts too — it is
// the whole file (nothing after it is silently dropped); validating it again changes
// nothing; the form Submit stores (json.Marshal) reads back the same, by ParseSpec and
// by SpecOf; its s3://bucket/key parses back to its bucket and key; its bucket is a
// bucket name and its key one S3 can hold; its id is a single printable path element
// (it names report keys and ledger items); its tolerance and archive limits are usable.
// A refused spec's error says it is about the job spec.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		`{"kind":"prefix","bucket":"fileflow-ingest","key":"logs/2026/","suffix":".gz","tolerate":"1%"}`,
		`{"kind":"manifest","bucket":"fileflow-ingest","key":"manifests/m.csv","tolerate":"25","chunk_bytes":1048576}`,
		`{"kind":"archive","bucket":"fileflow-ingest","key":"drops/bundle.zip","max_member_bytes":1048576,"max_ratio":50}`,
		`{"kind":"split","bucket":"fileflow-ingest","key":"big/events.jsonl","parts":16,"shards":4,"files_per_task":10}`,
		`{"id":"nightly","kind":"prefix","bucket":"b"}`,
		`{"kind":"zip","parts":3,"tolerate":"lots","shards":120,"id":"a b"}`,
		`{"kind":"prefix","bucket":"b","prefx":"p"}`,
		`{"kind":"prefix","bucket":"b"} {"kind":"split"}`,
		`{"kind":"prefix","bucket":"a/b","key":"c"}`,
		`{"id":"..","kind":"prefix","bucket":"b"}`,
		`{"kind":"archive","bucket":"b","key":"a.zip","max_ratio":1e308}`,
		`{"kind":"manifest","bucket":"b","key":"` + strings.Repeat("k", 1100) + `"}`,
		``, `null`, `[]`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSpec(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "job spec: ") {
				t.Fatalf("the error does not say it is about the job spec: %v", err)
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted %q, which is not one JSON value: what follows the spec is dropped", b)
		}
		again := s
		if err := again.Validate(); err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("validating again: %v, %+v -> %+v", err, s, again)
		}
		stored, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if back, err := ParseSpec(stored); err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("the stored spec %s reads back as %+v, %v", stored, back, err)
		}
		if back, err := SpecOf(ledger.Job{ID: "j", Spec: string(stored)}); err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("SpecOf(%s) = %+v, %v", stored, back, err)
		}
		if bucket, key, err := ParseURI(s.Source()); err != nil || bucket != s.Bucket || key != s.Key {
			t.Fatalf("%s parses as %q %q %v, not bucket %q key %q", s.Source(), bucket, key, err, s.Bucket, s.Key)
		}
		if err := task.CheckBucket(s.Bucket); err != nil {
			t.Fatalf("accepted a bucket that is none: %v", err)
		}
		if s.Kind != KindPrefix {
			if err := task.CheckKey(s.Key); err != nil {
				t.Fatalf("accepted a %s job of a key S3 cannot hold: %v", s.Kind, err)
			}
		} else if len(s.Key) > task.MaxKeyBytes {
			t.Fatalf("accepted a prefix of %d bytes, longer than any key", len(s.Key))
		}
		if id := s.ID; id != "" && (id == "." || id == ".." || strings.ContainsAny(id, "#/") ||
			strings.ContainsFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) || !utf8.ValidString(id)) {
			t.Fatalf("accepted the id %q, which cannot name report keys and ledger items as they are", id)
		}
		if _, err := ParseTolerance(s.Tolerate); err != nil {
			t.Fatalf("accepted a tolerance it cannot read: %v", err)
		}
		if s.Kind == KindSplit && (s.Parts < 1 || s.Parts > 10_000) {
			t.Fatalf("a split job of %d parts", s.Parts)
		}
		if s.Kind == KindArchive {
			l := s.ArchiveLimits()
			if l.MaxMemberBytes < 1 || !(l.MaxRatio >= 1) || math.IsInf(l.MaxRatio, 0) {
				t.Fatalf("archive limits %+v", l)
			}
			if err := l.Check(source.RatioExemptBytes+1, 1); l.MaxRatio < source.RatioExemptBytes && err == nil {
				t.Fatalf("limits %+v let a 1-byte member expand to %d bytes", l, source.RatioExemptBytes+1)
			}
		}
	})
}

// FuzzParseTolerance: a tolerance reads back from its own String; "any" (unset) never
// fails a job; one failure more is never less exceeded; a refused value is named.
func FuzzParseTolerance(f *testing.F) {
	for _, s := range []string{"", "0", "25", "1%", "2.5%", "0%", "100%", "-1", "101%", "x%", "1.5", "+5", "1e2%", "NaN%", " 1", "9223372036854775808"} {
		f.Add(s, int64(3), int64(100))
	}
	f.Fuzz(func(t *testing.T, s string, failed, finished int64) {
		tol, err := ParseTolerance(s)
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("tolerate %q", s)) {
				t.Fatalf("the error does not name the value: %v", err)
			}
			return
		}
		if !tol.Set {
			if s != "" || tol.Exceeded(failed, finished, true) {
				t.Fatalf("%q: unset, or unset and exceeded", s)
			}
			return
		}
		if back, err := ParseTolerance(tol.String()); err != nil || back != tol {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, tol, tol.String(), back, err)
		}
		if tol.Percent < 0 || tol.Percent > 100 || tol.Count < 0 {
			t.Fatalf("%q: %+v out of range", s, tol)
		}
		if failed < 0 || finished < failed || failed == math.MaxInt64 {
			return
		}
		for _, final := range []bool{false, true} {
			if tol.Exceeded(failed, finished, final) && !tol.Exceeded(failed+1, finished+1, final) {
				t.Fatalf("%q: %d of %d exceeded, %d of %d not (final %v)", s, failed, finished, failed+1, finished+1, final)
			}
		}
		if tol.Exceeded(0, finished, true) {
			t.Fatalf("%q: no failure exceeds it", s)
		}
	})
}

// FuzzParseURI: s3://bucket/key splits into a bucket and a key that make the same URI.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"s3://b/k", "s3://b", "s3://b/", "s3:///k", "b/k", "s3://b/a/b/c", "S3://b/k", "s3://b//k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		bucket, key, err := ParseURI(uri)
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", uri)) {
				t.Fatalf("the error does not name the URI: %v", err)
			}
			return
		}
		if bucket == "" || strings.Contains(bucket, "/") {
			t.Fatalf("%q: bucket %q", uri, bucket)
		}
		if back := "s3://" + bucket + "/" + key; back != uri && !(key == "" && uri == "s3://"+bucket) {
			t.Fatalf("%q -> %q %q -> %q", uri, bucket, key, back)
		}
	})
}

// FuzzDecodeFanoutTask: a fan-out task the dispatcher accepts reads back the same once
// encoded (it re-sends its own tasks), its id's content sum is stable, and a chunk is a
// range of the manifest in a known format — what the dispatcher's steps need. A refused
// body is named a fan-out task in the error.
func FuzzDecodeFanoutTask(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"job_id":"j1","task_id":"root","step":"root"}`,
		`{"v":1,"job_id":"j1","task_id":"l0123","parent":"root","parent_run":"r1","step":"list","list":{"bucket":"b","prefix":"logs/","suffix":".gz","token":"t"}}`,
		`{"v":1,"job_id":"j1","task_id":"l0124","parent":"root","parent_run":"r1","step":"chunk","chunk":{"start":0,"end":1048576,"part":0},"format":1,"etag":"e"}`,
		`{"v":1,"job_id":"j1","task_id":"finalize","step":"finalize"}`,
		`{"v":1,"step":"reconcile"}`,
		`{"v":1,"job_id":"j1","task_id":"c","step":"chunk","chunk":{"start":9,"end":2,"part":0},"format":7}`,
		`{"v":2,"step":"root"}`, `{"v":1,"job_id":"j","task_id":"t","step":"list"}`, `{}`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeFanoutTask(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fan-out task: ") {
				t.Fatalf("the error does not say it is about a fan-out task: %v", err)
			}
			return
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := DecodeFanoutTask(again)
		if err != nil || !reflect.DeepEqual(back, p) {
			t.Fatalf("%s reads back as %+v, %v (was %+v)", again, back, err, p)
		}
		if !bytes.Equal(back.ContentSum(), p.ContentSum()) {
			t.Fatal("content sum changed")
		}
		switch p.Step {
		case StepChunk:
			if c := p.Chunk; c.Start < 0 || c.End <= c.Start || c.Part < 0 || p.Format.String() == "" {
				t.Fatalf("a chunk the dispatcher cannot read: %+v format %d", *c, p.Format)
			}
		case StepList:
			if task.CheckBucket(p.List.Bucket) != nil {
				t.Fatalf("a listing of bucket %q", p.List.Bucket)
			}
		}
	})
}

// FuzzReportLines: a report line written as a job's report writes it reads back the
// same (ReadLines is how `fileflow replay --job J --failed` and `failures` read
// failed.csv) — the message up to CSV's line ends, since a CSV reader reads "\r\n"
// inside a quoted field as "\n".
func FuzzReportLines(f *testing.F) {
	f.Add("fileflow-ingest", "logs/a b+c,d\"e.csv", "v1", Failed, "InvalidEntry", 400, `manifest entry 3: key "bad%zz" is not URL-encoded`)
	f.Add("b", "caf\xc3\xa9/\xff.txt", "", Succeeded, "", 200, "s3://out/x")
	f.Add("b", "k\r\nl", "", Failed, "Corrupt", 422, "line one\r\nline two\rthree\n")
	f.Add("", "", "", "", "", 0, "")
	f.Fuzz(func(t *testing.T, bucket, key, version, status, code string, http int, msg string) {
		want := Line{Bucket: bucket, Key: key, VersionID: version, Status: status, ErrorCode: code, HTTPStatus: http, Message: msg}
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		_ = w.Write(want.record())
		w.Flush()
		lines, err := ReadLines(&b)
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if len(lines) != 1 {
			t.Fatalf("%+v read back as %d lines: %+v", want, len(lines), lines)
		}
		got := lines[0]
		want.Message = strings.ReplaceAll(want.Message, "\r\n", "\n")
		for _, s := range []*string{&want.Bucket, &want.VersionID, &want.Status, &want.ErrorCode} {
			*s = strings.ReplaceAll(*s, "\r\n", "\n")
		}
		if got != want {
			t.Fatalf("written %+v\nread    %+v", want, got)
		}
	})
}

// FuzzReadLines: any input reads as report lines or fails naming the report; lines read
// and written again read back the same (the finalizer merges parts into results/*.csv).
func FuzzReadLines(f *testing.F) {
	f.Add([]byte("fileflow-ingest,logs/a+b.csv,v1,Failed,InvalidEntry,400,\"manifest entry 3: bad\"\n"))
	f.Add([]byte("b,k,,Succeeded,,200,s3://out/k\r\nb,k2,,Failed,NoSuchKey,404,gone\n"))
	f.Add([]byte("a,b,c\n"))
	f.Add([]byte("b,%zz,,Failed,x,y,z\n"))
	f.Add([]byte("\"unterminated,b,c,d,e,f,g\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		lines, err := ReadLines(bytes.NewReader(in))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "report: ") {
				t.Fatalf("the error does not name the report: %v", err)
			}
			return
		}
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		for _, l := range lines {
			_ = w.Write(l.record())
		}
		w.Flush()
		again, err := ReadLines(&b)
		if err != nil || len(again) != len(lines) {
			t.Fatalf("%d lines written again read back as %d, %v", len(lines), len(again), err)
		}
		for i := range lines {
			if again[i] != lines[i] {
				t.Fatalf("line %d: %+v -> %+v", i, lines[i], again[i])
			}
		}
	})
}
