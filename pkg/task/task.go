// Package task defines fileflow's wire formats: the task message that names files to
// process, and the decoding of S3 event notifications into the same files.
//
// An SQS message body is one of:
//
//   - an S3 event notification (AWS's shape: {"Records":[…]}); keys are URL-encoded with
//     '+' for a space, and one message may carry several records;
//   - the s3:TestEvent S3 sends when a notification configuration is created: not a file;
//   - either of them wrapped in an SNS notification (S3 → SNS → SQS, raw delivery off);
//   - an EventBridge event from S3 (S3 → EventBridge → SQS): "Object Created" names a
//     file, whose key is not URL-encoded; other S3 object events name none;
//   - a fileflow task message: {"v":1,"files":[…]}, which may name many files.
//
// Anything else is an [*InvalidError]: a permanent failure, never a reason to retry.
//
// A zip archive's member is named "<archive key>!/<entry name>" ([File.Name]), so its
// output goes beside the archive's own output, not under it: S3-API servers that store
// objects as files (versitygw, MinIO) cannot hold both "a.zip" and "a.zip/x".
package task

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// Version is the task message format this package writes and the newest it reads.
const Version = 1

// File is one object to process: a specific version of a key in a bucket.
type File struct {
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	VersionID string `json:"version_id,omitempty"`
	ETag      string `json:"etag,omitempty"`
	Size      int64  `json:"size,omitempty"`
	// Sequencer is the S3 event's sequencer, if the file came from one: of two events
	// of the same key, the one with the greater sequencer (the shorter right-padded with
	// zeros, then compared as strings) is the later.
	Sequencer string `json:"sequencer,omitempty"`
	// Range, if set, limits the file to bytes [Start, End) of the object: one part of a
	// split job, processed on its own and merged in order at the job's end.
	Range *Range `json:"range,omitempty"`
	// Member, if set, is one entry of the zip archive at Key: read through a ranged GET
	// of its compressed bytes, never the whole archive.
	Member *Member `json:"member,omitempty"`
	// Replay, if set, processes the file again although its revision already succeeded
	// (`fileflow replay`): once per replay id — a redelivery of the same replay is a
	// duplicate like any other.
	Replay string `json:"replay,omitempty"`
}

// Range is a byte range [Start, End) of an object: part Part of a split job.
type Range struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	Part  int   `json:"part"`
}

// Member is one entry of a zip archive.
type Member struct {
	Name           string `json:"name"`   // the entry's path inside the archive (validated)
	Offset         int64  `json:"offset"` // of the entry's compressed data in the archive
	CompressedSize int64  `json:"csize"`
	Size           int64  `json:"size"`   // uncompressed
	Method         uint16 `json:"method"` // 0 stored, 8 deflated
	CRC32          uint32 `json:"crc32"`
}

// Name is the file's logical key: the object key, or for an archive member
// "<archive key>!/<entry name>". Rules match it (a suffix rule sees the entry's
// suffix), outputs are named after it, and the ledger records it.
//
// Not "<archive key>/<entry name>": the archive is usually processed as a file too, its
// output named after its key, and a POSIX-backed S3 server cannot hold the object
// "a.zip" and objects under "a.zip/" (409 ObjectParentIsFile). Under "a.zip!/" only an
// object named exactly "a.zip!" could collide. '!' is one of the characters S3's key
// naming guidelines call safe, and "!/" is the jar-URL notation [File.String] uses.
func (f File) Name() string {
	if f.Member != nil {
		return f.Key + "!/" + f.Member.Name
	}
	return f.Key
}

// OutputName is the name the file's output is derived from: its Name as rename (the
// processors' renaming: gzip adds ".gz", gunzip drops it; nil: none) changes it, then
// with every run of "!" right before a "/" or at the end doubled — but for the single
// "!" that joins an archive member to its archive ("<archive key>!/<entry>"). Every
// other output name then has only even runs of "!" before a "/" and at its end, a
// member's exactly one odd run, so no object, however it is named, shares an output with
// an archive member. Keys without "!/" or a trailing "!" keep their names.
func (f File) OutputName(rename func(string) string) string {
	if rename == nil {
		rename = func(s string) string { return s }
	}
	if f.Member != nil {
		return escapeBangs(f.Key) + "!/" + escapeBangs(rename(f.Member.Name))
	}
	return escapeBangs(rename(f.Key))
}

// UniqueName is the file's name with the same escape as [File.OutputName]: two
// different files (an object and an archive member, members of two archives) never
// share it.
func (f File) UniqueName() string { return f.OutputName(nil) }

// escapeBangs doubles each run of "!" that ends right before a "/" or at the end of s.
func escapeBangs(s string) string {
	if !strings.Contains(s, "!/") && !strings.HasSuffix(s, "!") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == '!' {
			j++
		}
		if j > i {
			run := s[i:j]
			b.WriteString(run)
			if j == len(s) || s[j] == '/' {
				b.WriteString(run)
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// String is s3://bucket/key, with the member or byte range.
func (f File) String() string {
	switch {
	case f.Member != nil:
		return "s3://" + f.Bucket + "/" + f.Key + "!/" + f.Member.Name
	case f.Range != nil:
		return fmt.Sprintf("s3://%s/%s[%d:%d]", f.Bucket, f.Key, f.Range.Start, f.Range.End)
	}
	return "s3://" + f.Bucket + "/" + f.Key
}

// Metadata keys on every output object (S3 stores them as x-amz-meta-<key>): the
// worker writes them; a job's finalizer and the CLI read them.
const (
	MetaSource      = "fileflow-source"       // bucket/key of the input (hashed when long)
	MetaRevision    = "fileflow-revision"     // "v:<version id>" or "e:<etag>" of the input
	MetaSourceETag  = "fileflow-source-etag"  // the input's ETag: its content, whatever its version
	MetaSHA256      = "fileflow-sha256"       // of the bytes at the checksum processor
	MetaCRC32C      = "fileflow-crc32c"       // of the same bytes
	MetaContentType = "fileflow-content-type" // detected
	// MetaInput names the input an output belongs to (its bucket and unique name, or a
	// split part's range; hashed when long): an output key is never shared by two inputs.
	MetaInput = "fileflow-input"
)

// MetaValue makes a metadata value safe for an HTTP header, as the worker writes it:
// bytes outside printable ASCII (and '%') are percent-encoded, since S3 would reject or
// mangle them. Readers compare against MetaValue of what they expect.
func MetaValue(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			var b strings.Builder
			for j := 0; j < len(s); j++ {
				if c := s[j]; c < 0x20 || c > 0x7e || c == '%' {
					fmt.Fprintf(&b, "%%%02X", c)
				} else {
					b.WriteByte(c)
				}
			}
			return b.String()
		}
	}
	return s
}

// Message is a fileflow task message: a batch of files, optionally part of a job.
type Message struct {
	V     int    `json:"v"`
	JobID string `json:"job_id,omitempty"`
	// TaskID names the message within its job: a hash of its content (see [ContentID]),
	// so a duplicate delivery finds its marker and a re-run of its fan-out task over a
	// changed listing never gives other work the same id. Parent is the fan-out task
	// that sent it and ParentRun the run of that task (one delivery's attempt): the job
	// counts the task once, only after its parent, and only if the parent was counted by
	// that run (so a job cannot complete while fan-out is still sending, nor count work a
	// dead run sent).
	TaskID    string `json:"task_id,omitempty"`
	Parent    string `json:"parent,omitempty"`
	ParentRun string `json:"parent_run,omitempty"`
	Files     []File `json:"files"`
}

// Encode returns the message as JSON with the current [Version]. No files encode as an
// empty list, which [Decode] reads (a missing or null "files" it refuses).
func (m Message) Encode() ([]byte, error) {
	m.V = Version
	if m.Files == nil {
		m.Files = []File{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("task: encode: %w", err)
	}
	return b, nil
}

// RootTask is the id of a job's first fan-out task.
const RootTask = "root"

// ContentID is the id of a child of task parent: kind ("m" a task message of files, "l"
// a fan-out task), then a hash of the parent, the kind, the child's content (sum: a
// hash of what it carries — its files, or its prefix, token or byte range) and
// occurrence, the number of earlier children of the same parent run with the same
// content (a manifest may name the same files twice). The id never depends on the
// child's position, so a re-run over a changed listing cannot give other work an id
// that was used before; and it is fixed-length however deep the fan-out goes.
func ContentID(parent, kind string, sum []byte, occurrence int) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", parent, kind, occurrence)
	h.Write(sum)
	return kind + hex.EncodeToString(h.Sum(nil)[:10])
}

// Kind tells what a decoded body was.
type Kind int

// The kinds of body [Decode] recognises.
const (
	KindS3Event Kind = iota + 1
	KindTestEvent
	KindTask
)

// Decoded is the result of [Decode].
type Decoded struct {
	Kind      Kind
	JobID     string
	TaskID    string
	Parent    string
	ParentRun string
	Files     []File // empty for a test event, or an S3 event with no ObjectCreated record
	// Bad are the entries of a task message that are not files: each fails on its own,
	// with its reason; the message's other files are processed.
	Bad []BadEntry
}

// BadEntry is an entry of a task message that cannot be processed.
type BadEntry struct {
	Index int   // its place in the message's "files"
	File  File  // what could be read of it (bucket and key, if present)
	Err   error // an [*InvalidError]
}

// InvalidError says why a body could not be decoded. It is permanent: the same body will
// never decode, so it must be recorded and acknowledged, not retried.
type InvalidError struct {
	Reason string
	Err    error
}

func (e *InvalidError) Error() string {
	if e.Err != nil {
		return "task: invalid message: " + e.Reason + ": " + e.Err.Error()
	}
	return "task: invalid message: " + e.Reason
}

func (e *InvalidError) Unwrap() error { return e.Err }

// Permanent marks the error as one that retrying cannot fix.
func (e *InvalidError) Permanent() bool { return true }

func invalid(reason string, err error) error { return &InvalidError{Reason: reason, Err: err} }

// envelope holds the fields that tell the kinds apart.
type envelope struct {
	Records   *[]s3Record     `json:"Records"`
	Event     string          `json:"Event"`
	V         *int            `json:"v"`
	JobID     string          `json:"job_id"`
	TaskID    string          `json:"task_id"`
	Parent    string          `json:"parent"`
	ParentRun string          `json:"parent_run"`
	Files     json.RawMessage `json:"files"`
	wrapperFields
}

type s3Record struct {
	EventSource string `json:"eventSource"`
	EventName   string `json:"eventName"`
	S3          struct {
		Bucket struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object struct {
			Key       string `json:"key"`
			Size      int64  `json:"size"`
			ETag      string `json:"eTag"`
			VersionID string `json:"versionId"`
			Sequencer string `json:"sequencer"`
		} `json:"object"`
	} `json:"s3"`
}

// Decode reads an SQS message body. The error, if any, is an [*InvalidError].
func Decode(body []byte) (Decoded, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return Decoded{}, invalid("empty body", nil)
	}
	if body[0] != '{' {
		return Decoded{}, invalid("body is not a JSON object", nil)
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return Decoded{}, invalid("malformed JSON", err)
	}
	switch {
	case env.Records != nil:
		return decodeS3(*env.Records)
	case env.Event == "s3:TestEvent":
		return Decoded{Kind: KindTestEvent}, nil
	case env.V != nil:
		d, err := decodeTask(*env.V, env.JobID, env.Files)
		if err == nil && d.JobID != "" && env.TaskID == "" {
			return Decoded{}, invalid("task message of job "+d.JobID+" has no \"task_id\"", nil)
		}
		d.TaskID, d.Parent, d.ParentRun = env.TaskID, env.Parent, env.ParentRun
		return d, err
	case env.SNSType != "":
		return decodeSNS(body)
	case env.Source != "" || env.DetailType != "":
		return decodeEventBridge(body)
	default:
		return Decoded{}, unknownShape(body)
	}
}

func decodeS3(records []s3Record) (Decoded, error) {
	d := Decoded{Kind: KindS3Event}
	for i, r := range records {
		if r.EventSource != "aws:s3" {
			return Decoded{}, invalid(fmt.Sprintf("record %d: eventSource %q is not aws:s3", i, r.EventSource), nil)
		}
		if !strings.HasPrefix(r.EventName, "ObjectCreated:") {
			continue // removals, restores, lifecycle: not files to process
		}
		if r.S3.Bucket.Name == "" {
			return Decoded{}, invalid(fmt.Sprintf("record %d: no bucket name", i), nil)
		}
		key, err := url.QueryUnescape(r.S3.Object.Key)
		if err != nil {
			return Decoded{}, invalid(fmt.Sprintf("record %d: object key %q is not URL-encoded", i, r.S3.Object.Key), err)
		}
		if key == "" {
			return Decoded{}, invalid(fmt.Sprintf("record %d: empty object key", i), nil)
		}
		if err := CheckBucket(r.S3.Bucket.Name); err != nil {
			return Decoded{}, invalid(fmt.Sprintf("record %d", i), err)
		}
		if err := CheckKey(key); err != nil {
			return Decoded{}, invalid(fmt.Sprintf("record %d: object key %q", i, r.S3.Object.Key), err)
		}
		if r.S3.Object.Size < 0 {
			return Decoded{}, invalid(fmt.Sprintf("record %d: negative object size %d", i, r.S3.Object.Size), nil)
		}
		d.Files = append(d.Files, File{
			Bucket:    r.S3.Bucket.Name,
			Key:       key,
			VersionID: r.S3.Object.VersionID,
			ETag:      strings.Trim(r.S3.Object.ETag, `"`),
			Size:      r.S3.Object.Size,
			Sequencer: r.S3.Object.Sequencer,
		})
	}
	return d, nil
}

func decodeTask(v int, jobID string, raw json.RawMessage) (Decoded, error) {
	if v < 1 || v > Version {
		return Decoded{}, invalid(fmt.Sprintf("task message version %d is not supported (this worker reads 1..%d)", v, Version), nil)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return Decoded{}, invalid("task message has no \"files\"", nil)
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return Decoded{}, invalid("task message \"files\" is not a list", err)
	}
	d := Decoded{Kind: KindTask, JobID: jobID}
	for i, e := range entries {
		f, err := decodeFile(i, e)
		if err != nil {
			d.Bad = append(d.Bad, BadEntry{Index: i, File: f, Err: err})
			continue
		}
		d.Files = append(d.Files, f)
	}
	return d, nil
}

// decodeFile reads one entry of a task message; on error, the file holds what could be
// read of it.
func decodeFile(i int, raw json.RawMessage) (File, error) {
	var f File
	if err := json.Unmarshal(raw, &f); err != nil {
		// Keep what names the entry, if anything does.
		var id struct {
			Bucket any `json:"bucket"`
			Key    any `json:"key"`
		}
		_ = json.Unmarshal(raw, &id)
		b, _ := id.Bucket.(string)
		k, _ := id.Key.(string)
		return File{Bucket: b, Key: k}, invalid(fmt.Sprintf("task file %d is not a file entry", i), err)
	}
	switch r, m := f.Range, f.Member; {
	case f.Bucket == "" || f.Key == "":
		return f, invalid(fmt.Sprintf("task file %d: bucket and key are required", i), nil)
	case f.Size < 0:
		return f, invalid(fmt.Sprintf("task file %d (%s): negative size %d", i, f, f.Size), nil)
	case r != nil && (r.Start < 0 || r.End < r.Start || r.Part < 0):
		return f, invalid(fmt.Sprintf("task file %d (%s): bad range [%d, %d) part %d", i, f.Key, r.Start, r.End, r.Part), nil)
	case CheckBucket(f.Bucket) != nil:
		return f, invalid(fmt.Sprintf("task file %d", i), CheckBucket(f.Bucket))
	case CheckKey(f.Key) != nil:
		return f, invalid(fmt.Sprintf("task file %d", i), CheckKey(f.Key))
	case m != nil && (m.Name == "" || m.Offset < 0 || m.CompressedSize < 0 || m.Size < 0):
		return f, invalid(fmt.Sprintf("task file %d (%s): bad archive member %+v", i, f.Key, *m), nil)
	case m != nil && CheckEntryName(m.Name) != nil:
		return f, invalid(fmt.Sprintf("task file %d (%s): archive member", i, f.Key), CheckEntryName(m.Name))
	case r != nil && m != nil:
		return f, invalid(fmt.Sprintf("task file %d (%s): a byte range and an archive member at once", i, f.Key), nil)
	}
	return f, nil
}
