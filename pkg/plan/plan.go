// Package plan runs a Pulumi program under pulumi.WithMocks and returns the resource
// graph it declares: every resource's type, name, parent and inputs. No cloud account,
// CLI or provider plugin is needed.
//
// The mocks answer like AWS would for what the component reads back: ARNs, queue URLs,
// bucket and function names, a function version, the caller's account and region, so
// inputs that depend on other resources (an event source mapping's queue ARN, a role
// policy's resources) are recorded with realistic values. `fileflow plan`, the local
// stack's provisioning and the component's tests all use it.
package plan

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/fileflow/fileflow/pkg/policy"
)

// Mock account and region.
const (
	Account = "123456789012"
	Region  = "us-east-1"
)

// Resource is one declared resource.
type Resource struct {
	Type   string         `json:"type"`
	Name   string         `json:"name"`
	Parent string         `json:"parent,omitempty"`
	Inputs map[string]any `json:"inputs"`
	// State is what the mock returned as the resource's outputs (inputs plus ARNs etc.).
	State map[string]any `json:"-"`
	// URN is the resource's URN, as Pulumi makes it.
	URN string `json:"-"`
	// Deps maps each input to the URNs of the resources its value came from (what
	// Pulumi knows about an input while the value itself is still unknown in a preview).
	Deps map[string][]string `json:"-"`
	// Protected: declared with Protect and RetainOnDelete.
	Protected bool `json:"protected,omitempty"`
}

// Secret is how a secret input is recorded: its value never reaches the plan's output.
const Secret = "[secret]"

// Graph is everything a program declared, sorted by type and name.
type Graph struct {
	Resources []Resource `json:"resources"`
}

// Run runs program as project/stack under mocks and returns what it declared.
func Run(project, stack string, program pulumi.RunFunc) (*Graph, error) {
	return RunIn(project, stack, Region, program)
}

// RunIn is [Run] with the provider's region (aws:getRegion) set to region.
func RunIn(project, stack, region string, program pulumi.RunFunc) (*Graph, error) {
	m := &mocks{project: project, stack: stack, region: region}
	if err := pulumi.RunErr(program, pulumi.WithMocks(project, stack, m)); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	// Registration order depends on when outputs resolve; sort so that output is stable.
	rs := m.resources
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].Type != rs[j].Type {
			return rs[i].Type < rs[j].Type
		}
		return rs[i].Name < rs[j].Name
	})
	return &Graph{Resources: rs}, nil
}

// OfType returns the resources of one type token, in declaration order.
func (g *Graph) OfType(typ string) []Resource {
	var out []Resource
	for _, r := range g.Resources {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// Named returns the resource with the given type and name.
func (g *Graph) Named(typ, name string) (Resource, bool) {
	for _, r := range g.Resources {
		if r.Type == typ && r.Name == name {
			return r, true
		}
	}
	return Resource{}, false
}

// ByState finds the resource whose output attr equals value (e.g. a queue by its arn).
func (g *Graph) ByState(attr string, value any) (Resource, bool) {
	for _, r := range g.Resources {
		if v, ok := r.State[attr]; ok && v == value {
			return r, true
		}
	}
	return Resource{}, false
}

// Policy returns the graph's resources as the policy rules see them.
func (g *Graph) Policy() []policy.Resource {
	out := make([]policy.Resource, 0, len(g.Resources))
	for _, r := range g.Resources {
		out = append(out, policy.Resource{Type: r.Type, Name: r.Name, URN: r.URN, Props: r.Inputs, State: r.State, Deps: r.Deps})
	}
	return out
}

// FirstPreview returns the graph's resources as the policy rules see them in the first
// `pulumi preview` of a new stack: nothing exists yet, so no outputs are known, and
// every input computed from another resource (an ARN, a URL, a generated name, a policy
// document built from ARNs) is unknown. What is left to link resources by is their URNs
// and the inputs' dependencies.
func (g *Graph) FirstPreview() []policy.Resource {
	out := make([]policy.Resource, 0, len(g.Resources))
	for _, r := range g.Resources {
		props := make(map[string]any, len(r.Inputs))
		for k, v := range r.Inputs {
			if len(r.Deps[k]) > 0 {
				v = policy.Unknown{}
			}
			props[k] = v
		}
		out = append(out, policy.Resource{Type: r.Type, Name: r.Name, URN: r.URN, Props: props, Deps: r.Deps})
	}
	return out
}

// Counts is the number of resources per type.
func (g *Graph) Counts() map[string]int {
	out := map[string]int{}
	for _, r := range g.Resources {
		out[r.Type]++
	}
	return out
}

// Types lists the resource types, sorted.
func (g *Graph) Types() []string {
	var out []string
	for t := range g.Counts() {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

type mocks struct {
	project, stack, region string

	mu        sync.Mutex
	resources []Resource
}

func (m *mocks) Call(args pulumi.MockCallArgs) (resource.PropertyMap, error) {
	switch args.Token {
	case "aws:index/getCallerIdentity:getCallerIdentity":
		return resource.NewPropertyMapFromMap(map[string]any{
			"accountId": Account, "arn": "arn:aws:iam::" + Account + ":user/plan", "userId": "PLAN", "id": Account,
		}), nil
	case "aws:index/getRegion:getRegion":
		return resource.NewPropertyMapFromMap(map[string]any{"name": m.region, "id": m.region, "description": m.region}), nil
	case "aws:index/getPartition:getPartition":
		return resource.NewPropertyMapFromMap(map[string]any{"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}), nil
	}
	return nil, fmt.Errorf("plan: no mock for function %s", args.Token)
}

func (m *mocks) NewResource(args pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	inputs := clean(args.Inputs.Mappable()).(map[string]any)
	state := map[string]any{}
	for k, v := range inputs {
		state[k] = v
	}
	id := mockState(args.TypeToken, args.Name, m.region, state)
	parent := ""
	deps := map[string][]string{}
	if args.RegisterRPC != nil {
		parent = args.RegisterRPC.GetParent()
		for k, d := range args.RegisterRPC.GetPropertyDependencies() {
			if len(d.GetUrns()) > 0 {
				deps[k] = d.GetUrns()
			}
		}
	}
	parentType := tokens.Type("")
	if parent != "" {
		parentType = resource.URN(parent).QualifiedType()
	}
	urn := resource.NewURN(tokens.QName(m.stack), tokens.PackageName(m.project), parentType, tokens.Type(args.TypeToken), args.Name)
	m.mu.Lock()
	protected := args.RegisterRPC != nil && args.RegisterRPC.GetProtect() && args.RegisterRPC.GetRetainOnDelete()
	m.resources = append(m.resources, Resource{Type: args.TypeToken, Name: args.Name, Parent: parent, Inputs: inputs, State: state,
		URN: string(urn), Deps: deps, Protected: protected})
	m.mu.Unlock()
	return id, resource.NewPropertyMapFromMap(state), nil
}

// mockState fills in the outputs AWS would compute and returns the resource id.
func mockState(typ, name, region string, s map[string]any) string {
	module := strings.SplitN(strings.TrimPrefix(typ, "aws:"), "/", 2)[0]
	str := func(k string) string { v, _ := s[k].(string); return v }
	setDefault := func(k string, v any) {
		if _, ok := s[k]; !ok {
			s[k] = v
		}
	}
	arnPrefix := "arn:aws:" + module + ":" + region + ":" + Account + ":"
	switch typ {
	case "aws:kms/key:Key":
		s["keyId"] = "mock-" + name
		s["arn"] = arnPrefix + "key/mock-" + name
		return "mock-" + name
	case "aws:cloudwatch/eventRule:EventRule":
		setDefault("name", name)
		s["arn"] = "arn:aws:events:" + region + ":" + Account + ":rule/" + str("name")
		return str("name")
	case "aws:s3/bucketV2:BucketV2":
		setDefault("bucket", name)
		s["arn"] = "arn:aws:s3:::" + str("bucket")
		return str("bucket")
	case "aws:sqs/queue:Queue":
		setDefault("name", name)
		s["arn"] = arnPrefix + str("name")
		s["url"] = "https://sqs." + region + ".amazonaws.com/" + Account + "/" + str("name")
		return s["url"].(string)
	case "aws:dynamodb/table:Table":
		setDefault("name", name)
		s["arn"] = arnPrefix + "table/" + str("name")
		return str("name")
	case "aws:lambda/function:Function":
		setDefault("name", name)
		s["arn"] = arnPrefix + "function:" + str("name")
		s["version"] = "1"
		s["qualifiedArn"] = s["arn"].(string) + ":1"
		s["invokeArn"] = "arn:aws:apigateway:" + region + ":lambda:path/2015-03-31/functions/" + s["arn"].(string) + "/invocations"
		return str("name")
	case "aws:lambda/alias:Alias":
		s["arn"] = arnPrefix + "function:" + str("functionName") + ":" + str("name")
		return s["arn"].(string)
	case "aws:iam/role:Role":
		setDefault("name", name)
		s["arn"] = "arn:aws:iam::" + Account + ":role/" + str("name")
		return str("name")
	case "aws:cloudwatch/logGroup:LogGroup":
		setDefault("name", name)
		s["arn"] = "arn:aws:logs:" + region + ":" + Account + ":log-group:" + str("name")
		return str("name")
	case "aws:sns/topic:Topic":
		setDefault("name", name)
		s["arn"] = arnPrefix + str("name")
		return s["arn"].(string)
	case "aws:cloudwatch/dashboard:Dashboard":
		s["dashboardArn"] = "arn:aws:cloudwatch::" + Account + ":dashboard/" + str("dashboardName")
		return str("dashboardName")
	}
	setDefault("name", name)
	setDefault("arn", arnPrefix+name)
	return name + "-id"
}

// clean turns Pulumi's property values into plain JSON-able Go values: archives and
// assets become a short description.
func clean(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = clean(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = clean(x)
		}
		return out
	case *resource.Secret:
		return Secret
	case *resource.Archive:
		return describeArchive(t)
	case resource.Archive:
		return describeArchive(&t)
	case *resource.Asset:
		return "asset:" + t.Hash
	case resource.Asset:
		return "asset:" + t.Hash
	default:
		return v
	}
}

func describeArchive(a *resource.Archive) string {
	switch {
	case a.Path != "":
		return "archive:" + a.Path
	case len(a.Assets) > 0:
		var names []string
		for n := range a.Assets {
			names = append(names, n)
		}
		sort.Strings(names)
		return "archive:{" + strings.Join(names, ",") + "}"
	default:
		return "archive"
	}
}

// JSON renders the graph (and anything else) as indented JSON.
func JSON(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	return append(b, '\n'), nil
}
