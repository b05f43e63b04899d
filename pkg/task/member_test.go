package task

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/fileflow/fileflow/pkg/process"
)

// An archive member is named beside its archive ("<key>!/<entry>"), never under it, so
// its output cannot collide with the archive's own; rules still match the entry's name
// by suffix, and by the archive's prefix.
func TestMemberName(t *testing.T) {
	zip := File{Bucket: "in", Key: "drops/a.zip", ETag: "e"}
	m := zip
	m.Member = &Member{Name: "dir/rows.csv", Size: 10, CompressedSize: 8, Method: 8}
	assert.Equal(t, "drops/a.zip!/dir/rows.csv", m.Name())
	assert.Equal(t, "s3://in/drops/a.zip!/dir/rows.csv", m.String())
	assert.Equal(t, "drops/a.zip", zip.Name())
	assert.NotContains(t, m.Name(), zip.Name()+"/", "not under the archive's own name")

	rules := process.Rules{
		{Suffix: ".zip", Processors: []string{"checksum"}},
		{Prefix: "drops/", Suffix: ".csv", Processors: []string{"gzip"}},
		{Reject: "other"},
	}
	r, ok := rules.Match(m.Name(), "")
	assert.True(t, ok)
	assert.Equal(t, []string{"gzip"}, r.Processors, "the member's suffix and the archive's prefix")
	r, _ = rules.Match(zip.Name(), "")
	assert.Equal(t, []string{"checksum"}, r.Processors)
}
