package workload

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/pipeline"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"100KB": 100_000, "100KiB": 102_400, "1.5MB": 1_500_000, "2GiB": 2 << 30,
		"512B": 512, "4096": 4096, " 10 kb ": 10_000, "1M": 1_000_000} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "KB", "-1KB", "ten", "1e400", "1e30", "8EiB", "9.3e18"} {
		_, err := ParseSize(in)
		assert.Error(t, err, in)
	}
}

func TestParseCount(t *testing.T) {
	for in, want := range map[string]int64{"1e6": 1_000_000, "1000000": 1_000_000, "1_000_000": 1_000_000, "1,000": 1000, "2.5e3": 2500} {
		got, err := ParseCount(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"1.5", "-3", "x", "1e16"} {
		_, err := ParseCount(in)
		assert.Error(t, err, in)
	}
}

func TestNewStage(t *testing.T) {
	s, err := NewStage("dev", pipeline.Args{}, []string{"dispatch", "worker"},
		map[string]int{TypeAlarm: 14, TypeDashboard: 1, "aws:cloudwatch/eventRule:EventRule": 1})
	require.NoError(t, err)
	assert.Equal(t, pipeline.DefaultFunction.MemoryMB, s.Worker.MemoryMB)
	assert.Equal(t, 50, s.Worker.ReservedConcurrency, "defaults to the mapping's maximum")
	require.NotNil(t, s.Dispatch)
	assert.Equal(t, "auto", s.DuplicateCheck)
	assert.False(t, s.Checks(Events), "auto: S3 events are read only when redelivered")
	assert.True(t, s.Checks(Job), "auto: a job's files are read first")
	assert.Equal(t, DefaultParallel, s.Parallel)
	assert.Equal(t, int64(8<<20), s.PartSizeBytes)
	assert.Equal(t, 14, s.Alarms)
	assert.Equal(t, 1, s.Dashboards)
	assert.Equal(t, 1, s.Schedules)

	s, err = NewStage("x", pipeline.Args{DuplicateCheck: "redelivery", Functions: map[string]pipeline.FunctionArgs{
		"worker": {Env: map[string]string{fnenv.Concurrency: "16", fnenv.PartSizeMB: "16"}}}}, []string{"worker"}, nil)
	require.NoError(t, err)
	assert.Nil(t, s.Dispatch)
	assert.Equal(t, 16, s.Parallel)
	assert.Equal(t, int64(16<<20), s.PartSizeBytes)
	assert.Equal(t, "redelivery", s.DuplicateCheck)

	_, err = NewStage("x", pipeline.Args{Functions: map[string]pipeline.FunctionArgs{
		"worker": {Env: map[string]string{fnenv.Concurrency: "many"}}}}, []string{"worker"}, nil)
	assert.ErrorContains(t, err, "FILEFLOW_CONCURRENCY")
}

func TestShapes(t *testing.T) {
	s, err := NewStage("dev", pipeline.Args{}, []string{"worker"}, nil)
	require.NoError(t, err)
	w := Workload{Files: 1}.WithDefaults()
	assert.Equal(t, 1, w.FilesPerMessage())
	assert.Equal(t, S3EventBytes, w.MessageBytes())
	assert.Equal(t, 10, w.FilesPerInvocation(s))
	assert.Equal(t, 100*time.Millisecond, w.InvocationTime(s), "auto, S3 events: 2 waves of 8 × 50 ms")
	s.DuplicateCheck = "always"
	assert.Equal(t, 110*time.Millisecond, w.InvocationTime(s), "2 waves of 8 × 50 ms + 10 ms")
	s.DuplicateCheck = "redelivery"
	assert.Equal(t, 100*time.Millisecond, w.InvocationTime(s))

	w.Path = Job
	assert.Equal(t, 100, w.FilesPerMessage())
	assert.Equal(t, job.DefaultFilesPerTask, DefaultFilesPerTask)
	assert.Equal(t, 200+100*190, w.MessageBytes())
	assert.Equal(t, 1000, w.FilesPerInvocation(s))

	assert.Equal(t, int64(1), OutputRequests(100_000, 8<<20))
	assert.Equal(t, int64(1), OutputRequests(8<<20, 8<<20))
	assert.Equal(t, int64(2+2), OutputRequests(8<<20+1, 8<<20), "2 parts + create + complete")
}

func TestValidate(t *testing.T) {
	assert.NoError(t, Workload{Files: 1}.WithDefaults().Validate())
	err := Workload{Files: 0, SizeBytes: -1, Path: "ftp", FilesPerTask: 5000, FileTime: -1, RecordBytes: 0}.Validate()
	for _, want := range []string{"files = 0", "size = -1", `path = "ftp"`, "files per task = 5000", "file time", "record bytes = 0"} {
		assert.ErrorContains(t, err, want)
	}
}
