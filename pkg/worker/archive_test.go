package worker

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

// rangedS3 serves ranged GETs (archive members are read through them) from the fake
// bucket store.
type rangedS3 struct{ *fakeS3 }

func (r rangedS3) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := r.fakeS3.GetObject(ctx, in, o...)
	if err != nil || in.Range == nil {
		return out, err
	}
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, err
	}
	var start, end int64
	if _, err := fmt.Sscanf(aws.ToString(in.Range), "bytes=%d-%d", &start, &end); err != nil {
		return nil, fmt.Errorf("fake: bad range %q: %w", aws.ToString(in.Range), err)
	}
	end = min(end, int64(len(b))-1)
	out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(b[start:end+1])), aws.Int64(end+1-start)
	return out, nil
}

// archiveMember stores a one-entry zip as in/a.zip and returns the entry as ListZip
// describes it.
func archiveMember(t *testing.T, e *env, name string, method uint16, data []byte) task.Member {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
	require.NoError(t, err)
	_, err = w.Write(data)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	e.s3.overwrite("in", "a.zip", "etag", buf.Bytes()) // the ETag the task messages name
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	zf := zr.File[0]
	off, err := zf.DataOffset()
	require.NoError(t, err)
	return task.Member{Name: zf.Name, Offset: off, CompressedSize: int64(zf.CompressedSize64), Size: int64(zf.UncompressedSize64), Method: zf.Method, CRC32: zf.CRC32}
}

func memberMessage(t *testing.T, id string, m task.Member) events.SQSMessage {
	t.Helper()
	body, err := task.Message{Files: []task.File{{Bucket: "in", Key: "a.zip", ETag: "etag", Size: m.Size, Member: &m}}}.Encode()
	require.NoError(t, err)
	return events.SQSMessage{MessageId: id, ReceiptHandle: "rh-" + id, Body: string(body), EventSourceARN: queueARN,
		Attributes: map[string]string{"ApproximateReceiveCount": "1"}}
}

func memberKey(m task.Member) ledger.Key {
	k, _ := job.FileKey(task.File{Bucket: "in", Key: "a.zip", ETag: "etag", Member: &m}, "")
	return k
}

// A corrupt archive member — a CRC-32 or a length that does not match the directory, or
// bytes that do not inflate — fails permanently through the whole read path (source →
// the worker's source reader → processors → upload): it is recorded FAILED with the
// reason and acknowledged, not retried, and nothing is written.
func TestCorruptArchiveMemberIsPermanent(t *testing.T) {
	data := bytes.Repeat([]byte("member bytes\n"), 400)
	for _, tc := range []struct {
		name    string
		method  uint16
		corrupt func(*task.Member)
		want    string
	}{
		{"bad CRC", zip.Deflate, func(m *task.Member) { m.CRC32++ }, "CRC-32"},
		{"shorter than the directory says", zip.Deflate, func(m *task.Member) { m.Size++ }, "not the"},
		{"stored, bad CRC", zip.Store, func(m *task.Member) { m.CRC32 ^= 1 }, "CRC-32"},
		{"bad deflate data", zip.Store, func(m *task.Member) { m.Method = zip.Deflate }, "flate: corrupt input"},
		{"deflate stream cut short", zip.Deflate, func(m *task.Member) { m.CompressedSize -= 5 }, "deflate stream ends before its last block"},
		{"longer than the directory says", zip.Deflate, func(m *task.Member) { m.Size -= 100 }, "inflates past the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(_ *Config, d *Deps) { d.Objects = rangedS3{d.Objects.(*fakeS3)} })
			m := archiveMember(t, e, "dir/x.txt", tc.method, data)
			tc.corrupt(&m)
			resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{memberMessage(t, "m", m)}})
			require.NoError(t, err)
			assert.Empty(t, resp.BatchItemFailures, "a corrupt member burns no retries")
			assert.Empty(t, e.queue.visibility)
			k := memberKey(m)
			assert.Equal(t, ledger.StatusFailed, e.ledger.status[k])
			assert.Contains(t, e.ledger.reasons[k], "corrupt archive member")
			assert.Contains(t, e.ledger.reasons[k], tc.want)
			assert.Zero(t, e.s3.puts, "no output")

			// The error run returns, as the worker classifies it.
			f := task.File{Bucket: "in", Key: "a.zip", ETag: "etag", Member: &m}
			_, err = e.h.run(context.Background(), &item{msg: &message{receive: 1}, file: f}, f)
			require.ErrorContains(t, err, tc.want)
			assert.Equal(t, retry.Permanent, retry.Classify(err), "%v", err)
		})
	}
}

// cutBodies end every body after half its bytes with io.ErrUnexpectedEOF, as net/http
// does when a connection drops mid-body.
type cutBodies struct{ *fakeS3 }

func (c cutBodies) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := c.fakeS3.GetObject(ctx, in, o...)
	if err == nil {
		b, _ := io.ReadAll(out.Body)
		out.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b[:len(b)/2]), iotest.ErrReader(io.ErrUnexpectedEOF)))
	}
	return out, err
}

// Keeping a corrupt member's permanence must not make a dropped connection permanent:
// a source body that fails with io.ErrUnexpectedEOF is still retried, also for a gzip
// file (whose processor calls an unexpected end of its stream corrupt).
func TestSourceBodyCutShortIsRetried(t *testing.T) {
	e := newEnv(t, func(_ *Config, d *Deps) { d.Objects = cutBodies{d.Objects.(*fakeS3)} })
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(bytes.Repeat([]byte("gzip me\n"), 1000))
	require.NoError(t, zw.Close())
	e.s3.put("in", "cut.gz", gz.Bytes())
	e.s3.put("in", "cut.txt", bytes.Repeat([]byte("t"), 1000))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{s3Message("m", 1, "in", "cut.gz", "cut.txt")}})
	require.NoError(t, err)
	assert.Equal(t, []string{"m"}, failedIDs(resp))
	for _, key := range []string{"cut.gz", "cut.txt"} {
		k := ledger.Key{Bucket: "in", Key: key}
		assert.Equal(t, ledger.StatusRetrying, e.ledger.status[k], key)
		assert.Contains(t, e.ledger.reasons[k], "source body read failed", key)
	}
	assert.Zero(t, e.s3.puts)
}

// The worker's Archive limits bound what a member may expand to, whatever the task
// message says: one over them fails permanently, naming the limit, before any GET.
func TestArchiveMemberOverTheWorkersLimits(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 3<<20) // deflates ~1000:1
	for _, tc := range []struct {
		name   string
		limits ArchiveLimits
		want   string
	}{
		{"max member bytes", ArchiveLimits{MaxMemberBytes: 1 << 20}, "over the limit of 1048576 bytes per member (max_member_bytes)"},
		{"default ratio", ArchiveLimits{}, "over the limit of 200 (max_ratio)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gets := 0
			e := newEnv(t, func(c *Config, d *Deps) {
				c.Archive = tc.limits
				f := d.Objects.(*fakeS3)
				f.getErr = func(string) error { gets++; return nil }
				d.Objects = rangedS3{f}
			})
			m := archiveMember(t, e, "big.txt", zip.Deflate, data)
			resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{memberMessage(t, "m", m)}})
			require.NoError(t, err)
			assert.Empty(t, resp.BatchItemFailures)
			k := memberKey(m)
			assert.Equal(t, ledger.StatusFailed, e.ledger.status[k])
			assert.Contains(t, e.ledger.reasons[k], tc.want)
			assert.Zero(t, gets, "nothing read")
		})
	}
}

// A member's output is named beside the archive's own output, "<zip key>!/<entry>",
// so an archive processed as a file and then as an archive job writes both.
func TestArchiveMemberOutputBesideTheArchive(t *testing.T) {
	e := newEnv(t, func(_ *Config, d *Deps) { d.Objects = rangedS3{d.Objects.(*fakeS3)} })
	data := []byte("a member\n")
	m := archiveMember(t, e, "dir/x.txt", zip.Deflate, data)
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		versionEvent("zip", "in", "a.zip", "", "etag", "0A"), memberMessage(t, "member", m),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	zipOut, _, ok := e.s3.get("out", "processed/a.zip")
	require.True(t, ok, "the archive's own output")
	zipIn, _, _ := e.s3.get("in", "a.zip")
	assert.Equal(t, zipIn, zipOut)
	out, _, ok := e.s3.get("out", "processed/a.zip!/dir/x.txt")
	require.True(t, ok, "the member's output")
	assert.Equal(t, data, out)
	assert.Equal(t, ledger.StatusSucceeded, e.ledger.status[memberKey(m)])
}
