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

// Read streams the manifest's files to fn, in order. A bad entry goes to bad (which may
// stop the read by returning an error); defaultBucket fills entries without a bucket.
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
		}
		return fn(file)
	}
	switch f {
	case FormatCSV:
		cr := csv.NewReader(bufio.NewReaderSize(r, 256<<10))
		cr.FieldsPerRecord = -1
		cr.ReuseRecord = true
		for line := 1; ; line++ {
			rec, err := cr.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				var pe *csv.ParseError
				if errors.As(err, &pe) {
					if berr := bad(&EntryError{line, pe.Err.Error()}); berr != nil {
						return berr
					}
					continue
				}
				return fmt.Errorf("fanout: read manifest: %w", err)
			}
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
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 256<<10), 4<<20)
		for line := 1; sc.Scan(); line++ {
			b := bytes.TrimSpace(sc.Bytes())
			if len(b) == 0 {
				continue
			}
			var e jsonEntry
			if err := json.Unmarshal(b, &e); err != nil {
				if err := bad(&EntryError{line, "not a JSON object: " + err.Error()}); err != nil {
					return err
				}
				continue
			}
			if err := emit(line, e.file()); err != nil {
				return err
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("fanout: read manifest: %w", err)
		}
		return nil
	case FormatJSONArray:
		dec := json.NewDecoder(bufio.NewReaderSize(r, 256<<10))
		tok, err := dec.Token()
		if err != nil || tok != json.Delim('[') {
			return fmt.Errorf("fanout: read manifest: a JSON manifest must be an array of objects")
		}
		for i := 1; dec.More(); i++ {
			var e jsonEntry
			if err := dec.Decode(&e); err != nil {
				return fmt.Errorf("fanout: read manifest: element %d: %w", i, err)
			}
			if err := emit(i, e.file()); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("fanout: unknown manifest format %d", f)
}
