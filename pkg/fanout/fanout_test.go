package fanout

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/meter"
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

// manifestReader generates an n-line S3 Batch Operations CSV on the fly (no storage).
type manifestReader struct {
	n, i int
	buf  bytes.Buffer
}

func (m *manifestReader) Read(p []byte) (int, error) {
	for m.buf.Len() < len(p) && m.i < m.n {
		fmt.Fprintf(&m.buf, "ingest-bucket,data/%03d/file%%20%07d.csv\n", m.i%1000, m.i)
		m.i++
	}
	if m.buf.Len() == 0 {
		return 0, io.EOF
	}
	return m.buf.Read(p)
}

func planManifest(t testing.TB, n int) (files, messages int) {
	p := &Packer{JobID: "bench", Emit: func([]byte, int) error { return nil }}
	err := Read(&manifestReader{n: n}, FormatCSV, "", p.Add, func(e *EntryError) error { return e })
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
