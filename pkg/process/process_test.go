package process

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/retry"
)

func run(t *testing.T, in []byte, key string, names ...string) ([]byte, *Result, error) {
	t.Helper()
	procs, err := Builtins().Lookup(names)
	require.NoError(t, err)
	res := &Result{Key: key}
	r, err := Chain(iotest.HalfReader(bytes.NewReader(in)), res, procs...)
	require.NoError(t, err)
	out, err := io.ReadAll(r)
	return out, res, err
}

func TestChecksum(t *testing.T) {
	data := bytes.Repeat([]byte("fileflow "), 100_000)
	out, res, err := run(t, data, "a.txt", "checksum", "copy")
	require.NoError(t, err)
	assert.Equal(t, data, out)
	sum := sha256.Sum256(data)
	assert.Equal(t, hex.EncodeToString(sum[:]), res.SHA256)
	assert.Equal(t, fmt.Sprintf("%08x", crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))), res.CRC32C)
	// A known vector: CRC32C("123456789") = e3069283.
	_, res, err = run(t, []byte("123456789"), "v", "checksum")
	require.NoError(t, err)
	assert.Equal(t, "e3069283", res.CRC32C)
}

func TestDetect(t *testing.T) {
	tests := []struct {
		key  string
		data string
		want string
	}{
		{"x.png", "\x89PNG\r\n\x1a\n0000", "image/png"},
		{"page", "<!DOCTYPE html><html></html>", "text/html; charset=utf-8"},
		{"data.csv", "a,b\n1,2\n", "text/csv; charset=utf-8"},
		{"data.json", `{"a":1}`, "application/json"},
		{"blob", "\x00\x01\x02", "application/octet-stream"},
		{"empty.txt", "", "text/plain; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			out, res, err := run(t, []byte(tt.data), tt.key, "detect")
			require.NoError(t, err)
			assert.Equal(t, tt.data, string(out), "detect must not change the bytes")
			assert.Equal(t, tt.want, res.ContentType)
		})
	}
}

func TestGzipRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte("compress me please "), 50_000)
	zipped, res, err := run(t, data, "logs/app.log", "checksum", "gzip")
	require.NoError(t, err)
	assert.Less(t, len(zipped), len(data)/10)
	assert.Equal(t, "logs/app.log.gz", res.OutputKey("logs/app.log"))
	assert.Equal(t, "gzip", res.ContentEncoding)

	plain, res2, err := run(t, zipped, "logs/app.log.gz", "gunzip", "checksum")
	require.NoError(t, err)
	assert.Equal(t, data, plain)
	assert.Equal(t, res.SHA256, res2.SHA256, "checksum of the same plain bytes")
	assert.Equal(t, "logs/app.log", res2.OutputKey("logs/app.log.gz"))
}

func TestGunzipCorruptIsPermanent(t *testing.T) {
	var good bytes.Buffer
	zw := gzip.NewWriter(&good)
	_, _ = zw.Write(bytes.Repeat([]byte("x"), 10_000))
	require.NoError(t, zw.Close())
	truncated := good.Bytes()[:good.Len()/2]
	flipped := bytes.Clone(good.Bytes())
	flipped[len(flipped)-6] ^= 0xff // the CRC

	for name, in := range map[string][]byte{
		"not gzip":  []byte("plain text, no gzip header"),
		"truncated": truncated,
		"bad crc":   flipped,
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := run(t, in, "f.gz", "gunzip")
			require.Error(t, err)
			assert.Equal(t, retry.Permanent, retry.Classify(err), err.Error())
			assert.Contains(t, err.Error(), "corrupt gzip")
		})
	}
}

// A source read error is not the file's fault: it stays retryable.
func TestGunzipSourceErrorIsRetryable(t *testing.T) {
	res := &Result{}
	r, err := Gunzip{}.Wrap(iotest.ErrReader(io.ErrClosedPipe), res)
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.Error(t, err)
	assert.Equal(t, retry.Retryable, retry.Classify(err))
}

func TestRules(t *testing.T) {
	reg := Builtins()
	rs, err := ParseRules([]byte(`[
		{"suffix":".exe","reject":"executables are not accepted"},
		{"prefix":"logs/","content_type":"text/","processors":["checksum","gzip"]},
		{"suffix":".gz","processors":["gunzip","checksum"],"max_size":1048576},
		{"processors":["checksum","detect","copy"]}
	]`), reg)
	require.NoError(t, err)

	r, ok := rs.Match("setup.exe", "application/octet-stream")
	require.True(t, ok)
	assert.Equal(t, "executables are not accepted", r.Reject)
	r, _ = rs.Match("logs/a.log", "text/plain")
	assert.Equal(t, []string{"checksum", "gzip"}, r.Processors)
	r, _ = rs.Match("logs/a.bin", "application/octet-stream")
	assert.Equal(t, []string{"checksum", "detect", "copy"}, r.Processors, "content type must match too")
	r, _ = rs.Match("x.gz", "")
	assert.Equal(t, int64(1048576), r.MaxSize)

	_, ok = Rules{{Prefix: "only/", Processors: []string{"copy"}}}.Match("other", "")
	assert.False(t, ok)
}

func TestRulesInvalid(t *testing.T) {
	tests := map[string]string{
		`[{"processors":["sha1"]}]`:               `unknown processor "sha1"`,
		`[{"reject":"x","processors":["copy"]}]`:  "both reject and processors",
		`[{"prefix":"a/"}]`:                       "names no processors",
		`[{"processors":["copy"],"max_size":-1}]`: "max_size -1 is negative",
		`[]`:                      "no rules",
		`{"processors":["copy"]}`: "not a JSON list",
		`[{"processors":["copy"],"prefx":"typo/"}]`:  `unknown field "prefx"`,
		`[{"processors":["copy"]}] [{"reject":"x"}]`: "more after the JSON list, which ends at byte 25",
		`[{"processors":["copy"]}]]`:                 "more after the JSON list",
	}
	for in, want := range tests {
		_, err := ParseRules([]byte(in), Builtins())
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want, in)
	}
	// All problems are reported at once.
	_, err := ParseRules([]byte(`[{"processors":["nope"]},{"prefix":"x"}]`), Builtins())
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "rule 0") && strings.Contains(err.Error(), "rule 1"), err.Error())
}

type upper struct{}

func (upper) Name() string { return "upper" }
func (upper) Wrap(in io.Reader, _ *Result) (io.Reader, error) {
	return readerFunc(func(p []byte) (int, error) {
		n, err := in.Read(p)
		copy(p[:n], bytes.ToUpper(p[:n]))
		return n, err
	}), nil
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestCustomProcessor(t *testing.T) {
	reg := Builtins()
	reg.Register(upper{})
	procs, err := reg.Lookup([]string{"upper", "checksum"})
	require.NoError(t, err)
	res := &Result{}
	r, err := Chain(strings.NewReader("abc"), res, procs...)
	require.NoError(t, err)
	out, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "ABC", string(out))
	sum := sha256.Sum256([]byte("ABC"))
	assert.Equal(t, hex.EncodeToString(sum[:]), res.SHA256)
}
