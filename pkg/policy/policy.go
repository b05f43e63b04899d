// Package policy holds fileflow's policy rules as plain functions over a stack's
// resources. The Pulumi policy pack in infra/policy (run by `pulumi preview --policy-pack
// infra/policy`) and the tests over the component's mocked resource graph run the very
// same functions.
//
// In a real preview, properties of resources not created yet are unknown (an ARN, a
// generated name, a policy document built from ARNs). Rules that link resources
// (mapping ↔ queue ↔ function, bucket ↔ its policy, alarm ↔ queue, function ↔ role
// policy ↔ recursion config) then link them by URN, through the inputs' dependencies,
// and check what is known. What can only be judged once values exist (a policy
// document's content) is reported as an advisory "checked at apply" note, never passed
// silently: [Mandatory] filters the violations that must fail a preview.
package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Unknown stands for a property whose value is not known yet (computed during preview).
type Unknown struct{}

// Resource is one resource as a rule sees it.
type Resource struct {
	Type  string
	Name  string         // the logical name
	URN   string         // empty outside a real preview
	Props map[string]any // inputs; plain JSON-like values, or Unknown
	// State holds outputs where known (mocks; existing resources). May be nil.
	State map[string]any
	// Deps maps an input to the URNs of the resources its value comes from: what links
	// resources in a first preview, while their ARNs and names are still unknown.
	Deps map[string][]string
}

// Severities.
const (
	SeverityMandatory = "mandatory"
	SeverityAdvisory  = "advisory" // "checked at apply": the values are not known yet
)

// Violation is one broken rule.
type Violation struct {
	Rule     string `json:"rule"`
	Type     string `json:"type"`
	Name     string `json:"name"`
	URN      string `json:"urn,omitempty"`
	Message  string `json:"message"`
	Severity string `json:"severity"`
}

// Rule is one policy.
type Rule struct {
	Name        string
	Description string
	Check       func(rs []Resource) []Violation
}

// Resource types the rules know.
const (
	TypeQueue        = "aws:sqs/queue:Queue"
	TypeESM          = "aws:lambda/eventSourceMapping:EventSourceMapping"
	TypeFunction     = "aws:lambda/function:Function"
	TypeAlias        = "aws:lambda/alias:Alias"
	TypeBucket       = "aws:s3/bucketV2:BucketV2"
	TypeLegacyBucket = "aws:s3/bucket:Bucket"
	TypePublicBlock  = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
	TypeBucketSSE    = "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"
	TypeBucketPolicy = "aws:s3/bucketPolicy:BucketPolicy"
	TypeTable        = "aws:dynamodb/table:Table"
	TypeRolePolicy   = "aws:iam/rolePolicy:RolePolicy"
	TypePolicy       = "aws:iam/policy:Policy"
	TypeLogGroup     = "aws:cloudwatch/logGroup:LogGroup"
	TypeAlarm        = "aws:cloudwatch/metricAlarm:MetricAlarm"
	TypeQueuePolicy  = "aws:sqs/queuePolicy:QueuePolicy"
	TypeTopic        = "aws:sns/topic:Topic"
	TypeTopicPolicy  = "aws:sns/topicPolicy:TopicPolicy"
	TypeRole         = "aws:iam/role:Role"
	TypeRecursion    = "aws:lambda/functionRecursionConfig:FunctionRecursionConfig"
	TypeEventRule    = "aws:cloudwatch/eventRule:EventRule"
	TypeEventTarget  = "aws:cloudwatch/eventTarget:EventTarget"
	TypeNotification = "aws:s3/bucketNotification:BucketNotification"
)

// Rules are all of fileflow's policies.
var Rules = []Rule{
	{"queue-has-dlq", "Every SQS queue has a dead-letter queue with a maxReceiveCount (or is one).", queueHasDLQ},
	{"queue-depth-alarm", "Every SQS queue has a CloudWatch alarm on its depth.", queueDepthAlarm},
	{"visibility-timeout", "A Lambda-triggering queue's visibility timeout is >= 6 x the function timeout + the batching window.", visibilityTimeout},
	{"report-batch-item-failures", "Every SQS event source mapping reports batch item failures, so one bad message does not fail its batch.", reportBatchItemFailures},
	{"reserved-concurrency", "A function's reserved concurrency is >= its SQS mapping's maximum concurrency.", reservedConcurrency},
	{"no-public-buckets", "Every bucket blocks all public access.", noPublicBuckets},
	{"encryption-at-rest", "Every bucket, queue and table is encrypted at rest.", encryptionAtRest},
	{"tls-only", "Every bucket's, queue's and topic's policy denies requests without TLS.", tlsOnly},
	{"one-queue-policy", "A queue has at most one QueuePolicy (SQS keeps one: a second overwrites the first).", oneQueuePolicy},
	{"recursion-config", "A function that may send to the queue that triggers it declares a recursion config of Allow (else Lambda stops the chain after ~16 hops).", recursionConfig},
	{"eventbridge-wiring", "Every EventBridge rule → SQS target has a queue policy letting events.amazonaws.com send, scoped to that rule's ARN; a bucket that sends to EventBridge has a rule for its events.", eventBridgeWiring},
	{"iam-no-wildcards", "No IAM policy allows '*' actions or '*' resources (except X-Ray's two write actions, which have no resource-level permissions).", iamNoWildcards},
	{"log-retention", "Every log group has a retention, and every function logs to such a group.", logRetention},
}

// Mandatory returns the violations that must fail a preview (not the "checked at
// apply" notes).
func Mandatory(vs []Violation) []Violation {
	var out []Violation
	for _, v := range vs {
		if v.Severity != SeverityAdvisory {
			out = append(out, v)
		}
	}
	return out
}

// Check runs every rule and returns all violations, sorted.
func Check(rs []Resource) []Violation {
	var out []Violation
	for _, r := range Rules {
		out = append(out, r.Check(rs)...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func violation(rule string, r Resource, format string, args ...any) Violation {
	return Violation{Rule: rule, Type: r.Type, Name: r.Name, URN: r.URN, Message: fmt.Sprintf(format, args...), Severity: SeverityMandatory}
}

// atApply is the explicit note for what a rule cannot judge before the values exist.
func atApply(rule string, r Resource, format string, args ...any) Violation {
	v := violation(rule, r, "checked at apply: "+format, args...)
	v.Severity = SeverityAdvisory
	return v
}

// link returns the resource of one of types that r's input prop refers to: by value
// (its arn, name, url or id) when the value is known, else by URN through the input's
// dependencies. ok is false when neither links it.
func link(rs []Resource, r Resource, prop string, types ...string) (Resource, bool) {
	v := get(r.Props, prop)
	if s, ok := str(v); ok && s != "" {
		for _, key := range []string{"arn", "name", "url", "bucket", "id"} {
			if x, ok := find(rs, key, s, types...); ok {
				return x, true
			}
		}
	}
	top, _, _ := strings.Cut(prop, ".")
	for _, urn := range r.Deps[top] {
		for _, x := range ofType(rs, types...) {
			if x.URN != "" && x.URN == urn {
				return x, true
			}
		}
	}
	return Resource{}, false
}

// refersTo reports whether r's input prop refers to target (by value or by URN).
func refersTo(r Resource, prop string, target Resource, keys ...string) bool {
	if s, ok := str(get(r.Props, prop)); ok && s != "" {
		for _, k := range keys {
			if v, ok := str(attr(target, k)); ok && v == s {
				return true
			}
		}
	}
	top, _, _ := strings.Cut(prop, ".")
	return target.URN != "" && slices.Contains(r.Deps[top], target.URN)
}

func ofType(rs []Resource, types ...string) []Resource {
	var out []Resource
	for _, r := range rs {
		if slices.Contains(types, r.Type) {
			out = append(out, r)
		}
	}
	return out
}

// get walks a property path ("scalingConfig.maximumConcurrency").
func get(m map[string]any, path string) any {
	var cur any = m
	for _, part := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			if _, unknown := cur.(Unknown); unknown {
				return Unknown{}
			}
			return nil
		}
		cur = mm[part]
	}
	return cur
}

func isUnknown(v any) bool { _, ok := v.(Unknown); return ok }

func num(v any) (float64, bool) {
	switch t := v.(type) {
	case float64:
		return t, true
	case int:
		return float64(t), true
	case int64:
		return float64(t), true
	case json.Number:
		f, err := t.Float64()
		return f, err == nil
	}
	return 0, false
}

func str(v any) (string, bool) { s, ok := v.(string); return s, ok }

// attr reads an output (from State) or, failing that, an input.
func attr(r Resource, key string) any {
	if r.State != nil {
		if v, ok := r.State[key]; ok {
			return v
		}
	}
	return r.Props[key]
}

// find returns the resource of one of types whose attribute key equals value.
func find(rs []Resource, key string, value any, types ...string) (Resource, bool) {
	for _, r := range ofType(rs, types...) {
		if v := attr(r, key); v != nil && !isUnknown(v) && v == value {
			return r, true
		}
	}
	return Resource{}, false
}

func queueHasDLQ(rs []Resource) []Violation {
	queues := ofType(rs, TypeQueue)
	targets := map[string]bool{}
	anyUnknown := false
	for _, q := range queues {
		rp := q.Props["redrivePolicy"]
		if isUnknown(rp) {
			anyUnknown = true
			continue
		}
		if s, ok := str(rp); ok && s != "" {
			var p struct {
				DeadLetterTargetArn string `json:"deadLetterTargetArn"`
			}
			if json.Unmarshal([]byte(s), &p) == nil {
				targets[p.DeadLetterTargetArn] = true
			}
		}
	}
	var out []Violation
	for _, q := range queues {
		rp := q.Props["redrivePolicy"]
		if isUnknown(rp) {
			if len(q.Deps["redrivePolicy"]) == 0 {
				out = append(out, atApply("queue-has-dlq", q, "redrivePolicy is unknown and depends on no queue"))
			}
			continue // its DLQ is linked by URN; maxReceiveCount is checked when known
		}
		if s, ok := str(rp); ok && s != "" {
			var p struct {
				DeadLetterTargetArn string `json:"deadLetterTargetArn"`
				MaxReceiveCount     any    `json:"maxReceiveCount"`
			}
			if err := json.Unmarshal([]byte(s), &p); err != nil {
				out = append(out, violation("queue-has-dlq", q, "redrivePolicy is not valid JSON: %v", err))
				continue
			}
			if n, ok := num(p.MaxReceiveCount); !ok || n < 1 {
				out = append(out, violation("queue-has-dlq", q, "redrivePolicy has no maxReceiveCount >= 1"))
			}
			if p.DeadLetterTargetArn == "" {
				out = append(out, violation("queue-has-dlq", q, "redrivePolicy names no deadLetterTargetArn"))
			}
			continue
		}
		// No redrive policy: fine only for a dead-letter queue itself.
		arn, _ := str(attr(q, "arn"))
		isDLQ := arn != "" && targets[arn]
		for _, other := range queues {
			if refersTo(other, "redrivePolicy", q) && isUnknown(other.Props["redrivePolicy"]) {
				isDLQ = true // linked by URN in a first preview
			}
		}
		if !isDLQ && (anyUnknown || arn == "") {
			isDLQ = strings.HasSuffix(q.Name, "-dlq") || strings.HasSuffix(q.Name, "-deadletter")
		}
		if !isDLQ {
			out = append(out, violation("queue-has-dlq", q, "queue has no redrivePolicy (no dead-letter queue): failing messages would be retried until they expire"))
		}
	}
	return out
}

func queueDepthAlarm(rs []Resource) []Violation {
	var out []Violation
	alarmed := map[string]bool{}
	unknownAlarms := 0
	for _, a := range ofType(rs, TypeAlarm) {
		if a.Props["namespace"] != "AWS/SQS" || a.Props["metricName"] != "ApproximateNumberOfMessagesVisible" {
			continue
		}
		name := get(a.Props, "dimensions.QueueName")
		if s, ok := str(name); ok {
			alarmed[s] = true
		} else if isUnknown(name) || isUnknown(a.Props["dimensions"]) {
			if q, ok := link(rs, a, "dimensions", TypeQueue); ok {
				alarmed["urn:"+q.URN] = true
			} else {
				unknownAlarms++
			}
		}
	}
	for _, q := range ofType(rs, TypeQueue) {
		name, ok := str(attr(q, "name"))
		if (ok && alarmed[name]) || alarmed["urn:"+q.URN] {
			continue
		}
		if unknownAlarms > 0 {
			unknownAlarms--
			continue
		}
		out = append(out, violation("queue-depth-alarm", q, "no CloudWatch alarm on ApproximateNumberOfMessagesVisible for this queue"))
	}
	return out
}

// mappingParts returns an SQS mapping's queue and function, where they can be linked.
func mappingParts(rs []Resource, m Resource) (queue, fn Resource, okQ, okF bool) {
	if !isSQSMapping(rs, m) {
		return
	}
	queue, okQ = link(rs, m, "eventSourceArn", TypeQueue)
	if fn, okF = link(rs, m, "functionName", TypeFunction); okF {
		return
	}
	if alias, ok := link(rs, m, "functionName", TypeAlias); ok {
		fn, okF = link(rs, alias, "functionName", TypeFunction)
	}
	return
}

// isSQSMapping: the mapping reads an SQS queue (by its ARN, or by URN in a preview).
func isSQSMapping(rs []Resource, m Resource) bool {
	if src, ok := str(m.Props["eventSourceArn"]); ok {
		return strings.Contains(src, ":sqs:")
	}
	_, ok := link(rs, m, "eventSourceArn", TypeQueue)
	return ok
}

// unlinkedMapping notes a mapping whose queue or function cannot be linked at all.
func unlinkedMapping(rule string, m Resource, okQ, okF bool) []Violation {
	if okQ && okF {
		return nil
	}
	return []Violation{atApply(rule, m, "the mapping's queue or function cannot be linked (unknown values, no dependency)")}
}

func visibilityTimeout(rs []Resource) []Violation {
	var out []Violation
	for _, m := range ofType(rs, TypeESM) {
		q, fn, okQ, okF := mappingParts(rs, m)
		if !okQ || !okF {
			out = append(out, unlinkedMapping("visibility-timeout", m, okQ, okF)...)
			continue
		}
		vis, ok1 := num(q.Props["visibilityTimeoutSeconds"])
		if !ok1 {
			vis = 30 // SQS's default
		}
		timeout, ok2 := num(fn.Props["timeout"])
		if !ok2 {
			timeout = 3 // Lambda's default
		}
		window, _ := num(m.Props["maximumBatchingWindowInSeconds"])
		if need := 6*timeout + window; vis < need {
			out = append(out, violation("visibility-timeout", q,
				"visibility timeout %gs is below 6 x %gs (function %s timeout) + %gs batching window = %gs: messages would be delivered again while still being processed",
				vis, timeout, fn.Name, window, need))
		}
	}
	return out
}

func reportBatchItemFailures(rs []Resource) []Violation {
	var out []Violation
	for _, m := range ofType(rs, TypeESM) {
		if !isSQSMapping(rs, m) {
			continue
		}
		types, _ := m.Props["functionResponseTypes"].([]any)
		if !slices.Contains(types, any("ReportBatchItemFailures")) {
			out = append(out, violation("report-batch-item-failures", m, "functionResponseTypes does not include ReportBatchItemFailures: one failing file would redeliver its whole batch"))
		}
	}
	return out
}

func reservedConcurrency(rs []Resource) []Violation {
	var out []Violation
	for _, m := range ofType(rs, TypeESM) {
		maxc, ok := num(get(m.Props, "scalingConfig.maximumConcurrency"))
		if !ok {
			continue
		}
		_, fn, okQ, okF := mappingParts(rs, m)
		if !okF {
			out = append(out, unlinkedMapping("reserved-concurrency", m, okQ, okF)...)
			continue
		}
		reserved, ok := num(fn.Props["reservedConcurrentExecutions"])
		if !ok || reserved < 0 {
			continue // unreserved (optional): the mapping's maximum concurrency caps it
		}
		if reserved < maxc {
			out = append(out, violation("reserved-concurrency", fn, "reserved concurrency %g is below the mapping's maximum concurrency %g: the mapping would be throttled", reserved, maxc))
		}
	}
	return out
}

// bucketLinked reports whether a resource of typ that passes ok names bucket b (by the
// bucket's id, its name), and whether some link could not be known.
func bucketLinked(rs []Resource, typ string, b Resource, ok func(Resource) bool) (linked, unknown bool) {
	id := attr(b, "bucket")
	for _, r := range ofType(rs, typ) {
		if len(r.Deps["bucket"]) > 0 && b.URN != "" {
			if slices.Contains(r.Deps["bucket"], b.URN) && ok(r) {
				return true, false // linked by URN
			}
			continue // linked by URN, to this bucket (failing) or another one
		}
		ref := r.Props["bucket"]
		if isUnknown(ref) || id == nil || isUnknown(id) {
			unknown = true
			continue
		}
		if ref == id && ok(r) {
			return true, false
		}
	}
	return false, unknown
}

func countPassing(rs []Resource, typ string, ok func(Resource) bool) int {
	n := 0
	for _, r := range ofType(rs, typ) {
		if ok(r) {
			n++
		}
	}
	return n
}

// perBucket checks that each bucket has a companion resource that passes ok. Where
// bucket names are unknown, it checks that there are at least as many passing
// companions as buckets.
func perBucket(rs []Resource, rule, typ, msg string, ok func(Resource) bool) []Violation {
	var out []Violation
	buckets := ofType(rs, TypeBucket)
	passing := countPassing(rs, typ, ok)
	unlinked := 0
	for _, b := range buckets {
		linked, unknown := bucketLinked(rs, typ, b, ok)
		if linked {
			continue
		}
		if unknown {
			unlinked++
			if unlinked <= passing {
				continue
			}
		}
		out = append(out, violation(rule, b, "%s", msg))
	}
	return out
}

func noPublicBuckets(rs []Resource) []Violation {
	out := perBucket(rs, "no-public-buckets", TypePublicBlock, "no BucketPublicAccessBlock with all four settings true", func(r Resource) bool {
		for _, k := range []string{"blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"} {
			if r.Props[k] != true {
				return false
			}
		}
		return true
	})
	for _, b := range ofType(rs, TypeBucket, TypeLegacyBucket) {
		if acl, _ := str(b.Props["acl"]); strings.HasPrefix(acl, "public") {
			out = append(out, violation("no-public-buckets", b, "bucket ACL %q makes it public", acl))
		}
	}
	return out
}

func encryptionAtRest(rs []Resource) []Violation {
	out := perBucket(rs, "encryption-at-rest", TypeBucketSSE, "no default server-side encryption configuration", func(r Resource) bool {
		rules, _ := r.Props["rules"].([]any)
		for _, x := range rules {
			m, _ := x.(map[string]any)
			if alg, _ := str(get(m, "applyServerSideEncryptionByDefault.sseAlgorithm")); alg != "" {
				return true
			}
		}
		return false
	})
	for _, q := range ofType(rs, TypeQueue) {
		kms, _ := str(q.Props["kmsMasterKeyId"])
		if q.Props["sqsManagedSseEnabled"] != true && kms == "" {
			out = append(out, violation("encryption-at-rest", q, "queue has neither sqsManagedSseEnabled nor a KMS key"))
		}
	}
	for _, t := range ofType(rs, TypeTable) {
		if get(t.Props, "serverSideEncryption.enabled") != true {
			out = append(out, violation("encryption-at-rest", t, "table does not enable serverSideEncryption explicitly"))
		}
	}
	return out
}

func tlsOnly(rs []Resource) []Violation {
	out := perBucket(rs, "tls-only", TypeBucketPolicy, "no bucket policy denying requests with aws:SecureTransport = false", func(r Resource) bool {
		if isUnknown(r.Props["policy"]) {
			return true // noted below: checked at apply
		}
		return hasTLSDeny(r.Props["policy"])
	})
	for _, p := range ofType(rs, TypeBucketPolicy, TypeQueuePolicy, TypeTopicPolicy) {
		if isUnknown(p.Props["policy"]) {
			out = append(out, atApply("tls-only", p, "the policy document is computed from ARNs; its TLS-only statement is judged when it is known"))
		}
	}
	for _, q := range ofType(rs, TypeQueue) {
		out = append(out, companionPolicy(rs, "tls-only", q, TypeQueuePolicy, "queueUrl", "url", "queue")...)
	}
	for _, t := range ofType(rs, TypeTopic) {
		out = append(out, companionPolicy(rs, "tls-only", t, TypeTopicPolicy, "arn", "arn", "topic")...)
	}
	return out
}

// companionPolicy checks that r has a policy resource of typ (linked through its input
// prop to r's key) with a TLS-only statement.
func companionPolicy(rs []Resource, rule string, r Resource, typ, prop, key, what string) []Violation {
	found := false
	for _, p := range ofType(rs, typ) {
		if !refersTo(p, prop, r, key) {
			continue
		}
		found = true
		if isUnknown(p.Props["policy"]) {
			continue // noted as checked at apply
		}
		if !hasTLSDeny(p.Props["policy"]) {
			return []Violation{violation(rule, r, "the %s's policy does not deny requests with aws:SecureTransport = false", what)}
		}
	}
	if !found {
		return []Violation{violation(rule, r, "no %s policy: nothing denies requests without TLS", what)}
	}
	return nil
}

// statement is one statement of a policy document, as the rules read it.
type statement struct {
	Sid       string                    `json:"Sid"`
	Effect    string                    `json:"Effect"`
	Principal any                       `json:"Principal"`
	Action    any                       `json:"Action"`
	Resource  any                       `json:"Resource"`
	Condition map[string]map[string]any `json:"Condition"`
}

func parseDoc(v any) ([]statement, bool) {
	doc, ok := str(v)
	if !ok {
		return nil, false
	}
	var p struct {
		Statement []statement `json:"Statement"`
	}
	if json.Unmarshal([]byte(doc), &p) != nil {
		return nil, false
	}
	return p.Statement, true
}

func hasTLSDeny(policy any) bool {
	sts, ok := parseDoc(policy)
	if !ok {
		return false
	}
	for _, s := range sts {
		if s.Effect == "Deny" && strings.EqualFold(fmt.Sprint(s.Condition["Bool"]["aws:SecureTransport"]), "false") {
			return true
		}
	}
	return false
}

// xrayActions may use Resource "*": they support no resource-level permissions.
var xrayActions = []string{"xray:PutTraceSegments", "xray:PutTelemetryRecords"}

func iamNoWildcards(rs []Resource) []Violation {
	var out []Violation
	for _, r := range ofType(rs, TypeRolePolicy, TypePolicy) {
		doc, ok := str(r.Props["policy"])
		if !ok {
			out = append(out, atApply("iam-no-wildcards", r, "the policy document is computed from ARNs; its actions and resources are judged when it is known"))
			continue
		}
		var p struct {
			Statement []struct {
				Effect   string `json:"Effect"`
				Action   any    `json:"Action"`
				Resource any    `json:"Resource"`
			} `json:"Statement"`
		}
		if err := json.Unmarshal([]byte(doc), &p); err != nil {
			out = append(out, violation("iam-no-wildcards", r, "policy is not valid JSON: %v", err))
			continue
		}
		for i, s := range p.Statement {
			if s.Effect != "Allow" {
				continue
			}
			actions, resources := strList(s.Action), strList(s.Resource)
			for _, a := range actions {
				if a == "*" || strings.HasSuffix(a, ":*") {
					out = append(out, violation("iam-no-wildcards", r, "statement %d allows action %q", i, a))
				}
			}
			onlyXray := len(actions) > 0
			for _, a := range actions {
				if !slices.Contains(xrayActions, a) {
					onlyXray = false
				}
			}
			for _, res := range resources {
				if res == "*" && !onlyXray {
					out = append(out, violation("iam-no-wildcards", r, "statement %d allows %v on resource \"*\"", i, actions))
				}
			}
		}
	}
	return out
}

func strList(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, x := range t {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func logRetention(rs []Resource) []Violation {
	var out []Violation
	retained := map[string]bool{}
	for _, g := range ofType(rs, TypeLogGroup) {
		days, ok := num(g.Props["retentionInDays"])
		if !ok || days <= 0 {
			out = append(out, violation("log-retention", g, "log group keeps logs forever (no retentionInDays)"))
			continue
		}
		if name, ok := str(attr(g, "name")); ok {
			retained[name] = true
		}
	}
	for _, fn := range ofType(rs, TypeFunction) {
		group := get(fn.Props, "loggingConfig.logGroup")
		if isUnknown(group) || isUnknown(fn.Props["loggingConfig"]) {
			g, ok := link(rs, fn, "loggingConfig", TypeLogGroup)
			if !ok {
				out = append(out, atApply("log-retention", fn, "its log group is unknown and linked to no log group"))
				continue
			}
			if days, ok := num(g.Props["retentionInDays"]); !ok || days <= 0 {
				out = append(out, violation("log-retention", fn, "function logs to %s, which keeps logs forever", g.Name))
			}
			continue
		}
		name, ok := str(group)
		if !ok || name == "" {
			fname, _ := str(attr(fn, "name"))
			name = "/aws/lambda/" + fname
		}
		if !retained[name] {
			out = append(out, violation("log-retention", fn, "function logs to %s, which is not a log group with a retention in this stack", name))
		}
	}
	return out
}
