// Package fanout turns a job into file tasks. This part reads manifests — S3 Batch
// Operations CSV (`bucket,key[,versionId]`, keys URL-encoded, fields optionally quoted),
// a JSON array, or JSON Lines — as a stream, and packs the files into task messages that
// stay under the SQS message size, so a manifest of millions of keys is planned in
// bounded memory.
package fanout

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

// Format is a manifest's format.
type Format int

// The manifest formats.
const (
	FormatCSV Format = iota + 1
	FormatJSONArray
	FormatJSONLines
)

func (f Format) String() string {
	return map[Format]string{FormatCSV: "csv", FormatJSONArray: "json", FormatJSONLines: "jsonl"}[f]
}

// DetectFormat decides from the manifest key's suffix, else from its first byte.
func DetectFormat(key string, head []byte) Format {
	switch k := strings.ToLower(key); {
	case strings.HasSuffix(k, ".csv"):
		return FormatCSV
	case strings.HasSuffix(k, ".jsonl"), strings.HasSuffix(k, ".ndjson"):
		return FormatJSONLines
	case strings.HasSuffix(k, ".json"):
		return FormatJSONArray
	}
	head = bytes.TrimLeft(head, " \t\r\n\ufeff")
	switch {
	case len(head) > 0 && head[0] == '[':
		return FormatJSONArray
	case len(head) > 0 && head[0] == '{':
		return FormatJSONLines
	default:
		return FormatCSV
	}
}

// maxJSONLine bounds one line of a JSON Lines manifest.
const maxJSONLine = 4 << 20

// EntryError says which manifest entry is bad and why. Bad entries are reported, not
// fatal: the job records them as failed files with the reason.
type EntryError struct {
	Line   int // 1-based line (CSV, JSONL) or element (JSON array)
	Reason string
}

func (e *EntryError) Error() string { return fmt.Sprintf("manifest entry %d: %s", e.Line, e.Reason) }

// jsonEntry is one object of a JSON or JSONL manifest.
type jsonEntry struct {
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	VersionID string `json:"version_id"`
	ETag      string `json:"etag"`
	Size      int64  `json:"size"`
}

func (e jsonEntry) file() task.File {
	return task.File{Bucket: e.Bucket, Key: e.Key, VersionID: e.VersionID, ETag: e.ETag, Size: e.Size}
}

// Read streams the manifest's files to fn, in order. A bad entry — a row that does not
// name a file S3 could hold — goes to bad (which may stop the read by returning an
// error), naming its line (CSV: where its record starts; JSON Lines: its line) or its
// element (JSON array); defaultBucket fills entries without a bucket. A leading UTF-8
// byte order mark is skipped. A manifest that cannot be read past a point (a JSON array
// broken mid-way, a JSON line over 4 MiB, not an array at all) is a permanent error
// (see [retry.MarkPermanent]) naming where; an error of r itself is returned as it is.
func Read(r io.Reader, f Format, defaultBucket string, fn func(task.File) error, bad func(*EntryError) error) error {
	emit := func(line int, file task.File) error {
		if file.Bucket == "" {
			file.Bucket = defaultBucket
		}
		switch {
		case file.Bucket == "":
			return bad(&EntryError{line, "no bucket"})
		case file.Key == "":
			return bad(&EntryError{line, "no key"})
		case task.CheckBucket(file.Bucket) != nil:
			return bad(&EntryError{line, task.CheckBucket(file.Bucket).Error()})
		case task.CheckKey(file.Key) != nil:
			return bad(&EntryError{line, task.CheckKey(file.Key).Error()})
		}
		return fn(file)
	}
	br := bufio.NewReaderSize(r, 256<<10)
	if bom, _ := br.Peek(3); bytes.Equal(bom, []byte("\ufeff")) {
		_, _ = br.Discard(3)
	}
	switch f {
	case FormatCSV:
		cr := csv.NewReader(br)
		cr.FieldsPerRecord = -1
		cr.ReuseRecord = true
		for {
			rec, err := cr.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				var pe *csv.ParseError
				if errors.As(err, &pe) {
					reason := fmt.Sprintf("%v (column %d)", pe.Err, pe.Column)
					if pe.Line != pe.StartLine {
						reason = fmt.Sprintf("%v (the record runs from line %d to line %d, column %d)", pe.Err, pe.StartLine, pe.Line, pe.Column)
					}
					if berr := bad(&EntryError{pe.StartLine, reason}); berr != nil {
						return berr
					}
					continue
				}
				return fmt.Errorf("fanout: read manifest: %w", err)
			}
			line, _ := cr.FieldPos(0)
			if len(rec) < 2 {
				if err := bad(&EntryError{line, fmt.Sprintf("want bucket,key[,versionId], got %d field(s)", len(rec))}); err != nil {
					return err
				}
				continue
			}
			key, err := url.QueryUnescape(rec[1])
			if err != nil {
				if err := bad(&EntryError{line, fmt.Sprintf("key %q is not URL-encoded: %v", rec[1], err)}); err != nil {
					return err
				}
				continue
			}
			file := task.File{Bucket: rec[0], Key: key}
			if len(rec) > 2 {
				file.VersionID = rec[2]
			}
			if err := emit(line, file); err != nil {
				return err
			}
		}
	case FormatJSONLines:
		sc := bufio.NewScanner(br)
		sc.Buffer(make([]byte, 256<<10), maxJSONLine)
		line := 0
		for sc.Scan() {
			line++
			b := bytes.TrimSpace(sc.Bytes())
			if len(b) == 0 {
				continue
			}
			var e jsonEntry
			if err := json.Unmarshal(b, &e); err != nil {
				if err := bad(&EntryError{line, "not a JSON object of bucket, key, version_id, etag, size: " + err.Error()}); err != nil {
					return err
				}
				continue
			}
			if err := emit(line, e.file()); err != nil {
				return err
			}
		}
		if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
			return retry.MarkPermanent(fmt.Errorf("fanout: read manifest: line %d is over %d bytes", line+1, maxJSONLine))
		} else if err != nil {
			return fmt.Errorf("fanout: read manifest: %w", err)
		}
		return nil
	case FormatJSONArray:
		return readJSONArray(&endReader{r: br}, emit, bad)
	}
	return fmt.Errorf("fanout: unknown manifest format %d", f)
}

// readJSONArray reads a JSON array manifest: each element is a file (given to emit) or,
// of the wrong type, a bad entry. What follows the last whole element — the end of the
// object before the array closes, more after it — is reported as a bad entry, so a
// manifest cut short is seen and its elements still run. Broken JSON cannot be read past:
// a permanent error naming the element and byte.
func readJSONArray(r *endReader, emit func(int, task.File) error, bad func(*EntryError) error) error {
	dec := json.NewDecoder(r)
	var syntax *json.SyntaxError
	// cut: the content ended inside a value (the object is cut short, not the connection).
	cut := func(err error) bool { return (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) && r.end }
	var typ *json.UnmarshalTypeError // a number too large is the first value, not '['
	tok, err := dec.Token()
	switch {
	case errors.As(err, &syntax), errors.As(err, &typ), err == nil && tok != json.Delim('['), err == io.EOF, cut(err):
		return retry.MarkPermanent(errors.New("fanout: read manifest: a JSON manifest must be an array of objects"))
	case err != nil:
		return fmt.Errorf("fanout: read manifest: %w", err)
	}
	i := 1
	for ; dec.More(); i++ {
		var e jsonEntry
		err := dec.Decode(&e)
		switch {
		case errors.As(err, &typ):
			// The element was read whole; only its content is wrong.
			if err := bad(&EntryError{i, "not a JSON object of bucket, key, version_id, etag, size: " + err.Error()}); err != nil {
				return err
			}
			continue
		case cut(err):
			return bad(&EntryError{i, fmt.Sprintf("the JSON array ends inside element %d: the manifest may be cut short", i)})
		case errors.As(err, &syntax):
			return retry.MarkPermanent(fmt.Errorf("fanout: read manifest: element %d, at byte %d: %w", i, syntax.Offset, err))
		case err != nil:
			return fmt.Errorf("fanout: read manifest: element %d: %w", i, err)
		}
		if err := emit(i, e.file()); err != nil {
			return err
		}
	}
	tok, err = dec.Token()
	switch {
	case err == nil && tok == json.Delim(']'):
		end := dec.InputOffset()
		if _, err := dec.Token(); err == io.EOF {
			return nil
		}
		return bad(&EntryError{i, fmt.Sprintf("more after the JSON array, which ends at byte %d: ignored", end)})
	case err == io.EOF, cut(err):
		return bad(&EntryError{i, fmt.Sprintf("the JSON array ends without its ']' after %d elements: the manifest may be cut short", i-1)})
	case errors.As(err, &syntax):
		return retry.MarkPermanent(fmt.Errorf("fanout: read manifest: after element %d, at byte %d: %w", i-1, syntax.Offset, err))
	}
	return fmt.Errorf("fanout: read manifest: after element %d: %w", i-1, err)
}

// endReader notes whether r ended cleanly (io.EOF): then a decoder's io.ErrUnexpectedEOF
// means the content is cut short, not the connection.
type endReader struct {
	r   io.Reader
	end bool
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.end = true
	}
	return n, err
}
