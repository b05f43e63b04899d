// Package build produces reproducible Lambda archives: the same handler source gives the
// same zip bytes, so `pulumi preview` shows no spurious code diff.
//
// A function under functions/<name> is cross-compiled for linux/arm64 (provided.al2023)
// with CGO off, -trimpath, -buildvcs=false, -ldflags "-s -w -buildid=" and
// -tags lambda.norpc, and zipped as a single `bootstrap` entry with a fixed timestamp and
// mode. [Archive.SHA256] (base64, as Lambda's source_code_hash wants it) changes only when
// the binary does.
//
// The compiler is part of "the same source": go.mod pins the toolchain (its `toolchain`
// line), and the build runs with GOTOOLCHAIN set to exactly that version, so a machine
// with another Go patch release (older or newer) builds the same bytes — the go command
// fetches the pinned toolchain from the module proxy if it is not the local one.
package build

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Options say what to build.
type Options struct {
	ModuleDir string   // the module root (holds go.mod)
	Function  string   // the directory name under functions/
	OutDir    string   // where <function>.zip is written
	GOARCH    string   // default "arm64"
	GoBin     string   // the go command; default "go"
	Env       []string // extra environment for go build (e.g. GOCACHE=…)
	// Tags are build tags beside lambda.norpc (the benchmarks' "fileflowprofile"); a
	// deployed zip has none.
	Tags []string
}

// Archive is a built function.
type Archive struct {
	Function string
	Path     string // the zip
	SHA256   string // base64 SHA-256 of the zip bytes
	Size     int64
}

// Toolchain is the Go toolchain go.mod pins (its `toolchain` line, e.g. "go1.26.8").
// A module without one builds with whatever Go is at hand, so it is an error: the zips
// would differ between machines.
func Toolchain(moduleDir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(moduleDir, "go.mod"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "toolchain" {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("go.mod has no toolchain line: pin one (go mod edit -toolchain=goX.Y.Z) so every machine builds the same zip")
}

// fixedTime is the zip entries' modification time: the earliest a zip can hold.
var fixedTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// Function builds one function's zip.
func Function(ctx context.Context, o Options) (Archive, error) {
	if o.GOARCH == "" {
		o.GOARCH = "arm64"
	}
	if o.GoBin == "" {
		o.GoBin = "go"
	}
	if o.Function == "" || strings.ContainsAny(o.Function, `/\`) {
		return Archive{}, fmt.Errorf("build: invalid function name %q", o.Function)
	}
	if _, err := os.Stat(filepath.Join(o.ModuleDir, "functions", o.Function, "main.go")); err != nil {
		return Archive{}, fmt.Errorf("build: function %q: %w", o.Function, err)
	}
	tmp, err := os.MkdirTemp("", "fileflow-build-")
	if err != nil {
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "bootstrap")
	cmd := exec.CommandContext(ctx, o.GoBin, "build", "-trimpath", "-buildvcs=false", "-tags", strings.Join(append([]string{"lambda.norpc"}, o.Tags...), ","),
		"-ldflags", "-s -w -buildid=", "-o", bin, "./functions/"+o.Function)
	cmd.Dir = o.ModuleDir
	toolchain, err := Toolchain(o.ModuleDir)
	if err != nil {
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+o.GOARCH, "CGO_ENABLED=0", "GOFLAGS=-mod=readonly", "GOTOOLCHAIN="+toolchain)
	cmd.Env = append(cmd.Env, o.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return Archive{}, fmt.Errorf("build %s: go build: %w\n%s", o.Function, err, out.String())
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	zipped, err := Zip("bootstrap", data)
	if err != nil {
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	path := filepath.Join(o.OutDir, o.Function+".zip")
	// Write then rename, so a concurrent build (parallel test binaries) or a reader never
	// sees a half-written zip.
	tmpZip, err := os.CreateTemp(o.OutDir, "."+o.Function+"-*.zip")
	if err != nil {
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	if _, err := tmpZip.Write(zipped); err != nil {
		tmpZip.Close()
		os.Remove(tmpZip.Name())
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	if err := tmpZip.Close(); err != nil {
		os.Remove(tmpZip.Name())
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	if err := os.Chmod(tmpZip.Name(), 0o644); err != nil {
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	if err := os.Rename(tmpZip.Name(), path); err != nil {
		os.Remove(tmpZip.Name())
		return Archive{}, fmt.Errorf("build %s: %w", o.Function, err)
	}
	sum := sha256.Sum256(zipped)
	return Archive{Function: o.Function, Path: path, SHA256: base64.StdEncoding.EncodeToString(sum[:]), Size: int64(len(zipped))}, nil
}

// Zip returns a zip holding one executable entry with a fixed time and mode, so equal
// contents give equal bytes.
func Zip(name string, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: fixedTime}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return nil, fmt.Errorf("zip %s: %w", name, err)
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("zip %s: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("zip %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// Functions lists the function names under moduleDir/functions.
func Functions(moduleDir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(moduleDir, "functions"))
	if err != nil {
		return nil, fmt.Errorf("build: list functions: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(moduleDir, "functions", e.Name(), "main.go")); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	return out, nil
}
