// Package audit answers an operator's questions about files from the ledger and S3:
// what failed in a period ([Failures]) and the whole history of one file ([Trail]).
//
// It reads only: the failure index and file records (pkg/ledger), and HEAD requests for
// a file's source and outputs.
package audit

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// Ledger is the part of the ledger store the package calls.
type Ledger interface {
	FailedBetween(ctx context.Context, since, until time.Time) ([]ledger.Failed, error)
	FileItems(ctx context.Context, bucket, key string) ([]ledger.Record, error)
}

// Objects is the part of the S3 client the package calls.
type Objects interface {
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
}

var _ Ledger = (*ledger.Store)(nil)

// Failure is one failed file, or one poison message.
type Failure struct {
	At       time.Time `json:"at"`   // its last attempt
	Kind     string    `json:"kind"` // "file" or "poison"
	Status   string    `json:"status"`
	Code     string    `json:"code,omitempty"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts,omitempty"`
	// A file's: where it is, which revision failed, its record's scope ("" for the key's
	// own; "job:<id>" or "unread" for a failure kept beside it), its job.
	File     string `json:"file,omitempty"` // s3://bucket/key
	Bucket   string `json:"bucket,omitempty"`
	Key      string `json:"key,omitempty"`
	Revision string `json:"revision,omitempty"`
	Scope    string `json:"scope,omitempty"`
	JobID    string `json:"job_id,omitempty"`
	// A poison message's: its id and queue.
	MessageID string `json:"message_id,omitempty"`
	Queue     string `json:"queue,omitempty"`
}

// PoisonCode is a poison message's code: an unreadable message is an entry that is not a
// file, as a job's report names a bad task entry.
const PoisonCode = failure.InvalidEntry

// Filter selects failures.
type Filter struct {
	Since, Until time.Time // Until zero: now
	JobID        string    // only this job's files
	Reason       string    // reason or code contains this, any case
}

// Failures lists the failed and dead-lettered files and the poison messages of the
// period, oldest first, from the ledger's failure index.
func Failures(ctx context.Context, l Ledger, f Filter) ([]Failure, error) {
	if f.Until.IsZero() {
		f.Until = time.Now()
	}
	entries, err := l.FailedBetween(ctx, f.Since, f.Until)
	if err != nil {
		return nil, err
	}
	want := strings.ToLower(f.Reason)
	out := []Failure{}
	for _, e := range entries {
		var x Failure
		switch {
		case e.File != nil:
			r := e.File
			x = Failure{At: e.At, Kind: "file", Status: string(r.Status), Code: CodeOf(*r), Reason: r.Reason, Attempts: r.Attempts,
				File: "s3://" + r.Bucket + "/" + r.Key, Bucket: r.Bucket, Key: r.Key, Revision: r.Rev().String(), Scope: r.Scope(), JobID: r.JobID}
			if last := r.Last(); !last.At.IsZero() {
				x.At = last.At
			}
		case e.Poison != nil:
			p := e.Poison
			x = Failure{At: p.At, Kind: "poison", Status: string(ledger.StatusFailed), Code: PoisonCode, Reason: p.Reason, Attempts: p.Receive,
				MessageID: p.MessageID, Queue: p.Queue}
		default:
			continue
		}
		if f.JobID != "" && x.JobID != f.JobID {
			continue
		}
		if want != "" && !strings.Contains(strings.ToLower(x.Reason), want) && !strings.Contains(strings.ToLower(x.Code), want) {
			continue
		}
		out = append(out, x)
	}
	return out, nil
}

// CodeOf is a failed record's code; records written before codes were kept get the one
// their status implies (RetriesExhausted for DEAD_LETTERED), else "".
func CodeOf(r ledger.Record) string {
	if r.Code == "" && r.Status == ledger.StatusDeadLettered {
		return failure.RetriesExhausted
	}
	return r.Code
}

// Trail is one file's whole history.
type Trail struct {
	File   string `json:"file"` // s3://bucket/key
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	// Record is the key's record (its newest revision processed), or an archive
	// member's; nil if the ledger has none.
	Record *ledger.Record `json:"record,omitempty"`
	// Superseded are older revisions that arrived after a newer one, never processed or
	// not committed; Beside are records kept beside the key's: a job's own (a split part,
	// a manifest row without a revision), a failure before any revision was read.
	Superseded []ledger.Record `json:"superseded,omitempty"`
	Beside     []ledger.Record `json:"beside,omitempty"`
	// Jobs are the jobs the ledger names for the file (those that wrote a record of it).
	Jobs []string `json:"jobs"`
	// Source is the object in S3 now; Newer says it holds another revision than the
	// record's (not processed yet, or its event is still on its way).
	Source  *Object  `json:"source,omitempty"`
	Newer   bool     `json:"newer_revision_in_s3"`
	Outputs []Output `json:"outputs,omitempty"`
	// Version, when asked about one: what became of it.
	Version *VersionState `json:"version,omitempty"`
}

// Object is an S3 object's current state.
type Object struct {
	Exists      bool      `json:"exists"`
	VersionID   string    `json:"version_id,omitempty"`
	ETag        string    `json:"etag,omitempty"`
	Size        int64     `json:"size,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Modified    time.Time `json:"last_modified,omitzero"`
	Revision    string    `json:"revision,omitempty"` // an output's fileflow-revision metadata
}

// Output is one of the record's outputs and whether it is there, holding the record's
// revision.
type Output struct {
	URI string `json:"uri"`
	Object
	Matches bool `json:"matches_record"`
}

// VersionState is what became of one version of the key.
type VersionState struct {
	VersionID string `json:"version_id"`
	// State is "current" (the record's), "superseded" (kept as such, By names the newer
	// revision), "replaced" (the record's revision replaced it when it was processed), or
	// "unknown" (the ledger does not name it).
	State string         `json:"state"`
	By    string         `json:"by,omitempty"`
	Rec   *ledger.Record `json:"record,omitempty"`
}

// TrailOf reads everything the ledger keeps of the file at bucket/key (an archive
// member is "<zip>!/<entry>"), and HEADs its source and outputs. version, if set, is a
// version id to account for.
func TrailOf(ctx context.Context, l Ledger, objects Objects, bucket, key, version string) (Trail, error) {
	t := Trail{File: "s3://" + bucket + "/" + key, Bucket: bucket, Key: key, Jobs: []string{}}
	recs, err := l.FileItems(ctx, bucket, key)
	if err != nil {
		return t, err
	}
	jobs := map[string]bool{}
	for i := range recs {
		r := recs[i]
		if r.JobID != "" {
			jobs[r.JobID] = true
		}
		switch sc := r.Scope(); {
		case sc == "" || sc == ledger.ScopeMember:
			if t.Record == nil || sc == "" {
				t.Record = &r
			}
		case strings.HasPrefix(sc, "superseded#"):
			t.Superseded = append(t.Superseded, r)
		default:
			if id, ok := strings.CutPrefix(sc, "job:"); ok {
				jobs[id] = true
			}
			t.Beside = append(t.Beside, r)
		}
	}
	for id := range jobs {
		t.Jobs = append(t.Jobs, id)
	}
	sort.Strings(t.Jobs)
	sort.Slice(t.Superseded, func(i, j int) bool { return t.Superseded[i].UpdatedAt.Before(t.Superseded[j].UpdatedAt) })

	// The source: the object itself, or for an archive member its archive.
	srcKey := key
	if t.Record != nil && t.Record.Scope() == ledger.ScopeMember {
		if t.Record.Member != nil {
			srcKey = strings.TrimSuffix(key, "!/"+t.Record.Member.Name)
		} else if i := strings.Index(key, "!/"); i > 0 {
			srcKey = key[:i]
		}
	}
	src, err := head(ctx, objects, bucket, srcKey)
	if err != nil {
		return t, err
	}
	t.Source = &src
	if t.Record != nil && src.Exists {
		rec := t.Record.Rev()
		now := ledger.Revision{VersionID: src.VersionID, ETag: src.ETag}
		t.Newer = !rec.Same(now)
	}
	if t.Record != nil {
		for _, uri := range t.Record.Outputs {
			ob, ok := strings.CutPrefix(uri, "s3://")
			b, k, _ := strings.Cut(ob, "/")
			if !ok || k == "" {
				continue
			}
			o, err := head(ctx, objects, b, k)
			if err != nil {
				return t, err
			}
			t.Outputs = append(t.Outputs, Output{URI: uri, Object: o, Matches: o.Exists && o.Revision == task.MetaValue(t.Record.Rev().String())})
		}
	}
	if version != "" {
		t.Version = versionState(t, version)
	}
	return t, nil
}

func versionState(t Trail, v string) *VersionState {
	vs := &VersionState{VersionID: v, State: "unknown"}
	if r := t.Record; r != nil {
		switch {
		case r.VersionID == v:
			vs.State, vs.Rec = "current", r
			return vs
		case r.PrevVersionID == v:
			vs.State, vs.By = "replaced", r.Rev().String()
		}
	}
	for i := range t.Superseded {
		if s := t.Superseded[i]; s.VersionID == v {
			vs.State, vs.By, vs.Rec = "superseded", s.SupersededBy, &t.Superseded[i]
		}
	}
	return vs
}

func head(ctx context.Context, objects Objects, bucket, key string) (Object, error) {
	out, err := objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	var api smithy.APIError
	if errors.As(err, &api) && (api.ErrorCode() == "NotFound" || api.ErrorCode() == "NoSuchKey") {
		return Object{}, nil
	}
	if err != nil {
		return Object{}, fmt.Errorf("audit: head s3://%s/%s: %w", bucket, key, err)
	}
	o := Object{Exists: true, VersionID: aws.ToString(out.VersionId), ETag: strings.Trim(aws.ToString(out.ETag), `"`),
		Size: aws.ToInt64(out.ContentLength), ContentType: aws.ToString(out.ContentType), Revision: out.Metadata[task.MetaRevision]}
	if out.LastModified != nil {
		o.Modified = out.LastModified.UTC()
	}
	if o.VersionID == "null" {
		o.VersionID = ""
	}
	return o, nil
}
