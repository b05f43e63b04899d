package job

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// ReadLines reads report lines (a results CSV or a part) as [Engine.WritePart] and the
// report write them: seven columns, keys URL-encoded as S3 Batch Operations does.
func ReadLines(r io.Reader) ([]Line, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 7
	var out []Line
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		key, err := url.QueryUnescape(rec[1])
		if err != nil {
			return nil, fmt.Errorf("report: key %q: %w", rec[1], err)
		}
		status, _ := strconv.Atoi(rec[5])
		out = append(out, Line{Bucket: rec[0], Key: key, VersionID: rec[2], Status: rec[3], ErrorCode: rec[4], HTTPStatus: status, Message: rec[6]})
	}
}

// ErrNoReport: the job has no report (yet): it is running, or its finalize has not run.
var ErrNoReport = errors.New("job: no report")

// FailedLines reads a finished job's results/failed.csv; [ErrNoReport] if there is none.
func (e *Engine) FailedLines(ctx context.Context, jobID string) ([]Line, error) {
	key := e.ReportPrefix(jobID) + "results/failed.csv"
	obj, err := e.Objects.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.OutputBucket), Key: aws.String(key)})
	var nsk *s3types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("job %s: s3://%s/%s: %w", jobID, e.OutputBucket, key, ErrNoReport)
	}
	if err != nil {
		return nil, fmt.Errorf("job %s: read s3://%s/%s: %w", jobID, e.OutputBucket, key, err)
	}
	defer obj.Body.Close()
	lines, err := ReadLines(obj.Body)
	if err != nil {
		return nil, fmt.Errorf("job %s: s3://%s/%s: %w", jobID, e.OutputBucket, key, err)
	}
	return lines, nil
}
