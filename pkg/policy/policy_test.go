package policy_test

import (
	"encoding/json"
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

// In a real preview, ARNs and generated names of new resources are unknown: rules must
// not report what they cannot prove.
func TestUnknownsAreNotViolations(t *testing.T) {
	base := graph(t)
	var rs []policy.Resource
	for _, r := range base {
		r.State = nil // a preview of a new stack: no outputs known
		for _, k := range []string{"redrivePolicy", "eventSourceArn", "functionName", "bucket", "policy", "dimensions", "role"} {
			if _, ok := r.Props[k]; ok {
				r.Props[k] = policy.Unknown{}
			}
		}
		rs = append(rs, r)
	}
	assert.Empty(t, policy.Check(rs))
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
