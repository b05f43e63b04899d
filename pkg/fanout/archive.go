package fanout

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/source"
	"github.com/fileflow/fileflow/pkg/task"
)

// RangeGetter is the part of the S3 client that ranged reads call.
type RangeGetter interface {
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// Block cache of an [ObjectReader]: zip.NewReader reads the end of the archive and then
// the central directory front to back, so a few blocks of a fair size make most reads
// hits. Entries' local headers are then read with [HeaderBlockSize] blocks when entries
// are large (a header per block), with the directory's blocks when they are small (many
// headers per block).
const (
	readerBlockSize = 256 << 10
	readerBlocks    = 4
	// HeaderBlockSize is the block for local headers of archives with large entries: a
	// header is 30 bytes plus its name and extra field.
	HeaderBlockSize = 8 << 10
	headerBlocks    = 64
	// headerReaders read local headers in parallel.
	headerReaders = 16
)

// ErrOffset: a read before the start of the object (a corrupt archive's offset).
var ErrOffset = errors.New("offset out of range")

// ObjectReader is an [io.ReaderAt] over one revision of an S3 object: it serves reads
// from ranged GETs of whole blocks, keeping the last few blocks. It is safe for
// concurrent use; GETs of different blocks run in parallel.
//
// It holds the context it was made with, because ReadAt has no context parameter: make
// one per operation, never keep it beyond that operation.
type ObjectReader struct {
	ctx               context.Context
	api               RangeGetter
	bucket, key, etag string
	size              int64

	mu        sync.Mutex
	blockSize int64
	keep      int
	blocks    []readerBlock // least recently used first
	inflight  map[int64]*fetch
	gets      int
	bytes     int64
}

type readerBlock struct {
	off  int64
	data []byte
}

var _ io.ReaderAt = (*ObjectReader)(nil)

// NewObjectReader reads s3://bucket/key, of size bytes, pinned to etag (with or without
// quotes) if it is not empty: a changed object fails the GETs instead of mixing two
// revisions.
func NewObjectReader(ctx context.Context, api RangeGetter, bucket, key, etag string, size int64) *ObjectReader {
	return &ObjectReader{ctx: ctx, api: api, bucket: bucket, key: key, etag: etag, size: size, blockSize: readerBlockSize, keep: readerBlocks}
}

// SetBlocks changes the block size and how many blocks are kept, and empties the cache.
func (r *ObjectReader) SetBlocks(size int64, keep int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blockSize, r.keep, r.blocks = size, keep, nil
}

// Gets is the number of GETs made so far.
func (r *ObjectReader) Gets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets
}

// Bytes is the number of bytes fetched so far.
func (r *ObjectReader) Bytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// ReadAt reads len(p) bytes at off, with io.ReaderAt's semantics.
func (r *ObjectReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("fanout: read s3://%s/%s at offset %d: %w", r.bucket, r.key, off, ErrOffset)
	}
	n := 0
	for n < len(p) && off < r.size {
		b, start, err := r.block(off)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], b[off-start:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// block returns the block holding off and where it starts, from the cache or a GET
// (made without holding the lock; readers of the same block wait for one GET).
func (r *ObjectReader) block(off int64) ([]byte, int64, error) {
	r.mu.Lock()
	for i, b := range r.blocks {
		if b.off <= off && off < b.off+int64(len(b.data)) {
			r.blocks = append(slices.Delete(r.blocks, i, i+1), b)
			r.mu.Unlock()
			return b.data, b.off, nil
		}
	}
	start := off - off%r.blockSize
	if c, ok := r.inflight[start]; ok {
		r.mu.Unlock()
		<-c.done
		return c.data, start, c.err
	}
	c := &fetch{done: make(chan struct{})}
	if r.inflight == nil {
		r.inflight = map[int64]*fetch{}
	}
	r.inflight[start] = c
	end := min(start+r.blockSize, r.size)
	r.gets++
	r.mu.Unlock()

	c.data, c.err = getRange(r.ctx, r.api, r.bucket, r.key, r.etag, start, end)
	close(c.done)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.inflight, start)
	if c.err != nil {
		return nil, 0, c.err
	}
	r.bytes += int64(len(c.data))
	if len(r.blocks) >= r.keep {
		r.blocks = slices.Delete(r.blocks, 0, len(r.blocks)-r.keep+1)
	}
	r.blocks = append(r.blocks, readerBlock{start, c.data})
	return c.data, start, nil
}

// fetch is one GET of a block that other readers may wait for.
type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

// getRange GETs bytes [start, end) of the object, pinned to etag if it is not empty.
func getRange(ctx context.Context, api RangeGetter, bucket, key, etag string, start, end int64) ([]byte, error) {
	in := &s3.GetObjectInput{
		Bucket: aws.String(bucket),
		Key:    aws.String(key),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", start, end-1)),
	}
	if etag != "" {
		in.IfMatch = aws.String(`"` + strings.Trim(etag, `"`) + `"`)
	}
	out, err := api.GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("fanout: get s3://%s/%s %s: %w", bucket, key, *in.Range, err)
	}
	defer out.Body.Close()
	if cr := aws.ToString(out.ContentRange); cr != "" && !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-%d/", start, end-1)) {
		return nil, fmt.Errorf("fanout: get s3://%s/%s %s: answered with Content-Range %q", bucket, key, *in.Range, cr)
	}
	buf := make([]byte, end-start)
	if _, err := io.ReadFull(out.Body, buf); err != nil {
		return nil, fmt.Errorf("fanout: read s3://%s/%s %s: %w", bucket, key, *in.Range, err)
	}
	return buf, nil
}

// ZipOptions tune [ListZip].
type ZipOptions struct {
	// Limits bound each entry (zip bombs): an entry whose uncompressed size, or whose
	// uncompressed size over its compressed size, is over them goes to bad, never to fn.
	// Zero fields: [source.DefaultLimits]. The worker checks its own limits again when it
	// opens a member, and enforces the declared size while inflating (headers can lie).
	Limits source.Limits
}

// ListZip streams the entries of the zip archive s3://bucket/key (size bytes, pinned to
// etag) to fn as archive members, reading only its central directory and the entries'
// local headers through ranged GETs, never the whole archive. Directories are skipped.
// An entry that must not be extracted — an unsafe or malformed name, encryption, a
// compression method other than stored or deflated, a size or expansion ratio over
// opts.Limits — goes to bad with its 1-based index in the archive as Line; bad may stop
// the listing by returning an error.
//
// An archive that is not a zip is a permanent error (see [retry.MarkPermanent]).
func ListZip(ctx context.Context, api RangeGetter, bucket, key, etag string, size int64, opts ZipOptions, fn func(task.File) error, bad func(*EntryError) error) error {
	rd := NewObjectReader(ctx, api, bucket, key, etag, size)
	zr, err := zip.NewReader(rd, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // insecure names are checked below
		if errors.Is(err, zip.ErrFormat) {
			err = retry.MarkPermanent(err)
		}
		return fmt.Errorf("fanout: open zip s3://%s/%s: %w", bucket, key, err)
	}
	etag = strings.Trim(etag, `"`)
	if n := int64(len(zr.File)); n > 0 && size/n > 4*HeaderBlockSize {
		rd.SetBlocks(HeaderBlockSize, headerBlocks) // large entries: one small GET per header
	}
	// A name that appears twice (zip -u appends, and unzip keeps the last) is ambiguous:
	// every copy is reported rather than one processed at random.
	count := map[string]int{}
	for _, f := range zr.File {
		count[f.Name]++
	}
	reasons := make([]string, len(zr.File))
	offsets := make([]int64, len(zr.File))
	for i, f := range zr.File {
		switch {
		case strings.HasSuffix(f.Name, "/"):
			continue // a directory
		case checkEntry(f) != "":
			reasons[i] = checkEntry(f)
		case overLimits(f, opts.Limits) != "":
			reasons[i] = overLimits(f, opts.Limits)
		case count[f.Name] > 1:
			reasons[i] = fmt.Sprintf("entry %q appears %d times in the archive", f.Name, count[f.Name])
		}
	}
	// Each entry's data starts after its local header: read them in parallel.
	if err := dataOffsets(zr.File, reasons, offsets, size); err != nil {
		return fmt.Errorf("fanout: zip s3://%s/%s: %w", bucket, key, err)
	}
	for i, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		if reasons[i] != "" {
			if err := bad(&EntryError{Line: i + 1, Reason: reasons[i]}); err != nil {
				return err
			}
			continue
		}
		err = fn(task.File{Bucket: bucket, Key: key, ETag: etag, Size: int64(f.UncompressedSize64), Member: &task.Member{
			Name:           f.Name,
			Offset:         offsets[i],
			CompressedSize: int64(f.CompressedSize64),
			Size:           int64(f.UncompressedSize64),
			Method:         f.Method,
			CRC32:          f.CRC32,
		}})
		if err != nil {
			return err
		}
	}
	return nil
}

// dataOffsets reads the local header of every entry still without a reason, with
// headerReaders at once, recording its data offset (or why the entry is bad).
func dataOffsets(files []*zip.File, reasons []string, offsets []int64, size int64) error {
	work := make(chan int)
	errs := make(chan error, headerReaders)
	var wg sync.WaitGroup
	for range headerReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				f := files[i]
				off, err := f.DataOffset() // reads the entry's local header
				switch {
				case errors.Is(err, zip.ErrFormat):
					reasons[i] = fmt.Sprintf("entry %q: bad local header: %v", f.Name, err)
				case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, ErrOffset):
					reasons[i] = fmt.Sprintf("entry %q: its local header lies outside the archive", f.Name)
				case err != nil:
					errs <- fmt.Errorf("entry %q: %w", f.Name, err)
					return
				case off > size || f.CompressedSize64 > uint64(size-off):
					reasons[i] = fmt.Sprintf("entry %q: data runs past the end of the archive", f.Name)
				default:
					offsets[i] = off
				}
			}
		}()
	}
	var err error
feed:
	for i, f := range files {
		if strings.HasSuffix(f.Name, "/") || reasons[i] != "" {
			continue
		}
		select {
		case work <- i:
		case err = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// checkEntry says why the entry must not be extracted, or "".
func checkEntry(f *zip.File) string {
	if err := task.CheckEntryName(f.Name); err != nil {
		return err.Error()
	}
	switch {
	case f.Flags&0x1 != 0:
		return fmt.Sprintf("entry %q is encrypted", f.Name)
	case f.Method != zip.Store && f.Method != zip.Deflate:
		return fmt.Sprintf("entry %q: compression method %d is not supported (only stored and deflated)", f.Name, f.Method)
	case f.UncompressedSize64 > math.MaxInt64:
		return fmt.Sprintf("entry %q: size %d is too large", f.Name, f.UncompressedSize64)
	}
	return ""
}

// overLimits says why the entry's sizes are over the limits, from the central
// directory (before any of its data is read), or "".
func overLimits(f *zip.File, l source.Limits) string {
	if err := l.Check(int64(f.UncompressedSize64), int64(min(f.CompressedSize64, math.MaxInt64))); err != nil {
		return fmt.Sprintf("entry %q: %v", f.Name, err)
	}
	return ""
}

// MaxEntryName bounds an entry name (see [task.MaxEntryName]).
const MaxEntryName = task.MaxEntryName
