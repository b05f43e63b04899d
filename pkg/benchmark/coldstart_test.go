package benchmark

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/build"
)

func moduleDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	require.NoError(t, err)
	return dir
}

// Every function of the real module, built and started three times under the local
// runtime: its deployed zip's size and three inits each.
func TestColdStarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every function twice (arm64 and the host's arch)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mod := moduleDir(t)
	names, err := build.Functions(mod)
	require.NoError(t, err)
	require.NotEmpty(t, names)

	got, err := ColdStarts(ctx, mod, 3)
	require.NoError(t, err)
	require.Len(t, got, len(names), "one result per function")
	for i, cs := range got {
		t.Run(cs.Function, func(t *testing.T) {
			assert.Equal(t, names[i], cs.Function)
			a, err := build.Function(ctx, build.Options{ModuleDir: mod, Function: cs.Function, OutDir: t.TempDir()})
			require.NoError(t, err)
			assert.Positive(t, cs.ZipBytes)
			assert.Equal(t, a.Size, cs.ZipBytes, "the size of the arm64 zip that is deployed")
			require.Len(t, cs.InitMs, 3)
			for _, ms := range cs.InitMs {
				assert.Greater(t, ms, 0.0)
				assert.Less(t, ms, 5000.0)
			}
			assert.Contains(t, cs.InitMs, cs.MedianMs)
			t.Logf("%s: zip %d bytes, init %v ms, median %.2f ms", cs.Function, cs.ZipBytes, cs.InitMs, cs.MedianMs)
		})
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		xs   []float64
		want float64
	}{
		{"none", nil, 0},
		{"one", []float64{4}, 4},
		{"odd, unsorted", []float64{9, 1, 5}, 5},
		{"even: mean of the middle two", []float64{8, 2, 4, 6}, 5},
		{"repeats", []float64{3, 3, 1, 3}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.xs...)
			assert.Equal(t, tc.want, Median(tc.xs))
			assert.Equal(t, in, tc.xs, "the input is left as it was")
		})
	}
}
