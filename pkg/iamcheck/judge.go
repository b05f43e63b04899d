package iamcheck

import (
	"context"
	"fmt"
	"strings"

	"github.com/fileflow/fileflow/pkg/plan"
)

// Role is one function's execution role, as the graph declares it.
type Role struct {
	Function string   // the function's name ("fileflow-worker")
	ARN      string   // the role's ARN
	Policies []string // its role policies (JSON)
}

// Roles returns each declared function's role and policies, keyed by function name.
func Roles(g *plan.Graph) map[string]Role {
	out := map[string]Role{}
	for _, fn := range g.OfType("aws:lambda/function:Function") {
		name, _ := fn.State["name"].(string)
		roleARN, _ := fn.Inputs["role"].(string)
		role, ok := g.ByState("arn", roleARN)
		if !ok {
			continue
		}
		r := Role{Function: name, ARN: roleARN}
		for _, rp := range g.OfType("aws:iam/rolePolicy:RolePolicy") {
			if rp.Inputs["role"] == role.State["name"] {
				doc, _ := rp.Inputs["policy"].(string)
				r.Policies = append(r.Policies, doc)
			}
		}
		out[name] = r
	}
	return out
}

// ResourcePolicies returns the resource policies the graph declares, keyed by the ARN
// of the bucket, queue or topic they belong to.
func ResourcePolicies(g *plan.Graph) map[string]string {
	out := map[string]string{}
	for _, p := range g.OfType("aws:s3/bucketPolicy:BucketPolicy") {
		out["arn:aws:s3:::"+fmt.Sprint(p.Inputs["bucket"])], _ = p.Inputs["policy"].(string)
	}
	for _, p := range g.OfType("aws:sqs/queuePolicy:QueuePolicy") {
		if q, ok := g.ByState("url", p.Inputs["queueUrl"]); ok {
			out[fmt.Sprint(q.State["arn"])], _ = p.Inputs["policy"].(string)
		}
	}
	for _, p := range g.OfType("aws:sns/topicPolicy:TopicPolicy") {
		out[fmt.Sprint(p.Inputs["arn"])], _ = p.Inputs["policy"].(string)
	}
	return out
}

// resourcePolicyOf finds the policy of the resource an ARN names (an object's bucket).
func resourcePolicyOf(policies map[string]string, arn string) string {
	if strings.HasPrefix(arn, "arn:aws:s3:::") {
		bucket, _, _ := strings.Cut(strings.TrimPrefix(arn, "arn:aws:s3:::"), "/")
		return policies["arn:aws:s3:::"+bucket]
	}
	return policies[arn]
}

// Judged is a call and the simulator's decision on it.
type Judged struct {
	Call
	Decision Decision
}

// Judge simulates each call as made by role against the role's policies and the
// touched resource's policy in the graph, over TLS (aws:SecureTransport true, so the
// TLS-only denies apply as they would to the SDK's HTTPS requests).
func (c *Checker) Judge(ctx context.Context, g *plan.Graph, roleOf func(Call) (Role, error), calls []Call) ([]Judged, error) {
	policies := ResourcePolicies(g)
	reqs := make([]Request, 0, len(calls))
	for i, call := range calls {
		role, err := roleOf(call)
		if err != nil {
			return nil, err
		}
		context := map[string]string{"aws:SecureTransport": "true"}
		for k, v := range call.Context {
			context[k] = v
		}
		reqs = append(reqs, Request{ID: fmt.Sprint(i), Principal: role.ARN, Action: call.Action, Resource: call.Resource,
			Account: plan.Account, Identity: role.Policies, ResourcePolicy: resourcePolicyOf(policies, call.Resource), Context: context})
	}
	decisions, err := c.Simulate(ctx, reqs)
	if err != nil {
		return nil, err
	}
	out := make([]Judged, len(calls))
	for i := range calls {
		out[i] = Judged{Call: calls[i], Decision: decisions[i]}
	}
	return out, nil
}
