package fanout

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/task"
)

// randomLines is n lines of random lengths in [0, maxLen] (so some are empty), with or
// without a final newline.
func randomLines(rng *rand.Rand, n, maxLen int, trailingNewline bool) []byte {
	var b []byte
	for i := range n {
		for range rng.IntN(maxLen + 1) {
			b = append(b, 'a'+byte(rng.IntN(26)))
		}
		if i < n-1 || trailingNewline {
			b = append(b, '\n')
		}
	}
	return b
}

// wantSplit is SplitRanges's result computed from the whole object.
func wantSplit(data []byte, parts int) []task.Range {
	var rs []task.Range
	start, size := int64(0), int64(len(data))
	for i := 1; i <= parts; i++ {
		end := size
		if i < parts {
			nominal := size * int64(i) / int64(parts)
			if nominal == 0 {
				continue
			}
			if j := bytes.IndexByte(data[nominal-1:], '\n'); j >= 0 {
				end = nominal + int64(j)
			}
		}
		if end > start {
			rs = append(rs, task.Range{Start: start, End: end, Part: len(rs)})
			start = end
		}
	}
	return rs
}

func TestSplitRanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	longLine := append(bytes.Repeat([]byte("x"), 300<<10), '\n') // longer than several windows
	for _, tc := range []struct {
		name  string
		data  []byte
		parts int
		want  int // number of ranges, if known
	}{
		{"empty object", nil, 4, 0},
		{"one part", []byte("a\nb\nc\n"), 1, 1},
		{"short lines", randomLines(rng, 5000, 80, true), 7, 7},
		{"no trailing newline", randomLines(rng, 5000, 80, false), 7, 7},
		{"more parts than lines", []byte("first line\nsecond line\n"), 10, 2},
		{"more parts than bytes", []byte("a\nb\n"), 10, 2},
		{"a single line without newline", bytes.Repeat([]byte("y"), 1000), 5, 1},
		{"empty lines", bytes.Repeat([]byte("\n"), 100), 8, 8},
		{"a line longer than the window", append(append(randomLines(rng, 100, 50, true), longLine...), randomLines(rng, 100, 50, false)...), 4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := &fakeObject{data: tc.data, etag: "e"}
			size := int64(len(tc.data))
			rs, err := SplitRanges(context.Background(), obj, "b", "k", "e", size, tc.parts)
			require.NoError(t, err)
			assert.Equal(t, wantSplit(tc.data, tc.parts), rs)
			if tc.want > 0 || size == 0 {
				assert.Len(t, rs, tc.want)
			}
			assert.LessOrEqual(t, len(rs), tc.parts)

			var joined []byte
			for i, r := range rs {
				assert.Equal(t, i, r.Part)
				assert.Less(t, r.Start, r.End, "no empty ranges")
				if i < len(rs)-1 {
					assert.Equal(t, byte('\n'), tc.data[r.End-1], "range %d ends a line", i)
				}
				joined = append(joined, tc.data[r.Start:r.End]...)
			}
			assert.True(t, bytes.Equal(tc.data, joined), "the ranges cover the object in order")

			rangeHeader := regexp.MustCompile(`^bytes=\d+-\d+$`)
			for i, h := range obj.ranges {
				assert.Regexp(t, rangeHeader, h)
				assert.Equal(t, `"e"`, obj.ifMatch[i])
			}
			assert.LessOrEqual(t, obj.gets(), 3*tc.parts, "a few GETs per boundary")
		})
	}

	_, err := SplitRanges(context.Background(), &fakeObject{}, "b", "k", "", 10, 0)
	assert.ErrorContains(t, err, "want at least 1")
}

func TestManifestChunks(t *testing.T) {
	assert.Empty(t, ManifestChunks(0, 10))
	assert.Equal(t, []task.Range{{Start: 0, End: 10, Part: 0}, {Start: 10, End: 20, Part: 1}, {Start: 20, End: 25, Part: 2}}, ManifestChunks(25, 10))
	assert.Equal(t, []task.Range{{Start: 0, End: 10, Part: 0}, {Start: 10, End: 20, Part: 1}}, ManifestChunks(20, 10))
	assert.Equal(t, []task.Range{{Start: 0, End: 7, Part: 0}}, ManifestChunks(7, 100))
	assert.Equal(t, []task.Range{{Start: 0, End: 7, Part: 0}}, ManifestChunks(7, 0), "chunk < 1 is the whole object")
}

// readChunks reads data through LineChunk over ManifestChunks(len(data), chunk), each
// chunk from a body that starts where the doc comment says the GET must.
func readChunks(t *testing.T, data []byte, chunk int64) [][]byte {
	t.Helper()
	var out [][]byte
	for _, r := range ManifestChunks(int64(len(data)), chunk) {
		body := bytes.NewReader(data[max(r.Start-1, 0):])
		b, err := io.ReadAll(LineChunk(maybeOneByte(body, chunk), r.Start, r.End))
		require.NoError(t, err)
		out = append(out, b)
	}
	return out
}

// maybeOneByte sometimes reads one byte at a time, to exercise short reads.
func maybeOneByte(r io.Reader, seed int64) io.Reader {
	if seed%2 == 0 {
		return oneByteReader{r}
	}
	return r
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// Every line of the object is read exactly once, whole, by the chunk its first byte is
// in: for random line lengths and chunk sizes, with and without a final newline, and
// with chunk boundaries exactly at newlines and just after them.
func TestLineChunkCoversEachLineOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	check := func(t *testing.T, data []byte, chunk int64) {
		chunks := readChunks(t, data, chunk)
		assert.True(t, bytes.Equal(data, bytes.Join(chunks, nil)), "chunk %d: the chunks' lines are the file's lines, once each, in order", chunk)
		// Each chunk yields whole lines, all beginning in it.
		ranges := ManifestChunks(int64(len(data)), chunk)
		off := int64(0)
		for i, c := range chunks {
			if len(c) == 0 {
				continue
			}
			assert.GreaterOrEqual(t, off, ranges[i].Start)
			assert.Less(t, off, ranges[i].End)
			off += int64(len(c))
			if off < int64(len(data)) {
				assert.Equal(t, byte('\n'), c[len(c)-1], "chunk %d of size %d yields whole lines", i, chunk)
			}
		}
	}
	for i := range 300 {
		data := randomLines(rng, 1+rng.IntN(60), rng.IntN(40), rng.IntN(2) == 0)
		chunk := 1 + rng.Int64N(int64(len(data))+10)
		t.Run(fmt.Sprintf("random-%d", i), func(t *testing.T) { check(t, data, chunk) })
	}
	for _, chunk := range []int64{1000, 4096, 5000, 30000} { // lines longer than bufio's buffer
		data := randomLines(rng, 20, 12000, chunk%2 == 0)
		t.Run(fmt.Sprintf("long-lines-%d", chunk), func(t *testing.T) { check(t, data, chunk) })
	}
	// Lines of 9 bytes + '\n': chunks of 10 (or 5, 20) have boundaries exactly at line
	// starts; 11 and 9 drift across them; 1 makes every byte a chunk.
	fixed := []byte(strings.Repeat("123456789\n", 30))
	for _, chunk := range []int64{1, 2, 5, 9, 10, 11, 20, 300, 301} {
		t.Run(fmt.Sprintf("fixed-%d", chunk), func(t *testing.T) {
			check(t, fixed, chunk)
			check(t, fixed[:len(fixed)-1], chunk)
		})
	}
	t.Run("chunk boundary at a newline", func(t *testing.T) {
		data := []byte("abc\ndef\nghi")
		// [0,3) ends just before the '\n'; [4,8) starts right after it.
		for _, tc := range []struct {
			start, end int64
			want       string
		}{
			{0, 3, "abc\n"}, {0, 4, "abc\n"}, {0, 5, "abc\ndef\n"}, {3, 4, ""}, {4, 8, "def\n"},
			{3, 5, "def\n"}, {5, 8, ""}, {8, 9, "ghi"}, {9, 11, ""}, {4, 4, ""},
		} {
			b, err := io.ReadAll(LineChunk(bytes.NewReader(data[max(tc.start-1, 0):]), tc.start, tc.end))
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(b), "[%d,%d)", tc.start, tc.end)
		}
	})
}
