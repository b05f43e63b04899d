package benchmark

import (
	"bytes"
	"html"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/cost"
)

// sampleReport is a full report with figures of the size the local stack gives.
func sampleReport() *Report {
	return &Report{
		Machine: Machine{
			Cores: 2, CPU: "Intel Xeon", MemoryGiB: 24, GoVersion: "go1.26.8",
			OS: "linux", Arch: "amd64", Date: "2026-11-26", Commit: "3f9c2ab", Dirty: true,
		},
		EndToEnd: []SizeRun{
			{
				Label: "1 KB", SizeBytes: 1 << 10,
				Pipeline:  Throughput{Files: 20000, Seconds: 45.1, FilesPerSec: 443.4, MBPerSec: 0.44, P50ms: 11.2, P99ms: 48.9},
				Raw:       Throughput{Files: 20000, Seconds: 29.6, FilesPerSec: 675.2, MBPerSec: 0.67, P50ms: 44.1, P99ms: 120.3},
				RawBefore: Throughput{FilesPerSec: 650.4},
				RawAfter:  Throughput{FilesPerSec: 700.0},
				WarmUp:    []float64{178.4, 343.8, 556},
				Ratio:     0.6567,
				CPU: &CPUProfile{
					Pipeline: []ProcessCPU{
						{Name: GroupSelf, CPUSeconds: 9.8, Share: 0.109, PerFileMs: 0.49},
						{Name: GroupWorker, CPUSeconds: 22.4, Share: 0.248, PerFileMs: 1.12},
						{Name: GroupDynamoDB, CPUSeconds: 31.2, Share: 0.346, PerFileMs: 1.56},
						{Name: GroupSQS, CPUSeconds: 6.1, Share: 0.068, PerFileMs: 0.31},
						{Name: GroupS3, CPUSeconds: 12.8, Share: 0.142, PerFileMs: 0.64},
						{Name: GroupIdle, CPUSeconds: 7.9, Share: 0.088, PerFileMs: 0.40},
					},
					Raw: []ProcessCPU{
						{Name: GroupSelf, CPUSeconds: 4.2, Share: 0.071, PerFileMs: 0.21},
						{Name: GroupDynamoDB, CPUSeconds: 24.9, Share: 0.421, PerFileMs: 1.25},
						{Name: GroupS3, CPUSeconds: 11.0, Share: 0.186, PerFileMs: 0.55},
						{Name: GroupIdle, CPUSeconds: 18.1, Share: 0.306, PerFileMs: 0.91},
					},
				},
			},
			{
				Label: "100 KB", SizeBytes: 100 << 10,
				Pipeline: Throughput{Files: 5000, Seconds: 14.9, FilesPerSec: 335.6, MBPerSec: 33.6, P50ms: 15.0, P99ms: 61.2},
				Raw:      Throughput{Files: 5000, Seconds: 10.2, FilesPerSec: 490.2, MBPerSec: 49.0, P50ms: 50.3, P99ms: 140.8},
				Ratio:    0.6846,
			},
			{
				Label: "20 MB", SizeBytes: 20 << 20,
				Pipeline: Throughput{Files: 100, Seconds: 21.7, FilesPerSec: 4.61, MBPerSec: 92.2, P50ms: 410.5, P99ms: 902.4, Lost: 1},
				Raw:      Throughput{Files: 100, Seconds: 17.9, FilesPerSec: 5.59, MBPerSec: 111.7, P50ms: 1380.2, P99ms: 2210.9},
				Ratio:    0.8247,
			},
		},
		Concurrency: []ConcurrencyRun{
			{Concurrency: 1, Pipeline: Throughput{FilesPerSec: 96.1, P50ms: 9.8, P99ms: 30.2}, Raw: Throughput{FilesPerSec: 301.7}, RawFiles: 10},
			{Concurrency: 2, Pipeline: Throughput{FilesPerSec: 181.3, P50ms: 10.4, P99ms: 33.0}, Raw: Throughput{FilesPerSec: 480.2}, RawFiles: 20},
			{Concurrency: 4, Pipeline: Throughput{FilesPerSec: 322.9, P50ms: 11.9, P99ms: 41.7}, Raw: Throughput{FilesPerSec: 610.5}, RawFiles: 40},
			{Concurrency: 8, Pipeline: Throughput{FilesPerSec: 431.0, P50ms: 14.2, P99ms: 55.1}, Raw: Throughput{FilesPerSec: 668.8}, RawFiles: 80},
			{Concurrency: 16, Pipeline: Throughput{FilesPerSec: 452.6, P50ms: 21.7, P99ms: 90.4}, Raw: Throughput{FilesPerSec: 671.4}, RawFiles: 160},
		},
		Calls: &CallsSection{
			Files: 200, Stage: "dev", Source: "pkg/worker/itest TestDynamoDBWritesPerFile",
			PerFile: map[string]float64{
				"DynamoDB.UpdateItem": 1.0, "DynamoDB.BatchGetItem": 0.02,
				"S3.GetObject": 1.0, "S3.PutObject": 1.0, "SQS.ReceiveMessage": 0.025,
			},
			FileflowUSDPerMillion: 3.87,
			NaiveUSDPerMillion:    9.41,
			FileflowLines: []CostLine{
				{Service: cost.LambdaRequests, USD: 0.02}, {Service: cost.LambdaCompute, USD: 1.12},
				{Service: cost.SQSRequests, USD: 0.08}, {Service: cost.DynamoWrites, USD: 1.27},
				{Service: cost.DynamoReads, USD: 0.0032}, {Service: cost.S3Gets, USD: 0.40},
				{Service: cost.Logs, USD: 0.98},
			},
			NaiveLines: []CostLine{
				{Service: cost.LambdaRequests, USD: 0.20}, {Service: cost.LambdaCompute, USD: 2.25},
				{Service: cost.SQSRequests, USD: 0.80}, {Service: cost.DynamoWrites, USD: 3.81},
				{Service: cost.DynamoReads, USD: 0.0}, {Service: cost.S3Gets, USD: 0.40},
				{Service: cost.Logs, USD: 1.95}, {Service: cost.SNS, USD: 0.5},
			},
		},
		Overhead: &Overhead{
			Runs:            6,
			NsPerFile:       []float64{17752, 19682, 20342, 20995, 21506, 23980},
			MedianNsPerFile: 20668.5, FilesPerSecPerCore: 48383, AllocsPerFile: 89.6, BytesPerFile: 9012,
		},
		ColdStarts: []ColdStart{
			{Function: "worker", ZipBytes: 9_412_301, InitMs: []float64{21.4, 22.9, 24.1}, MedianMs: 22.9},
			{Function: "dispatcher", ZipBytes: 8_102_774, InitMs: []float64{19.8, 20.1, 23.3}, MedianMs: 20.1},
			{Function: "reconciler", ZipBytes: 12_880_100, InitMs: []float64{33.0, 35.2, 36.8}, MedianMs: 35.2},
		},
		FanOut: &FanOut{
			Manifest: FanOutRun{Keys: 1_000_000, PlanSeconds: 4.81, Messages: 100_000, PeakHeapMiB: 38.2,
				JobSeconds: 1812.4, JobStatus: "succeeded", DispatcherPeakMiB: 61.5},
			Prefix: FanOutRun{Keys: 100_000, PlanSeconds: 2.07, Messages: 10_000, PeakHeapMiB: 12.9,
				Note: "job not run: the local stack's S3 lists 1,000 keys a page slower than the job timeout"},
		},
		Goals: []Goal{
			{What: "pipeline files/s vs raw loop, 1 KB", Target: "≥ 0.80×", Measured: "0.66×", Met: false},
			{What: "DynamoDB writes per file", Target: "≤ 1.1", Measured: "1.00", Met: true},
			{What: "cold start, median init", Target: "≤ 30 ms", Measured: "35.2 ms (reconciler)", Met: false},
			{What: "files lost", Target: "0", Measured: "1 (20 MB)", Met: false},
		},
		Seconds: 2431.7,
	}
}

// emptyReport has the machine and goals but none of the sections.
func emptyReport() *Report {
	r := sampleReport()
	r.EndToEnd = nil
	r.Concurrency = []ConcurrencyRun{}
	r.Calls = nil
	r.Overhead = nil
	r.ColdStarts = nil
	r.FanOut = nil
	return r
}

var allFigures = []string{"e2e.svg", "concurrency.svg", "cost.svg", "coldstart.svg", "cpu.svg"}

func TestWriteDocs(t *testing.T) {
	r := sampleReport()
	dir := t.TempDir()
	md := filepath.Join(dir, "docs", "benchmarks.md")
	figDir := filepath.Join(dir, "docs", "benchmarks")
	require.NoError(t, WriteDocs(r, md, figDir))

	caption := html.EscapeString(r.Machine.Caption())
	require.Contains(t, caption, "2 cores, go1.26.8, 2026-11-26, commit 3f9c2ab+changes")
	for _, name := range allFigures {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(figDir, name))
			require.NoError(t, err)
			require.NotEmpty(t, b)
			assert.True(t, bytes.HasPrefix(b, []byte("<?xml")) || bytes.HasPrefix(b, []byte("<svg")),
				"%s starts with %q", name, b[:min(len(b), 20)])
			assert.Contains(t, string(b), caption)
			assert.True(t, bytes.HasSuffix(bytes.TrimSpace(b), []byte("</svg>")))
		})
	}

	if out := os.Getenv("FILEFLOW_BENCH_SAMPLE_DOCS"); out != "" {
		// To look at the sample page and charts: FILEFLOW_BENCH_SAMPLE_DOCS=/tmp/x go test -run TestWriteDocs
		require.NoError(t, WriteDocs(r, filepath.Join(out, "benchmarks.md"), filepath.Join(out, "benchmarks")))
	}

	page, err := os.ReadFile(md)
	require.NoError(t, err)
	for _, name := range allFigures {
		assert.Contains(t, string(page), "](benchmarks/"+name+")", "the page links %s relative to itself", name)
	}
}

func TestFiguresContent(t *testing.T) {
	r := sampleReport()
	figs, err := Figures(r)
	require.NoError(t, err)
	byName := map[string]string{}
	for _, f := range figs {
		byName[f.Name] = string(f.SVG)
	}
	require.Len(t, byName, len(allFigures))

	// Each size's panel title names the label and the ratio.
	for _, want := range []string{"1 KB (0.66×)", "100 KB (0.68×)", "20 MB (0.82×)"} {
		assert.Contains(t, byName["e2e.svg"], want)
	}
	for _, tick := range []string{">1<", ">2<", ">4<", ">8<", ">16<"} {
		assert.Contains(t, byName["concurrency.svg"], tick)
	}
	assert.Contains(t, byName["cost.svg"], html.EscapeString(cost.DynamoWrites))
	assert.Contains(t, byName["cost.svg"], html.EscapeString(cost.SNS), "a naive-only service still has its bars")
	assert.Contains(t, byName["coldstart.svg"], "9.4 MB zip")
	assert.Contains(t, byName["coldstart.svg"], "goal: 30 ms")
	assert.Contains(t, byName["cpu.svg"], "raw loop")
	assert.Contains(t, byName["cpu.svg"], "1 KB files")
}

func TestFiguresDeterministic(t *testing.T) {
	a, err := Figures(sampleReport())
	require.NoError(t, err)
	b, err := Figures(sampleReport())
	require.NoError(t, err)
	require.Len(t, b, len(a))
	for i := range a {
		assert.Equal(t, a[i].Name, b[i].Name)
		assert.True(t, bytes.Equal(a[i].SVG, b[i].SVG), "%s differs between two renders", a[i].Name)
	}

	// And through the files WriteDocs writes.
	r := sampleReport()
	d1, d2 := t.TempDir(), t.TempDir()
	require.NoError(t, WriteDocs(r, filepath.Join(d1, "b.md"), filepath.Join(d1, "fig")))
	require.NoError(t, WriteDocs(r, filepath.Join(d2, "b.md"), filepath.Join(d2, "fig")))
	for _, name := range append([]string{"../b.md"}, allFigures...) {
		x, err := os.ReadFile(filepath.Join(d1, "fig", name))
		require.NoError(t, err)
		y, err := os.ReadFile(filepath.Join(d2, "fig", name))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(x, y), "%s differs between two writes", name)
	}
}

func TestMarkdown(t *testing.T) {
	r := sampleReport()
	md := Markdown(r, "benchmarks")

	assert.Contains(t, md, "`make bench`")
	assert.Contains(t, md, "2,432 s (40.5 min)")
	assert.Contains(t, md, r.Machine.Caption())
	for _, g := range r.Goals {
		assert.Contains(t, md, g.Measured)
		assert.Contains(t, md, g.What)
	}
	assert.Contains(t, md, "| cold start, median init | ≤ 30 ms | 35.2 ms (reconciler) | ✗ missed |")
	assert.Contains(t, md, "| DynamoDB writes per file | ≤ 1.1 | 1.00 | ✓ |")
	assert.Contains(t, md, "1 of 4 goals met")
	for _, s := range r.EndToEnd {
		assert.Contains(t, md, "| "+s.Label+" |")
	}
	for _, name := range allFigures {
		assert.Contains(t, md, "](benchmarks/"+name+")")
	}
	// Numbers as the report has them, formatted.
	for _, want := range []string{
		"| 1 KB | 20,000 | 443 | 675 | 650 / 700 | 0.66 |", // files/s to 0 decimals, ratio to 2
		"Warm-up passes before the 1 KB run, raw loop files/s: 178, 344, 556.",
		"11.2 / 48.9", // ms to 1 decimal
		"| DynamoDB Local (Java) | 31.20 | 34.6% | 1.56 | 24.90 | 42.1% | 1.25 |",
		"| worker functions | 22.40 | 24.8% | 1.12 | — | — | — |", // absent from the raw loop
		"| **total, idle excluded** | 82.30 | 91.3% | 4.12 | 40.10 | 67.8% | 2.01 |",
		"| 16 | 453 |",
		"| DynamoDB.BatchGetItem | 0.020 |",
		"| " + cost.DynamoReads + " | $0.0032 | $0 |",
		"**$3.87**", "**$9.41**",
		"| 6 | 17,752 · 19,682",
		"| reconciler | 12.9 | 33.0 · 35.2 · 36.8 | 35.2 | ✗ over |",
		"| manifest | 1,000,000 | 4.81 | 100,000 | 38.2 | 1,812.4 | succeeded | 61.5 |",
		"| prefix tree | 100,000 | 2.07 | 10,000 | 12.9 | not run | — | — |",
		"job not run: the local stack",
	} {
		assert.Contains(t, md, want)
	}
	assert.NotContains(t, md, "not measured")
	for _, bad := range []string{"TODO", "TBD", "NaN", "%!"} {
		assert.NotContains(t, md, bad)
	}
}

func TestEmptySections(t *testing.T) {
	r := emptyReport()
	figs, err := Figures(r)
	require.NoError(t, err)
	assert.Empty(t, figs)

	dir := t.TempDir()
	figDir := filepath.Join(dir, "fig")
	require.NoError(t, os.MkdirAll(figDir, 0o755))
	stale := filepath.Join(figDir, "e2e.svg")
	require.NoError(t, os.WriteFile(stale, []byte("<svg/>"), 0o644))

	mdPath := filepath.Join(dir, "benchmarks.md")
	require.NoError(t, WriteDocs(r, mdPath, figDir))
	_, err = os.Stat(stale)
	assert.ErrorIs(t, err, os.ErrNotExist, "a figure of a section not measured is removed")

	b, err := os.ReadFile(mdPath)
	require.NoError(t, err)
	md := string(b)
	// Sections 1 to 6.
	assert.Equal(t, 6, strings.Count(md, "not measured"), md)
	assert.NotContains(t, md, "![", "no image link without its figure")
	assert.NotContains(t, md, ".svg")
	assert.Contains(t, md, "✗ missed")
	for _, bad := range []string{"TODO", "TBD"} {
		assert.NotContains(t, md, bad)
	}

	// A size without a CPU profile still draws e2e.svg but no cpu.svg.
	r.EndToEnd = sampleReport().EndToEnd[1:]
	figs, err = Figures(r)
	require.NoError(t, err)
	require.Len(t, figs, 1)
	assert.Equal(t, "e2e.svg", figs[0].Name)
	md = Markdown(r, "fig")
	assert.Contains(t, md, "](fig/e2e.svg)")
	assert.NotContains(t, md, "cpu.svg")
}

// TestFiguresDegenerate: data gonum cannot put on a log axis, a single point or nothing
// but zeros still draw, and data no chart can hold is an error, not a panic.
func TestFiguresDegenerate(t *testing.T) {
	r := emptyReport()
	r.EndToEnd = []SizeRun{{Label: "1 KB"}}
	r.Concurrency = []ConcurrencyRun{{Concurrency: 4}}
	r.ColdStarts = []ColdStart{{Function: "worker"}}
	r.Calls = &CallsSection{FileflowLines: []CostLine{{Service: cost.SNS}}}
	figs, err := Figures(r)
	require.NoError(t, err)
	assert.Len(t, figs, 4)

	r.Concurrency = []ConcurrencyRun{{Concurrency: 0}, {Concurrency: 2}}
	_, err = Figures(r)
	require.NoError(t, err, "a concurrency of 0 falls back to a linear axis")

	r.EndToEnd[0].Pipeline.FilesPerSec = math.NaN()
	_, err = Figures(r)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "benchmark: render e2e.svg")
}

func TestFmtFloat(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		prec int
		want string
	}{
		{0, 0, "0"},
		{443.4, 0, "443"},
		{1234567.891, 1, "1,234,567.9"},
		{-1234.5, 0, "-1,234"},
		{-0.04, 1, "0.0"},
		{999.96, 1, "1,000.0"},
	} {
		assert.Equal(t, tc.want, fmtFloat(tc.v, tc.prec), "%v to %d", tc.v, tc.prec)
	}
}

func TestNilReport(t *testing.T) {
	_, err := Figures(nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "benchmark:")
	assert.Error(t, WriteDocs(nil, filepath.Join(t.TempDir(), "b.md"), t.TempDir()))
	assert.Empty(t, Markdown(nil, "fig"))
}
