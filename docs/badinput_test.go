// Package docs holds the tests that keep this folder's hand-written pages honest.
package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// testRef is a test named on a page: `pkg/worker.TestName` or `pkg/x.TestName/Subtest`.
var testRef = regexp.MustCompile("`((?:pkg|cmd|infra|functions|docs)/[a-z0-9_/-]+|docs)\\.((?:Test|Fuzz)[A-Za-z0-9_]+)(/[^`]*)?`")

// catalogueRow is a numbered row of bad-input.md's tables.
var catalogueRow = regexp.MustCompile(`^\| (\d+) \|`)

// headline is bad-input.md's summary of its size and coverage.
var headline = regexp.MustCompile(`\*\*(\d+) kinds of bad input, (\d+) of them \((\d+)%\) proven by a test`)

// testFuncs returns the top-level Test and Fuzz functions of the package in dir, and
// the text of its test files (where subtest names are).
func testFuncs(t *testing.T, dir string) (map[string]bool, string) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil || len(names) == 0 {
		return nil, ""
	}
	funcs := map[string]bool{}
	var src strings.Builder
	fset := token.NewFileSet()
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
		f, err := parser.ParseFile(fset, name, b, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil {
				funcs[fn.Name.Name] = true
			}
		}
	}
	return funcs, src.String()
}

// TestBadInputCatalogueNamesRealTests: every test bad-input.md names exists (a renamed or
// deleted test fails here, not silently the page), subtests by their t.Run name; the
// rows are numbered 1..N; the headline's count and share of rows with a test are the
// table's; and every fuzz target in the module is in its fuzzing section.
func TestBadInputCatalogueNamesRealTests(t *testing.T) {
	page, err := os.ReadFile("bad-input.md")
	if err != nil {
		t.Fatal(err)
	}
	root := ".."
	cache := map[string]map[string]bool{}
	srcs := map[string]string{}
	lookup := func(dir string) (map[string]bool, string) {
		if _, ok := cache[dir]; !ok {
			cache[dir], srcs[dir] = testFuncs(t, filepath.Join(root, dir))
		}
		return cache[dir], srcs[dir]
	}
	named := map[string]bool{}
	for _, m := range testRef.FindAllStringSubmatch(string(page), -1) {
		dir, name, sub := m[1], m[2], strings.TrimPrefix(m[3], "/")
		named[dir+"."+name] = true
		funcs, src := lookup(dir)
		switch {
		case funcs == nil:
			t.Errorf("%s: no test files in %s", m[0], dir)
		case !funcs[name]:
			t.Errorf("%s: %s has no func %s", m[0], dir, name)
		case sub != "" && !strings.Contains(src, strconv.Quote(sub)):
			t.Errorf("%s: no subtest %q in %s", m[0], sub, dir)
		}
	}

	rows, withTest := 0, 0
	for _, line := range strings.Split(string(page), "\n") {
		m := catalogueRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rows++
		if n, _ := strconv.Atoi(m[1]); n != rows {
			t.Errorf("row %d is numbered %s", rows, m[1])
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimSpace(line), "|"), "|")
		if testRef.MatchString(cells[len(cells)-1]) {
			withTest++
		}
	}
	h := headline.FindStringSubmatch(string(page))
	if h == nil {
		t.Fatal(`no headline "**N kinds of bad input, M of them (P%) proven by a test …**"`)
	}
	share := 0
	if rows > 0 {
		share = 100 * withTest / rows
	}
	if want := []string{strconv.Itoa(rows), strconv.Itoa(withTest), strconv.Itoa(share)}; h[1] != want[0] || h[2] != want[1] || h[3] != want[2] {
		t.Errorf("the headline says %s kinds, %s with a test (%s%%); the table has %s, %s (%s%%)", h[1], h[2], h[3], want[0], want[1], want[2])
	}

	var missing []string
	err = filepath.WalkDir(filepath.Join(root, "pkg"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		dir, _ := filepath.Rel(root, path)
		funcs, _ := lookup(filepath.ToSlash(dir))
		for f := range funcs {
			if strings.HasPrefix(f, "Fuzz") && !named[filepath.ToSlash(dir)+"."+f] {
				missing = append(missing, filepath.ToSlash(dir)+"."+f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("fuzz target %s is not in bad-input.md's fuzzing section", m)
	}
	t.Logf("%d rows, %d with a test; %d tests named", rows, withTest, len(named))
}
