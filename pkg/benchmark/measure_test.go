package benchmark

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatTicksReadsUtimeStimeAndParent(t *testing.T) {
	// A command name with spaces and a parenthesis, as /proc allows.
	line := []byte("4242 (my (odd) proc) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 123 456 789")
	ticks, ppid, ok := statTicks(line)
	require.True(t, ok)
	assert.Equal(t, 287.0, ticks)
	assert.Equal(t, 17, ppid)
	_, _, ok = statTicks([]byte("4242 (cut"))
	assert.False(t, ok)
}

func TestClassifyNamesTheStacksProcesses(t *testing.T) {
	for cmd, want := range map[string]string{
		"/tmp/fileflow-dev-1/worker/bootstrap":                                      GroupWorker,
		"/tmp/fileflow-dev-1/dispatch/bootstrap":                                    GroupDispatch,
		"java\x00-cp\x00/c/dynamodb-local/DynamoDBLocal.jar\x00Main":                GroupDynamoDB,
		"/c/node\x00/c/fauxqs-2.4.1/fauxqs-server.mjs\x0045251":                     GroupSQS,
		"/c/versitygw-v1.8.0/bin/versitygw\x00--port\x00127.0.0.1:1\x00posix\x00/d": GroupS3,
		"/usr/bin/bash\x00-c\x00true":                                               GroupOther,
	} {
		assert.Equal(t, want, classify(2, 1, []byte(cmd+"\x00")), cmd)
	}
	assert.Equal(t, GroupSelf, classify(1, 1, []byte("/tmp/fileflow\x00bench")))
}

func TestDescendsFollowsParents(t *testing.T) {
	parent := map[int]int{10: 5, 5: 1, 7: 3, 3: 3}
	assert.True(t, descends(10, 1, parent))
	assert.True(t, descends(1, 1, parent))
	assert.False(t, descends(7, 1, parent)) // a loop, not a descendant
	assert.False(t, descends(99, 1, parent))
}

func TestCPULinesShareAndPerFile(t *testing.T) {
	lines := cpuLines(map[string]float64{GroupWorker: 10, GroupDynamoDB: 4, GroupIdle: 6}, 10, 1000, 2)
	require.Len(t, lines, 3)
	assert.Equal(t, ProcessCPU{Name: GroupWorker, CPUSeconds: 10, Share: 0.5, PerFileMs: 10}, lines[0])
	assert.Equal(t, GroupDynamoDB, lines[1].Name)
	assert.Equal(t, 0.2, lines[1].Share)
	assert.Equal(t, GroupIdle, lines[2].Name)
	assert.Equal(t, GroupWorker, Busiest(lines))
}

// The meter sees a child process's CPU time as the stack's: a busy child started after
// StartCPU is counted in its group (here "other", as a shell), the idle time is positive.
func TestCPUMeterCountsAChildsTime(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	m, err := StartCPU()
	require.NoError(t, err)
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 0.2")
	require.NoError(t, cmd.Start())
	time.Sleep(100 * time.Millisecond)
	var lines []ProcessCPU
	// Sample while the child still lives (it sleeps at the end; then a zombie until Wait).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if lines, err = m.Stop(1, 2); err != nil || len(lines) > 0 && cpuOf(lines, GroupOther) > 0.05 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, err)
	require.NoError(t, cmd.Wait())
	assert.Greater(t, cpuOf(lines, GroupOther), 0.05, "the child's busy loop: %+v", lines)
}

func cpuOf(lines []ProcessCPU, group string) float64 {
	for _, l := range lines {
		if l.Name == group {
			return l.CPUSeconds
		}
	}
	return 0
}

func TestParseOverhead(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkHandlePerFile   	    6000	    201000 ns/op	     20100 ns/file	     49751 files/s	   90000 B/op	     896 allocs/op
BenchmarkHandlePerFile   	    6000	    190000 ns/op	     19000 ns/file	     52631 files/s	   91000 B/op	     900 allocs/op
BenchmarkHandlePerFile   	    6000	    250000 ns/op	     25000 ns/file	     40000 files/s	   92000 B/op	     910 allocs/op
PASS
`)
	o, err := parseOverhead(out)
	require.NoError(t, err)
	assert.Equal(t, 3, o.Runs)
	assert.Equal(t, 20100.0, o.MedianNsPerFile)
	assert.Equal(t, 49751.0, o.FilesPerSecPerCore)
	assert.Equal(t, 90.0, o.AllocsPerFile)
	assert.Equal(t, 9100.0, o.BytesPerFile)
	_, err = parseOverhead([]byte("FAIL\n"))
	assert.ErrorContains(t, err, "no ns/file")
}

// The raw loop's figure is the mean of its runs before and after the pipeline's, and so
// is its CPU, group by group (a group seen in one run only counts zero in the other).
func TestBracketIsTheMeanOfTheRunsBeforeAndAfter(t *testing.T) {
	r := bracket(Throughput{Files: 100, Seconds: 2, FilesPerSec: 400, MBPerSec: 4, P50ms: 10, P99ms: 30},
		Throughput{Files: 100, Seconds: 1, FilesPerSec: 600, MBPerSec: 6, P50ms: 20, P99ms: 50})
	assert.Equal(t, Throughput{Files: 100, Seconds: 1.5, FilesPerSec: 500, MBPerSec: 5, P50ms: 15, P99ms: 40}, r)

	cpu := meanCPU([]ProcessCPU{{Name: "a", CPUSeconds: 2, Share: 0.2, PerFileMs: 1}, {Name: "b", CPUSeconds: 1, Share: 0.1, PerFileMs: 0.5}},
		[]ProcessCPU{{Name: "b", CPUSeconds: 3, Share: 0.3, PerFileMs: 1.5}, {Name: "c", CPUSeconds: 4, Share: 0.4, PerFileMs: 2}})
	assert.Equal(t, []ProcessCPU{
		{Name: "a", CPUSeconds: 1, Share: 0.1, PerFileMs: 0.5},
		{Name: "b", CPUSeconds: 2, Share: 0.2, PerFileMs: 1},
		{Name: "c", CPUSeconds: 2, Share: 0.2, PerFileMs: 1},
	}, cpu)
}
