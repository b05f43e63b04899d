// Package job is fileflow's job engine: a job turns one request (a prefix, a manifest,
// an archive, one large file to split) into many file tasks, counts them in the ledger
// as they finish, and finishes exactly once — COMPLETE when no task is outstanding,
// FAILED early when failures pass the job's tolerance, or CANCELLED — with a report in
// the output bucket shaped like S3 Batch Operations' completion report and a
// notification on the completion topic. The dispatcher and the worker both use it.
package job

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fileflow/fileflow/pkg/source"
	"github.com/fileflow/fileflow/pkg/task"
)

// The job kinds.
const (
	KindPrefix   = "prefix"
	KindManifest = "manifest"
	KindArchive  = "archive"
	KindSplit    = "split"
)

// Spec is a job request: what `fileflow submit` sends, or the JSON dropped under the
// ingest bucket's jobs/ prefix.
type Spec struct {
	ID     string `json:"id,omitempty"` // default: generated
	Kind   string `json:"kind"`
	Bucket string `json:"bucket"`
	// Key is the manifest, the archive or the file to split; for a prefix job, the prefix.
	Key    string `json:"key"`
	Suffix string `json:"suffix,omitempty"` // prefix jobs: only keys ending so
	Parts  int    `json:"parts,omitempty"`  // split jobs: how many byte ranges
	// Tolerate is the failures the job accepts: a count ("25") or a percentage of the
	// files ("1%"). Past it the job fails early. Empty: any number (the job completes and
	// the report lists the failures).
	Tolerate string `json:"tolerate,omitempty"`
	Shards   int    `json:"shards,omitempty"` // counter shards; default 8
	// FilesPerTask bounds the files in one task message (default 100, at most 1000): a
	// worker batch is up to 10 messages, and each message is counted when all its files
	// are done, so smaller tasks spread a job over more environments and show progress
	// sooner; larger ones cost fewer SQS messages and counter writes.
	FilesPerTask int `json:"files_per_task,omitempty"`
	// ChunkBytes: manifests larger than this are read as byte-range chunks in parallel.
	ChunkBytes int64 `json:"chunk_bytes,omitempty"`
	// MaxMemberBytes and MaxRatio bound an archive job's entries (zip bombs): an entry
	// whose uncompressed size, or uncompressed size over compressed size, is over them is
	// reported as an invalid entry with the reason, never processed. Defaults: the
	// worker's, source.DefaultLimits (4 GiB, 200). Workers check their own limits
	// (FILEFLOW_ARCHIVE_MAX_MEMBER_BYTES, FILEFLOW_ARCHIVE_MAX_RATIO) again when they
	// open a member: raising these past them fails those members there instead.
	MaxMemberBytes int64   `json:"max_member_bytes,omitempty"`
	MaxRatio       float64 `json:"max_ratio,omitempty"`
}

// SpecPrefix is where job specs are uploaded in the ingest bucket (as <name>.json).
const SpecPrefix = "jobs/"

// IsSpecKey says whether an uploaded key is a job spec.
func IsSpecKey(key string) bool {
	return strings.HasPrefix(key, SpecPrefix) && strings.HasSuffix(key, ".json")
}

// DefaultShards spreads a job's counters over 8 items, so no single item caps a job
// (DynamoDB allows ~1,000 writes/s per item). All of a job's items (its record, shards
// and task markers) share one partition key, J#<job>, and so one partition's 1,000
// WCU/s until DynamoDB splits it for heat; a settlement is 2 WCU per item for ~4 items
// (marker, parent check, shard, job check) and counts a worker batch of up to 1,000
// files — some 40,000 files/s per job before a split (fileflow capacity).
const DefaultShards = 8

// DefaultFilesPerTask is the files per task message unless the spec says otherwise.
const DefaultFilesPerTask = 100

// DefaultChunkBytes is the manifest chunk size: ~16 MiB is ~200,000 lines.
const DefaultChunkBytes = 16 << 20

// ParseURI splits s3://bucket/key.
func ParseURI(uri string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(uri, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3://bucket/key URI", uri)
	}
	bucket, key, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q names no bucket", uri)
	}
	return bucket, key, nil
}

// NewID is a job id: sortable by time, unique by 6 random bytes.
func NewID(now time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "j" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// Validate fills defaults and reports every problem with the spec at once.
func (s *Spec) Validate() error {
	var errs []string
	switch s.Kind {
	case KindPrefix, KindManifest, KindArchive, KindSplit:
	default:
		errs = append(errs, fmt.Sprintf("kind %q: must be prefix, manifest, archive or split", s.Kind))
	}
	if s.Bucket == "" {
		errs = append(errs, "bucket: required")
	} else if err := task.CheckBucket(s.Bucket); err != nil {
		errs = append(errs, "bucket: "+err.Error())
	}
	switch {
	case s.Kind != KindPrefix && s.Key == "":
		errs = append(errs, "key: required for a "+s.Kind+" job")
	case s.Kind != KindPrefix && task.CheckKey(s.Key) != nil:
		errs = append(errs, "key: "+task.CheckKey(s.Key).Error())
	case len(s.Key) > task.MaxKeyBytes:
		errs = append(errs, fmt.Sprintf("key: a prefix of %d bytes is longer than any key (%d)", len(s.Key), task.MaxKeyBytes))
	}
	if s.Kind == KindSplit && (s.Parts < 1 || s.Parts > 10_000) {
		errs = append(errs, fmt.Sprintf("parts = %d: a split job needs 1..10000 parts", s.Parts))
	}
	if s.Kind != KindSplit && s.Parts != 0 {
		errs = append(errs, "parts: only for split jobs")
	}
	if _, err := ParseTolerance(s.Tolerate); err != nil {
		errs = append(errs, err.Error())
	}
	if s.Shards == 0 {
		s.Shards = DefaultShards
	}
	if s.Shards < 1 || s.Shards > 99 {
		errs = append(errs, fmt.Sprintf("shards = %d: must be in 1..99", s.Shards))
	}
	if s.FilesPerTask == 0 {
		s.FilesPerTask = DefaultFilesPerTask
	}
	if s.FilesPerTask < 1 || s.FilesPerTask > 1000 {
		errs = append(errs, fmt.Sprintf("files_per_task = %d: must be in 1..1000", s.FilesPerTask))
	}
	if s.ChunkBytes == 0 {
		s.ChunkBytes = DefaultChunkBytes
	}
	if s.ChunkBytes < 1024 {
		errs = append(errs, fmt.Sprintf("chunk_bytes = %d: at least 1024", s.ChunkBytes))
	}
	if s.Kind == KindArchive {
		if s.MaxMemberBytes == 0 {
			s.MaxMemberBytes = source.DefaultLimits.MaxMemberBytes
		}
		if s.MaxRatio == 0 {
			s.MaxRatio = source.DefaultLimits.MaxRatio
		}
		if s.MaxMemberBytes < 1 {
			errs = append(errs, fmt.Sprintf("max_member_bytes = %d: must be at least 1", s.MaxMemberBytes))
		}
		if !(s.MaxRatio >= 1) {
			errs = append(errs, fmt.Sprintf("max_ratio = %g: must be at least 1", s.MaxRatio))
		}
	} else if s.MaxMemberBytes != 0 || s.MaxRatio != 0 {
		errs = append(errs, "max_member_bytes, max_ratio: only for archive jobs")
	}
	if s.ID != "" && !validID(s.ID) {
		errs = append(errs, fmt.Sprintf("id %q: 1..100 letters, digits, '.', '-' or '_', not only dots (it names report keys and ledger items)", s.ID))
	}
	if len(errs) > 0 {
		return fmt.Errorf("job spec: %s", strings.Join(errs, "; "))
	}
	return nil
}

// validID says whether id can name a job: a single path element of report keys
// (reports/<id>/…) and the part of ledger keys after "J#".
func validID(id string) bool {
	if len(id) > 100 || strings.Trim(id, ".") == "" {
		return false
	}
	for _, r := range id {
		if !(r == '.' || r == '-' || r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return false
		}
	}
	return true
}

// ParseSpec decodes and validates a job spec: one JSON object, of known fields only.
func ParseSpec(b []byte) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("job spec: %w", err)
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		return s, fmt.Errorf("job spec: more after the spec's JSON object, which ends at byte %d (one spec per file)", end)
	}
	return s, s.Validate()
}

// ArchiveLimits are the limits an archive job lists its entries with.
func (s Spec) ArchiveLimits() source.Limits {
	return source.Limits{MaxMemberBytes: s.MaxMemberBytes, MaxRatio: s.MaxRatio}
}

// Source is the spec's object as s3://bucket/key.
func (s Spec) Source() string { return "s3://" + s.Bucket + "/" + s.Key }

// Tolerance is how many failed files a job accepts.
type Tolerance struct {
	Count   int64   // fail when failed > Count (with Percent 0)
	Percent float64 // fail when failed > Percent% of the files (if > 0)
	Set     bool
}

// MinSample is how many files must have finished before a percentage is judged early;
// at the end it is judged on all the files.
const MinSample = 100

// ParseTolerance reads "", "25" or "1.5%".
func ParseTolerance(s string) (Tolerance, error) {
	if s == "" {
		return Tolerance{}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v > 100 || math.IsNaN(v) {
			return Tolerance{}, fmt.Errorf("tolerate %q: a percentage must be in 0%%..100%%", s)
		}
		return Tolerance{Percent: v, Set: true}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return Tolerance{}, fmt.Errorf("tolerate %q: must be a count (25) or a percentage (1%%)", s)
	}
	return Tolerance{Count: n, Set: true}, nil
}

// Exceeded says whether failed of finished files (of listed so far) is past the
// tolerance; final means no file is outstanding.
func (t Tolerance) Exceeded(failed, finished int64, final bool) bool {
	switch {
	case !t.Set || failed == 0:
		return false
	case t.Percent == 0:
		return failed > t.Count
	case !final && finished < MinSample:
		return false
	default:
		return float64(failed) > t.Percent/100*float64(finished)
	}
}

func (t Tolerance) String() string {
	switch {
	case !t.Set:
		return "any"
	case t.Percent > 0:
		return strconv.FormatFloat(t.Percent, 'f', -1, 64) + "%"
	}
	return strconv.FormatInt(t.Count, 10)
}

// escapeKey encodes a key as S3 Batch Operations reports do.
func escapeKey(k string) string { return strings.ReplaceAll(url.QueryEscape(k), "%2F", "/") }
