package dispatch

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/fnenv"
)

func TestConfig(t *testing.T) {
	env := map[string]string{fnenv.TasksQueueURL: "t", fnenv.JobsQueueURL: "j", fnenv.MaxReceiveCount: "7", fnenv.TasksDLQURL: "tdlq"}
	cfg, err := ConfigFromEnv(func(k string) string { return env[k] })
	require.NoError(t, err)
	cfg = cfg.withDefaults()
	require.NoError(t, cfg.validate())
	assert.Equal(t, 7, cfg.MaxReceiveCount)
	assert.Equal(t, int32(1000), cfg.PageSize)
	assert.Equal(t, []string{"tdlq"}, cfg.DeadLetterQueues)

	_, err = ConfigFromEnv(func(string) string { return "" })
	assert.ErrorContains(t, err, fnenv.TasksQueueURL+" is required")
	err = Config{PageSize: 5000, MaxTaskBytes: 10}.withDefaults().validate()
	for _, want := range []string{"TasksQueueURL", "JobsQueueURL", "PageSize = 5000", "MaxTaskBytes = 10"} {
		assert.ErrorContains(t, err, want)
	}
	_, err = New(Config{TasksQueueURL: "t", JobsQueueURL: "j"}, Deps{})
	assert.ErrorContains(t, err, "Objects, Queue, Ledger and Jobs are required")
}
