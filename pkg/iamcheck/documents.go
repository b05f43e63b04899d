package iamcheck

import (
	"fmt"
	"sort"

	"github.com/fileflow/fileflow/pkg/plan"
)

// policyInputs says which input of which resource type is a policy document, and of
// which kind.
var policyInputs = []struct {
	typ, input string
	kind       Kind
}{
	{"aws:iam/role:Role", "assumeRolePolicy", Trust},
	{"aws:iam/rolePolicy:RolePolicy", "policy", Identity},
	{"aws:iam/policy:Policy", "policy", Identity},
	{"aws:s3/bucketPolicy:BucketPolicy", "policy", Resource},
	{"aws:sqs/queuePolicy:QueuePolicy", "policy", Resource},
	{"aws:sns/topicPolicy:TopicPolicy", "policy", Resource},
	{"aws:kms/key:Key", "policy", Resource},
}

// Documents returns every policy document the graph declares, sorted by id. A resource
// whose policy input is missing or not a string (unknown in a real preview) is
// returned with an empty policy, which the validator reports: under mocks every
// policy is known.
func Documents(g *plan.Graph) []Document {
	var out []Document
	for _, pi := range policyInputs {
		for _, r := range g.OfType(pi.typ) {
			doc, _ := r.Inputs[pi.input].(string)
			if _, ok := r.Inputs[pi.input]; !ok && pi.typ == "aws:kms/key:Key" {
				continue // a key without a policy gets AWS's default one
			}
			out = append(out, Document{ID: fmt.Sprintf("%s (%s)", r.Name, shortType(r.Type)), Kind: pi.kind, Policy: doc})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// shortType is "iam/role" for "aws:iam/role:Role".
func shortType(t string) string {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i] == ':' {
			t = t[:i]
			break
		}
	}
	if len(t) > 4 && t[:4] == "aws:" {
		t = t[4:]
	}
	return t
}
