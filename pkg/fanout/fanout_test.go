package fanout

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/meter"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

func readAll(t *testing.T, in string, f Format) ([]task.File, []string) {
	t.Helper()
	var files []task.File
	var bad []string
	err := Read(strings.NewReader(in), f, "default-bucket", func(fl task.File) error {
		files = append(files, fl)
		return nil
	}, func(e *EntryError) error {
		bad = append(bad, e.Error())
		return nil
	})
	require.NoError(t, err)
	return files, bad
}

// S3 Batch Operations manifests: bucket,key[,versionId], URL-encoded keys, quoted fields.
func TestReadCSV(t *testing.T) {
	in := "in,plain.txt\n" +
		`in,"with%2C comma+and space.csv",v1` + "\n" +
		"in,caf%C3%A9/r%C3%A9sum%C3%A9.pdf\n" +
		"in,1%2B1%3D2.txt\n" +
		"only-one-field\n" +
		"in,bad%zz\n" +
		",no-bucket.txt\n"
	files, bad := readAll(t, in, FormatCSV)
	assert.Equal(t, []task.File{
		{Bucket: "in", Key: "plain.txt"},
		{Bucket: "in", Key: "with, comma and space.csv", VersionID: "v1"},
		{Bucket: "in", Key: "café/résumé.pdf"},
		{Bucket: "in", Key: "1+1=2.txt"},
		{Bucket: "default-bucket", Key: "no-bucket.txt"},
	}, files)
	require.Len(t, bad, 2)
	assert.Contains(t, bad[0], "entry 5: want bucket,key[,versionId], got 1 field(s)")
	assert.Contains(t, bad[1], "entry 6: key \"bad%zz\" is not URL-encoded")
}

func TestReadJSON(t *testing.T) {
	files, bad := readAll(t, `[{"bucket":"b","key":"a b.txt","etag":"e1"},{"key":"k2","size":3}]`, FormatJSONArray)
	assert.Empty(t, bad)
	assert.Equal(t, []task.File{{Bucket: "b", Key: "a b.txt", ETag: "e1"}, {Bucket: "default-bucket", Key: "k2", Size: 3}}, files)

	files, bad = readAll(t, "{\"bucket\":\"b\",\"key\":\"x\"}\n\nnot json\n{\"bucket\":\"b\"}\n", FormatJSONLines)
	assert.Equal(t, []task.File{{Bucket: "b", Key: "x"}}, files)
	require.Len(t, bad, 2)
	assert.Contains(t, bad[0], "entry 3: not a JSON object")
	assert.Contains(t, bad[1], "entry 4: no key")
}

func TestDetectFormat(t *testing.T) {
	assert.Equal(t, FormatCSV, DetectFormat("m/manifest.CSV", nil))
	assert.Equal(t, FormatJSONLines, DetectFormat("m.jsonl", nil))
	assert.Equal(t, FormatJSONArray, DetectFormat("m.json", nil))
	assert.Equal(t, FormatJSONArray, DetectFormat("m", []byte("  [{")))
	assert.Equal(t, FormatJSONLines, DetectFormat("m", []byte(`{"key":1}`)))
	assert.Equal(t, FormatCSV, DetectFormat("m", []byte("b,k")))
}

// Packed messages decode as task messages, stay under the size limit and keep every file
// in order.
func TestPacker(t *testing.T) {
	var got []task.File
	var sizes []int
	p := &Packer{JobID: "job-1", MaxBytes: 1024, Emit: func(body []byte, n int) error {
		sizes = append(sizes, len(body))
		d, err := task.Decode(body)
		require.NoError(t, err)
		require.Len(t, d.Files, n)
		assert.Equal(t, "job-1", d.JobID)
		got = append(got, d.Files...)
		return nil
	}}
	var want []task.File
	for i := range 200 {
		f := task.File{Bucket: "in", Key: fmt.Sprintf("dir/%04d \"quoted\" ü.txt", i), ETag: "abc", Size: int64(i)}
		want = append(want, f)
		require.NoError(t, p.Add(f))
	}
	require.NoError(t, p.Flush())
	assert.Equal(t, want, got)
	for _, s := range sizes {
		assert.LessOrEqual(t, s, 1024)
	}
	assert.Greater(t, p.Messages, 10)
	assert.Equal(t, 200, p.Files)

	err := (&Packer{MaxBytes: 100, Emit: p.Emit}).Add(task.File{Bucket: "b", Key: strings.Repeat("k", 200)})
	assert.ErrorContains(t, err, "larger than a task message")
}

func planManifest(t testing.TB, n int) (files, messages int) {
	p := &Packer{JobID: "bench", Emit: func([]byte, int) error { return nil }}
	err := Read(SyntheticCSV(n), FormatCSV, "", p.Add, func(e *EntryError) error { return e })
	require.NoError(t, err)
	require.NoError(t, p.Flush())
	return p.Files, p.Messages
}

// Reading a 1,000,000-key manifest into task messages stays in bounded memory (the target is
// <= 100 MB); its time is measured by BenchmarkPlanManifest1M, not asserted.
func TestPlanManifestMemory(t *testing.T) {
	start := time.Now()
	var files, messages int
	peak := meter.PeakHeapGrowth(func() { files, messages = planManifest(t, 1_000_000) })
	t.Logf("1,000,000 keys -> %d messages in %s; peak live heap growth %.1f MiB", messages, time.Since(start).Round(time.Millisecond), float64(peak)/(1<<20))
	assert.Equal(t, 1_000_000, files)
	assert.Less(t, peak, uint64(100<<20))
}

func BenchmarkPlanManifest1M(b *testing.B) {
	for range b.N {
		planManifest(b, 1_000_000)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/manifest")
}

// Each bad row of a manifest is a bad entry naming its line (blank lines counted, a
// byte order mark skipped) or element, saying why; the other rows run. Rows S3 could
// not hold — a key that is not UTF-8 once decoded, over 1,024 bytes, a bucket that is no
// bucket name — are bad entries, not tasks that would fail later.
func TestReadManifestBadRows(t *testing.T) {
	csvIn := "\ufeffin,a.txt\n\nin,caf%E9.txt\nin/other,k\nin," + strings.Repeat("k", 1025) + "\n\r\nin,\"b\nc\"x\nin,last.txt\n"
	files, bad := readAll(t, csvIn, FormatCSV)
	assert.Equal(t, []task.File{{Bucket: "in", Key: "a.txt"}, {Bucket: "in", Key: "last.txt"}}, files)
	require.Len(t, bad, 4)
	assert.Contains(t, bad[0], `manifest entry 3: key "caf\xe9.txt" is not valid UTF-8`)
	assert.Contains(t, bad[1], `manifest entry 4: bucket name "in/other" has '/'`)
	assert.Contains(t, bad[2], "manifest entry 5: key of 1025 bytes is over S3's limit of 1024")
	assert.Contains(t, bad[3], "manifest entry 7: extraneous or missing \" in quoted-field (the record runs from line 7 to line 8, column 2)")

	files, bad = readAll(t, `[{"key":"a"},{"key":5},7,{"bucket":"a/b","key":"x"},{"key":"b"}]`, FormatJSONArray)
	assert.Equal(t, []task.File{{Bucket: "default-bucket", Key: "a"}, {Bucket: "default-bucket", Key: "b"}}, files)
	require.Len(t, bad, 3)
	assert.Contains(t, bad[0], "manifest entry 2: not a JSON object of bucket, key, version_id, etag, size: json: cannot unmarshal number")
	assert.Contains(t, bad[1], "manifest entry 3: not a JSON object")
	assert.Contains(t, bad[2], `manifest entry 4: bucket name "a/b"`)

	for in, want := range map[string]string{
		`[{"key":"a"},{"key":"b"},`:               "manifest entry 3: the JSON array ends inside element 3: the manifest may be cut short",
		`[{"key":"a"},{"key":"b"},{"k`:            "manifest entry 3: the JSON array ends inside element 3: the manifest may be cut short",
		`[{"key":"a"},{"key":"b"}`:                "manifest entry 3: the JSON array ends without its ']' after 2 elements: the manifest may be cut short",
		`[{"key":"a"},{"key":"b"}] [{"key":"c"}]`: "manifest entry 3: more after the JSON array, which ends at byte 25: ignored",
	} {
		files, bad = readAll(t, in, FormatJSONArray)
		assert.Equal(t, []task.File{{Bucket: "default-bucket", Key: "a"}, {Bucket: "default-bucket", Key: "b"}}, files, in)
		assert.Equal(t, []string{want}, bad, in)
	}
}

// A manifest that cannot be read past a point fails for good, naming where: the job
// fails at once with the reason instead of retrying its fan-out task.
func TestReadManifestUnreadableIsPermanent(t *testing.T) {
	nop := func(task.File) error { return nil }
	nopBad := func(*EntryError) error { return nil }
	for _, tc := range []struct {
		in   string
		f    Format
		want string
	}{
		{"in,a.txt\n", FormatJSONArray, "a JSON manifest must be an array of objects"},
		{`[{"key":"a"} {"key":"b"}]`, FormatJSONArray, "element 2, at byte 13: expected comma after array element"},
		{strings.Repeat("x", 5<<20), FormatJSONLines, "line 1 is over 4194304 bytes"},
	} {
		err := Read(strings.NewReader(tc.in), tc.f, "b", nop, nopBad)
		require.ErrorContains(t, err, "fanout: read manifest: "+tc.want)
		assert.Equal(t, retry.Permanent, retry.Classify(err), tc.want)
	}
	// A body cut by the connection is not the manifest's fault: retried.
	err := Read(io.MultiReader(strings.NewReader(`[{"key":"a"},{"ke`), iotest.ErrReader(io.ErrUnexpectedEOF)), FormatJSONArray, "b", nop, nopBad)
	require.Error(t, err)
	assert.Equal(t, retry.Retryable, retry.Classify(err))
}
