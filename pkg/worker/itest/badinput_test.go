package itest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/process"
)

// longKey is a key of exactly n bytes of UTF-8 under prefix, ending in suffix, in
// path elements of at most 200 bytes (POSIX-backed servers, like the local one, store
// keys as paths whose elements are at most 255 bytes; S3 has no such limit).
func longKey(prefix, suffix string, n int) string {
	var b strings.Builder
	b.WriteString(prefix)
	for b.Len() < n-len(suffix) {
		elem := strings.Repeat("é", 99) + "/" // 199 bytes
		if left := n - len(suffix) - b.Len(); left < len(elem) {
			elem = strings.Repeat("x", left)
		}
		b.WriteString(elem)
	}
	b.WriteString(suffix)
	return b.String()
}

// Keys as long as S3 allows (1,024 bytes of UTF-8, URL-encoded in the event to three
// times that) are processed end to end against the real servers: the success is
// committed with its output under the same key, and a failure (a rejected file) is
// recorded with its reason and listed by the failures index — whose sort key would be
// over DynamoDB's limit if the record's key were not hashed there.
func TestLongestKeysEndToEnd(t *testing.T) {
	st := newStack(t, stackOptions{rules: process.Rules{{Suffix: ".exe", Reject: "executables are not accepted"}, {Processors: []string{"checksum", "copy"}}}})
	ok := longKey("long/", ".txt", 1024)
	bad := longKey("long/", ".exe", 1024)
	require.Len(t, ok, 1024)
	require.Len(t, bad, 1024)
	st.put(ok, "fine")
	st.put(bad, "MZ")
	st.notify(ok, bad)
	r := st.drain()
	assert.Zero(t, r.Failed, "nothing comes back")

	assert.Equal(t, ledger.StatusSucceeded, st.record(ok).Status)
	out, err := st.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(st.out), Key: aws.String(ok)})
	require.NoError(t, err, "the output under the 1,024-byte key")
	out.Body.Close()

	rec := st.record(bad)
	assert.Equal(t, ledger.StatusFailed, rec.Status)
	assert.Contains(t, rec.Reason, "executables are not accepted")
	fails, err := st.store.Failures(context.Background(), time.Now())
	require.NoError(t, err)
	require.Len(t, fails, 1, "listed by the failures index")
	assert.Equal(t, "F#"+st.in+"/"+bad, fails[0].PK)
}
