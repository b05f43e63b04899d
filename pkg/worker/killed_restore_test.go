package worker

import (
	"context"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Chaos run 21 (seed 20261201): v3's commit replaced v2's record, and the environment was
// killed 110 ms later, before the output check that follows a replacing commit. v2's
// writer had put its own output back meanwhile (v3's record was not there yet). v3's
// event came back, its record said SUCCEEDED, and it was settled as a duplicate: the
// output stayed v2's under v3's record. A duplicate settled from its record on a
// redelivery now confirms the output (one HEAD) and puts it back if it is not the
// record's revision's.
func TestRedeliveredDuplicateConfirmsTheOutput(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.overwrite("in", "k.txt", "e2", []byte("version two"))
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m2", "in", "k.txt", "v2", "e2", "0B")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)
	v2Meta := e.s3.meta["out/processed/k.txt"]

	e.s3.overwrite("in", "k.txt", "e3", []byte("version three"))
	resp, err = e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{versionEvent("m3", "in", "k.txt", "v3", "e3", "0C")}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)
	// What the kill left: v3's record, v2's output (put back by v2's writer).
	e.s3.overwrite("out", "processed/k.txt", "late", []byte("version two"))
	e.s3.meta["out/processed/k.txt"] = v2Meta

	resp, err = e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{withReceive(versionEvent("m3", "in", "k.txt", "v3", "e3", "0C"), 2)}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	out, meta, _ := e.s3.get("out", "processed/k.txt")
	assert.Equal(t, "version three", string(out), "the output is the record's revision's again")
	assert.Equal(t, "v:v3", meta[MetaRevision])
}

// A redelivered duplicate whose output is right costs one HEAD: nothing is read or written.
func TestRedeliveredDuplicateWithItsOutputCostsOneHead(t *testing.T) {
	e := newEnv(t, nil)
	e.s3.overwrite("in", "k.txt", "e1", []byte("version one"))
	ev := versionEvent("m1", "in", "k.txt", "v1", "e1", "0A")
	resp, err := e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{ev}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)
	puts, heads := e.s3.puts, e.s3.heads

	resp, err = e.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{withReceive(ev, 2)}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	assert.Equal(t, puts, e.s3.puts, "nothing written")
	assert.Equal(t, heads+1, e.s3.heads, "one HEAD of the output")
	docs := batchMetrics(t, e)
	assert.EqualValues(t, 1, docs[len(docs)-1]["FilesDuplicate"])
}
