package source

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/retry"
	"github.com/fileflow/fileflow/pkg/task"
)

func TestLimitsCheck(t *testing.T) {
	l := Limits{MaxMemberBytes: 100 << 20, MaxRatio: 10}
	for _, tc := range []struct {
		name             string
		limits           Limits
		size, compressed int64
		want             string // the limit, or "" for within
	}{
		{"small", l, 1000, 900, ""},
		{"at the size limit", l, 100 << 20, 20 << 20, ""},
		{"over the size limit", l, 100<<20 + 1, 20 << 20, LimitMemberBytes},
		{"at the ratio", l, 10 << 20, 1 << 20, ""},
		{"over the ratio", l, 10<<20 + 1, 1 << 20, LimitRatio},
		{"nothing compressed, much declared", l, 2 << 20, 0, LimitRatio},
		{"high ratio, but small", l, RatioExemptBytes, 10, ""},
		{"high ratio, just above small", l, RatioExemptBytes + 1, 10, LimitRatio},
		{"defaults: 4 GiB is fine", Limits{}, 4 << 30, 100 << 20, ""},
		{"defaults: over 4 GiB", Limits{}, 4<<30 + 1, 1 << 30, LimitMemberBytes},
		{"defaults: ratio 200", Limits{}, 200 << 20, 1<<20 - 1, LimitRatio},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.limits.Check(tc.size, tc.compressed)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			var le *LimitError
			require.ErrorAs(t, err, &le)
			assert.Equal(t, tc.want, le.Limit)
			assert.ErrorContains(t, err, tc.want)
			assert.Equal(t, retry.Permanent, retry.Classify(err))
		})
	}
}

// A member whose declared size is over the limits fails before any GET, with the limit
// in the error; the defaults apply when no limits are given.
func TestOpenMemberOverLimits(t *testing.T) {
	ctx := context.Background()
	api := &fakeS3{key: "x.zip", data: make([]byte, 1<<10), etag: "z"}
	for _, tc := range []struct {
		name   string
		m      task.Member
		limits Limits
		want   string
	}{
		{"over max_member_bytes", task.Member{Name: "big", Size: 2000, CompressedSize: 1000, Method: 8}, Limits{MaxMemberBytes: 1999}, "uncompressed size 2000 bytes is over the limit of 1999 bytes per member (max_member_bytes)"},
		{"over max_ratio", task.Member{Name: "bomb", Size: 100 << 20, CompressedSize: 100 << 10, Method: 8}, Limits{MaxRatio: 50}, "expands 1024 times (104857600 bytes from 102400 compressed), over the limit of 50 (max_ratio)"},
		{"over the default size", task.Member{Name: "huge", Size: 5 << 30, CompressedSize: 1 << 30, Method: 8}, Limits{}, "over the limit of 4294967296 bytes"},
		{"over the default ratio", task.Member{Name: "bomb", Size: 1 << 30, CompressedSize: 1 << 20, Method: 8}, Limits{}, "over the limit of 200 (max_ratio)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api.ins = nil
			m := tc.m
			_, err := Open(ctx, api, task.File{Bucket: "b", Key: "x.zip", ETag: "z", Member: &m}, Options{Limits: tc.limits})
			require.ErrorContains(t, err, tc.want)
			assert.ErrorContains(t, err, "s3://b/x.zip!/"+m.Name)
			var le *LimitError
			assert.ErrorAs(t, err, &le)
			assert.Equal(t, retry.Permanent, retry.Classify(err))
			assert.Empty(t, api.ins, "no GET")
		})
	}
}

// zeroBomb is a deflate stream of mib MiB of zeros, about 1 KiB per MiB: one flushed
// block of 1 MiB repeated (its back-references only reach zeros), then a final empty
// block.
func zeroBomb(t testing.TB, mib int) []byte {
	t.Helper()
	var block bytes.Buffer
	fw, err := flate.NewWriter(&block, flate.BestCompression)
	require.NoError(t, err)
	_, err = fw.Write(make([]byte, 1<<20))
	require.NoError(t, err)
	require.NoError(t, fw.Flush()) // ends byte-aligned, not final
	out := bytes.Repeat(block.Bytes(), mib)
	return append(out, 0x01, 0x00, 0x00, 0xff, 0xff) // final, stored, empty
}

// countingGetter counts the compressed bytes read from the bodies it returns.
type countingGetter struct {
	*fakeS3
	read int64
}

func (c *countingGetter) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := c.fakeS3.GetObject(ctx, in, o...)
	if err == nil {
		out.Body = io.NopCloser(&countingReader{r: out.Body, n: &c.read})
	}
	return out, err
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// A member whose header lies — it declares 10 bytes (or 1 MiB: within every limit) and
// would inflate to 1 GiB — is cut off one byte past its declared size, having read a few
// KiB of its compressed bytes, and fails permanently saying so.
func TestMemberHeaderLiesAboutItsSize(t *testing.T) {
	ctx := context.Background()
	small := zeroBomb(t, 4)
	got, err := io.ReadAll(flate.NewReader(bytes.NewReader(small)))
	require.NoError(t, err)
	require.Equal(t, 4<<20, len(got), "the bomb is a valid deflate stream of zeros")

	bomb := zeroBomb(t, 1024) // 1 GiB of zeros from ~1 MiB
	t.Logf("1 GiB of zeros deflates to %d bytes", len(bomb))
	for _, declared := range []int64{10, 1 << 20} {
		api := &countingGetter{fakeS3: &fakeS3{key: "bomb.zip", data: bomb, etag: "z"}}
		m := task.Member{Name: "zeros.bin", CompressedSize: int64(len(bomb)), Size: declared, Method: 8,
			CRC32: crc32.ChecksumIEEE(make([]byte, declared))}
		require.NoError(t, DefaultLimits.Check(m.Size, m.CompressedSize), "the declared sizes pass the limits")
		start := time.Now()
		o, err := Open(ctx, api, task.File{Bucket: "b", Key: "bomb.zip", ETag: "z", Member: &m}, Options{})
		require.NoError(t, err)
		n, err := io.Copy(io.Discard, o.Body)
		require.NoError(t, o.Body.Close())
		var le *LimitError
		require.ErrorContains(t, err, "inflates past the")
		assert.ErrorContains(t, err, "corrupt archive member")
		assert.False(t, errors.As(err, &le))
		assert.Equal(t, retry.Permanent, retry.Classify(err))
		assert.LessOrEqual(t, n, declared+1, "at most one byte past the declared size")
		assert.Less(t, api.read, int64(64<<10)+declared/100, "a few KiB of the compressed bytes read")
		t.Logf("declared %d: cut off after %d bytes, %d compressed bytes read, in %s", declared, n, api.read, time.Since(start))
	}
}
