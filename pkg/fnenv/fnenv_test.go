package fnenv

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	env := map[string]string{Table: "t", OutputBucket: "o", OutputPrefix: "p/", LedgerTTLDays: "7",
		MaxReceiveCount: "9", ForwardJobSpecs: "true", JobsQueueURL: " http://q "}
	c, err := Parse(func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, Common{Table: "t", OutputBucket: "o", OutputPrefix: "p/", MaxReceiveCount: 9,
		LedgerTTL: 7 * 24 * time.Hour, ForwardJobSpecs: true, JobsQueueURL: "http://q"}, c)

	bad := map[string]string{LedgerTTLDays: "-1", MaxReceiveCount: "x", ForwardJobSpecs: "yes"}
	_, err = Parse(func(k string) string { return bad[k] })
	require.Error(t, err)
	for _, want := range []string{Table + " is required", OutputBucket + " is required", LedgerTTLDays + `="-1"`,
		MaxReceiveCount + `="x"`, ForwardJobSpecs + `="yes"`} {
		assert.Contains(t, err.Error(), want)
	}
}
