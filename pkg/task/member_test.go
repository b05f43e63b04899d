package task

import (
	"fmt"
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

// No object, however it is named, shares an output name with an archive member: an
// ordinary key's "!" are doubled, the member's joint is a single "!".
func TestOutputNamesOfObjectsAndMembersNeverMeet(t *testing.T) {
	member := File{Key: "z/b.zip", Member: &Member{Name: "x.txt"}}
	object := File{Key: "z/b.zip!/x.txt"}
	assert.Equal(t, "z/b.zip!/x.txt", member.UniqueName())
	assert.Equal(t, "z/b.zip!!/x.txt", object.UniqueName())
	assert.Equal(t, "plain/key.txt", File{Key: "plain/key.txt"}.UniqueName(), "keys without !/ keep their names")
	assert.Equal(t, "odd ;,&?#%~()!'*.csv", File{Key: "odd ;,&?#%~()!'*.csv"}.UniqueName())
	assert.Equal(t, "a!!!!/b!!", File{Key: "a!!/b!"}.UniqueName())
	// Every way of splitting a name into an archive and an entry, and the plain object:
	// all distinct.
	seen := map[string]string{}
	for _, f := range []File{
		{Key: "a!/b"}, {Key: "a!!/b"}, {Key: "a"}, {Key: "a!"}, {Key: "a!!"},
		{Key: "a", Member: &Member{Name: "b"}}, {Key: "a!", Member: &Member{Name: "b"}}, {Key: "a", Member: &Member{Name: "!/b"}},
		{Key: "a!", Member: &Member{Name: "/b"}}, {Key: "a", Member: &Member{Name: "b!"}}, {Key: "a!/", Member: &Member{Name: "b"}},
	} {
		n := f.UniqueName()
		assert.NotContains(t, seen, n, "%s and %+v share %q", seen[n], f, n)
		seen[n] = fmt.Sprintf("%+v", f)
	}
}
