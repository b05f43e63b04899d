package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
)

// placeholder is what a backticked word in a flag's usage may be: cobra shows it as the
// flag's argument (--outputs FILE), so it must read as one.
var placeholder = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// Every command's help renders, and reads right: a backticked word in a flag's usage
// becomes the flag's argument name (so "as in `fileflow dev`" showed --files fileflow
// dev), so backticks may only mark a placeholder such as FILE or NAME.
func TestEveryCommandsHelp(t *testing.T) {
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		n++
		path := c.CommandPath()
		assert.NotEmpty(t, c.Short, "%s has a short description", path)
		assert.True(t, strings.HasPrefix(c.Use, c.Name()), "%s: Use %q starts with its name", path, c.Use)
		check := func(f *pflag.Flag) {
			name, usage := pflag.UnquoteUsage(f)
			assert.NotContains(t, usage, "`", "%s --%s: usage %q", path, f.Name, f.Usage)
			if strings.Contains(f.Usage, "`") {
				assert.Regexp(t, placeholder, name, "%s --%s: its argument is shown as %q", path, f.Name, name)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)
		var out bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&out)
		assert.NoError(t, c.Help(), path)
		assert.NotContains(t, out.String(), "`", "%s --help:\n%s", path, out.String())
		for _, sub := range c.Commands() {
			if !sub.Hidden && sub.Name() != "help" && sub.Name() != "completion" {
				walk(sub)
			}
		}
	}
	walk(root())
	assert.Greater(t, n, 15, "every command visited")

	// The case the issue found.
	out, err := runCLI(t, "bench", "compare", "--help")
	assert.NoError(t, err)
	assert.Contains(t, out, "--files int ")
	assert.NotContains(t, out, "fileflow dev\n")
	out, err = runCLI(t, "watch", "--help")
	assert.NoError(t, err)
	assert.Contains(t, out, "--outputs FILE")
	assert.Contains(t, out, "--stack NAME")
}
