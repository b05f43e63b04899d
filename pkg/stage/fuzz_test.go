package stage

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fileflow/fileflow/pkg/process"
)

// FuzzParse: stage settings Parse accepts are ones the component and the worker accept
// too — the args validate for the stage's functions, and the rules, passed to the worker
// as JSON, parse there — and every value was read whole (nothing after a JSON value is
// dropped). Every line of a refusal starts with the stage file and names the
// fileflow:* key to fix. Keys are drawn from the real ones, so values meet their parsers.
func FuzzParse(f *testing.F) {
	index := map[string]uint8{}
	for i, k := range KeyNames() {
		index[k] = uint8(i)
	}
	for _, c := range []struct{ k1, v1, k2, v2 string }{
		{"workerMemoryMb", "1024", "workerBatchSize", "100"},
		{"workerBatchSize", "20000", "workerBatchingWindowSeconds", "1"},
		{"rules", `[{"suffix":".log","processors":["checksum","gzip"]},{"processors":["copy"]}]`, "tracing", "true"},
		{"rules", `[{"processors":["nope"]},{"prefix":"x"}]`, "ingestVia", "eventbridge"},
		{"rules", `[{"processors":["copy"]}] trailing`, "tags", `{"team":"data"} {"x":"y"}`},
		{"tags", `{"aws:reserved":"x","":"empty"}`, "alarmEmail", "a b@c"},
		{"workerMaxConcurrency", "100", "workerReservedConcurrency", "10"},
		{"logRetentionDays", "8", "tableProvisioned", "true"},
	} {
		f.Add(index[c.k1], c.v1, index[c.k2], c.v2, "aws:region", "us-east-1")
	}
	f.Add(uint8(0), "uploads/", uint8(1), ".csv", "fileflow:workerMemroyMb", "512")
	f.Fuzz(func(t *testing.T, k1 uint8, v1 string, k2 uint8, v2 string, raw, rawValue string) {
		names := KeyNames()
		values := map[string]string{
			Namespace + ":" + names[int(k1)%len(names)]: v1,
			Namespace + ":" + names[int(k2)%len(names)]: v2,
		}
		if _, taken := values[raw]; !taken && raw != "" {
			values[raw] = rawValue
		}
		const file = "Pulumi.fuzz.yaml"
		fns := []string{"worker", "dispatch"}
		a, err := Parse(values, file, fns)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, file+": ") || !strings.Contains(line, Namespace+":") {
					t.Fatalf("a line of the error does not name the file and the key: %q\n(all: %v)", line, err)
				}
			}
			return
		}
		if err := a.ValidateFor(fns); err != nil {
			t.Fatalf("accepted args the component refuses: %v", err)
		}
		for k, v := range values {
			if name, ok := strings.CutPrefix(k, Namespace+":"); ok && (name == "rules" || name == "tags") && !json.Valid([]byte(v)) {
				t.Fatalf("%s: accepted %q, which is not one JSON value: what follows is dropped", k, v)
			}
		}
		if a.Rules != nil {
			b, err := json.Marshal(a.Rules)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := process.ParseRules(b, process.Builtins()); err != nil {
				t.Fatalf("rules the worker refuses (FILEFLOW_RULES=%s): %v", b, err)
			}
		}
	})
}
