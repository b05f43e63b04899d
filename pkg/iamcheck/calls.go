package iamcheck

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// Call is one IAM request a function's API call needs: AWS authorizes each API call as
// one or more actions on resources (a TransactWriteItems as one action per item, a
// CopyObject as a write of the target and a read of the source).
type Call struct {
	Function  string            `json:"function"`  // "worker", "dispatch"
	Operation string            `json:"operation"` // the API operation as called, "S3.CopyObject"
	Action    string            `json:"action"`    // the IAM action, "s3:GetObject"
	Resource  string            `json:"resource"`  // the ARN touched
	Context   map[string]string `json:"context,omitempty"`
}

func (c Call) key() string {
	ctx, _ := json.Marshal(c.Context)
	return c.Function + "\x00" + c.Operation + "\x00" + c.Action + "\x00" + c.Resource + "\x00" + string(ctx)
}

// ARNs names resources the way the simulated policies do (the plan's account and
// region): local servers use other account ids.
type ARNs struct{ Account, Region string }

func (a ARNs) queue(urlOrName string) string {
	name := urlOrName
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return "arn:aws:sqs:" + a.Region + ":" + a.Account + ":" + name
}

func (a ARNs) table(name string) string {
	return "arn:aws:dynamodb:" + a.Region + ":" + a.Account + ":table/" + name
}

func (a ARNs) topic(arn string) string {
	name := arn
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		name = name[i+1:]
	}
	return "arn:aws:sns:" + a.Region + ":" + a.Account + ":" + name
}

// FromHTTP returns the IAM requests one HTTP request to a local AWS-API server stands
// for. service is "S3", "SQS", "SNS" or "DynamoDB"; body is the request body for the
// JSON and query protocols and S3's DeleteObjects (see meter.Proxy.Record); status is
// the server's answer (an S3 read answered 404 needs s3:ListBucket too: without it AWS
// answers 403).
func FromHTTP(a ARNs, function, service string, r *http.Request, body []byte, status int) []Call {
	var out []Call
	add := func(op, action, resource string, ctx map[string]string) {
		out = append(out, Call{Function: function, Operation: service + "." + op, Action: action, Resource: resource, Context: ctx})
	}
	switch service {
	case "S3":
		s3Calls(r, body, status, add)
	case "SQS":
		op := target(r)
		var in struct{ QueueUrl, QueueName string }
		_ = json.Unmarshal(body, &in)
		q := in.QueueUrl
		if q == "" {
			q = in.QueueName
		}
		add(op, "sqs:"+strings.TrimSuffix(op, "Batch"), a.queue(q), nil)
	case "SNS":
		form, _ := url.ParseQuery(string(body))
		op := form.Get("Action")
		add(op, "sns:"+op, a.topic(form.Get("TopicArn")), nil)
	case "DynamoDB":
		dynamoCalls(a, target(r), body, add)
	}
	return out
}

// target is the operation named by the X-Amz-Target header ("AmazonSQS.SendMessage").
func target(r *http.Request) string {
	t := r.Header.Get("X-Amz-Target")
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		return t[i+1:]
	}
	return t
}

func s3Calls(r *http.Request, body []byte, status int, add func(op, action, resource string, ctx map[string]string)) {
	q := r.URL.Query()
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	bucketARN := "arn:aws:s3:::" + bucket
	object := bucketARN + "/" + key
	versioned := func(action string) string {
		if q.Get("versionId") != "" {
			return action + "Version"
		}
		return action
	}
	read := func(op string) {
		add(op, versioned("s3:GetObject"), object, nil)
		if status == http.StatusNotFound {
			// AWS answers a read of a missing key with 404 only to a caller that may
			// list the bucket; anyone else gets 403 AccessDenied.
			add(op+" (404)", "s3:ListBucket", bucketARN, map[string]string{"s3:prefix": key})
		}
	}
	copySource := func(op string) {
		src := r.Header.Get("X-Amz-Copy-Source")
		if src == "" {
			return
		}
		path, query, _ := strings.Cut(src, "?")
		if p, err := url.PathUnescape(path); err == nil {
			path = p
		}
		action := "s3:GetObject"
		if strings.Contains(query, "versionId=") {
			action = "s3:GetObjectVersion"
		}
		add(op+" (source)", action, "arn:aws:s3:::"+strings.TrimPrefix(path, "/"), nil)
	}
	switch r.Method {
	case http.MethodGet:
		switch {
		case key == "":
			add("ListObjectsV2", "s3:ListBucket", bucketARN, map[string]string{"s3:prefix": q.Get("prefix")})
		case q.Has("uploadId"):
			add("ListParts", "s3:ListMultipartUploadParts", object, nil)
		default:
			read("GetObject")
		}
	case http.MethodHead:
		if key == "" {
			add("HeadBucket", "s3:ListBucket", bucketARN, nil)
		} else {
			read("HeadObject")
		}
	case http.MethodPut:
		switch {
		case q.Has("partNumber") && r.Header.Get("X-Amz-Copy-Source") != "":
			add("UploadPartCopy", "s3:PutObject", object, copyContext(r))
			copySource("UploadPartCopy")
		case q.Has("partNumber"):
			add("UploadPart", "s3:PutObject", object, nil)
		case q.Has("tagging"):
			add("PutObjectTagging", "s3:PutObjectTagging", object, nil)
		case r.Header.Get("X-Amz-Copy-Source") != "":
			add("CopyObject", "s3:PutObject", object, copyContext(r))
			copySource("CopyObject")
		default:
			add("PutObject", "s3:PutObject", object, nil)
		}
	case http.MethodPost:
		switch {
		case q.Has("uploads"):
			add("CreateMultipartUpload", "s3:PutObject", object, nil)
		case q.Has("uploadId"):
			add("CompleteMultipartUpload", "s3:PutObject", object, nil)
		case q.Has("delete"):
			var d struct {
				Objects []struct {
					Key       string `xml:"Key"`
					VersionID string `xml:"VersionId"`
				} `xml:"Object"`
			}
			_ = xml.Unmarshal(body, &d)
			for _, o := range d.Objects {
				action := "s3:DeleteObject"
				if o.VersionID != "" {
					action = "s3:DeleteObjectVersion"
				}
				add("DeleteObjects", action, bucketARN+"/"+o.Key, nil)
			}
		}
	case http.MethodDelete:
		if q.Has("uploadId") {
			add("AbortMultipartUpload", "s3:AbortMultipartUpload", object, nil)
		} else {
			add("DeleteObject", versioned("s3:DeleteObject"), object, nil)
		}
	}
}

func dynamoCalls(a ARNs, op string, body []byte, add func(op, action, resource string, ctx map[string]string)) {
	var in struct {
		TableName     string
		IndexName     string
		RequestItems  map[string]json.RawMessage
		TransactItems []map[string]struct{ TableName string }
	}
	_ = json.Unmarshal(body, &in)
	switch op {
	case "TransactWriteItems", "TransactGetItems":
		// Authorized item by item: Put → PutItem, Update → UpdateItem, Delete →
		// DeleteItem, ConditionCheck → ConditionCheckItem, Get → GetItem.
		for _, item := range in.TransactItems {
			for kind, x := range item {
				action := "dynamodb:" + kind + "Item"
				if kind == "ConditionCheck" {
					action = "dynamodb:ConditionCheckItem"
				}
				add(op, action, a.table(x.TableName), nil)
			}
		}
	case "BatchGetItem", "BatchWriteItem":
		for table := range in.RequestItems {
			add(op, "dynamodb:"+op, a.table(table), nil)
		}
	default:
		res := a.table(in.TableName)
		if in.IndexName != "" {
			res += "/index/" + in.IndexName
		}
		add(op, "dynamodb:"+op, res, nil)
	}
}

// Recorder collects the calls of a local run, counted, safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	calls map[string]*Recorded
}

// Recorded is one distinct call and how often it was made.
type Recorded struct {
	Call
	Count int64 `json:"count"`
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{calls: map[string]*Recorded{}} }

// Add records calls.
func (r *Recorder) Add(calls ...Call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range calls {
		k := c.key()
		if rec, ok := r.calls[k]; ok {
			rec.Count++
			continue
		}
		r.calls[k] = &Recorded{Call: c, Count: 1}
	}
}

// Calls returns the distinct calls, sorted.
func (r *Recorder) Calls() []Recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Recorded, 0, len(r.calls))
	for _, c := range r.calls {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

// Total is the number of calls recorded, repeats included.
func (r *Recorder) Total() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, c := range r.calls {
		n += c.Count
	}
	return n
}

// AttachSQS records the SQS calls of clients built from cfg as function's: the local
// event source mapping's receives and deletes, which Lambda makes with the function's
// role in AWS.
func (r *Recorder) AttachSQS(cfg *aws.Config, a ARNs, function string) {
	cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("fileflowIAMRecord",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				op := awsmiddleware.GetOperationName(ctx)
				if q := stringField(in.Parameters, "QueueUrl"); q != "" {
					r.Add(Call{Function: function, Operation: "SQS." + op + " (mapping)", Action: "sqs:" + strings.TrimSuffix(op, "Batch"), Resource: a.queue(q)})
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

// stringField reads a *string field of an SDK input struct.
func stringField(v any, name string) string {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return ""
	}
	f := rv.FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() || f.Elem().Kind() != reflect.String {
		return ""
	}
	return f.Elem().String()
}

// String summarizes the recorded calls per function and action.
func (r *Recorder) String() string {
	per := map[string]int64{}
	for _, c := range r.Calls() {
		per[c.Function+" "+c.Action] += c.Count
	}
	keys := make([]string, 0, len(per))
	for k := range per {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, per[k])
	}
	return strings.TrimSpace(b.String())
}

// copyContext is the condition key a copy's write carries: s3:x-amz-copy-source, the
// source's bucket and key (decoded, without a version).
func copyContext(r *http.Request) map[string]string {
	path, _, _ := strings.Cut(r.Header.Get("X-Amz-Copy-Source"), "?")
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	return map[string]string{"s3:x-amz-copy-source": strings.TrimPrefix(path, "/")}
}
