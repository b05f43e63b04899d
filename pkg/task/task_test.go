package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		kind  Kind
		job   string
		files []File
	}{
		{
			name: "S3 event with two records, URL-encoded keys",
			file: "s3-put-two-records.json",
			kind: KindS3Event,
			files: []File{
				{Bucket: "fileflow-dev-ingest", Key: "uploads/Quarterly Report (2026).pdf", VersionID: "096fKKXTRTtl3on89fVO.nfljtsv6qko", ETag: "b21b84d653bb07b05b1e6b33684dc11b", Size: 1305107, Sequencer: "0055AED6DCD90281E5"},
				{Bucket: "fileflow-dev-ingest", Key: "uploads/café/résumé 1+1.txt", ETag: "9b2cf535f27731c974343645a3985328-9", Size: 73400320, Sequencer: "0055AED6DCD90281E6"},
			},
		},
		{name: "removal is not a file", file: "s3-removed.json", kind: KindS3Event},
		{name: "s3:TestEvent is not a file", file: "s3-test-event.json", kind: KindTestEvent},
		{
			name: "task message",
			file: "task-v1.json",
			kind: KindTask,
			job:  "job-0001",
			files: []File{
				{Bucket: "fileflow-dev-ingest", Key: "data/a b+c.csv", ETag: "0cc175b9c0f1b6a831c399e269772661", Size: 1},
				{Bucket: "fileflow-dev-ingest", Key: "data/ü/€.json", VersionID: "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", Size: 42},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Decode(readTestdata(t, tt.file))
			require.NoError(t, err)
			assert.Equal(t, tt.kind, d.Kind)
			assert.Equal(t, tt.job, d.JobID)
			assert.Equal(t, tt.files, d.Files)
		})
	}
}

// The bodies inside a real SQS event decode like the files above, and a malformed one
// is a permanent InvalidError, not a crash.
func TestDecodeSQSEventBodies(t *testing.T) {
	var ev struct {
		Records []struct {
			Body string `json:"body"`
		} `json:"Records"`
	}
	require.NoError(t, json.Unmarshal(readTestdata(t, "sqs-event-s3.json"), &ev))
	require.Len(t, ev.Records, 2)

	d, err := Decode([]byte(ev.Records[0].Body))
	require.NoError(t, err)
	require.Len(t, d.Files, 1)
	assert.Equal(t, "uploads/hello world.txt", d.Files[0].Key)
	assert.Equal(t, "0055AED6DCD90281E5", d.Files[0].Sequencer)

	_, err = Decode([]byte(ev.Records[1].Body))
	var inv *InvalidError
	require.ErrorAs(t, err, &inv)
	assert.True(t, inv.Permanent())
	assert.Contains(t, err.Error(), "not a JSON object")
}

func TestDecodeInvalid(t *testing.T) {
	tests := map[string]struct {
		body string
		want string
	}{
		"empty":                {"", "empty body"},
		"array":                {"[1,2]", "not a JSON object"},
		"truncated":            {`{"Records":[`, "malformed JSON"},
		"unknown object":       {`{"hello":"world"}`, `unknown message shape: a JSON object with the keys "hello"`},
		"future version":       {`{"v":9,"files":[]}`, "version 9 is not supported"},
		"no files":             {`{"v":1}`, `no "files"`},
		"files not a list":     {`{"v":1,"files":"a"}`, `"files" is not a list`},
		"bad key encoding":     {`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a%zz"}}}]}`, "not URL-encoded"},
		"not from S3":          {`{"Records":[{"eventSource":"aws:sqs"}]}`, `eventSource "aws:sqs"`},
		"negative record size": {`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k","size":-1}}}]}`, "record 0: negative object size -1"},
		"created no bucket":    {`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"object":{"key":"k"}}}]}`, "no bucket name"},
		"key not UTF-8":        {`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"caf%E9.txt"}}}]}`, `record 0: object key "caf%E9.txt": key "caf\xe9.txt" is not valid UTF-8`},
		"key over 1,024 bytes": {`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"` + strings.Repeat("%C3%A9", 513) + `"}}}]}`, "key of 1026 bytes is over S3's limit of 1024"},
		"bucket not a name":    {`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"in/other"},"object":{"key":"k"}}}]}`, `record 0: bucket name "in/other" has '/'`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body))
			var inv *InvalidError
			require.ErrorAs(t, err, &inv)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestMessageRoundTrip(t *testing.T) {
	m := Message{JobID: "j1", TaskID: "m1", Parent: RootTask, Files: []File{{Bucket: "b", Key: "a b+c/ü.txt", Size: 3}}}
	b, err := m.Encode()
	require.NoError(t, err)
	d, err := Decode(b)
	require.NoError(t, err)
	assert.Equal(t, KindTask, d.Kind)
	assert.Equal(t, m.Files, d.Files)
	assert.Equal(t, "j1", d.JobID)
	assert.Equal(t, "m1", d.TaskID)
	assert.Equal(t, RootTask, d.Parent)
}

// One bad entry fails on its own, with its reason; the message's other files are
// processed (a "size": -1 from a manifest must not hold 99 good files back).
func TestDecodeBadEntries(t *testing.T) {
	d, err := Decode([]byte(`{"v":1,"job_id":"j","task_id":"m1","parent":"root","parent_run":"r1","files":[
		{"bucket":"b","key":"good-1"},
		{"bucket":"b","key":"neg","size":-1},
		{"bucket":"b"},
		{"bucket":"b","key":"bad-range","range":{"start":5,"end":2}},
		{"bucket":"b","key":"wrong-type","size":"big"},
		{"bucket":"b","key":"both","range":{"start":0,"end":1},"member":{"name":"x"}},
		{"bucket":"b","key":"a.zip","member":{"name":"../../etc/passwd","csize":1,"size":1}},
		{"bucket":"b","key":"` + strings.Repeat("k", 1025) + `"},
		{"bucket":"b","key":"good-2","sequencer":"0A"}]}`))
	require.NoError(t, err)
	assert.Equal(t, []File{{Bucket: "b", Key: "good-1"}, {Bucket: "b", Key: "good-2", Sequencer: "0A"}}, d.Files)
	assert.Equal(t, "r1", d.ParentRun)
	want := map[int]string{1: "negative size -1", 2: "bucket and key are required", 3: "bad range [5, 2)",
		4: "task file 4 is not a file entry", 5: "a byte range and an archive member at once",
		6: `task file 6 (a.zip): archive member: entry "../../etc/passwd": name has a ".." path element`, 7: "key of 1025 bytes is over S3's limit of 1024"}
	require.Len(t, d.Bad, len(want))
	for _, b := range d.Bad {
		assert.Contains(t, b.Err.Error(), want[b.Index], "entry %d", b.Index)
		var inv *InvalidError
		assert.ErrorAs(t, b.Err, &inv)
		assert.Equal(t, "b", b.File.Bucket, "what names the entry is kept")
	}
	assert.Equal(t, "wrong-type", d.Bad[3].File.Key)
}

// A child's id is its content: the same content under the same parent is the same id,
// whatever its position; other content, parent, kind or occurrence is another.
func TestContentID(t *testing.T) {
	a := ContentID("root", "l", []byte("p/a/"), 0)
	assert.Equal(t, a, ContentID("root", "l", []byte("p/a/"), 0))
	assert.Len(t, a, 21)
	assert.Equal(t, "l", a[:1])
	for _, other := range []string{
		ContentID("root", "l", []byte("p/b/"), 0), ContentID("l123", "l", []byte("p/a/"), 0),
		ContentID("root", "m", []byte("p/a/"), 0), ContentID("root", "l", []byte("p/a/"), 1),
	} {
		assert.NotEqual(t, a, other)
	}
}

// S3 events carry the sequencer: events of one key are ordered by it.
func TestDecodeSequencer(t *testing.T) {
	d, err := Decode(readTestdata(t, "s3-put-two-records.json"))
	require.NoError(t, err)
	for _, f := range d.Files {
		assert.NotEmpty(t, f.Sequencer, f.Key)
	}
}

// testdataFiles are the JSON payloads in testdata/.
func testdataFiles(t testing.TB) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

// FuzzDecode: any body either decodes into files S3 could hold — a bucket name, a key
// of at most 1,024 bytes of UTF-8, a safe entry name for an archive member, a sane byte
// range — or fails with an InvalidError whose text says it is an invalid message. It
// never panics. A decoded task message encodes and decodes again to the same files,
// job and task (the dispatcher writes what the worker reads), and each bad entry names
// its place in the message. Seeds: every payload in testdata/ (S3 notifications, SNS-
// wrapped and EventBridge events, task messages) and the bodies of the SQS event there.
func FuzzDecode(f *testing.F) {
	for _, name := range testdataFiles(f) {
		f.Add(readTestdata(f, name))
	}
	var ev struct {
		Records []struct {
			Body string `json:"body"`
		} `json:"Records"`
	}
	require.NoError(f, json.Unmarshal(readTestdata(f, "sqs-event-s3.json"), &ev))
	for _, r := range ev.Records {
		f.Add([]byte(r.Body))
	}
	f.Add([]byte(`{"v":1,"files":[{"bucket":"b","key":"%"}]}`))
	f.Add([]byte(`{"Records":null}`))
	f.Add([]byte(`{"v":1,"job_id":"j","task_id":"m1","files":[{"bucket":"b","key":"a.zip","member":{"name":"../x","csize":1,"size":1}},{"bucket":"b","key":"big","range":{"start":0,"end":9,"part":0}}]}`))
	f.Add([]byte(`{"Records":[{"eventVersion":"3.0","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%C3%28"}}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := Decode(body)
		if err != nil {
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("error is not an InvalidError: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "task: invalid message: ") {
				t.Fatalf("error does not say it is an invalid message: %v", err)
			}
			return
		}
		if d.Kind < KindS3Event || d.Kind > KindTask {
			t.Fatalf("decoded an unknown kind %d", d.Kind)
		}
		if d.Kind == KindTestEvent && len(d.Files) > 0 {
			t.Fatalf("a test event with files: %+v", d.Files)
		}
		if d.Kind != KindTask && (len(d.Bad) > 0 || d.JobID != "") {
			t.Fatalf("an S3 event with bad entries or a job: %+v", d)
		}
		for _, file := range d.Files {
			checkDecodedFile(t, file)
		}
		for _, b := range d.Bad {
			var inv *InvalidError
			if !errors.As(b.Err, &inv) || !strings.Contains(b.Err.Error(), fmt.Sprintf("task file %d", b.Index)) {
				t.Fatalf("bad entry %d: error does not name it: %v", b.Index, b.Err)
			}
		}
		if d.Kind != KindTask {
			return
		}
		// Round trip: what the worker decoded, the dispatcher would encode the same.
		again, err := Decode(mustEncode(t, Message{JobID: d.JobID, TaskID: d.TaskID, Parent: d.Parent, ParentRun: d.ParentRun, Files: d.Files}))
		if err != nil {
			t.Fatalf("a decoded task message does not decode once encoded: %v", err)
		}
		if len(again.Bad) > 0 || !equalFiles(again.Files, d.Files) || again.JobID != d.JobID || again.TaskID != d.TaskID ||
			again.Parent != d.Parent || again.ParentRun != d.ParentRun {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", d, again)
		}
	})
}

// checkDecodedFile fails t unless file is one the worker can process: what Decode
// promises of every file it returns.
func checkDecodedFile(t *testing.T, file File) {
	t.Helper()
	if err := CheckBucket(file.Bucket); err != nil {
		t.Fatalf("decoded a file without a bucket name: %+v: %v", file, err)
	}
	if err := CheckKey(file.Key); err != nil {
		t.Fatalf("decoded a key S3 cannot hold: %+v: %v", file, err)
	}
	if file.Size < 0 {
		t.Fatalf("decoded a negative size: %+v", file)
	}
	if r := file.Range; r != nil && (r.Start < 0 || r.End < r.Start || r.Part < 0) {
		t.Fatalf("decoded a bad range: %+v", *r)
	}
	if m := file.Member; m != nil {
		if err := CheckEntryName(m.Name); err != nil {
			t.Fatalf("decoded an unsafe member name: %v", err)
		}
		if m.Offset < 0 || m.CompressedSize < 0 || m.Size < 0 || file.Range != nil {
			t.Fatalf("decoded a bad member: %+v", file)
		}
	}
}

func mustEncode(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func equalFiles(a, b []File) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if (x.Range == nil) != (y.Range == nil) || (x.Member == nil) != (y.Member == nil) ||
			x.Range != nil && *x.Range != *y.Range || x.Member != nil && *x.Member != *y.Member {
			return false
		}
		x.Range, x.Member, y.Range, y.Member = nil, nil, nil, nil
		if x != y {
			return false
		}
	}
	return true
}
