package job

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
	"github.com/fileflow/fileflow/pkg/upload"
)

// A job's report, in the output bucket, is shaped like S3 Batch Operations' completion
// report:
//
//	<prefix>reports/<job>/manifest.json          what the report holds, and the job's outcome
//	<prefix>reports/<job>/results/succeeded.csv  Bucket,Key,VersionId,TaskStatus,ErrorCode,HTTPStatusCode,ResultMessage
//	<prefix>reports/<job>/results/failed.csv
//	<prefix>reports/<job>/parts/<task>.csv       one per task, written before it is counted
//
// Keys are URL-encoded as in S3's reports. A success's ResultMessage is its output. The
// report holds the parts of exactly the tasks the ledger counted (their markers say how
// many lines each wrote): a part of a task that was never counted (an orphan) is left
// out, and a counted task's missing part is named, never masked by other lines.

// Task statuses in a report line.
const (
	Succeeded = "succeeded"
	Failed    = "failed"
)

// Line is one file's row in a report.
type Line struct {
	Bucket, Key, VersionID string
	Status                 string // Succeeded or Failed
	ErrorCode              string // for a failure: InvalidEntry, Rejected, PermanentFailure, RetriesExhausted, …
	HTTPStatus             int
	Message                string // a failure's reason; a success's output URI
}

func (l Line) record() []string {
	return []string{l.Bucket, escapeKey(l.Key), l.VersionID, l.Status, l.ErrorCode, strconv.Itoa(l.HTTPStatus), l.Message}
}

// ReportSchema is the CSV columns, as S3 Batch Operations names them.
const ReportSchema = "Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, ResultMessage"

// ReportPrefix is where a job's report goes in the output bucket.
func (e *Engine) ReportPrefix(jobID string) string { return e.OutputPrefix + "reports/" + jobID + "/" }

// WritePart stores report lines as the part named part (a task's id and its delivery's
// suffix). No lines, no part.
func (e *Engine) WritePart(ctx context.Context, jobID, part string, lines []Line) error {
	if len(lines) == 0 {
		return nil
	}
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	for _, l := range lines {
		_ = w.Write(l.record())
	}
	w.Flush()
	_, err := e.Objects.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(e.OutputBucket), Key: aws.String(e.partKey(jobID, part)),
		Body: bytes.NewReader(b.Bytes()), ContentType: aws.String("text/csv"),
	})
	if err != nil {
		return fmt.Errorf("job %s: report part %s: %w", jobID, part, err)
	}
	return nil
}

func (e *Engine) partKey(jobID, part string) string {
	return e.ReportPrefix(jobID) + "parts/" + part + ".csv"
}

// removePart deletes a part that was not counted (best effort).
func (e *Engine) removePart(ctx context.Context, jobID, part string) {
	if _, err := e.Objects.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(e.OutputBucket), Key: aws.String(e.partKey(jobID, part))}); err != nil {
		e.log().WarnContext(ctx, "cannot remove an uncounted report part; the bucket's expiry will", "job_id", jobID, "part", part, "error", err)
	}
}

// ErrReportIncomplete: report lines of counted tasks are still being written.
var ErrReportIncomplete = errors.New("report lines are still missing")

type report struct {
	manifestURI string
	merged      string
	missing     []string // counted tasks whose part is missing
}

// manifest is manifest.json: S3 Batch Operations' fields, then fileflow's.
type manifest struct {
	Format             string          `json:"Format"`
	ReportCreationDate string          `json:"ReportCreationDate"`
	Results            []manifestEntry `json:"Results"`
	ReportSchema       string          `json:"ReportSchema"`

	JobID        string        `json:"JobId"`
	JobStatus    string        `json:"JobStatus"`
	StatusReason string        `json:"StatusReason,omitempty"`
	Kind         string        `json:"Kind"`
	Source       string        `json:"Source"`
	Counts       ledger.Counts `json:"Counts"`
	CreatedAt    string        `json:"CreatedAt"`
	FinishedAt   string        `json:"FinishedAt"`
	DurationMS   int64         `json:"DurationMs"`
	MergedOutput string        `json:"MergedOutput,omitempty"`
	// A forced report (the finalizer's last attempt) names the counted tasks whose lines
	// are missing, and how many lines they wrote.
	TasksMissingLines []string `json:"TasksMissingLines,omitempty"`
	LinesMissing      int64    `json:"LinesMissing,omitempty"`
	TasksCounted      int      `json:"TasksCounted"`
}

type manifestEntry struct {
	TaskExecutionStatus string `json:"TaskExecutionStatus"`
	Bucket              string `json:"Bucket"`
	MD5Checksum         string `json:"MD5Checksum"`
	Key                 string `json:"Key"`
	Lines               int64  `json:"Lines"`
}

// writeReport merges the parts into the two result files (in task-id order), merges a
// complete split job's parts, and writes manifest.json last.
func (e *Engine) writeReport(ctx context.Context, j ledger.Job, spec Spec, force bool) (report, error) {
	prefix := e.ReportPrefix(j.ID)
	var rep report
	counted, err := e.Ledger.CountedTasks(ctx, j.ID)
	if err != nil {
		return rep, err
	}
	var parts []string
	lines := map[string]int64{}
	task := map[string]string{}
	for _, t := range counted {
		if t.Lines > 0 {
			part := t.Part
			if part == "" {
				part = t.TaskID // a marker from before parts were named per delivery
			}
			key := e.partKey(j.ID, part)
			parts = append(parts, key)
			lines[key], task[key] = t.Lines, t.TaskID
		}
	}
	up, err := upload.New(e.Objects, 0)
	if err != nil {
		return rep, err
	}
	type sink struct {
		status string
		pw     *io.PipeWriter
		w      *csv.Writer
		lines  int64
		done   chan error
		etag   string
	}
	sinks := map[string]*sink{}
	for _, st := range []string{Succeeded, Failed} {
		pr, pw := io.Pipe()
		s := &sink{status: st, pw: pw, w: csv.NewWriter(pw), done: make(chan error, 1)}
		sinks[st] = s
		go func() {
			res, err := up.Upload(ctx, upload.Object{Bucket: e.OutputBucket, Key: prefix + "results/" + st + ".csv",
				Describe: func() upload.Description { return upload.Description{ContentType: "text/csv"} }}, pr)
			pr.CloseWithError(err)
			if err == nil {
				s.etag = strings.Trim(res.ETag, `"`)
			}
			s.done <- err
		}()
	}
	var splitParts []splitPart
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := e.fetchParts(rctx, parts)
	readErr := func() error {
		for i, key := range parts {
			body, err := next(i)
			var nsk *s3types.NoSuchKey
			if errors.As(err, &nsk) {
				rep.missing = append(rep.missing, task[key])
				continue
			}
			if err != nil {
				return fmt.Errorf("read report part %s: %w", key, err)
			}
			r := csv.NewReader(bytes.NewReader(body))
			r.FieldsPerRecord = 7
			for {
				rec, err := r.Read()
				if err == io.EOF {
					break
				}
				if err != nil {
					return fmt.Errorf("report part %s: %w", key, err)
				}
				s, ok := sinks[rec[3]]
				if !ok {
					continue
				}
				if err := s.w.Write(rec); err != nil {
					return err
				}
				s.lines++
				if spec.Kind == KindSplit && rec[3] == Succeeded {
					if p, ok := parsePartOutput(rec[6]); ok {
						splitParts = append(splitParts, p)
					}
				}
			}
		}
		return nil
	}()
	cancel()
	var errs []error
	for _, st := range []string{Succeeded, Failed} {
		s := sinks[st]
		s.w.Flush()
		s.pw.CloseWithError(readErr)
		if err := <-s.done; err != nil {
			errs = append(errs, err)
		}
	}
	if readErr != nil {
		return rep, fmt.Errorf("job %s: report: %w", j.ID, readErr)
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("job %s: report: %v", j.ID, errs)
	}

	// A task writes its part before it is counted, so a counted task's part is missing
	// only if it was lost since (deleted, expired): wait for a redelivery to write it
	// again, unless this is the last attempt; then the report names what is missing.
	var missingLines int64
	for key, t := range task {
		if slices.Contains(rep.missing, t) {
			missingLines += lines[key]
		}
	}
	if len(rep.missing) > 0 && !force {
		return rep, fmt.Errorf("job %s: the report lines of %d counted tasks are missing (%s): %w",
			j.ID, len(rep.missing), strings.Join(rep.missing[:min(5, len(rep.missing))], ", "), ErrReportIncomplete)
	}
	if spec.Kind == KindSplit && j.Status == ledger.JobComplete {
		if rep.merged, err = e.merge(ctx, j, spec, splitParts); err != nil {
			return rep, err
		}
	}
	m := manifest{
		Format: "Report_CSV_20180820", ReportCreationDate: e.now().UTC().Format(time.RFC3339), ReportSchema: ReportSchema,
		JobID: j.ID, JobStatus: string(j.Status), StatusReason: j.Reason, Kind: spec.Kind, Source: spec.Source(),
		Counts: j.Final, CreatedAt: j.CreatedAt.UTC().Format(time.RFC3339Nano), FinishedAt: j.FinishedAt.UTC().Format(time.RFC3339Nano),
		DurationMS: j.FinishedAt.Sub(j.CreatedAt).Milliseconds(), MergedOutput: rep.merged,
		TasksMissingLines: rep.missing, LinesMissing: missingLines, TasksCounted: len(counted),
	}
	for _, st := range []string{Succeeded, Failed} {
		m.Results = append(m.Results, manifestEntry{TaskExecutionStatus: st, Bucket: e.OutputBucket,
			Key: prefix + "results/" + st + ".csv", MD5Checksum: sinks[st].etag, Lines: sinks[st].lines})
	}
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return rep, err
	}
	_, err = e.Objects.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.OutputBucket), Key: aws.String(prefix + "manifest.json"),
		Body: bytes.NewReader(body), ContentType: aws.String("application/json")})
	if err != nil {
		return rep, fmt.Errorf("job %s: report manifest: %w", j.ID, err)
	}
	rep.manifestURI = "s3://" + e.OutputBucket + "/" + prefix + "manifest.json"
	return rep, nil
}

// partReaders is how many report parts are read at once while merging.
const partReaders = 16

type fetchedPart struct {
	body []byte
	err  error
}

// fetchParts reads the parts with partReaders at once, in order: next(i) returns part
// i (call it for i = 0, 1, …). At most partReaders parts are fetched ahead of the merge.
func (e *Engine) fetchParts(ctx context.Context, keys []string) (next func(i int) ([]byte, error)) {
	out := make([]chan fetchedPart, len(keys))
	for i := range out {
		out[i] = make(chan fetchedPart, 1)
	}
	window := make(chan struct{}, partReaders)
	go func() {
		for i, key := range keys {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				for _, c := range out[i:] {
					c <- fetchedPart{err: ctx.Err()}
				}
				return
			}
			go func() {
				var f fetchedPart
				res, err := e.Objects.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.OutputBucket), Key: aws.String(key)})
				if err == nil {
					f.body, err = io.ReadAll(res.Body)
					res.Body.Close()
				}
				f.err = err
				out[i] <- f
			}()
		}
	}()
	return func(i int) ([]byte, error) {
		f := <-out[i]
		<-window
		return f.body, f.err
	}
}

// Split parts' outputs are named <merged key>.parts/<job>/<part, 5 digits>.
type splitPart struct {
	n           int
	bucket, key string
	merged      string
}

// PartOutputKey names part n of a split job's output whose merged key is merged.
func PartOutputKey(merged, jobID string, n int) string {
	return fmt.Sprintf("%s.parts/%s/%05d", merged, jobID, n)
}

func parsePartOutput(uri string) (splitPart, bool) {
	bucket, key, err := ParseURI(uri)
	if err != nil {
		return splitPart{}, false
	}
	i := strings.LastIndex(key, ".parts/")
	if i < 0 {
		return splitPart{}, false
	}
	rest := key[i+len(".parts/"):]
	_, num, ok := strings.Cut(rest, "/")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		return splitPart{}, false
	}
	return splitPart{n: n, bucket: bucket, key: key, merged: key[:i]}, true
}

// merge concatenates a split job's part outputs, in order, into the merged output.
func (e *Engine) merge(ctx context.Context, j ledger.Job, spec Spec, parts []splitPart) (string, error) {
	if len(parts) == 0 {
		return "", nil
	}
	sort.Slice(parts, func(a, b int) bool { return parts[a].n < parts[b].n })
	for i, p := range parts {
		if p.n != i || p.merged != parts[0].merged {
			return "", fmt.Errorf("job %s: split parts are not 0..%d of one output (part %d is %s)", j.ID, len(parts)-1, i, p.key)
		}
	}
	// The parts are merged beside them first, then the merge is promoted to the split
	// file's output key — only while the file, its ledger record and that output are
	// still the parts' revision (see promote). Otherwise the newer revision is the key's
	// (processed by its own event) and the merge stays beside the parts.
	bucket, target := parts[0].bucket, parts[0].merged
	temp := strings.TrimSuffix(parts[0].key, fmt.Sprintf("/%05d", parts[0].n)) + "/merged"
	current, rev, err := e.splitStillCurrent(ctx, spec, parts[0])
	if err != nil {
		return "", fmt.Errorf("job %s: merge: %w", j.ID, err)
	}
	meta := map[string]string{"fileflow-job": j.ID, "fileflow-source": url.PathEscape(spec.Bucket + "/" + spec.Key),
		"fileflow-parts": strconv.Itoa(len(parts)), task.MetaRevision: rev}
	size, err := e.mergeInto(ctx, j, bucket, temp, parts, meta)
	if err != nil {
		return "", err
	}
	if current {
		promoted, why, err := e.promote(ctx, spec, rev, bucket, temp, target, size)
		if err != nil {
			return "", fmt.Errorf("job %s: promote the merge to s3://%s/%s: %w", j.ID, bucket, target, err)
		}
		if promoted {
			if _, err := e.Objects.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(temp)}); err != nil {
				e.log().WarnContext(ctx, "cannot remove the merge beside the parts; the bucket's expiry will", "key", temp, "error", err)
			}
			return "s3://" + bucket + "/" + target, nil
		}
		e.log().WarnContext(ctx, "the split file's output is another revision's: the merge stays beside its parts", "job_id", j.ID, "why", why,
			"merged", "s3://"+bucket+"/"+temp)
	} else {
		e.log().WarnContext(ctx, "the split file changed since the job was planned: merged beside its parts, not over the key's output",
			"job_id", j.ID, "source", spec.Source(), "parts_of", rev, "merged", "s3://"+bucket+"/"+temp)
	}
	return "s3://" + bucket + "/" + temp, nil
}

// mergeInto concatenates the parts, in order, into bucket/key: server-side when S3
// allows it, else streamed. It returns the merged size.
func (e *Engine) mergeInto(ctx context.Context, j ledger.Job, bucket, key string, parts []splitPart, meta map[string]string) (int64, error) {
	copied, size, err := e.mergeByCopy(ctx, bucket, key, parts, meta)
	if err != nil {
		return 0, fmt.Errorf("job %s: merge %d parts into s3://%s/%s by copy: %w", j.ID, len(parts), bucket, key, err)
	}
	if copied {
		return size, nil
	}
	up, err := upload.New(e.Objects, 0)
	if err != nil {
		return 0, err
	}
	pr, pw := io.Pipe()
	go func() {
		for _, p := range parts {
			out, err := e.Objects.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(p.bucket), Key: aws.String(p.key)})
			if err != nil {
				pw.CloseWithError(fmt.Errorf("part %d: %w", p.n, err))
				return
			}
			_, err = io.Copy(pw, out.Body)
			out.Body.Close()
			if err != nil {
				pw.CloseWithError(fmt.Errorf("part %d: %w", p.n, err))
				return
			}
		}
		pw.Close()
	}()
	res, err := up.Upload(ctx, upload.Object{Bucket: bucket, Key: key, Describe: func() upload.Description {
		return upload.Description{Metadata: meta}
	}}, pr)
	pr.CloseWithError(err)
	if err != nil {
		return 0, fmt.Errorf("job %s: merge %d parts into s3://%s/%s: %w", j.ID, len(parts), bucket, key, err)
	}
	return res.Size, nil
}

// promote copies the merge (server-side) to the split file's output key, if that key
// still belongs to the parts' revision rev: the key's ledger record is absent or that
// revision, and the output there is absent or that revision's. The copy is conditional
// on the output being exactly what was looked at (If-Match / If-None-Match: a newer
// revision's output that lands meanwhile is never overwritten; S3 checks it, a local
// server may not). It says why not when it does not promote.
func (e *Engine) promote(ctx context.Context, spec Spec, rev, bucket, temp, target string, size int64) (bool, string, error) {
	rec, ok, err := e.Ledger.Get(ctx, ledger.Key{Bucket: spec.Bucket, Key: spec.Key})
	if err != nil {
		return false, "", err
	}
	splitETag, _ := strings.CutPrefix(rev, "e:")
	if ok && rec.ETag != splitETag {
		return false, "the key's record holds revision " + rec.Rev().String(), nil
	}
	dest, err := e.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(target)})
	var api smithy.APIError
	missing := errors.As(err, &api) && (api.ErrorCode() == "NotFound" || api.ErrorCode() == "NoSuchKey")
	if err != nil && !missing {
		return false, "", err
	}
	if !missing && !ok && dest.Metadata[task.MetaRevision] != rev {
		// No record says whose the output is, and it is not the parts' revision's.
		return false, "the output is revision " + dest.Metadata[task.MetaRevision] + "'s", nil
	}
	if size > upload.MaxCopySize {
		// One copy cannot: the merge stays beside its parts (S3's 5 GiB copy limit).
		return false, "the merge is larger than one server-side copy", nil
	}
	in := &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String(target), CopySource: aws.String(upload.CopySource(bucket, temp))}
	if missing {
		in.IfNoneMatch = aws.String("*")
	} else {
		in.IfMatch = dest.ETag
	}
	if _, err := e.Objects.CopyObject(ctx, in); err != nil {
		if errors.As(err, &api) && api.ErrorCode() == "PreconditionFailed" {
			return false, "the output changed while it was promoted", nil
		}
		return false, "", err
	}
	return true, "", nil
}

// splitStillCurrent says whether the split file is still the revision its parts were cut
// from (the parts' fileflow-revision metadata), and that revision.
func (e *Engine) splitStillCurrent(ctx context.Context, spec Spec, first splitPart) (bool, string, error) {
	h, err := e.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(first.bucket), Key: aws.String(first.key)})
	if err != nil {
		return false, "", fmt.Errorf("part 0: %w", err)
	}
	rev := h.Metadata[task.MetaRevision]
	cur, err := e.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(spec.Bucket), Key: aws.String(spec.Key)})
	var api smithy.APIError
	if errors.As(err, &api) && (api.ErrorCode() == "NotFound" || api.ErrorCode() == "NoSuchKey") {
		return false, rev, nil // deleted since
	}
	if err != nil {
		return false, rev, fmt.Errorf("head %s: %w", spec.Source(), err)
	}
	switch {
	case strings.HasPrefix(rev, "v:"):
		return aws.ToString(cur.VersionId) == rev[2:], rev, nil
	case strings.HasPrefix(rev, "e:"):
		return strings.Trim(aws.ToString(cur.ETag), `"`) == rev[2:], rev, nil
	}
	return true, rev, nil // parts from before revisions were recorded: as before
}

// mergeByCopy merges the parts server-side with a multipart upload of UploadPartCopy,
// when S3 allows it: every part but the last at least 5 MiB, none over 5 GiB, at most
// 10,000. No byte passes through the function, whatever the file's size. It reports
// false (and does nothing) when the parts do not allow it.
func (e *Engine) mergeByCopy(ctx context.Context, bucket, key string, parts []splitPart, meta map[string]string) (bool, int64, error) {
	if len(parts) < 2 || len(parts) > upload.MaxParts {
		return false, 0, nil
	}
	sizes := make([]int64, len(parts))
	for i, p := range parts {
		h, err := e.Objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(p.bucket), Key: aws.String(p.key)})
		if err != nil {
			return false, 0, fmt.Errorf("part %d: %w", p.n, err)
		}
		sizes[i] = aws.ToInt64(h.ContentLength)
		if (i < len(parts)-1 && sizes[i] < upload.MinPartSize) || sizes[i] > upload.MaxCopySize {
			return false, 0, nil
		}
	}
	mu, err := e.Objects.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key), Metadata: meta})
	if err != nil {
		return false, 0, err
	}
	abort := func(err error) (bool, int64, error) {
		actx, cancel := Afterwards(ctx)
		defer cancel()
		_, aerr := e.Objects.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: mu.UploadId})
		return false, 0, errors.Join(err, aerr)
	}
	done := make([]s3types.CompletedPart, len(parts))
	errs := make([]error, len(parts))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out, err := e.Objects.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
				Bucket: aws.String(bucket), Key: aws.String(key), UploadId: mu.UploadId, PartNumber: aws.Int32(int32(i + 1)),
				CopySource: aws.String(upload.CopySource(p.bucket, p.key)),
			})
			if err != nil {
				errs[i] = fmt.Errorf("part %d: %w", p.n, err)
				return
			}
			done[i] = s3types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(int32(i + 1))}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return abort(err)
	}
	_, err = e.Objects.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key),
		UploadId: mu.UploadId, MultipartUpload: &s3types.CompletedMultipartUpload{Parts: done}})
	if err != nil {
		return abort(err)
	}
	var total int64
	for _, n := range sizes {
		total += n
	}
	return true, total, nil
}
