package process

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseRules: rules ParseRules accepts are the whole input (nothing after the list
// is silently dropped), each rule rejects or names known processors (never both), no
// size is negative, they read back the same from their JSON (the component passes them to
// the worker as FILEFLOW_RULES), and matching a key gives the first rule that matches.
// A refused input's error says it is about the rules.
func FuzzParseRules(f *testing.F) {
	for _, s := range []string{
		`[{"suffix":".exe","reject":"executables are not accepted"},{"prefix":"logs/","content_type":"text/","processors":["checksum","gzip"]},{"suffix":".gz","processors":["gunzip","checksum"],"max_size":1048576},{"processors":["checksum","detect","copy"]}]`,
		`[{"processors":["sha1"]}]`, `[{"reject":"x","processors":["copy"]}]`, `[{"prefix":"a/"}]`, `[{"processors":["copy"],"max_size":-1}]`,
		`[]`, `null`, `{"processors":["copy"]}`, `[{"processors":["copy"],"prefx":"typo/"}]`,
		`[{"processors":["copy"]}] [{"reject":"x"}]`, `[{"processors":["copy"]}]]`, ``,
	} {
		f.Add([]byte(s), "logs/2026/a.log", "text/plain")
	}
	f.Fuzz(func(t *testing.T, b []byte, key, contentType string) {
		reg := Builtins()
		rs, err := ParseRules(b, reg)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "process: ") {
				t.Fatalf("the error does not say it is about the rules: %v", err)
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted %q, which is not one JSON value: what follows the rules is dropped", b)
		}
		for i, r := range rs {
			if (r.Reject != "") == (len(r.Processors) > 0) || r.MaxSize < 0 {
				t.Fatalf("rule %d: %+v", i, r)
			}
			if _, err := reg.Lookup(r.Processors); err != nil {
				t.Fatalf("rule %d: %v", i, err)
			}
		}
		again, err := json.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ParseRules(again, reg); err != nil || !reflect.DeepEqual(back, rs) {
			t.Fatalf("%s reads back as %+v, %v", again, back, err)
		}
		r, ok := rs.Match(key, contentType)
		for _, first := range rs {
			if first.Matches(key, contentType) {
				if !ok || !reflect.DeepEqual(r, first) {
					t.Fatalf("Match(%q, %q) = %+v, %v; the first matching rule is %+v", key, contentType, r, ok, first)
				}
				return
			}
		}
		if ok {
			t.Fatalf("Match(%q, %q) = %+v, but no rule matches", key, contentType, r)
		}
	})
}
