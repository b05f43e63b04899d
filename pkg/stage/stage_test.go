package stage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/process"
)

func TestParse(t *testing.T) {
	a, err := Parse(map[string]string{
		"aws:region":                           "eu-west-1", // other namespaces are not ours
		"fileflow:workerMemoryMb":              "1024",
		"fileflow:workerBatchSize":             "100",
		"fileflow:workerBatchingWindowSeconds": "2",
		"fileflow:tracing":                     "true",
		"fileflow:ingestPrefix":                "uploads/",
		"fileflow:rules":                       `[{"suffix":".log","processors":["checksum","gzip"]},{"processors":["copy"]}]`,
		"fileflow:tableProvisioned":            "true",
		"fileflow:tableMaxWrite":               "500",
	}, "Pulumi.test.yaml", []string{"worker"})
	require.NoError(t, err)
	assert.Equal(t, 1024, a.Functions["worker"].MemoryMB)
	assert.Equal(t, 100, a.Functions["worker"].BatchSize)
	assert.Equal(t, 2, a.Functions["worker"].BatchingWindowSec)
	assert.True(t, a.Tracing)
	assert.Equal(t, "uploads/", a.IngestPrefix)
	assert.Equal(t, process.Rules{{Suffix: ".log", Processors: []string{"checksum", "gzip"}}, {Processors: []string{"copy"}}}, a.Rules)
	assert.True(t, a.Table.Provisioned)
	assert.Equal(t, 500, a.Table.MaxWrite)
}

func TestParseErrorsNameKeyAndFile(t *testing.T) {
	tests := []struct {
		values map[string]string
		want   []string
	}{
		{map[string]string{"fileflow:workerMemroyMb": "512"}, []string{"Pulumi.prod.yaml: fileflow:workerMemroyMb is not a fileflow setting"}},
		{map[string]string{"fileflow:workerBatchSize": "ten"}, []string{"Pulumi.prod.yaml: fileflow:workerBatchSize: want a whole number"}},
		{map[string]string{"fileflow:tracing": "yes please"}, []string{"Pulumi.prod.yaml: fileflow:tracing: want true or false"}},
		{map[string]string{"fileflow:rules": `[{"sufix":".x"}]`}, []string{"Pulumi.prod.yaml: fileflow:rules: want a JSON list of rules"}},
		{map[string]string{"fileflow:workerBatchSize": "20000", "fileflow:workerBatchingWindowSeconds": "1"},
			[]string{"Pulumi.prod.yaml: fileflow:workerBatchSize (Functions[worker].BatchSize = 20000: must be in 1..10000)"}},
		{map[string]string{"fileflow:workerMaxConcurrency": "100", "fileflow:workerReservedConcurrency": "10", "fileflow:logRetentionDays": "8"},
			[]string{"fileflow:workerReservedConcurrency (Functions[worker].ReservedConcurrency = 10: must be 0 (none) or >= MaxConcurrency (100)",
				"fileflow:logRetentionDays (LogRetentionDays = 8: must be one of"}},
		{map[string]string{"fileflow:dispatchMemoryMb": "512"}, []string{`configure the "dispatch" function, which has no code under functions/`}},
		// Found by FuzzParse: errors that did not name the key to fix.
		{map[string]string{"fileflow:workerBatchSize": "100"}, []string{"Pulumi.prod.yaml: fileflow:workerBatchingWindowSeconds (Functions[worker].BatchingWindowSec = 0: must be >= 1 when BatchSize (100) is above 10)"}},
		{map[string]string{"fileflow:rules": `[{"processors":["nope"]},{"prefix":"x"}]`}, []string{`Pulumi.prod.yaml: fileflow:rules (Rules: process: invalid rules: rule 0: process: unknown processor "nope"`, "; rule 1: names no processors"}},
		{map[string]string{"fileflow:tags": `{"aws:x":"y"}`}, []string{"Pulumi.prod.yaml: fileflow:tags (Tags[aws:x] = y: keys 1..128 characters, not aws:*"}},
		{map[string]string{"fileflow:rules": `[{"processors":["copy"]}] [{"reject":"x"}]`}, []string{"Pulumi.prod.yaml: fileflow:rules: want a JSON list of rules: more after the JSON value, which ends at byte 25"}},
	}
	for _, tt := range tests {
		_, err := Parse(tt.values, "Pulumi.prod.yaml", []string{"worker"})
		require.Error(t, err, tt.values)
		for _, w := range tt.want {
			assert.Contains(t, err.Error(), w)
		}
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Pulumi.x.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`config:
  aws:region: us-east-1
  fileflow:workerMemoryMb: 2048
  fileflow:tracing: true
  fileflow:alarmEmail: ops@example.com
  fileflow:secretThing:
    secure: AAABAM
`), 0o644))
	v, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"aws:region": "us-east-1", "fileflow:workerMemoryMb": "2048", "fileflow:tracing": "true", "fileflow:alarmEmail": "ops@example.com"}, v)

	require.NoError(t, os.WriteFile(path, []byte("config:\n  fileflow:x: {a: 1}\n"), 0o644))
	_, err = ReadFile(path)
	assert.ErrorContains(t, err, "structured values are not supported")
}

func TestEveryKeyDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range Docs() {
		assert.True(t, strings.HasPrefix(d.Key, "fileflow:"))
		assert.NotEmpty(t, d.Doc, d.Key)
		assert.False(t, seen[d.Key], "duplicate %s", d.Key)
		seen[d.Key] = true
	}
}

// A stage file that is not YAML fails naming the file and the line; a secret is not a
// setting (it is skipped, never parsed).
func TestReadFileThatIsNotYAML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Pulumi.broken.yaml")
	require.NoError(t, os.WriteFile(path, []byte("config:\n  fileflow:workerMemoryMb: 1024\n   fileflow:tracing: [true\n"), 0o644))
	_, err := ReadFile(path)
	assert.ErrorContains(t, err, "stage: Pulumi.broken.yaml: yaml: line 3")
}
