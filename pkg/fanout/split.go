package fanout

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/fileflow/fileflow/pkg/task"
)

// Windows SplitRanges GETs to find the newline after a nominal boundary: the first is
// small, since lines are usually short; each next one doubles, up to the cap.
const (
	splitWindow    = 64 << 10
	splitWindowMax = 8 << 20
)

// SplitRanges splits the line-oriented object s3://bucket/key (size bytes, pinned to
// etag) into at most parts ranges that cover [0, size) in order, each starting at the
// beginning of a line, so each part can be processed on its own. The nominal boundary
// i·size/parts moves to just after the first '\n' at or after byte boundary-1 (found
// by ranged GETs of a window from there); boundaries that land together merge, so a
// file of few long lines gives fewer parts. Parts are numbered 0..k-1.
func SplitRanges(ctx context.Context, api RangeGetter, bucket, key, etag string, size int64, parts int) ([]task.Range, error) {
	if parts < 1 {
		return nil, fmt.Errorf("fanout: split s3://%s/%s into %d parts: want at least 1", bucket, key, parts)
	}
	var ranges []task.Range
	start := int64(0)
	n := int64(parts)
	for i := int64(1); i <= n && start < size; i++ {
		end := size
		if i < n {
			nominal := size/n*i + size%n*i/n // i·size/n without overflow
			if nominal <= start {
				continue // inside the line the last boundary moved past: it would land there too
			}
			var err error
			if end, err = lineStart(ctx, api, bucket, key, etag, size, nominal); err != nil {
				return nil, fmt.Errorf("fanout: split s3://%s/%s: %w", bucket, key, err)
			}
		}
		if end > start {
			ranges = append(ranges, task.Range{Start: start, End: end, Part: len(ranges)})
			start = end
		}
	}
	return ranges, nil
}

// lineStart is the offset just after the first '\n' at or after off-1 (off > 0), or
// size if there is none: the start of the first line that begins at or after off.
func lineStart(ctx context.Context, api RangeGetter, bucket, key, etag string, size, off int64) (int64, error) {
	window := int64(splitWindow)
	for from := off - 1; from < size; {
		to := min(from+window, size)
		b, err := getRange(ctx, api, bucket, key, etag, from, to)
		if err != nil {
			return 0, err
		}
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return from + int64(i) + 1, nil
		}
		from = to
		window = min(2*window, splitWindowMax)
	}
	return size, nil
}

// ManifestChunks splits [0, size) into nominal ranges of chunk bytes (the last may be
// shorter), numbered from 0, for [LineChunk] to read line-aligned without extra GETs.
// A chunk below 1 means one range of the whole object; size 0 gives none.
func ManifestChunks(size, chunk int64) []task.Range {
	if chunk < 1 {
		chunk = size
	}
	var ranges []task.Range
	for start := int64(0); start < size; {
		end := start + min(chunk, size-start)
		ranges = append(ranges, task.Range{Start: start, End: end, Part: len(ranges)})
		start = end
	}
	return ranges
}

// LineChunk reads the lines of a nominal chunk [start, end) of an object: exactly the
// lines that begin at an offset in [start, end), the last one whole even if it runs
// past end (Hadoop's rule). Over the ranges of [ManifestChunks], every line of the object
// is read exactly once.
//
// r must be the body of a GET with Range "bytes=<start-1>-" if start > 0 (the byte
// before the chunk tells whether start begins a line), else "bytes=0-": open-ended, or
// at least reaching past end to the end of the line that crosses it. The returned reader
// stops there; the caller then closes the body.
func LineChunk(r io.Reader, start, end int64) io.Reader {
	c := &lineChunk{r: bufio.NewReader(r), end: end}
	switch {
	case start > 0:
		c.pos, c.skip = start-1, true
	case end <= 0:
		c.err = io.EOF
	}
	return c
}

type lineChunk struct {
	r    *bufio.Reader
	pos  int64 // object offset of r's next byte
	end  int64
	skip bool // the rest of the line before start is still to be skipped
	err  error
}

func (c *lineChunk) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	for c.skip {
		b, err := c.r.ReadSlice('\n')
		c.pos += int64(len(b))
		switch {
		case err == nil:
			c.skip = false
		case !errors.Is(err, bufio.ErrBufferFull):
			c.err = err
			return 0, err
		}
		if !c.skip && c.pos >= c.end {
			c.err = io.EOF // the first line to read begins at or after end
			return 0, c.err
		}
	}
	n, err := c.r.Read(p)
	// Stop after the first '\n' at or after end-1: the next line begins at or after end.
	if from := max(c.end-1-c.pos, 0); from < int64(n) {
		if i := bytes.IndexByte(p[from:n], '\n'); i >= 0 {
			n, err = int(from)+i+1, io.EOF
		}
	}
	c.pos += int64(n)
	if err != nil {
		c.err = err
	}
	return n, err
}
