package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Three kinds of IAM document, three Go types, so one can't be used for another:
//
//   - [PolicyDocument] is an identity policy (a role's policy): statements name the
//     actions and Resources, never a Principal.
//   - [ResourcePolicy] is a bucket, queue, topic or key policy: statements name a
//     Principal, the actions and the Resources.
//   - [TrustPolicy] is a role's assume-role policy: a Principal and sts actions, never a
//     Resource (IAM rejects a trust policy with one, even `"Resource": null`, with
//     MalformedPolicyDocument — after `preview` has passed).
//
// Each marshals with encoding/json and refuses to marshal a statement that lacks what
// its kind requires, so a malformed document fails at plan time, not at `pulumi up`.

// Version is the IAM policy language version every document uses.
const Version = "2012-10-17"

// Condition is an IAM condition block: operator → key → value (a string or a list).
type Condition map[string]map[string]any

// PolicyDocument is an identity policy.
type PolicyDocument struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one identity-policy statement.
type Statement struct {
	Sid       string    `json:"Sid,omitempty"`
	Effect    string    `json:"Effect"`
	Action    []string  `json:"Action"`
	Resource  []string  `json:"Resource"`
	Condition Condition `json:"Condition,omitempty"`
}

// ResourcePolicy is a resource-based policy (bucket, queue, topic, key).
type ResourcePolicy struct {
	Version   string              `json:"Version"`
	Statement []ResourceStatement `json:"Statement"`
}

// ResourceStatement is one resource-policy statement.
type ResourceStatement struct {
	Sid       string    `json:"Sid,omitempty"`
	Effect    string    `json:"Effect"`
	Principal Principal `json:"Principal"`
	Action    []string  `json:"Action"`
	Resource  []string  `json:"Resource"`
	Condition Condition `json:"Condition,omitempty"`
}

// TrustPolicy is a role's assume-role policy.
type TrustPolicy struct {
	Version   string           `json:"Version"`
	Statement []TrustStatement `json:"Statement"`
}

// TrustStatement is one trust-policy statement. It has no Resource field on purpose.
type TrustStatement struct {
	Sid       string    `json:"Sid,omitempty"`
	Effect    string    `json:"Effect"`
	Principal Principal `json:"Principal"`
	Action    []string  `json:"Action"`
	Condition Condition `json:"Condition,omitempty"`
}

// Principal is "*" (Everyone) or a map like {"Service": "lambda.amazonaws.com"} or
// {"AWS": "arn:aws:iam::123456789012:root"}.
type Principal struct {
	Everyone bool
	Service  string
	AWS      string
}

// MarshalJSON writes "*" or the principal map.
func (p Principal) MarshalJSON() ([]byte, error) {
	switch {
	case p.Everyone && p.Service == "" && p.AWS == "":
		return []byte(`"*"`), nil
	case !p.Everyone && p.Service != "" && p.AWS == "":
		return json.Marshal(map[string]string{"Service": p.Service})
	case !p.Everyone && p.Service == "" && p.AWS != "":
		return json.Marshal(map[string]string{"AWS": p.AWS})
	}
	return nil, fmt.Errorf("principal %+v: want exactly one of Everyone, Service, AWS", p)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *Principal) UnmarshalJSON(b []byte) error {
	if string(b) == `"*"` {
		*p = Principal{Everyone: true}
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("principal: %w", err)
	}
	*p = Principal{Service: m["Service"], AWS: m["AWS"]}
	return nil
}

// Everyone is the "*" principal (used by Deny statements such as TLS-only).
var Everyone = Principal{Everyone: true}

// Service is a service principal.
func Service(name string) Principal { return Principal{Service: name} }

func checkStatement(kind string, i int, effect string, actions []string, resources []string, needResource bool) error {
	var errs []error
	if effect != "Allow" && effect != "Deny" {
		errs = append(errs, fmt.Errorf("%s statement %d: Effect %q: want Allow or Deny", kind, i, effect))
	}
	if len(actions) == 0 {
		errs = append(errs, fmt.Errorf("%s statement %d: no Action", kind, i))
	}
	if needResource && len(resources) == 0 {
		errs = append(errs, fmt.Errorf("%s statement %d: no Resource", kind, i))
	}
	for _, r := range resources {
		if r == "" {
			errs = append(errs, fmt.Errorf("%s statement %d: empty Resource", kind, i))
		}
	}
	return errors.Join(errs...)
}

func marshal(kind string, v any, n int) (string, error) {
	if n == 0 {
		return "", fmt.Errorf("%s: no statements", kind)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", kind, err)
	}
	return string(b), nil
}

// JSON marshals the identity policy; every statement must name actions and resources.
func (d PolicyDocument) JSON() (string, error) {
	if d.Version == "" {
		d.Version = Version
	}
	for i, s := range d.Statement {
		if err := checkStatement("identity policy", i, s.Effect, s.Action, s.Resource, true); err != nil {
			return "", err
		}
	}
	return marshal("identity policy", d, len(d.Statement))
}

// JSON marshals the resource policy; every statement must name a principal, actions
// and resources.
func (d ResourcePolicy) JSON() (string, error) {
	if d.Version == "" {
		d.Version = Version
	}
	for i, s := range d.Statement {
		if err := checkStatement("resource policy", i, s.Effect, s.Action, s.Resource, true); err != nil {
			return "", err
		}
	}
	return marshal("resource policy", d, len(d.Statement))
}

// JSON marshals the trust policy; every statement must name a principal and actions.
func (d TrustPolicy) JSON() (string, error) {
	if d.Version == "" {
		d.Version = Version
	}
	for i, s := range d.Statement {
		if err := checkStatement("trust policy", i, s.Effect, s.Action, nil, false); err != nil {
			return "", err
		}
	}
	return marshal("trust policy", d, len(d.Statement))
}

func allow(sid string, actions []string, resources ...string) Statement {
	return Statement{Sid: sid, Effect: "Allow", Action: actions, Resource: resources}
}

// denyInsecureTransport is the TLS-only statement of a resource policy: every action
// of the service on the resources is denied to requests without TLS.
func denyInsecureTransport(service string, resources ...string) ResourceStatement {
	return ResourceStatement{
		Sid: "DenyInsecureTransport", Effect: "Deny", Principal: Everyone, Action: []string{service + ":*"},
		Resource: resources, Condition: Condition{"Bool": {"aws:SecureTransport": "false"}},
	}
}

// resourceARNs are the ARNs one function's policy refers to.
type resourceARNs struct {
	Ingest, Output, Table, Queue, LogGroup string
	Tasks                                  string // the tasks queue (the dispatcher sends to it)
	Jobs                                   string // the jobs queue (the worker sends finalize tasks and job specs to it)
	CompletionTopic                        string
	OutputPrefix                           string // outputs and reports are written under it
	Key                                    string // the customer-managed KMS key, if any
	Region                                 string
	DeadLetters                            []string // the DLQs the dispatcher's reconciler peeks at
}

// FunctionPolicy is the least-privilege policy of one function: only the actions its
// handler calls (or the Lambda service calls with its role: the SQS mapping's receive
// and delete), only on this pipeline's resources.
func FunctionPolicy(fn string, r resourceARNs, tracing bool) PolicyDocument {
	consume := allow("ConsumeOwnQueue", []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
		"sqs:ChangeMessageVisibility"}, r.Queue)
	logs := allow("WriteOwnLogs", []string{"logs:CreateLogStream", "logs:PutLogEvents"}, r.LogGroup+":*")
	// Without s3:ListBucket a GET of a missing key is AccessDenied (403), which the
	// handlers rightly treat as permanent; with it, NoSuchKey (404), which they retry.
	listIngest := allow("ListIngest", []string{"s3:ListBucket"}, r.Ingest)
	readIngest := allow("ReadIngest", []string{"s3:GetObject", "s3:GetObjectVersion"}, r.Ingest+"/*")
	ledger := allow("Ledger", []string{"dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:BatchGetItem",
		"dynamodb:ConditionCheckItem"}, r.Table)
	out := r.Output + "/" + r.OutputPrefix
	var st []Statement
	switch fn {
	case "worker":
		// The worker resolves its event source's ARN to the queue's URL (once per
		// execution environment) to back off retries.
		consume.Action = append(consume.Action, "sqs:GetQueueUrl")
		st = []Statement{
			consume,
			// A job task waiting for its fan-out task is sent again, delayed.
			allow("ResendWaitingTasks", []string{"sqs:SendMessage"}, r.Queue),
			listIngest, readIngest,
			// PutObject and multipart for outputs, split parts and job report parts;
			// GetObject for HEADs of outputs (whose output is at a key, which revision's).
			allow("WriteOutput", []string{"s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"}, out+"*"),
			// A superseded revision's output is removed when the newest revision has none
			// there; an uncounted delivery's report part is removed.
			allow("RemoveStaleOutputs", []string{"s3:DeleteObject"}, out+"*"),
			allow("ListOutput", []string{"s3:ListBucket"}, r.Output),
			ledger,
			logs,
		}
		if r.Jobs != "" {
			st = append(st, allow("SendToJobs", []string{"sqs:SendMessage"}, r.Jobs))
		}
	case "dispatch":
		st = []Statement{
			consume,
			// Child fan-out tasks, parent waits and finalize re-requests.
			allow("SendChildJobs", []string{"sqs:SendMessage"}, r.Queue),
			allow("SendTasks", []string{"sqs:SendMessage"}, r.Tasks),
			listIngest, readIngest,
			// Job reports: parts, result files and the manifest, all under reports/.
			allow("WriteReports", []string{"s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"}, out+"reports/*"),
			// A split job's parts (<output>.parts/<job>/NNNNN) are read to merge them, and
			// the output key is read (HEAD) before the merge is promoted over it…
			allow("ReadOutputs", []string{"s3:GetObject"}, out+"*"),
			// …merged beside them (the split's own scratch, under <output>.parts/)…
			allow("WriteSplitScratch", []string{"s3:PutObject", "s3:AbortMultipartUpload"}, out+"*.parts/*"),
			// …and promoted to the split file's own output key, which is any key under the
			// prefix — but only as a server-side copy of that scratch: the dispatcher
			// cannot write an output of its own. (s3:x-amz-copy-source is "bucket/key", as
			// in "Granting s3:PutObject permission to copy objects with a restriction on the
			// copy source", docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html.)
			{Sid: "PromoteMergedSplits", Effect: "Allow", Action: []string{"s3:PutObject"}, Resource: []string{out + "*"},
				Condition: Condition{"StringLike": {"s3:x-amz-copy-source": bucketName(r.Output) + "/" + r.OutputPrefix + "*.parts/*"}}},
			// An uncounted delivery's report part, and a split merge once promoted to its
			// output key, are removed.
			allow("RemoveOwnScratch", []string{"s3:DeleteObject"}, out+"reports/*", out+"*.parts/*"),
			allow("ListOutput", []string{"s3:ListBucket"}, r.Output),
			ledger,
			// A job's counted tasks (its report), and the open jobs (the reconciler).
			allow("QueryLedger", []string{"dynamodb:Query"}, r.Table, r.Table+"/index/*"),
			allow("NotifyCompletion", []string{"sns:Publish"}, r.CompletionTopic),
			logs,
		}
		if len(r.DeadLetters) > 0 {
			// The reconciler reads, and makes visible again at once, the DLQs' messages.
			st = append(st, allow("PeekDeadLetters", []string{"sqs:ReceiveMessage", "sqs:ChangeMessageVisibility"}, r.DeadLetters...))
		}
	}
	if r.Key != "" {
		// The data of every service that encrypts with the pipeline's key, only through
		// those services.
		st = append(st, Statement{Sid: "UseKeyThroughServices", Effect: "Allow",
			Action: []string{"kms:Decrypt", "kms:GenerateDataKey"}, Resource: []string{r.Key},
			Condition: Condition{"StringEquals": {"kms:ViaService": viaServices(r.Region)}}})
	}
	if tracing {
		// X-Ray's write actions support no resource-level permissions; "*" is the only
		// valid resource. The policy pack allows exactly these two.
		st = append(st, allow("Tracing", []string{"xray:PutTraceSegments", "xray:PutTelemetryRecords"}, "*"))
	}
	return PolicyDocument{Version: Version, Statement: st}
}

// viaServices are the services that use the pipeline's key on the functions' behalf.
func viaServices(region string) []string {
	var out []string
	for _, s := range []string{"s3", "sqs", "sns", "dynamodb"} {
		out = append(out, s+"."+region+".amazonaws.com")
	}
	return out
}

// lambdaTrust lets the Lambda service assume a function's role.
var lambdaTrust = TrustPolicy{Version: Version, Statement: []TrustStatement{{
	Effect: "Allow", Principal: Service("lambda.amazonaws.com"), Action: []string{"sts:AssumeRole"},
}}}

// bucketName is the name in an S3 bucket ARN (arn:aws:s3:::name).
func bucketName(arn string) string {
	if i := strings.LastIndex(arn, ":"); i >= 0 {
		return arn[i+1:]
	}
	return arn
}
