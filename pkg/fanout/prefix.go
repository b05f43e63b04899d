package fanout

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/task"
)

// ListTask is one unit of a prefix job's listing: one page of one "directory". Listing
// is a parallel breadth-first traversal: each page's common prefixes and its
// continuation token become child tasks, so a deep or wide tree is listed by many
// dispatchers at once instead of one long sequential scan.
type ListTask struct {
	Bucket string `json:"bucket"`
	Prefix string `json:"prefix"`
	Suffix string `json:"suffix,omitempty"`
	Token  string `json:"token,omitempty"`
}

// Lister is the part of the S3 client listing calls.
type Lister interface {
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// ListPage lists one page of t (up to pageSize keys, 1000 at most). It returns the files
// on the page that match the suffix — with their ETag and size, so each task names an
// exact revision — and the child tasks: one per common prefix, and one for the next page.
func ListPage(ctx context.Context, api Lister, t ListTask, pageSize int32) (files []task.File, children []ListTask, err error) {
	in := &s3.ListObjectsV2Input{
		Bucket:    aws.String(t.Bucket),
		Prefix:    aws.String(t.Prefix),
		Delimiter: aws.String("/"),
		MaxKeys:   aws.Int32(pageSize),
	}
	if t.Token != "" {
		in.ContinuationToken = aws.String(t.Token)
	}
	out, err := api.ListObjectsV2(ctx, in)
	if err != nil {
		return nil, nil, fmt.Errorf("fanout: list s3://%s/%s: %w", t.Bucket, t.Prefix, err)
	}
	for _, o := range out.Contents {
		key := aws.ToString(o.Key)
		if !strings.HasSuffix(key, t.Suffix) || strings.HasSuffix(key, "/") {
			continue // not matching, or a "directory marker"
		}
		files = append(files, task.File{Bucket: t.Bucket, Key: key, ETag: strings.Trim(aws.ToString(o.ETag), `"`), Size: aws.ToInt64(o.Size)})
	}
	for _, cp := range out.CommonPrefixes {
		children = append(children, ListTask{Bucket: t.Bucket, Prefix: aws.ToString(cp.Prefix), Suffix: t.Suffix})
	}
	if aws.ToBool(out.IsTruncated) && aws.ToString(out.NextContinuationToken) != "" {
		children = append(children, ListTask{Bucket: t.Bucket, Prefix: t.Prefix, Suffix: t.Suffix, Token: aws.ToString(out.NextContinuationToken)})
	}
	return files, children, nil
}
