package job

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/source"
)

func TestParseSpecReportsEveryProblem(t *testing.T) {
	_, err := ParseSpec([]byte(`{"kind":"zip","parts":3,"tolerate":"lots","shards":120,"id":"a b"}`))
	require.Error(t, err)
	for _, want := range []string{`kind "zip"`, "bucket: required", "parts: only for split jobs", `tolerate "lots"`, "shards = 120", `id "a b"`} {
		assert.ErrorContains(t, err, want)
	}
	_, err = ParseSpec([]byte(`{"kind":"prefix","bucket":"b","prefx":"p"}`))
	assert.ErrorContains(t, err, `unknown field "prefx"`)
	s, err := ParseSpec([]byte(`{"kind":"split","bucket":"b","key":"big.jsonl","parts":8,"tolerate":"1%"}`))
	require.NoError(t, err)
	assert.Equal(t, DefaultShards, s.Shards)
	assert.Equal(t, DefaultFilesPerTask, s.FilesPerTask)
	assert.Equal(t, "s3://b/big.jsonl", s.Source())
}

func TestTolerance(t *testing.T) {
	for _, c := range []struct {
		tol              string
		failed, finished int64
		final, exceeded  bool
	}{
		{"", 1000, 1000, true, false},
		{"0", 1, 1, false, true},
		{"10", 10, 20, false, false},
		{"10", 11, 20, false, true},
		{"1%", 5, 50, false, false}, // too few finished to judge a percentage early
		{"1%", 5, 50, true, true},   // at the end, judged on all files
		{"1%", 1, 100, false, false},
		{"1%", 2, 100, false, true},
		{"0%", 1, 1, false, true},
		{"2.5%", 25, 1000, false, false},
		{"2.5%", 26, 1000, false, true},
	} {
		tol, err := ParseTolerance(c.tol)
		require.NoError(t, err, c.tol)
		assert.Equal(t, c.exceeded, tol.Exceeded(c.failed, c.finished, c.final), "%+v", c)
	}
	for _, bad := range []string{"-1", "101%", "x%", "1.5"} {
		_, err := ParseTolerance(bad)
		assert.Error(t, err, bad)
	}
}

func TestIsSpecKey(t *testing.T) {
	assert.True(t, IsSpecKey("jobs/nightly.json"))
	assert.False(t, IsSpecKey("jobs/readme.txt"))
	assert.False(t, IsSpecKey("data/jobs/x.json"))
}

func TestPartOutputKeyRoundTrip(t *testing.T) {
	p, ok := parsePartOutput("s3://out/logs/big.jsonl.gz.parts/j1/00012")
	require.True(t, ok)
	assert.Equal(t, splitPart{n: 12, bucket: "out", key: "logs/big.jsonl.gz.parts/j1/00012", merged: "logs/big.jsonl.gz"}, p)
	assert.Equal(t, "logs/big.jsonl.gz.parts/j1/00012", PartOutputKey("logs/big.jsonl.gz", "j1", 12))
	_, ok = parsePartOutput("s3://out/plain.txt")
	assert.False(t, ok)
}

func TestArchiveLimits(t *testing.T) {
	s, err := ParseSpec([]byte(`{"kind":"archive","bucket":"b","key":"a.zip"}`))
	require.NoError(t, err)
	assert.Equal(t, source.DefaultLimits, s.ArchiveLimits(), "the worker's defaults")
	s, err = ParseSpec([]byte(`{"kind":"archive","bucket":"b","key":"a.zip","max_member_bytes":1048576,"max_ratio":50}`))
	require.NoError(t, err)
	assert.Equal(t, source.Limits{MaxMemberBytes: 1 << 20, MaxRatio: 50}, s.ArchiveLimits())

	for body, want := range map[string]string{
		`{"kind":"archive","bucket":"b","key":"a.zip","max_member_bytes":-1}`: "max_member_bytes = -1: must be at least 1",
		`{"kind":"archive","bucket":"b","key":"a.zip","max_ratio":0.5}`:       "max_ratio = 0.5: must be at least 1",
		`{"kind":"prefix","bucket":"b","max_ratio":10}`:                       "max_member_bytes, max_ratio: only for archive jobs",
	} {
		_, err := ParseSpec([]byte(body))
		assert.ErrorContains(t, err, want, body)
	}
}

// A spec is refused, with the field, where a later step would fail on it: a second
// object after the first (it would be dropped), a bucket that is no bucket name (its
// s3:// URI would name another bucket), a key S3 cannot hold, an id that cannot name
// report keys.
func TestParseSpecRefusesWhatLaterStepsWould(t *testing.T) {
	for body, want := range map[string]string{
		`{"kind":"prefix","bucket":"b"} {"kind":"split","bucket":"b","key":"k","parts":2}`: "more after the spec's JSON object, which ends at byte 30 (one spec per file)",
		`{"kind":"prefix","bucket":"in/other","key":"p/"}`:                                 `bucket: bucket name "in/other" has '/'`,
		`{"kind":"manifest","bucket":"b","key":"` + strings.Repeat("k", 1025) + `"}`:       "key: key of 1025 bytes is over S3's limit of 1024",
		`{"kind":"prefix","bucket":"b","key":"` + strings.Repeat("p", 1025) + `"}`:         "key: a prefix of 1025 bytes is longer than any key",
		`{"id":"..","kind":"prefix","bucket":"b"}`:                                         `id "..": 1..100 letters, digits`,
		`{"id":"a\rb","kind":"prefix","bucket":"b"}`:                                       `id "a\rb"`,
	} {
		_, err := ParseSpec([]byte(body))
		assert.ErrorContains(t, err, "job spec: "+want, body)
	}
	_, err := ParseSpec([]byte("{\"id\":\"nightly-2026.11_a\",\"kind\":\"prefix\",\"bucket\":\"b\"}\n\n"))
	assert.NoError(t, err, "white space after the object is fine")
}

// A fan-out task the dispatcher could not run is refused when it is decoded (and so
// recorded as poison), naming what is wrong.
func TestDecodeFanoutTaskRefusesWhatCannotRun(t *testing.T) {
	for body, want := range map[string]string{
		`{"v":2,"step":"root"}`: "version 2 is not supported",
		`{"v":1,"job_id":"j","task_id":"t","step":"chunk","chunk":{"start":9,"end":2},"format":1}`: "chunk [9, 2) part 0 is not a range of the manifest",
		`{"v":1,"job_id":"j","task_id":"t","step":"chunk","chunk":{"start":0,"end":2}}`:            "chunk of unknown manifest format 0",
		`{"v":1,"job_id":"j","task_id":"t","step":"list","list":{"bucket":"a/b","prefix":"p/"}}`:   `list: bucket name "a/b" has '/'`,
		`{"v":1,"job_id":"j","task_id":"t","step":"list"}`:                                         `step "list" without its list`,
		`{"v":1,"job_id":"j","task_id":"t","step":"explode"}`:                                      `unknown step "explode"`,
	} {
		_, err := DecodeFanoutTask([]byte(body))
		assert.ErrorContains(t, err, "fan-out task: "+want, body)
	}
}
