// Package replay processes files again, deliberately: a task message naming each file's
// current revision with a replay id ([task.File].Replay), sent to the tasks queue. The
// worker's duplicate check lets a replayed file through once per replay id (the ledger
// records the id with the success), so a redelivery of the replay is a duplicate like
// any other, and the file's record gains one attempt.
//
// A replay belongs to no job: the job a file came from keeps its counts and report.
package replay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// Objects is the part of the S3 client the package calls.
type Objects interface {
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
}

// Ledger is the part of the ledger store the package calls.
type Ledger interface {
	Get(ctx context.Context, k ledger.Key) (ledger.Record, bool, error)
}

// Sender is the part of the SQS client the package calls.
type Sender interface {
	SendMessageBatch(context.Context, *sqs.SendMessageBatchInput, ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// Errors of [Resolve].
var (
	// ErrGone: the object no longer exists.
	ErrGone = errors.New("replay: the object does not exist (any more)")
	// ErrNotReplayable: the file cannot be replayed on its own (a split part, or an
	// archive member whose location the ledger does not hold).
	ErrNotReplayable = errors.New("replay: not replayable on its own")
)

// NewID is a fresh replay id.
func NewID(now time.Time) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "r" + now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}

var partName = regexp.MustCompile(`#bytes=\d+-\d+$`)

// Resolve is the task file for the current revision of bucket/key: the object's
// version and ETag now (a HEAD), or for an archive member ("<zip>!/<entry>") its
// location in the archive's revision its ledger record names.
func Resolve(ctx context.Context, objects Objects, l Ledger, bucket, key, replayID string) (task.File, error) {
	if partName.MatchString(key) {
		return task.File{}, fmt.Errorf("%s/%s is a part of a split job: resubmit the job: %w", bucket, key, ErrNotReplayable)
	}
	if i := strings.Index(key, "!/"); i > 0 {
		rec, ok, err := l.Get(ctx, ledger.Key{Bucket: bucket, Key: key, Scope: ledger.ScopeMember})
		if err != nil {
			return task.File{}, err
		}
		if ok && rec.Member != nil {
			m := rec.Member
			return task.File{Bucket: bucket, Key: strings.TrimSuffix(key, "!/"+m.Name), VersionID: rec.VersionID, ETag: rec.ETag, Replay: replayID,
				Member: &task.Member{Name: m.Name, Offset: m.Offset, CompressedSize: m.CompressedSize, Size: m.Size, Method: m.Method, CRC32: m.CRC32}}, nil
		}
		// Not a member the ledger located: an object whose name has "!/" in it, if it exists.
		if _, err := head(ctx, objects, bucket, key); errors.Is(err, ErrGone) {
			return task.File{}, fmt.Errorf("%s/%s looks like an archive member the ledger does not locate: resubmit its archive's job: %w", bucket, key, ErrNotReplayable)
		}
	}
	out, err := head(ctx, objects, bucket, key)
	if err != nil {
		return task.File{}, err
	}
	f := task.File{Bucket: bucket, Key: key, ETag: strings.Trim(aws.ToString(out.ETag), `"`), Size: aws.ToInt64(out.ContentLength), Replay: replayID}
	if v := aws.ToString(out.VersionId); v != "" && v != "null" {
		f.VersionID = v
	}
	return f, nil
}

func head(ctx context.Context, objects Objects, bucket, key string) (*s3.HeadObjectOutput, error) {
	out, err := objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	var api smithy.APIError
	if errors.As(err, &api) && (api.ErrorCode() == "NotFound" || api.ErrorCode() == "NoSuchKey") {
		return nil, fmt.Errorf("s3://%s/%s: %w", bucket, key, ErrGone)
	}
	if err != nil {
		return nil, fmt.Errorf("replay: head s3://%s/%s: %w", bucket, key, err)
	}
	return out, nil
}

// FilesPerMessage is how many files one replay task message carries.
const FilesPerMessage = 25

// Sent is one task message sent.
type Sent struct {
	MessageID string      `json:"message_id"`
	Files     []task.File `json:"files"`
}

// Send sends the files as task messages (FilesPerMessage a message, ten messages a
// call) to the tasks queue.
func Send(ctx context.Context, q Sender, queueURL string, files []task.File) ([]Sent, error) {
	var msgs [][]task.File
	for start := 0; start < len(files); start += FilesPerMessage {
		msgs = append(msgs, files[start:min(start+FilesPerMessage, len(files))])
	}
	var out []Sent
	for start := 0; start < len(msgs); start += 10 {
		batch := msgs[start:min(start+10, len(msgs))]
		var entries []sqstypes.SendMessageBatchRequestEntry
		for i, fs := range batch {
			body, err := task.Message{Files: fs}.Encode()
			if err != nil {
				return out, err
			}
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(body))})
		}
		resp, err := q.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: entries})
		if err != nil {
			return out, fmt.Errorf("replay: send to %s: %w", queueURL, err)
		}
		if len(resp.Failed) > 0 {
			f := resp.Failed[0]
			return out, fmt.Errorf("replay: send to %s: %d of %d messages refused, first: %s %s", queueURL, len(resp.Failed), len(entries),
				aws.ToString(f.Code), aws.ToString(f.Message))
		}
		for _, ok := range resp.Successful {
			i, _ := strconv.Atoi(aws.ToString(ok.Id))
			out = append(out, Sent{MessageID: aws.ToString(ok.MessageId), Files: batch[i]})
		}
	}
	return out, nil
}

// Skip is a report line a job replay leaves out, and why.
type Skip struct {
	File string `json:"file"`
	Code string `json:"code"`
	Why  string `json:"why"`
}

// Replayable splits a job's failed report lines into the files to replay (bucket/key
// pairs, each once) and those left out: entries that are not files (InvalidEntry),
// files a newer revision superseded (their key's newest revision was processed), split
// parts (their job merges them; resubmit it).
func Replayable(lines []job.Line) (keys [][2]string, skipped []Skip) {
	seen := map[[2]string]bool{}
	for _, l := range lines {
		uri := "s3://" + l.Bucket + "/" + l.Key
		switch {
		case l.Status != job.Failed:
			continue
		case l.ErrorCode == failure.InvalidEntry:
			skipped = append(skipped, Skip{File: uri, Code: l.ErrorCode, Why: "not a file"})
		case l.ErrorCode == failure.Superseded:
			skipped = append(skipped, Skip{File: uri, Code: l.ErrorCode, Why: "a newer revision of the key was processed"})
		case partName.MatchString(l.Key):
			skipped = append(skipped, Skip{File: uri, Code: l.ErrorCode, Why: "a split part: resubmit the job"})
		case l.Bucket == "" || l.Key == "":
			skipped = append(skipped, Skip{File: uri, Code: l.ErrorCode, Why: "no bucket or key"})
		default:
			k := [2]string{l.Bucket, l.Key}
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	return keys, skipped
}
