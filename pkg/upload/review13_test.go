package upload

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Finding (upload's half of the worker's finding 1, review 13): Result.Late compared only
// the final entries against the early ones, so it said nothing of
//   - an entry the early answer had and the final one dropped (the object carries a
//     value the caller no longer gives: a wrong label, not a missing one), nor
//   - the headers (Content-Type, Content-Encoding), which the object takes from the
//     early answer whatever the final one says.
//
// Fixed: a multipart object whose final Description changes or drops a value it carries
// is corrected by one copy (REPLACE, on the completed ETag); Late names only additions.
func TestReview13_LateNamesEverythingTheObjectHasWrong(t *testing.T) {
	const part = MinPartSize
	api := &fakeAPI{}
	u, err := New(api, part)
	require.NoError(t, err)
	body := bytes.NewReader(make([]byte, 2*part+1))
	res, err := u.Upload(context.Background(), Object{Bucket: "b", Key: "k", Describe: func() Description {
		if body.Len() > 0 { // after the first part
			return Description{ContentType: "application/octet-stream", Metadata: map[string]string{"label": "in/k", "guess": "binary"}}
		}
		return Description{ContentType: "text/csv", ContentEncoding: "gzip", Metadata: map[string]string{"label": "in/k"}}
	}}, body)
	require.NoError(t, err)
	assert.Equal(t, 1, api.copies, "the wrong values corrected by one copy")
	assert.Equal(t, map[string]string{"label": "in/k"}, api.meta, "the dropped entry is gone")
	assert.Equal(t, "text/csv", api.ctype)
	assert.Equal(t, "gzip", api.cenc)
	assert.Empty(t, res.Late)
}
