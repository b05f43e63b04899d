package fnenv

import (
	"strings"
	"testing"
	"time"
)

// FuzzParse: the common settings Parse accepts are within their ranges (required names
// present and trimmed, counts and days in range); every line of a refusal names the
// variable to fix.
func FuzzParse(f *testing.F) {
	f.Add("fileflow-dev-ledger", "fileflow-dev-output", "out/", "5", "7", "true", " http://q ")
	f.Add("", " ", "", "x", "-1", "yes", "")
	f.Add("t", "o", "\x00", "1001", "3651", "TRUE", "\n")
	f.Fuzz(func(t *testing.T, table, output, prefix, receive, ttl, forward, queue string) {
		env := map[string]string{Table: table, OutputBucket: output, OutputPrefix: prefix, MaxReceiveCount: receive,
			LedgerTTLDays: ttl, ForwardJobSpecs: forward, JobsQueueURL: queue}
		c, err := Parse(func(k string) string { return env[k] })
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.Contains(line, "FILEFLOW_") {
					t.Fatalf("a line of the error names no variable: %q", line)
				}
			}
			return
		}
		switch {
		case c.Table == "" || c.Table != strings.TrimSpace(c.Table), c.OutputBucket == "" || c.OutputBucket != strings.TrimSpace(c.OutputBucket):
			t.Fatalf("table %q, output bucket %q", c.Table, c.OutputBucket)
		case c.MaxReceiveCount < 0 || c.MaxReceiveCount > 1000:
			t.Fatalf("max receive count %d", c.MaxReceiveCount)
		case c.LedgerTTL < 0 || c.LedgerTTL > 3650*24*time.Hour:
			t.Fatalf("ledger TTL %s", c.LedgerTTL)
		case c.OutputPrefix != prefix:
			t.Fatalf("output prefix %q, not %q", c.OutputPrefix, prefix)
		}
	})
}
