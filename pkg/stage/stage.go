// Package stage turns a stack's `fileflow:*` configuration into [pipeline.Args]. The
// stack program (infra/main.go, from Pulumi's config) and `fileflow plan` (from
// Pulumi.<stack>.yaml, offline) use the same parser, so both see the same stage.
//
// Every error names the key and the stage file it belongs in.
package stage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/process"
)

// Namespace is the config namespace of fileflow's keys.
const Namespace = "fileflow"

// key describes one config key: where its value goes in the Args, and how to parse it.
type key struct {
	name  string // without namespace
	field string // the Args field it sets (as pipeline's validation errors name it)
	doc   string
	set   func(a *pipeline.Args, v string) error
}

func intKey(name, field, doc string, set func(a *pipeline.Args, n int)) key {
	return key{name, field, doc, func(a *pipeline.Args, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want a whole number, got %q", v)
		}
		set(a, n)
		return nil
	}}
}

func boolKey(name, field, doc string, set func(a *pipeline.Args, b bool)) key {
	return key{name, field, doc, func(a *pipeline.Args, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		set(a, b)
		return nil
	}}
}

func strKey(name, field, doc string, set func(a *pipeline.Args, s string)) key {
	return key{name, field, doc, func(a *pipeline.Args, v string) error { set(a, v); return nil }}
}

// fn returns the function's args, creating the entry.
func fn(a *pipeline.Args, name string) *pipeline.FunctionArgs {
	if a.Functions == nil {
		a.Functions = map[string]pipeline.FunctionArgs{}
	}
	f := a.Functions[name]
	return &f
}

func setFn(a *pipeline.Args, name string, f *pipeline.FunctionArgs) { a.Functions[name] = *f }

func functionKeys(name string) []key {
	p := "Functions[" + name + "]."
	k := func(suffix, field, doc string, set func(f *pipeline.FunctionArgs, n int)) key {
		return intKey(name+suffix, p+field, doc, func(a *pipeline.Args, n int) {
			f := fn(a, name)
			set(f, n)
			setFn(a, name, f)
		})
	}
	return []key{
		k("MemoryMb", "MemoryMB", "memory in MB (128..10240)", func(f *pipeline.FunctionArgs, n int) { f.MemoryMB = n }),
		k("TimeoutSeconds", "TimeoutSeconds", "function timeout (1..900); the queue's visibility timeout is derived from it", func(f *pipeline.FunctionArgs, n int) { f.TimeoutSeconds = n }),
		k("ReservedConcurrency", "ReservedConcurrency", "reserved concurrency (0: none, the default; else >= maxConcurrency and the account needs it + 100)", func(f *pipeline.FunctionArgs, n int) { f.ReservedConcurrency = n }),
		k("BatchSize", "BatchSize", "SQS batch size (1..10000; > 10 needs a batching window)", func(f *pipeline.FunctionArgs, n int) { f.BatchSize = n }),
		k("BatchingWindowSeconds", "BatchingWindowSec", "batching window (0..300)", func(f *pipeline.FunctionArgs, n int) { f.BatchingWindowSec = n }),
		k("MaxConcurrency", "MaxConcurrency", "the mapping's maximum concurrency (2..1000)", func(f *pipeline.FunctionArgs, n int) { f.MaxConcurrency = n }),
		k("ProvisionedConcurrency", "ProvisionedConcurrency", "warm environments (0: none; > 0 is billed while idle)", func(f *pipeline.FunctionArgs, n int) { f.ProvisionedConcurrency = n }),
		k("ProvisionedMax", "ProvisionedMax", "autoscaling ceiling of provisioned concurrency", func(f *pipeline.FunctionArgs, n int) { f.ProvisionedMax = n }),
	}
}

// Keys are every `fileflow:*` key, documented.
var Keys = append(append([]key{
	strKey("ingestPrefix", "IngestPrefix", "only uploads under this prefix are processed", func(a *pipeline.Args, s string) { a.IngestPrefix = s }),
	strKey("ingestSuffix", "IngestSuffix", "only uploads with this suffix are processed", func(a *pipeline.Args, s string) { a.IngestSuffix = s }),
	strKey("ingestVia", "Ingest", `how uploads reach the queues: "notification" (S3 event notifications) or "eventbridge" (EventBridge rules)`, func(a *pipeline.Args, s string) { a.Ingest = s }),
	intKey("reconcileMinutes", "ReconcileMinutes", "with the dispatcher: how often a schedule asks it to re-check running jobs (1..1440, default 5)", func(a *pipeline.Args, n int) { a.ReconcileMinutes = n }),
	strKey("outputPrefix", "OutputPrefix", "prefix of every output key", func(a *pipeline.Args, s string) { a.OutputPrefix = s }),
	{"rules", "Rules", "the worker's processing rules, as JSON", func(a *pipeline.Args, v string) error {
		var rs process.Rules
		if err := decodeJSON(v, &rs, true); err != nil {
			return fmt.Errorf("want a JSON list of rules: %w", err)
		}
		a.Rules = rs
		return nil
	}},
	strKey("duplicateCheck", "DuplicateCheck", `when the worker reads the ledger before work: "auto" (default: task messages always, S3 event messages when redelivered), "always" or "redelivery"`, func(a *pipeline.Args, s string) { a.DuplicateCheck = s }),
	intKey("maxReceiveCount", "MaxReceiveCount", "receives before a message goes to its DLQ", func(a *pipeline.Args, n int) { a.MaxReceiveCount = n }),
	intKey("retentionSeconds", "RetentionSeconds", "work queue message retention", func(a *pipeline.Args, n int) { a.RetentionSeconds = n }),
	intKey("expireOutputsDays", "ExpireOutputsDays", "expire outputs after N days (0: keep)", func(a *pipeline.Args, n int) { a.ExpireOutputsDays = n }),
	intKey("expireIngestDays", "ExpireIngestDays", "expire ingested objects after N days (0: keep)", func(a *pipeline.Args, n int) { a.ExpireIngestDays = n }),
	boolKey("forceDestroy", "ForceDestroy", "let destroy delete non-empty buckets", func(a *pipeline.Args, b bool) { a.ForceDestroy = b }),
	boolKey("protect", "Protect", "protect and retain the buckets, the ledger and the key (destroy refuses; removal leaves them)", func(a *pipeline.Args, b bool) { a.Protect = b }),
	boolKey("customerManagedKey", "CustomerManagedKey", "encrypt buckets, queues, topics, ledger and logs with the pipeline's own KMS key", func(a *pipeline.Args, b bool) { a.CustomerManagedKey = b }),
	{"tags", "Tags", `tags for every taggable resource, as a JSON object ({"team":"data"}); fileflow:stage and fileflow:pipeline are added`, func(a *pipeline.Args, v string) error {
		var tags map[string]string
		if err := decodeJSON(v, &tags, false); err != nil {
			return fmt.Errorf("want a JSON object of strings: %w", err)
		}
		a.Tags = tags
		return nil
	}},
	intKey("logRetentionDays", "LogRetentionDays", "log retention (a CloudWatch Logs value)", func(a *pipeline.Args, n int) { a.LogRetentionDays = n }),
	boolKey("tracing", "Tracing", "X-Ray active tracing", func(a *pipeline.Args, b bool) { a.Tracing = b }),
	strKey("alarmEmail", "AlarmEmail", "e-mail subscribed to the alarm topic (set it as a secret: `pulumi config set --secret`; it stays secret in state)", func(a *pipeline.Args, s string) { a.AlarmEmail = s }),
	intKey("dlqAgeAlarmSeconds", "DLQAgeAlarmSeconds", "alarm when a DLQ's oldest message is older (DLQs keep 14 days; default 7 days)", func(a *pipeline.Args, n int) { a.DLQAgeAlarmSeconds = n }),
	intKey("oldestMessageAlarmSeconds", "OldestMessageAlarmSeconds", "alarm on older messages", func(a *pipeline.Args, n int) { a.OldestMessageAlarmSeconds = n }),
	intKey("queueDepthAlarm", "QueueDepthAlarm", "alarm on deeper queues", func(a *pipeline.Args, n int) { a.QueueDepthAlarm = n }),
	boolKey("tableProvisioned", "Table.Provisioned", "provisioned capacity with autoscaling instead of on-demand", func(a *pipeline.Args, b bool) { a.Table.Provisioned = b }),
	intKey("tableMinRead", "Table.MinRead", "provisioned: minimum read units", func(a *pipeline.Args, n int) { a.Table.MinRead = n }),
	intKey("tableMaxRead", "Table.MaxRead", "provisioned: maximum read units", func(a *pipeline.Args, n int) { a.Table.MaxRead = n }),
	intKey("tableMinWrite", "Table.MinWrite", "provisioned: minimum write units", func(a *pipeline.Args, n int) { a.Table.MinWrite = n }),
	intKey("tableMaxWrite", "Table.MaxWrite", "provisioned: maximum write units", func(a *pipeline.Args, n int) { a.Table.MaxWrite = n }),
	boolKey("pointInTimeRecovery", "Table.PointInTimeRecovery", "ledger point-in-time recovery", func(a *pipeline.Args, b bool) { a.Table.PointInTimeRecovery = b }),
	boolKey("deletionProtection", "Table.DeletionProtection", "ledger deletion protection", func(a *pipeline.Args, b bool) { a.Table.DeletionProtection = b }),
	intKey("ledgerTtlDays", "Table.TTLDays", "ledger records expire after N days (0: keep)", func(a *pipeline.Args, n int) { a.Table.TTLDays = n }),
}, functionKeys("worker")...), functionKeys("dispatch")...)

// decodeJSON reads v, one JSON value and nothing after it, into into; strict: unknown
// fields are errors.
func decodeJSON(v string, into any, strict bool) error {
	dec := json.NewDecoder(strings.NewReader(v))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(into); err != nil {
		return err
	}
	if end := dec.InputOffset(); strings.TrimSpace(v[end:]) != "" {
		return fmt.Errorf("more after the JSON value, which ends at byte %d", end)
	}
	return nil
}

// KeyNames lists every setting's name (without the namespace).
func KeyNames() []string {
	out := make([]string, len(Keys))
	for i, k := range Keys {
		out[i] = k.name
	}
	return out
}

// Doc is one setting's documentation.
type Doc struct{ Key, Field, Doc string }

// Docs documents every setting.
func Docs() []Doc {
	out := make([]Doc, len(Keys))
	for i, k := range Keys {
		out[i] = Doc{Namespace + ":" + k.name, k.field, k.doc}
	}
	return out
}

// Parse reads the `fileflow:*` values (keys with or without the namespace; values as
// strings) of the stage whose settings live in file (named in errors). Unknown fileflow
// keys are errors: a typo must not silently fall back to a default. The result still
// lacks Code; it is validated with [pipeline.Args.ValidateFor] for the given functions.
func Parse(values map[string]string, file string, functions []string) (pipeline.Args, error) {
	var a pipeline.Args
	var errs []error
	byName := map[string]key{}
	for _, k := range Keys {
		byName[k.name] = k
	}
	fieldKey := map[string]string{} // every Args field, to the key that sets it
	for _, k := range Keys {
		fieldKey[k.field] = Namespace + ":" + k.name
	}
	for _, full := range sortedKeys(values) {
		name, ok := strings.CutPrefix(full, Namespace+":")
		if !ok {
			if strings.Contains(full, ":") {
				continue // another namespace (aws:region, …)
			}
			name = full
		}
		k, ok := byName[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %s is not a fileflow setting (see `fileflow plan --keys`)", file, printable(Namespace+":"+name)))
			continue
		}
		if err := k.set(&a, values[full]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s:%s: %w", file, Namespace, name, err))
		}
	}
	if len(errs) > 0 {
		return pipeline.Args{}, errors.Join(errs...)
	}
	for name := range a.Functions {
		if !slices.Contains(functions, name) {
			return pipeline.Args{}, fmt.Errorf("%s: %s:%s* configure the %q function, which has no code under functions/", file, Namespace, name, name)
		}
	}
	// Check the ranges with the component's own validation, naming the key for each
	// field — also a field left at its default that a value set elsewhere makes wrong.
	if err := a.ValidateFor(functions); err != nil {
		var lines []string
		for _, line := range strings.Split(err.Error(), "\n") {
			if k := keyOf(line, fieldKey); k != "" {
				line = k + " (" + line + ")"
			}
			lines = append(lines, file+": "+line)
		}
		return pipeline.Args{}, errors.New(strings.Join(lines, "\n"))
	}
	return a, nil
}

// keyOf is the key that sets the field a line of [pipeline.Args.ValidateFor]'s error
// is about ("Field = value: …", "Field: …", "Tags[k] = v: …"), or "".
func keyOf(line string, fieldKey map[string]string) string {
	field := line
	if i := strings.Index(field, " = "); i >= 0 {
		field = field[:i]
	}
	if i := strings.Index(field, ": "); i >= 0 {
		field = field[:i]
	}
	if k, ok := fieldKey[field]; ok {
		return k
	}
	if i := strings.IndexByte(field, '['); i > 0 {
		return fieldKey[field[:i]]
	}
	return ""
}

// ReadFile reads Pulumi.<stack>.yaml's `config:` map as strings.
func ReadFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	var doc struct {
		Config map[string]any `yaml:"config"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("stage: %s: %w", filepath.Base(path), err)
	}
	out := map[string]string{}
	for k, v := range doc.Config {
		switch t := v.(type) {
		case string:
			out[k] = t
		case int, bool, float64:
			out[k] = fmt.Sprint(t)
		case map[string]any:
			if _, secure := t["secure"]; secure {
				continue // secrets are not fileflow settings
			}
			return nil, fmt.Errorf("stage: %s: %s: structured values are not supported; use a string", filepath.Base(path), k)
		default:
			b, _ := json.Marshal(t)
			out[k] = string(b)
		}
	}
	return out, nil
}

// printable is s, quoted if it holds anything but printable characters (a key with a
// line break would otherwise break an error into lines that name no key).
func printable(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
