// Command policy is fileflow's Pulumi policy pack (`pulumi preview --policy-pack
// infra/policy`). Each rule is a stack validation policy that runs the rule function
// from pkg/policy, the same one the tests run over the component's mocked graph.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/policyx"

	"github.com/fileflow/fileflow/pkg/policy"
)

func main() {
	if err := policyx.Main(pack); err != nil {
		fmt.Fprintln(os.Stderr, "fileflow policy pack:", err)
		os.Exit(1)
	}
}

func pack(*pulumi.Context) (policyx.PolicyPack, error) {
	var policies []policyx.Policy
	for _, rule := range policy.Rules {
		policies = append(policies, policyx.NewStackValidationPolicy(rule.Name, policyx.StackValidationPolicyArgs{
			Description:      rule.Description,
			EnforcementLevel: policyx.EnforcementLevelMandatory,
			ValidateStack: func(_ context.Context, args policyx.StackValidationArgs) error {
				for _, v := range policy.Mandatory(rule.Check(resources(args.Resources))) {
					args.Manager.ReportViolation(v.Message, v.URN)
				}
				return nil
			},
		}))
	}
	// What a first preview cannot judge yet (policy documents computed from ARNs) is
	// listed, never passed silently; `pulumi up` runs the pack again with the values.
	policies = append(policies, policyx.NewStackValidationPolicy("checked-at-apply", policyx.StackValidationPolicyArgs{
		Description:      "Checks that need values a preview does not know yet; they run again at apply.",
		EnforcementLevel: policyx.EnforcementLevelAdvisory,
		ValidateStack: func(_ context.Context, args policyx.StackValidationArgs) error {
			for _, v := range policy.Check(resources(args.Resources)) {
				if v.Severity == policy.SeverityAdvisory {
					args.Manager.ReportViolation("["+v.Rule+"] "+v.Message, v.URN)
				}
			}
			return nil
		},
	}))
	return policyx.NewPolicyPack("fileflow", semver.MustParse("0.1.0"), policyx.EnforcementLevelMandatory, policies)
}

func resources(in []policyx.AnalyzerResource) []policy.Resource {
	out := make([]policy.Resource, 0, len(in))
	for _, r := range in {
		out = append(out, policy.Resource{Type: r.Type, Name: r.Name, URN: r.URN, Props: policy.FromProperties(r.Properties),
			Deps: r.PropertyDependencies})
	}
	return out
}
