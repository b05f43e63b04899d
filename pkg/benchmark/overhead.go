package benchmark

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// overheadBatch is BenchmarkHandlePerFile's files per batch (one op).
const overheadBatch = 10

// WorkerOverhead is section 4: `BenchmarkHandlePerFile` (the worker's orchestration with
// in-memory fakes) run `runs` times on one core (-cpu 1), its ns per file, the median,
// and the allocations per file.
func WorkerOverhead(ctx context.Context, goCmd, moduleDir string, runs int) (*Overhead, error) {
	cmd := exec.CommandContext(ctx, goCmd, "test", "-run", "^$", "-bench", "^BenchmarkHandlePerFile$", "-benchmem", "-cpu", "1",
		"-count", strconv.Itoa(runs), "./pkg/worker/")
	cmd.Dir = moduleDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("benchmark: worker overhead: %w\n%s", err, out)
	}
	return parseOverhead(out)
}

// parseOverhead reads `go test -bench` lines such as
//
//	BenchmarkHandlePerFile   6000   201234 ns/op   20123 ns/file   49694 files/s   90123 B/op   896 allocs/op
func parseOverhead(out []byte) (*Overhead, error) {
	o := &Overhead{}
	var allocs, bytesOp []float64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "BenchmarkHandlePerFile") {
			continue
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/file":
				o.NsPerFile = append(o.NsPerFile, v)
			case "allocs/op":
				allocs = append(allocs, v/overheadBatch)
			case "B/op":
				bytesOp = append(bytesOp, v/overheadBatch)
			}
		}
	}
	if len(o.NsPerFile) == 0 {
		return nil, fmt.Errorf("benchmark: worker overhead: no ns/file in the benchmark's output:\n%s", out)
	}
	o.Runs = len(o.NsPerFile)
	o.MedianNsPerFile = round(Median(o.NsPerFile), 0)
	o.FilesPerSecPerCore = round(1e9/o.MedianNsPerFile, 0)
	if len(allocs) > 0 {
		o.AllocsPerFile = round(Median(allocs), 1)
	}
	if len(bytesOp) > 0 {
		o.BytesPerFile = round(Median(bytesOp), 0)
	}
	return o, nil
}

// Median is the middle value (the mean of the two middle ones for an even count).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
