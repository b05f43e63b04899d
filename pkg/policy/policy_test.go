package policy_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/property"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/pipeline"
	"github.com/fileflow/fileflow/pkg/plan"
	"github.com/fileflow/fileflow/pkg/policy"
)

// graph is the component's resources (with provisioned concurrency, so the alias path
// is covered too), as the rules see them.
func graph(t *testing.T) []policy.Resource {
	t.Helper()
	g, err := plan.Run("fileflow", "test", func(ctx *pulumi.Context) error {
		_, err := pipeline.New(ctx, "files", &pipeline.Args{
			Code: map[string]pipeline.Code{"worker": {Archive: pulumi.NewAssetArchive(map[string]any{"bootstrap": pulumi.NewStringAsset("x")}), Hash: "eA=="}},
		})
		return err
	})
	require.NoError(t, err)
	rs := g.Policy()
	require.Empty(t, policy.Check(rs), "the component itself passes every rule")
	return rs
}

// mutate returns a deep copy of rs with f applied to the named resource's inputs.
func mutate(t *testing.T, rs []policy.Resource, name string, f func(p map[string]any)) []policy.Resource {
	t.Helper()
	b, err := json.Marshal(rs)
	require.NoError(t, err)
	var out []policy.Resource
	require.NoError(t, json.Unmarshal(b, &out))
	found := false
	for i := range out {
		if out[i].Name == name {
			f(out[i].Props)
			found = true
		}
	}
	require.True(t, found, "resource %s", name)
	return out
}

func remove(rs []policy.Resource, name string) []policy.Resource {
	var out []policy.Resource
	for _, r := range rs {
		if r.Name != name {
			out = append(out, r)
		}
	}
	return out
}

func rulesHit(vs []policy.Violation) map[string]string {
	out := map[string]string{}
	for _, v := range vs {
		out[v.Rule] = v.Name + ": " + v.Message
	}
	return out
}

// Each rule catches a deliberately broken resource, and only that rule fires.
func TestEachRuleCatchesABrokenResource(t *testing.T) {
	base := graph(t)
	tests := []struct {
		rule   string
		broken func() []policy.Resource
		want   string
	}{
		{"queue-has-dlq", func() []policy.Resource {
			return mutate(t, base, "files-tasks", func(p map[string]any) { delete(p, "redrivePolicy") })
		}, "no redrivePolicy"},
		{"queue-has-dlq", func() []policy.Resource {
			return mutate(t, base, "files-tasks", func(p map[string]any) {
				var rp map[string]any
				require.NoError(t, json.Unmarshal([]byte(p["redrivePolicy"].(string)), &rp))
				rp["maxReceiveCount"] = 0
				b, _ := json.Marshal(rp)
				p["redrivePolicy"] = string(b)
			})
		}, "maxReceiveCount"},
		{"queue-depth-alarm", func() []policy.Resource { return remove(base, "files-tasks-dlq-depth") }, "no CloudWatch alarm"},
		{"visibility-timeout", func() []policy.Resource {
			return mutate(t, base, "files-tasks", func(p map[string]any) { p["visibilityTimeoutSeconds"] = 30.0 })
		}, "below 6 x 60s"},
		{"report-batch-item-failures", func() []policy.Resource {
			return mutate(t, base, "files-worker-trigger", func(p map[string]any) { delete(p, "functionResponseTypes") })
		}, "ReportBatchItemFailures"},
		{"reserved-concurrency", func() []policy.Resource {
			return mutate(t, base, "files-worker", func(p map[string]any) { p["reservedConcurrentExecutions"] = 5.0 })
		}, "below the mapping's maximum concurrency 50"},
		{"no-public-buckets", func() []policy.Resource {
			return mutate(t, base, "files-output-public-access", func(p map[string]any) { p["restrictPublicBuckets"] = false })
		}, "BucketPublicAccessBlock"},
		{"no-public-buckets", func() []policy.Resource {
			return mutate(t, base, "files-ingest", func(p map[string]any) { p["acl"] = "public-read" })
		}, "public-read"},
		{"encryption-at-rest", func() []policy.Resource {
			return mutate(t, base, "files-tasks-dlq", func(p map[string]any) { p["sqsManagedSseEnabled"] = false })
		}, "neither sqsManagedSseEnabled"},
		{"encryption-at-rest", func() []policy.Resource { return remove(base, "files-ingest-encryption") }, "server-side encryption"},
		{"encryption-at-rest", func() []policy.Resource {
			return mutate(t, base, "files-ledger", func(p map[string]any) { delete(p, "serverSideEncryption") })
		}, "serverSideEncryption"},
		{"tls-only", func() []policy.Resource {
			return mutate(t, base, "files-output-tls-only", func(p map[string]any) { p["policy"] = `{"Statement":[]}` })
		}, "SecureTransport"},
		{"iam-no-wildcards", func() []policy.Resource {
			return mutate(t, base, "files-worker-policy", func(p map[string]any) {
				p["policy"] = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::b/*"]}]}`
			})
		}, `action "s3:*"`},
		{"iam-no-wildcards", func() []policy.Resource {
			return mutate(t, base, "files-worker-policy", func(p map[string]any) {
				p["policy"] = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:GetItem","Resource":"*"}]}`
			})
		}, `resource "*"`},
		{"log-retention", func() []policy.Resource {
			return mutate(t, base, "files-worker-logs", func(p map[string]any) { delete(p, "retentionInDays") })
		}, "keeps logs forever"},
		{"recursion-config", func() []policy.Resource { return remove(base, "files-worker-recursion") }, "no recursion config of Allow"},
		{"recursion-config", func() []policy.Resource {
			return mutate(t, base, "files-worker-recursion", func(p map[string]any) { p["recursiveLoop"] = "Terminate" })
		}, "no recursion config of Allow"},
		{"one-queue-policy", func() []policy.Resource {
			for _, r := range base {
				if r.Name == "files-tasks-policy" {
					r.Name = "files-tasks-policy-2"
					return append(append([]policy.Resource{}, base...), r)
				}
			}
			return nil
		}, "2 queue policies"},
		{"tls-only", func() []policy.Resource {
			return mutate(t, base, "files-tasks-dlq-policy", func(p map[string]any) { p["policy"] = `{"Statement":[]}` })
		}, "the queue's policy does not deny"},
		{"tls-only", func() []policy.Resource { return remove(base, "files-completions-policy") }, "no topic policy"},
		{"log-retention", func() []policy.Resource {
			return mutate(t, base, "files-worker", func(p map[string]any) { delete(p, "loggingConfig") })
		}, "/aws/lambda/files-worker"},
	}
	for _, tt := range tests {
		t.Run(tt.rule+"/"+tt.want, func(t *testing.T) {
			hits := rulesHit(policy.Check(tt.broken()))
			require.Contains(t, hits, tt.rule)
			assert.Contains(t, hits[tt.rule], tt.want)
			assert.Len(t, hits, 1, "only %s fires: %v", tt.rule, hits)
		})
	}
}

// The first preview of a new stack: no ARN, URL or generated name is known, so every
// input computed from another resource is unknown. Rules that link resources link
// them by URN instead: nothing passes silently. What can only be judged with the
// values (policy documents) is listed as "checked at apply".
func TestFirstPreviewLinksByURN(t *testing.T) {
	g, err := plan.Run("fileflow", "test", func(ctx *pulumi.Context) error {
		code := map[string]pipeline.Code{}
		for _, n := range []string{"worker", "dispatch"} {
			code[n] = pipeline.Code{Archive: pulumi.NewAssetArchive(map[string]any{"bootstrap": pulumi.NewStringAsset(n)}), Hash: "eA=="}
		}
		_, err := pipeline.New(ctx, "files", &pipeline.Args{Code: code, Ingest: pipeline.IngestEventBridge,
			Functions: map[string]pipeline.FunctionArgs{"worker": {MaxConcurrency: 20, ReservedConcurrency: 30, ProvisionedConcurrency: 2}}})
		return err
	})
	require.NoError(t, err)
	preview := g.FirstPreview()
	unknown := 0
	for _, r := range preview {
		for _, v := range r.Props {
			if _, ok := v.(policy.Unknown); ok {
				unknown++
			}
		}
	}
	require.Greater(t, unknown, 50, "a first preview knows few values")
	vs := policy.Check(preview)
	assert.Empty(t, policy.Mandatory(vs))
	notes := map[string]int{}
	for _, v := range vs {
		assert.Equal(t, policy.SeverityAdvisory, v.Severity)
		assert.Contains(t, v.Message, "checked at apply")
		notes[v.Rule]++
	}
	t.Logf("checked at apply: %v", notes)
	for _, rule := range []string{"visibility-timeout", "reserved-concurrency", "queue-has-dlq", "queue-depth-alarm", "no-public-buckets", "log-retention"} {
		assert.Zero(t, notes[rule], "%s links by URN: nothing left for apply", rule)
	}

	// Linked by URN, the rules still catch what is wrong.
	tests := []struct {
		rule, name string
		mutate     func(p map[string]any)
		want       string
	}{
		{"visibility-timeout", "files-tasks", func(p map[string]any) { p["visibilityTimeoutSeconds"] = 30.0 }, "below 6 x 60s"},
		{"reserved-concurrency", "files-worker", func(p map[string]any) { p["reservedConcurrentExecutions"] = 5.0 }, "below the mapping's maximum concurrency 20"},
		{"recursion-config", "files-dispatch-recursion", func(p map[string]any) { p["recursiveLoop"] = "Terminate" }, "checked at apply"},
		{"log-retention", "files-worker-logs", func(p map[string]any) { delete(p, "retentionInDays") }, "keeps logs forever"},
		{"queue-depth-alarm", "files-jobs-dlq-depth", func(p map[string]any) { p["metricName"] = "NumberOfMessagesSent" }, "no CloudWatch alarm"},
		{"no-public-buckets", "files-ingest-public-access", func(p map[string]any) { p["blockPublicPolicy"] = false }, "BucketPublicAccessBlock"},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			broken := mutate(t, preview, tt.name, tt.mutate)
			var hit []string
			for _, v := range policy.Check(broken) {
				if v.Rule == tt.rule && strings.Contains(v.Message, tt.want) {
					hit = append(hit, v.Message)
				}
			}
			assert.NotEmpty(t, hit, "%s not caught in a first preview", tt.rule)
		})
	}
}

// The EventBridge wiring: a rule's SQS target needs a queue policy statement for
// events.amazonaws.com scoped to that rule; a bucket sending to EventBridge needs a rule.
func TestEventBridgeWiringRule(t *testing.T) {
	g, err := plan.Run("fileflow", "test", func(ctx *pulumi.Context) error {
		code := map[string]pipeline.Code{}
		for _, n := range []string{"worker", "dispatch"} {
			code[n] = pipeline.Code{Archive: pulumi.NewAssetArchive(map[string]any{"bootstrap": pulumi.NewStringAsset(n)}), Hash: "eA=="}
		}
		_, err := pipeline.New(ctx, "files", &pipeline.Args{Code: code, Ingest: pipeline.IngestEventBridge, IngestPrefix: "in/"})
		return err
	})
	require.NoError(t, err)
	base := g.Policy()
	require.Empty(t, policy.Check(base))
	for name, broken := range map[string][]policy.Resource{
		"statement for another rule": mutate(t, base, "files-tasks-policy", func(p map[string]any) {
			p["policy"] = strings.ReplaceAll(p["policy"].(string), "rule/files-ingest-rule", "rule/elsewhere")
		}),
		"no queue policy":           remove(base, "files-jobs-policy"),
		"no rule for bucket events": remove(remove(remove(base, "files-ingest-rule"), "files-ingest-rule-target"), "files-job-specs-rule"),
	} {
		t.Run(name, func(t *testing.T) {
			hits := rulesHit(policy.Check(broken))
			assert.Contains(t, hits, "eventbridge-wiring")
		})
	}
}

func TestFromProperties(t *testing.T) {
	m := property.NewMap(map[string]property.Value{
		"name":    property.New("q"),
		"n":       property.New(3.0),
		"on":      property.New(true),
		"list":    property.New(property.NewArray([]property.Value{property.New("a")})),
		"nested":  property.New(property.NewMap(map[string]property.Value{"x": property.New("y")})),
		"pending": property.New(property.Computed),
		"none":    property.Value{},
	})
	got := policy.FromProperties(m)
	assert.Equal(t, map[string]any{
		"name": "q", "n": 3.0, "on": true, "list": []any{"a"}, "nested": map[string]any{"x": "y"},
		"pending": policy.Unknown{}, "none": nil,
	}, got)
}
