// Package process holds the file processors and the rules that choose them per file.
//
// A [Processor] wraps a stream: it returns a reader of its output and writes what it
// learns (checksums, content type, output key changes) into a [Result] once the stream
// has been read to the end. Processors are chained, so a file flows GET → checksum →
// detect → gzip → PUT without ever being held whole in memory.
//
// Built in: checksum (SHA-256 and CRC32C), detect (content type by sniffing), gzip,
// gunzip (a corrupt gzip stream is a permanent failure) and copy. Users add their own
// with [Registry.Register].
package process

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/fileflow/fileflow/pkg/failure"
)

// Result collects what the processors of one file learn about it.
type Result struct {
	Key string // the source key; set by the caller before the chain runs

	SHA256          string // hex SHA-256 of the bytes at the checksum processor's place in the chain
	CRC32C          string // hex CRC32C (Castagnoli) of the same bytes
	ContentType     string // detected or given content type
	ContentEncoding string // e.g. "gzip" after the gzip processor
	TrimSuffix      string // removed from the end of the output key (gunzip drops ".gz")
	Suffix          string // appended to the output key (gzip adds ".gz")
}

// OutputKey applies the result's key changes to key.
func (r *Result) OutputKey(key string) string {
	return strings.TrimSuffix(key, r.TrimSuffix) + r.Suffix
}

// Processor transforms or inspects a stream of file bytes.
type Processor interface {
	// Name is how rules refer to the processor.
	Name() string
	// Wrap returns a reader of the processor's output for in. It writes what it learns
	// into res by the time the returned reader reports io.EOF. Errors it returns while
	// reading that retrying cannot fix must be permanent (a failure.Error, or retry.MarkPermanent).
	// Wrap must be safe to call concurrently; per-file state lives in the reader.
	Wrap(in io.Reader, res *Result) (io.Reader, error)
}

// Chain wraps in with each processor in order.
func Chain(in io.Reader, res *Result, procs ...Processor) (io.Reader, error) {
	r := in
	for _, p := range procs {
		var err error
		if r, err = p.Wrap(r, res); err != nil {
			return nil, fmt.Errorf("process %s: %w", p.Name(), err)
		}
	}
	return r, nil
}

// Registry maps processor names to processors.
type Registry map[string]Processor

// Builtins returns a registry of the built-in processors.
func Builtins() Registry {
	r := Registry{}
	for _, p := range []Processor{Checksum{}, Detect{}, Gzip{Level: gzip.DefaultCompression}, Gunzip{}, Copy{}} {
		r.Register(p)
	}
	return r
}

// Register adds p under p.Name(), replacing any processor of that name.
func (r Registry) Register(p Processor) { r[p.Name()] = p }

// Lookup returns the processors with the given names, in order.
func (r Registry) Lookup(names []string) ([]Processor, error) {
	out := make([]Processor, 0, len(names))
	for _, n := range names {
		p, ok := r[n]
		if !ok {
			return nil, fmt.Errorf("process: unknown processor %q (known: %s)", n, strings.Join(r.names(), ", "))
		}
		out = append(out, p)
	}
	return out, nil
}

func (r Registry) names() []string {
	out := make([]string, 0, len(r))
	for n := range r {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Checksum computes SHA-256 and CRC32C of the bytes passing through, unchanged.
type Checksum struct{}

// Name implements [Processor].
func (Checksum) Name() string { return "checksum" }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Wrap implements [Processor].
func (Checksum) Wrap(in io.Reader, res *Result) (io.Reader, error) {
	return &checksumReader{in: in, sha: sha256.New(), crc: crc32.New(castagnoli), res: res}, nil
}

type checksumReader struct {
	in  io.Reader
	sha hash.Hash
	crc hash.Hash32
	res *Result
}

func (c *checksumReader) Read(p []byte) (int, error) {
	n, err := c.in.Read(p)
	if n > 0 {
		c.sha.Write(p[:n])
		c.crc.Write(p[:n])
	}
	if errors.Is(err, io.EOF) {
		c.res.SHA256 = hex.EncodeToString(c.sha.Sum(nil))
		c.res.CRC32C = fmt.Sprintf("%08x", c.crc.Sum32())
	}
	return n, err
}

// Detect sets the content type by sniffing the first 512 bytes (net/http's algorithm),
// refined by the key's extension where sniffing only says "binary" or "text". Where
// neither knows better than application/octet-stream, a type already in the Result
// (from the source object) stays.
type Detect struct{}

// Name implements [Processor].
func (Detect) Name() string { return "detect" }

// Wrap implements [Processor].
func (Detect) Wrap(in io.Reader, res *Result) (io.Reader, error) {
	return &detectReader{br: bufio.NewReaderSize(in, 512), key: res.Key, res: res}, nil
}

type detectReader struct {
	br   *bufio.Reader
	key  string
	res  *Result
	done bool
}

func (d *detectReader) Read(p []byte) (int, error) {
	if !d.done {
		d.done = true
		head, err := d.br.Peek(512)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
			return 0, err
		}
		d.res.ContentType = sniff(head, d.key, d.res.ContentType)
	}
	return d.br.Read(p)
}

func sniff(head []byte, key, given string) string {
	sniffed := http.DetectContentType(head)
	generic := sniffed == "application/octet-stream" || strings.HasPrefix(sniffed, "text/plain")
	if generic {
		if byExt := mime.TypeByExtension(strings.ToLower(path.Ext(key))); byExt != "" {
			return byExt
		}
		if sniffed == "application/octet-stream" && given != "" {
			return given
		}
	}
	return sniffed
}

// Gzip compresses the stream and adds ".gz" to the output key.
type Gzip struct{ Level int }

// Name implements [Processor].
func (Gzip) Name() string { return "gzip" }

// Wrap implements [Processor].
func (g Gzip) Wrap(in io.Reader, res *Result) (io.Reader, error) {
	res.Suffix += ".gz"
	res.ContentEncoding = "gzip"
	zr := &gzipReader{in: in, chunk: make([]byte, 32<<10)}
	zw, err := gzip.NewWriterLevel(&zr.out, g.Level)
	if err != nil {
		return nil, err
	}
	zr.zw = zw
	return zr, nil
}

// gzipReader compresses on demand, without a goroutine: each Read compresses the next
// chunk of input into a small buffer and serves from it.
type gzipReader struct {
	in    io.Reader
	zw    *gzip.Writer
	out   byteQueue
	chunk []byte
	eof   bool
}

func (z *gzipReader) Read(p []byte) (int, error) {
	for z.out.Len() == 0 {
		if z.eof {
			return 0, io.EOF
		}
		n, err := z.in.Read(z.chunk)
		if n > 0 {
			if _, werr := z.zw.Write(z.chunk[:n]); werr != nil {
				return 0, werr
			}
		}
		if errors.Is(err, io.EOF) {
			if cerr := z.zw.Close(); cerr != nil {
				return 0, cerr
			}
			z.eof = true
		} else if err != nil {
			return 0, err
		}
	}
	return z.out.Read(p)
}

// byteQueue is a bytes.Buffer that reuses its storage once drained.
type byteQueue struct {
	buf []byte
	off int
}

func (q *byteQueue) Write(p []byte) (int, error) {
	if q.off == len(q.buf) {
		q.buf, q.off = q.buf[:0], 0
	}
	q.buf = append(q.buf, p...)
	return len(p), nil
}

func (q *byteQueue) Read(p []byte) (int, error) {
	n := copy(p, q.buf[q.off:])
	q.off += n
	return n, nil
}

func (q *byteQueue) Len() int { return len(q.buf) - q.off }

// Gunzip decompresses a gzip stream and drops ".gz" from the output key. A stream that
// is not valid gzip is a permanent failure: the same bytes will never decompress.
type Gunzip struct{}

// Name implements [Processor].
func (Gunzip) Name() string { return "gunzip" }

// Wrap implements [Processor].
func (Gunzip) Wrap(in io.Reader, res *Result) (io.Reader, error) {
	res.TrimSuffix = ".gz"
	res.ContentEncoding = ""
	return &gunzipReader{in: in}, nil
}

type gunzipReader struct {
	in io.Reader
	zr *gzip.Reader
}

func (g *gunzipReader) Read(p []byte) (int, error) {
	if g.zr == nil {
		zr, err := gzip.NewReader(g.in)
		if err != nil {
			return 0, corrupt(err)
		}
		g.zr = zr
	}
	n, err := g.zr.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, corrupt(err)
	}
	return n, err
}

func corrupt(err error) error {
	var inflate flate.CorruptInputError
	if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.As(err, &inflate) {
		return failure.New(failure.Corrupt, fmt.Errorf("gunzip: corrupt gzip stream: %w", err))
	}
	return err // a read error from the source: not the file's fault
}

// Copy passes the bytes through unchanged.
type Copy struct{}

// Name implements [Processor].
func (Copy) Name() string { return "copy" }

// Wrap implements [Processor].
func (Copy) Wrap(in io.Reader, _ *Result) (io.Reader, error) { return in, nil }
