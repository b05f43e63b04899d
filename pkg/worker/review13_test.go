package worker

// Review 13: commit 2ca159a (a multipart output is created with the metadata Describe
// returns after its first part; no CopyObject; Result.Late names what only the end knew).

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
	"github.com/fileflow/fileflow/pkg/task"
)

// review13Written keeps, per output key, the headers and metadata the last write that
// makes the object carried: a PutObject's, or the CreateMultipartUpload's of the upload
// completed last.
type review13Written struct {
	*fakeS3
	mu      sync.Mutex
	created map[string]review13Desc // upload id -> description
	last    map[string]review13Desc // key -> the object's description
}

type review13Desc struct {
	ctype, cenc string
	meta        map[string]string
	multipart   bool
	copied      bool // corrected by a CopyObject after the upload
}

func newReview13Written(f *fakeS3) *review13Written {
	return &review13Written{fakeS3: f, created: map[string]review13Desc{}, last: map[string]review13Desc{}}
}

func (w *review13Written) PutObject(ctx context.Context, in *s3.PutObjectInput, opt ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	out, err := w.fakeS3.PutObject(ctx, in, opt...)
	if err == nil {
		w.mu.Lock()
		w.last[aws.ToString(in.Key)] = review13Desc{aws.ToString(in.ContentType), aws.ToString(in.ContentEncoding), in.Metadata, false, false}
		w.mu.Unlock()
	}
	return out, err
}

func (w *review13Written) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, opt ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	out, err := w.fakeS3.CreateMultipartUpload(ctx, in, opt...)
	if err == nil {
		w.mu.Lock()
		w.created[aws.ToString(out.UploadId)] = review13Desc{aws.ToString(in.ContentType), aws.ToString(in.ContentEncoding), in.Metadata, true, false}
		w.mu.Unlock()
	}
	return out, err
}

func (w *review13Written) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opt ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	w.mu.Lock()
	d := w.created[aws.ToString(in.UploadId)]
	w.mu.Unlock()
	out, err := w.fakeS3.CompleteMultipartUpload(ctx, in, opt...)
	if err == nil {
		w.mu.Lock()
		w.last[aws.ToString(in.Key)] = d
		w.mu.Unlock()
	}
	return out, err
}

func (w *review13Written) CopyObject(ctx context.Context, in *s3.CopyObjectInput, opt ...func(*s3.Options)) (*s3.CopyObjectOutput, error) {
	out, err := w.fakeS3.CopyObject(ctx, in, opt...)
	if err == nil {
		w.mu.Lock()
		d := w.last[aws.ToString(in.Key)]
		d.ctype, d.cenc, d.meta, d.copied = aws.ToString(in.ContentType), aws.ToString(in.ContentEncoding), in.Metadata, true
		w.last[aws.ToString(in.Key)] = d
		w.mu.Unlock()
	}
	return out, err
}

// review13LateType is a processor as the Processor contract allows one ("it writes what
// it learns into res by the time the returned reader reports io.EOF"): it passes the
// bytes through and settles the content type once it has seen them all (e.g. a format
// told by its trailer, or a converter that names what it produced at the end).
type review13LateType struct{}

func (review13LateType) Name() string { return "latetype" }

func (review13LateType) Wrap(in io.Reader, res *process.Result) (io.Reader, error) {
	return &review13LateReader{in: in, res: res}, nil
}

type review13LateReader struct {
	in  io.Reader
	res *process.Result
}

func (r *review13LateReader) Read(p []byte) (int, error) {
	n, err := r.in.Read(p)
	if errors.Is(err, io.EOF) {
		r.res.ContentType = "application/x-settled-at-the-end"
	}
	return n, err
}

// Finding 1 (wrong label, not a missing one; fixed: a multipart output whose final
// Description changes or drops a value it carries is corrected by one CopyObject on its
// completed ETag, and the test asserts the corrected object): an output over one part is created with
// the metadata Describe returns after its first part; a value that a processor settles
// at the end (the Processor contract allows it: "by the time the returned reader reports
// io.EOF") is not "late", it is WRONG on the object: its Content-Type header and its
// fileflow-content-type are the early answer (here detect's sniff), while the record
// commits the final one. The same processor gives a right object when the output fits
// one PUT: the object's type depends on its size. upload.Result.Late names
// fileflow-content-type, and the worker only logs it. A regression of 2ca159a: before,
// the CopyObject (MetadataDirective REPLACE) set the final headers and metadata.
//
//  1. A rule "detect, checksum, latetype" (a registered processor, as README invites).
//  2. small.late (100 bytes): one PUT at the end: Content-Type application/x-settled-…
//  3. big.late (6 MiB, parts of 5 MiB): CreateMultipartUpload after the first part, with
//     Content-Type text/plain; charset=utf-8 (detect's sniff) and the same
//     fileflow-content-type; the record says application/x-settled-…; nothing corrects
//     the object.
//
// Fix: a multipart upload must not carry an early value the end may change: either the
// worker asks Describe's first answer only for what is fixed before the stream is read
// (source, revision, source ETag, input) plus headers processors declare at Wrap, or
// putMultipart, when the final Description differs from the early one in a value the
// object carries (a header, or an entry with another value — not only a new entry),
// corrects it (one CopyObject with If-Match on the completed ETag, only in that rare
// case) or fails the upload rather than leave a wrong value.
func TestReview13_ContentTypeSettledAtTheEndIsWrongOnAMultipartOutput(t *testing.T) {
	var w *review13Written
	logs := &bytes.Buffer{}
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		reg := process.Builtins()
		reg.Register(review13LateType{})
		d.Registry = reg
		c.Rules = append(process.Rules{{Suffix: ".late", Processors: []string{"detect", "checksum", "latetype"}}}, c.Rules...)
		w = newReview13Written(d.Objects.(*fakeS3))
		d.Objects = w
	})
	e.s3.put("in", "small.late", bytes.Repeat([]byte("s"), 100))
	e.s3.put("in", "big.late", bytes.Repeat([]byte("b"), 6<<20))
	handleAcked(t, e, s3Message("m1", 1, "in", "small.late", "big.late"))

	small, big := w.last["processed/small.late"], w.last["processed/big.late"]
	require.False(t, small.multipart)
	require.True(t, big.multipart)
	const want = "application/x-settled-at-the-end"
	assert.Equal(t, want, small.ctype, "one PUT: the final answer")
	assert.Equal(t, want, big.ctype, "the multipart output's Content-Type is the early answer (detect's), not the one the record commits")
	assert.Equal(t, want, big.meta[MetaContentType], "the multipart output's fileflow-content-type label is wrong")
	assert.True(t, big.copied, "corrected by one copy")
	assert.Empty(t, review13Late(t, logs)["processed/big.late"], "the copy set every entry, checksums too")
}

// review13Late reads the worker's "output written" debug lines: each output's key and the
// metadata entries its object does not carry (upload.Result.Late).
func review13Late(t *testing.T, logs *bytes.Buffer) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "output written" {
			continue
		}
		var late []string
		if l, ok := m["not in metadata"].([]any); ok {
			for _, x := range l {
				late = append(late, x.(string))
			}
		}
		out[m["output"].(string)] = late
	}
	return out
}

// Attack that found nothing (kept as a regression test): with the built-in processors, in
// every order a rule may give them, the first Describe of a multipart output is never
// wrong, only incomplete: its headers and labels are those a one-PUT output of the same
// kind carries, and what it lacks is only the checksums (the labels source, revision,
// source ETag and input are fixed before the stream is read; detect sniffs the head;
// gzip and gunzip set their encoding at Wrap).
func TestReview13_BuiltinChainsLabelAMultipartOutputAsAPut(t *testing.T) {
	var w *review13Written
	logs := &bytes.Buffer{}
	e := newEnv(t, func(c *Config, d *Deps) {
		c.Rules = process.Rules{
			{Suffix: ".a", Processors: []string{"checksum", "detect", "copy"}},
			{Suffix: ".b.gz", Processors: []string{"gunzip", "checksum", "detect"}},
			{Suffix: ".c.gz", Processors: []string{"checksum", "gunzip", "detect"}},
			{Suffix: ".d", Processors: []string{"detect", "gzip", "checksum"}},
			{Suffix: ".e", Processors: []string{"checksum", "gzip"}},
		}
		w = newReview13Written(d.Objects.(*fakeS3))
		d.Objects = w
		d.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	rnd := rand.New(rand.NewPCG(13, 13))
	noise := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.UintN(256))
		}
		return b
	}
	text := func(n int) []byte { return bytes.Repeat([]byte("a line of text, 0123456789\n"), n/27+1)[:n] }
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return buf.Bytes()
	}
	inputs := map[string][2][]byte{ // small, large
		".a":    {text(1000), text(6 << 20)},
		".b.gz": {gz(text(1000)), gz(text(6 << 20))},
		".c.gz": {gz(text(1000)), gz(text(11 << 20))}, // the checksum of the input, before gunzip
		".d":    {noise(1000), noise(6 << 20)},
		".e":    {noise(1000), noise(6 << 20)},
	}
	var keys []string
	for suffix, in := range inputs {
		for i, name := range []string{"small", "large"} {
			k := name + suffix
			e.s3.put("in", k, in[i])
			keys = append(keys, k)
		}
	}
	handleAcked(t, e, s3Message("m1", 1, "in", keys...))

	late := review13Late(t, logs)
	for suffix := range inputs {
		out := func(name string) string {
			return "processed/" + strings.TrimSuffix(name+suffix, ".gz") + map[bool]string{true: ".gz"}[suffix == ".d" || suffix == ".e"]
		}
		small, large := w.last[out("small")], w.last[out("large")]
		require.False(t, small.multipart, suffix)
		require.True(t, large.multipart, suffix)
		assert.Equal(t, small.ctype, large.ctype, "%s: Content-Type", suffix)
		assert.Equal(t, small.cenc, large.cenc, "%s: Content-Encoding", suffix)
		assert.Equal(t, small.meta[MetaContentType], large.meta[MetaContentType], "%s: fileflow-content-type", suffix)
		assert.Equal(t, "e:e-large"+suffix, large.meta[MetaRevision], suffix)
		assert.Equal(t, "in/large"+suffix, large.meta[task.MetaInput], suffix)
		assert.Equal(t, "e-large"+suffix, large.meta[MetaSourceETag], suffix)
		for _, k := range late[out("large")] {
			assert.Contains(t, []string{MetaSHA256, MetaCRC32C}, k, "%s: only checksums are late", suffix)
		}
		assert.Empty(t, late[out("small")], suffix)
	}
}

// review13Complete runs a hook before and/or after the fake's CompleteMultipartUpload of
// the output bucket (the object lands, labelled, in between); after may fail the call (a
// reply lost after S3 completed the upload).
type review13Complete struct {
	*fakeS3
	before func()
	after  func() error
}

func (o *review13Complete) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opt ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	if f := o.before; f != nil && aws.ToString(in.Bucket) == "out" {
		o.before = nil
		f()
	}
	out, err := o.fakeS3.CompleteMultipartUpload(ctx, in, opt...)
	if err != nil {
		return out, err
	}
	if f := o.after; f != nil && aws.ToString(in.Bucket) == "out" {
		o.after = nil
		if err := f(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Attack that found nothing (review 9's finding 1, the way it happens now): an older
// revision's multipart output lands labelled, and its CompleteMultipartUpload reports an
// error (the reply lost, a 500 after the commit). v1's run fails, its record write meets
// v2's newer record (superseded), restore finds v1's label under v2's record and puts
// v2's output back. TestReview9_UnlabelledOlderOutputLeftUnderNewerRecord now makes the
// object unlabelled by hand: an output written before this change.
func TestReview13_OlderLabelledMultipartWhoseCompleteFailsIsRestored(t *testing.T) {
	var w *review13Complete
	e := newEnv(t, func(c *Config, d *Deps) {
		w = &review13Complete{fakeS3: d.Objects.(*fakeS3)}
		d.Objects = w
		c.DuplicateCheck = DuplicateCheckAuto
	})
	e.s3.overwrite("in", "k.bin", "e2", []byte("version two"))
	handleAcked(t, e, versionEvent("m2", "in", "k.bin", "v2", "e2", "0B"))

	e.s3.overwrite("in", "k.bin", "e1", bytes.Repeat([]byte("1"), 5<<20+1))
	w.after = func() error {
		_, meta, _ := e.s3.get("out", "processed/k.bin")
		require.Equal(t, "v:v1", meta[MetaRevision], "v1's output landed with its label")
		e.s3.overwrite("in", "k.bin", "e2", []byte("version two")) // the fake ignores version ids
		return &smithy.GenericAPIError{Code: "InternalError", Message: "We encountered an internal error. Please try again."}
	}
	handleAll(t, e, versionEvent("m1", "in", "k.bin", "v1", "e1", "0A"))

	out, meta, _ := e.s3.get("out", "processed/k.bin")
	assert.Equal(t, "version two", string(out))
	assert.Equal(t, "v:v2", meta[MetaRevision])
	assert.Contains(t, e.ledger.superseded, ledger.SupersededKey(ledger.Key{Bucket: "in", Key: "k.bin"}, ledger.Revision{VersionID: "v1", ETag: "e1", Sequencer: ledger.NormalizeSequencer("0A")}))
}

// Attack that found nothing: v1's multipart upload is under way while v2 is processed and
// committed (v2's output check after its commit sees its own output); v1's
// CompleteMultipartUpload then lands v1's labelled bytes over v2's output. v1's commit
// is refused (superseded) and restore processes v2 again: the key ends v2's.
func TestReview13_OlderMultipartLandingAfterANewerCommitIsRestored(t *testing.T) {
	var w *review13Complete
	e := newEnv(t, func(c *Config, d *Deps) {
		w = &review13Complete{fakeS3: d.Objects.(*fakeS3)}
		d.Objects = w
	})
	v1 := bytes.Repeat([]byte("1"), 5<<20+1)
	e.s3.overwrite("in", "k.bin", "e1", v1)
	w.before = func() {
		e.s3.overwrite("in", "k.bin", "e2", []byte("version two"))
		handleAcked(t, e, versionEvent("m2", "in", "k.bin", "v2", "e2", "0B"))
		_, meta, _ := e.s3.get("out", "processed/k.bin")
		require.Equal(t, "v:v2", meta[MetaRevision])
	}
	handleAll(t, e, versionEvent("m1", "in", "k.bin", "v1", "e1", "0A"))

	out, meta, _ := e.s3.get("out", "processed/k.bin")
	assert.Equal(t, "version two", string(out), "v1's bytes (%d) stand under v2's record", len(out))
	assert.Equal(t, "v:v2", meta[MetaRevision])
	assert.Equal(t, "e2", e.ledger.revs[ledger.Key{Bucket: "in", Key: "k.bin"}].ETag)
}

// Attack that found nothing (an improvement): an older revision's multipart output is
// now labelled (fileflow-input, -revision, -source-etag), so when the newest revision
// fails for good, removeLeftover removes it. Before, an output whose late copy had
// failed had no labels and was "not one this code wrote": left under the failure.
func TestReview13_OlderMultipartOutputRemovedWhenTheNewestFails(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.Rules = append(process.Rules{{Suffix: ".bin", MaxSize: 7 << 20, Processors: []string{"checksum", "copy"}}}, c.Rules...)
	})
	e.s3.overwrite("in", "k.bin", "e1", bytes.Repeat([]byte("1"), 6<<20))
	handleAcked(t, e, versionEvent("m1", "in", "k.bin", "v1", "e1", "0A"))
	_, meta, ok := e.s3.get("out", "processed/k.bin")
	require.True(t, ok)
	require.Equal(t, "v:v1", meta[MetaRevision])

	e.s3.overwrite("in", "k.bin", "e2", bytes.Repeat([]byte("2"), 8<<20)) // over max_size: fails for good
	handleAcked(t, e, versionEvent("m2", "in", "k.bin", "v2", "e2", "0B"))
	k := ledger.Key{Bucket: "in", Key: "k.bin"}
	require.Equal(t, ledger.StatusFailed, e.ledger.status[k])
	_, _, ok = e.s3.get("out", "processed/k.bin")
	assert.False(t, ok, "v1's output stays under v2's failure")
}

// review13HeadHook runs hook once, right after a HEAD of key in the output bucket that
// found nothing (the owner check of a multipart upload: nothing there, go ahead).
type review13HeadHook struct {
	*fakeS3
	key  string
	hook func()
}

func (o *review13HeadHook) HeadObject(ctx context.Context, in *s3.HeadObjectInput, opt ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	out, err := o.fakeS3.HeadObject(ctx, in, opt...)
	if f := o.hook; f != nil && err != nil && aws.ToString(in.Bucket) == "out" && aws.ToString(in.Key) == o.key {
		o.hook = nil
		f()
	}
	return out, err
}

// Finding 2 (fixed: CompleteMultipartUpload, and the PUT that follows a refused
// conditional PUT, carry the owner check's condition — If-None-Match: *, or If-Match on
// the ETag it saw; pre-existing, not made by 2ca159a, which narrows it): two inputs whose
// outputs share a key, both over one part. A multipart upload's owner check is a HEAD
// before CreateMultipartUpload, and CompleteMultipartUpload is unconditional, so:
//
//  1. B (k.txt.gz, gunzip drops ".gz": output processed/k.txt) HEADs processed/k.txt:
//     nothing there, go ahead;
//  2. A (k.txt) is processed meanwhile: its multipart output lands labelled
//     fileflow-input in/k.txt and A's record commits SUCCEEDED naming it;
//  3. B's upload completes over it and B commits SUCCEEDED naming the same key.
//
// A's record names an output that holds B's bytes (A's output LOST, and nothing will
// look again: both messages acknowledged), where a single PUT would have been refused
// (If-None-Match) and B failed OutputConflict. Before 2ca159a it was wider still (A's
// output had no fileflow-input until its copy).
//
// Fix: make the Complete conditional as the PUT is: CompleteMultipartUpload with
// IfNoneMatch "*" when the owner check found nothing, IfMatch the HEAD's ETag when it
// found this input's own output; on PreconditionFailed, HEAD again (checkOwner) and
// complete again (the upload id is still valid) or fail with OwnedError.
func TestReview13_TwoInputsRacingMultipartOnOneOutputKey(t *testing.T) {
	var w *review13HeadHook
	e := newEnv(t, func(c *Config, d *Deps) {
		w = &review13HeadHook{fakeS3: d.Objects.(*fakeS3), key: "processed/k.txt"}
		d.Objects = w
	})
	text := bytes.Repeat([]byte("a line of text\n"), (6<<20)/15)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write(bytes.ToUpper(text))
	require.NoError(t, zw.Close())
	e.s3.overwrite("in", "k.txt", "ea", text)
	e.s3.overwrite("in", "k.txt.gz", "eb", z.Bytes())
	w.hook = func() { handleAcked(t, e, versionEvent("mA", "in", "k.txt", "va", "ea", "0A")) }
	resp := handleAll(t, e, versionEvent("mB", "in", "k.txt.gz", "vb", "eb", "0A"))
	require.Nil(t, w.hook, "A ran between B's owner check and B's upload")

	a, b := ledger.Key{Bucket: "in", Key: "k.txt"}, ledger.Key{Bucket: "in", Key: "k.txt.gz"}
	require.Equal(t, ledger.StatusSucceeded, e.ledger.status[a])
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	if e.ledger.status[b] == ledger.StatusSucceeded || len(resp.BatchItemFailures) == 0 {
		assert.True(t, bytes.Equal(text, out), "A's record is SUCCEEDED naming processed/k.txt, which holds B's output (owner %q); B is %s",
			meta[task.MetaInput], e.ledger.status[b])
	}
	assert.Equal(t, "in/k.txt", meta[task.MetaInput])
}
