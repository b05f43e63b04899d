package procs

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestForMemory(t *testing.T) {
	for _, tt := range []struct{ mem, ncpu, want int }{
		{128, 2, 1},
		{512, 2, 1},
		{1769, 2, 1},
		{1770, 2, 2},
		{3008, 2, 2},
		{10240, 6, 6},
		{10240, 2, 2}, // never more than the machine has
		{1024, 1, 1},
	} {
		assert.Equal(t, tt.want, ForMemory(tt.mem, tt.ncpu), "%d MB on %d CPUs", tt.mem, tt.ncpu)
	}
}

func TestSet(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	n, changed := Set(env(map[string]string{}))
	assert.False(t, changed, "outside Lambda: left alone")
	assert.Equal(t, prev, n)

	n, changed = Set(env(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "GOMAXPROCS": "4"}))
	assert.False(t, changed, "the operator's GOMAXPROCS wins")
	assert.Equal(t, prev, n)

	n, _ = Set(env(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}))
	assert.Equal(t, 1, n)
	assert.Equal(t, 1, runtime.GOMAXPROCS(0))

	runtime.GOMAXPROCS(prev)
	n, _ = Set(env(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "4000"}))
	assert.Equal(t, min(3, runtime.NumCPU(), prev), n)

	runtime.GOMAXPROCS(prev)
	n, changed = Set(env(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "many"}))
	assert.False(t, changed, "not a number: left alone")
	assert.Equal(t, prev, n)
}

// Review 10: Set only ever lowers GOMAXPROCS. The runtime's own default (Go 1.25 and
// later: at most the cgroup's CPU limit) stands here as 1 on a 2-CPU machine; 3,008 MB
// would buy 2 (on one CPU, 1: the check then holds trivially, and it runs everywhere),
// and Set must not raise it.
func TestSetNeverRaisesTheRuntimeDefault(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	runtime.GOMAXPROCS(1)
	n, changed := Set(func(k string) string { return map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"}[k] })
	assert.False(t, changed, "raised GOMAXPROCS above what the runtime chose")
	assert.Equal(t, 1, n)
}

// Review 10: an environment that runs several invocations at once (Lambda Managed
// Instances: AWS_LAMBDA_MAX_CONCURRENCY > 1, and memory per vCPU of 2 to 8 GiB, not
// 1,769 MB) is left alone.
func TestSetLeavesMultiConcurrencyEnvironmentsAlone(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	n, changed := Set(func(k string) string {
		return map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "AWS_LAMBDA_MAX_CONCURRENCY": "16"}[k]
	})
	assert.False(t, changed)
	assert.Equal(t, prev, n)
}
