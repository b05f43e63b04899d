package task

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// S3 event notifications are not checked for their eventVersion (S3 sends 2.1, 2.2 and
// 2.3, compatible with each other): a record of any version is read by the fields they
// share, so a new minor version keeps working, and one without them — whatever it
// claims to be — is refused, naming what is missing. A truncated body is refused as
// malformed; a task message of an unknown version names the versions this worker reads.
func TestDecodeUnknownAndTruncatedVersions(t *testing.T) {
	body := string(readTestdata(t, "s3-put-two-records.json"))
	for _, v := range []string{"2.2", "2.3", "3.0"} {
		d, err := Decode([]byte(strings.ReplaceAll(body, `"eventVersion": "2.1"`, `"eventVersion": "`+v+`"`)))
		require.NoError(t, err, v)
		assert.Len(t, d.Files, 2, v)
	}
	for name, tc := range map[string]struct{ body, want string }{
		"eventVersion 3.0 without the 2.x fields": {`{"Records":[{"eventVersion":"3.0","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"objectV3":{"key":"k"}}}]}`, "record 0: no bucket name"},
		"truncated in the middle of a record":     {body[:len(body)/2], "malformed JSON: unexpected end of JSON input"},
		"task message of version 2":               {`{"v":2,"job_id":"j","task_id":"t","files":[{"bucket":"b","key":"k"}]}`, "task message version 2 is not supported (this worker reads 1..1)"},
		"task message of version 0":               {`{"v":0,"files":[]}`, "task message version 0 is not supported"},
		"a job's task message without a task id":  {`{"v":1,"job_id":"j1","files":[{"bucket":"b","key":"k"}]}`, `task message of job j1 has no "task_id"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(tc.body))
			var inv *InvalidError
			require.True(t, errors.As(err, &inv), "%v", err)
			assert.True(t, inv.Permanent())
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
