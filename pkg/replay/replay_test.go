package replay

import (
	"bytes"
	"context"
	"encoding/csv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// A job's failed.csv, as the report writes it: keys URL-encoded, entries that are not
// files, superseded files and split parts left out, each file once.
func TestReplayableFromAReport(t *testing.T) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	for _, r := range [][]string{
		{"in", "dir/a+b%2Bc.csv", "", "failed", "CorruptContent", "422", "gunzip: bad"},
		{"in", "dir/a+b%2Bc.csv", "", "failed", "CorruptContent", "422", "again"},
		{"in", "", "", "failed", "InvalidEntry", "400", "row 3 is not a file"},
		{"in", "old.txt", "v1", "failed", "Superseded", "412", "superseded"},
		{"in", "big.jsonl%23bytes%3D0-100", "", "failed", "RetriesExhausted", "500", "part"},
		{"in", "%C3%A9t%C3%A9.log", "", "failed", "RetriesExhausted", "500", "timeout"},
	} {
		require.NoError(t, w.Write(r))
	}
	w.Flush()
	lines, err := job.ReadLines(&b)
	require.NoError(t, err)
	require.Len(t, lines, 6)
	assert.Equal(t, "dir/a b+c.csv", lines[0].Key)
	assert.Equal(t, 422, lines[0].HTTPStatus)
	keys, skipped := Replayable(lines)
	assert.Equal(t, [][2]string{{"in", "dir/a b+c.csv"}, {"in", "été.log"}}, keys)
	require.Len(t, skipped, 3)
	assert.Equal(t, "not a file", skipped[0].Why)
	assert.Contains(t, skipped[1].Why, "newer revision")
	assert.Contains(t, skipped[2].Why, "split part")
}

type fakes struct {
	heads map[string]*s3.HeadObjectOutput
	recs  map[ledger.Key]ledger.Record
	sent  []string
}

func (f *fakes) HeadObject(_ context.Context, in *s3.HeadObjectInput, _ ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	if h, ok := f.heads[aws.ToString(in.Key)]; ok {
		return h, nil
	}
	return nil, &smithy.GenericAPIError{Code: "NotFound"}
}

func (f *fakes) Get(_ context.Context, k ledger.Key) (ledger.Record, bool, error) {
	r, ok := f.recs[k]
	return r, ok, nil
}

func (f *fakes) SendMessageBatch(_ context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		f.sent = append(f.sent, aws.ToString(e.MessageBody))
		out.Successful = append(out.Successful, sqstypes.SendMessageBatchResultEntry{Id: e.Id, MessageId: aws.String("m" + aws.ToString(e.Id))})
	}
	return out, nil
}

// A file replays at its current revision; an archive member at the location its record
// keeps; a missing object or an unlocated member is skipped with the reason.
func TestResolveAndSend(t *testing.T) {
	ctx := context.Background()
	f := &fakes{
		heads: map[string]*s3.HeadObjectOutput{"a.csv": {ETag: aws.String(`"e2"`), VersionId: aws.String("v2"), ContentLength: aws.Int64(9)}},
		recs: map[ledger.Key]ledger.Record{{Bucket: "in", Key: "z.zip!/d/x.txt", Scope: ledger.ScopeMember}: {VersionID: "vz", ETag: "ez",
			Result: ledger.Result{Member: &ledger.Member{Name: "d/x.txt", Offset: 40, CompressedSize: 10, Size: 20, Method: 8, CRC32: 7}}}},
	}
	a, err := Resolve(ctx, f, f, "in", "a.csv", "r1")
	require.NoError(t, err)
	assert.Equal(t, task.File{Bucket: "in", Key: "a.csv", VersionID: "v2", ETag: "e2", Size: 9, Replay: "r1"}, a)
	m, err := Resolve(ctx, f, f, "in", "z.zip!/d/x.txt", "r1")
	require.NoError(t, err)
	assert.Equal(t, "z.zip", m.Key)
	assert.Equal(t, "z.zip!/d/x.txt", m.Name())
	assert.Equal(t, int64(40), m.Member.Offset)
	_, err = Resolve(ctx, f, f, "in", "gone.csv", "r1")
	assert.ErrorIs(t, err, ErrGone)
	_, err = Resolve(ctx, f, f, "in", "y.zip!/e", "r1")
	assert.ErrorIs(t, err, ErrNotReplayable)
	_, err = Resolve(ctx, f, f, "in", "big.jsonl#bytes=0-100", "r1")
	assert.ErrorIs(t, err, ErrNotReplayable)

	files := make([]task.File, 0, 60)
	for range 60 {
		files = append(files, a)
	}
	sent, err := Send(ctx, f, "https://q/tasks", files)
	require.NoError(t, err)
	require.Len(t, sent, 3, "25 files a message")
	assert.Len(t, sent[2].Files, 10)
	d, err := task.Decode([]byte(f.sent[0]))
	require.NoError(t, err)
	assert.Equal(t, "r1", d.Files[0].Replay)
	assert.Empty(t, d.JobID, "a replay belongs to no job")
}
