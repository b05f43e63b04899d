package pipeline

import (
	"encoding/json"
	"fmt"
)

// PolicyDocument is an IAM policy document, marshalled with encoding/json.
type PolicyDocument struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM policy statement.
type Statement struct {
	Sid       string                       `json:"Sid,omitempty"`
	Effect    string                       `json:"Effect"`
	Principal any                          `json:"Principal,omitempty"`
	Action    []string                     `json:"Action"`
	Resource  []string                     `json:"Resource"`
	Condition map[string]map[string]string `json:"Condition,omitempty"`
}

func (d PolicyDocument) JSON() (string, error) {
	if d.Version == "" {
		d.Version = "2012-10-17"
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("policy document: %w", err)
	}
	return string(b), nil
}

func allow(sid string, actions []string, resources ...string) Statement {
	return Statement{Sid: sid, Effect: "Allow", Action: actions, Resource: resources}
}

// resourceARNs are the ARNs one function's policy refers to.
type resourceARNs struct {
	Ingest, Output, Table, Queue, LogGroup string
	Tasks                                  string // the tasks queue (the dispatcher sends to it)
	Jobs                                   string // the jobs queue (the worker sends finalize tasks and job specs to it)
	CompletionTopic                        string
}

// FunctionPolicy is the least-privilege policy of one function: only the actions its
// handler calls, only on this pipeline's resources.
func FunctionPolicy(fn string, r resourceARNs, tracing bool) PolicyDocument {
	consume := allow("ConsumeOwnQueue", []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
		"sqs:ChangeMessageVisibility", "sqs:GetQueueUrl"}, r.Queue)
	logs := allow("WriteOwnLogs", []string{"logs:CreateLogStream", "logs:PutLogEvents"}, r.LogGroup+":*")
	var st []Statement
	switch fn {
	case "worker":
		st = []Statement{
			consume,
			allow("ReadIngest", []string{"s3:GetObject", "s3:GetObjectVersion"}, r.Ingest+"/*"),
			// PutObject and multipart for outputs; GetObject for the in-place copy that
			// sets late metadata on multipart outputs.
			allow("WriteOutput", []string{"s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"}, r.Output+"/*"),
			// Job reports: the worker that finishes a job merges its report parts.
			allow("ListOutput", []string{"s3:ListBucket"}, r.Output),
			// Job counting is a transaction of puts, updates and condition checks.
			allow("Ledger", []string{"dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:BatchGetItem",
				"dynamodb:ConditionCheckItem"}, r.Table),
			allow("NotifyCompletion", []string{"sns:Publish"}, r.CompletionTopic),
			// A job task waiting for its fan-out task is sent again, delayed.
			allow("ResendWaitingTasks", []string{"sqs:SendMessage"}, r.Queue),
			logs,
		}
		if r.Jobs != "" {
			st = append(st, allow("SendToJobs", []string{"sqs:SendMessage"}, r.Jobs))
		}
	case "dispatch":
		st = []Statement{
			consume,
			allow("SendChildJobs", []string{"sqs:SendMessage"}, r.Queue),
			allow("SendTasks", []string{"sqs:SendMessage", "sqs:GetQueueUrl"}, r.Tasks),
			allow("ListIngest", []string{"s3:ListBucket"}, r.Ingest),
			allow("ReadIngest", []string{"s3:GetObject", "s3:GetObjectVersion"}, r.Ingest+"/*"),
			allow("WriteReports", []string{"s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"}, r.Output+"/*"),
			allow("ListOutput", []string{"s3:ListBucket"}, r.Output),
			allow("Ledger", []string{"dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:BatchGetItem",
				"dynamodb:ConditionCheckItem"}, r.Table),
			allow("NotifyCompletion", []string{"sns:Publish"}, r.CompletionTopic),
			logs,
		}
	}
	if tracing {
		// X-Ray's write actions support no resource-level permissions; "*" is the only
		// valid resource. The policy pack allows exactly these two.
		st = append(st, allow("Tracing", []string{"xray:PutTraceSegments", "xray:PutTelemetryRecords"}, "*"))
	}
	return PolicyDocument{Version: "2012-10-17", Statement: st}
}
