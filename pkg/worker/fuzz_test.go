package worker

import (
	"strings"
	"testing"

	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/process"
)

// FuzzConfigFromEnv: a configuration ConfigFromEnv reads from the environment is one New
// accepts (the two checks agree: a cold start never fails on what the reader let
// through); every line of a refusal names the variable to fix.
func FuzzConfigFromEnv(f *testing.F) {
	f.Add("8", "8", "5s", "always", "4294967296", "200", "2s", "15m", `[{"suffix":".gz","processors":["gunzip","checksum"]},{"processors":["copy"]}]`)
	f.Add("0", "4", "-1s", "sometimes", "0", "0.5", "0s", "1s", `[{"processors":["nope"]},{"prefix":"x"}]`)
	f.Add("257", "513", "16m", "", "1125899906842625", "1048577", "2h", "13h", `[]`)
	f.Add("", "", "", "redelivery", "", "", "1m", "30s", `null`)
	f.Fuzz(func(t *testing.T, conc, part, minItem, dup, maxMember, maxRatio, base, backoffCap, rules string) {
		env := map[string]string{fnenv.Table: "ledger", fnenv.OutputBucket: "out", fnenv.Concurrency: conc, fnenv.PartSizeMB: part,
			fnenv.MinItemTime: minItem, fnenv.DuplicateCheck: dup, fnenv.ArchiveMaxMemberBytes: maxMember, fnenv.ArchiveMaxRatio: maxRatio,
			fnenv.BackoffBase: base, fnenv.BackoffCap: backoffCap, fnenv.Rules: rules}
		reg := process.Builtins()
		cfg, err := ConfigFromEnv(func(k string) string { return env[k] }, reg)
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "worker: invalid configuration: ")
			for _, line := range strings.Split(msg, "\n") {
				if !strings.Contains(line, "FILEFLOW_") {
					t.Fatalf("a line of the error names no variable: %q\n(all: %v)", line, err)
				}
			}
			return
		}
		if err := cfg.withDefaults().validate(reg); err != nil {
			t.Fatalf("the environment is read, but New refuses it: %v", err)
		}
	})
}
