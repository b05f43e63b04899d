package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/fanout"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/task"
)

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// list lists one page: its files become tasks, its sub-prefixes and next page child
// fan-out tasks.
func (h *Handler) list(ctx context.Context, out *output, t fanout.ListTask) error {
	files, children, err := fanout.ListPage(ctx, h.s3, t, h.cfg.PageSize)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := out.packer.Add(f); err != nil {
			return err
		}
	}
	for _, c := range children {
		if err := out.child(ctx, job.FanoutTask{Step: job.StepList, List: &c}); err != nil {
			return err
		}
	}
	return nil
}

// head reads the object's size and ETag.
func (h *Handler) head(ctx context.Context, bucket, key string) (size int64, etag string, err error) {
	out, err := h.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return 0, "", fmt.Errorf("head s3://%s/%s: %w", bucket, key, err)
	}
	return aws.ToInt64(out.ContentLength), strings.Trim(aws.ToString(out.ETag), `"`), nil
}

// manifestFormat decides the format from the key, else from the first bytes.
func (h *Handler) manifestFormat(ctx context.Context, spec job.Spec, etag string) (fanout.Format, error) {
	head, err := h.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(spec.Bucket), Key: aws.String(spec.Key),
		Range: aws.String("bytes=0-63"), IfMatch: aws.String(`"` + etag + `"`)})
	if err != nil {
		return 0, fmt.Errorf("read manifest %s: %w", spec.Source(), err)
	}
	b, _ := io.ReadAll(head.Body)
	head.Body.Close()
	return fanout.DetectFormat(spec.Key, b), nil
}

// manifest plans a manifest: read whole when small (or a JSON array, which cannot be
// cut), else as byte-range chunks read in parallel by child tasks.
func (h *Handler) manifest(ctx context.Context, out *output, spec job.Spec) error {
	size, etag, err := h.head(ctx, spec.Bucket, spec.Key)
	if err != nil {
		return err
	}
	format := fanout.FormatCSV
	if size > 0 {
		if format, err = h.manifestFormat(ctx, spec, etag); err != nil {
			return err
		}
	}
	if size > spec.ChunkBytes && format != fanout.FormatJSONArray {
		for _, r := range fanout.ManifestChunks(size, spec.ChunkBytes) {
			if err := out.child(ctx, job.FanoutTask{Step: job.StepChunk, Chunk: &r, Format: format, ETag: etag}); err != nil {
				return err
			}
		}
		return nil
	}
	body, err := h.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(spec.Bucket), Key: aws.String(spec.Key), IfMatch: aws.String(`"` + etag + `"`)})
	if err != nil {
		return fmt.Errorf("read manifest %s: %w", spec.Source(), err)
	}
	defer body.Body.Close()
	return h.readManifest(out, spec, body.Body, format, "")
}

// chunk reads the manifest lines that begin in one byte range.
func (h *Handler) chunk(ctx context.Context, out *output, spec job.Spec, r task.Range, format fanout.Format, etag string) error {
	from := max(r.Start-1, 0) // the byte before tells whether Start begins a line
	in := &s3.GetObjectInput{Bucket: aws.String(spec.Bucket), Key: aws.String(spec.Key), Range: aws.String(fmt.Sprintf("bytes=%d-", from))}
	if etag != "" {
		in.IfMatch = aws.String(`"` + etag + `"`) // the manifest the job was planned from
	}
	body, err := h.s3.GetObject(ctx, in)
	if err != nil {
		return fmt.Errorf("read manifest %s from byte %d: %w", spec.Source(), from, err)
	}
	defer body.Body.Close()
	return h.readManifest(out, spec, fanout.LineChunk(body.Body, r.Start, r.End), format, fmt.Sprintf(" (chunk at byte %d)", r.Start))
}

func (h *Handler) readManifest(out *output, spec job.Spec, r io.Reader, format fanout.Format, where string) error {
	return fanout.Read(r, format, spec.Bucket, out.packer.Add, func(e *fanout.EntryError) error {
		out.badEntry(spec.Bucket, spec.Key, fmt.Sprintf("%s%s: %s", spec.Source(), where, e.Error()))
		return nil
	})
}

// archive lists a zip's entries through ranged GETs of its central directory.
func (h *Handler) archive(ctx context.Context, out *output, spec job.Spec) error {
	size, etag, err := h.head(ctx, spec.Bucket, spec.Key)
	if err != nil {
		return err
	}
	return fanout.ListZip(ctx, h.s3, spec.Bucket, spec.Key, etag, size, fanout.ZipOptions{Limits: spec.ArchiveLimits()}, out.packer.Add, func(e *fanout.EntryError) error {
		out.badEntry(spec.Bucket, spec.Key, fmt.Sprintf("%s: zip %s", spec.Source(), e.Error()))
		return nil
	})
}

// split cuts one file into line-aligned byte ranges, one task message each (so the
// parts run in parallel).
func (h *Handler) split(ctx context.Context, out *output, spec job.Spec) error {
	size, etag, err := h.head(ctx, spec.Bucket, spec.Key)
	if err != nil {
		return err
	}
	ranges, err := fanout.SplitRanges(ctx, h.s3, spec.Bucket, spec.Key, etag, size, spec.Parts)
	if err != nil {
		return err
	}
	out.packer.MaxFiles = 1
	for _, r := range ranges {
		if err := out.packer.Add(task.File{Bucket: spec.Bucket, Key: spec.Key, ETag: etag, Size: r.End - r.Start, Range: &r}); err != nil {
			return err
		}
	}
	return nil
}
