package build

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func moduleDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	require.NoError(t, err)
	return dir
}

// Two builds of the same source give byte-identical zips, even when the second compiles
// everything again from an empty build cache.
func TestReproducible(t *testing.T) {
	ctx := context.Background()
	mod := moduleDir(t)
	a, err := Function(ctx, Options{ModuleDir: mod, Function: "worker", OutDir: t.TempDir()})
	require.NoError(t, err)
	b, err := Function(ctx, Options{ModuleDir: mod, Function: "worker", OutDir: t.TempDir(),
		Env: []string{"GOCACHE=" + t.TempDir()}})
	require.NoError(t, err)

	za, err := os.ReadFile(a.Path)
	require.NoError(t, err)
	zb, err := os.ReadFile(b.Path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(za, zb), "zips differ: %s vs %s", a.SHA256, b.SHA256)
	assert.Equal(t, a.SHA256, b.SHA256)

	zr, err := zip.NewReader(bytes.NewReader(za), int64(len(za)))
	require.NoError(t, err)
	require.Len(t, zr.File, 1)
	f := zr.File[0]
	assert.Equal(t, "bootstrap", f.Name)
	assert.Equal(t, os.FileMode(0o755), f.Mode().Perm())
	assert.Equal(t, fixedTime, f.Modified.UTC())

	rc, err := f.Open()
	require.NoError(t, err)
	bin, err := io.ReadAll(rc)
	require.NoError(t, err)
	ef, err := elf.NewFile(bytes.NewReader(bin))
	require.NoError(t, err)
	assert.Equal(t, elf.EM_AARCH64, ef.Machine, "linux/arm64 for provided.al2023 on Graviton")
}

func TestZipDependsOnContentOnly(t *testing.T) {
	a, err := Zip("bootstrap", []byte("same"))
	require.NoError(t, err)
	b, err := Zip("bootstrap", []byte("same"))
	require.NoError(t, err)
	c, err := Zip("bootstrap", []byte("different"))
	require.NoError(t, err)
	assert.Equal(t, a, b)
	assert.NotEqual(t, a, c)
}

func TestFunctionErrors(t *testing.T) {
	_, err := Function(context.Background(), Options{ModuleDir: moduleDir(t), Function: "../etc", OutDir: t.TempDir()})
	assert.ErrorContains(t, err, "invalid function name")
	_, err = Function(context.Background(), Options{ModuleDir: moduleDir(t), Function: "nope", OutDir: t.TempDir()})
	assert.ErrorContains(t, err, `function "nope"`)
	names, err := Functions(moduleDir(t))
	require.NoError(t, err)
	assert.Contains(t, names, "worker")
}

// The zip's binary is built by the toolchain go.mod pins, whatever Go runs the build
// (GOTOOLCHAIN=local in the environment included): another patch release on another
// machine would give other bytes and a spurious function update in `preview --diff`.
func TestBuiltWithThePinnedToolchain(t *testing.T) {
	mod := moduleDir(t)
	want, err := Toolchain(mod)
	require.NoError(t, err)
	require.Regexp(t, `^go1\.\d+\.\d+$`, want, "go.mod pins an exact release")
	t.Setenv("GOTOOLCHAIN", "local")
	a, err := Function(context.Background(), Options{ModuleDir: mod, Function: "worker", OutDir: t.TempDir(), GOARCH: "amd64"})
	require.NoError(t, err)
	zr, err := zip.OpenReader(a.Path)
	require.NoError(t, err)
	defer zr.Close()
	rc, err := zr.File[0].Open()
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "bootstrap")
	data, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	info, err := buildinfo.ReadFile(bin)
	require.NoError(t, err)
	assert.Equal(t, want, info.GoVersion)

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n\ngo 1.26\n"), 0o644))
	_, err = Toolchain(dir)
	assert.ErrorContains(t, err, "no toolchain line")
}
