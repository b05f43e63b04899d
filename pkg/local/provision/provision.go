// Package provision creates what a stack's component declares (from its graph under
// Pulumi mocks) on the local S3, SQS and DynamoDB servers: buckets, queues with the same
// redrive policies, maxReceiveCount and visibility timeouts, and the ledger table with
// the same keys, indexes and TTL. It also returns the functions and their event source
// mappings and notifications, with every mock ARN and URL translated to the local one,
// so the local pipeline cannot drift from what `pulumi up` would create.
//
// Buckets are versioned where the component versions them (the local S3 server runs
// with a versioning directory), so overwrites behave as in AWS: events carry version
// ids, and an older version stays readable by its id.
//
// Not reproduced locally (the servers have no such features, or they don't change
// behaviour): IAM, bucket policies, public access blocks, encryption settings, alarms,
// dashboards, autoscaling.
package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fileflow/fileflow/pkg/plan"
)

// Clients are the local servers' clients.
type Clients struct {
	S3       *s3.Client
	SQS      *sqs.Client
	SNS      *sns.Client
	DynamoDB *dynamodb.Client
}

// Queue is a created queue.
type Queue struct {
	Name, URL, ARN string
	DLQ            *Queue // nil for a queue without redrive
	MaxReceive     int
	Visibility     int
}

// Notification routes a bucket's ObjectCreated events to a queue.
type Notification struct {
	Bucket string
	Queue  *Queue
	Prefix string
	Suffix string
}

// Matches reports whether a key passes the notification's filters.
func (n Notification) Matches(key string) bool {
	return strings.HasPrefix(key, n.Prefix) && strings.HasSuffix(key, n.Suffix)
}

// Mapping is an SQS event source mapping.
type Mapping struct {
	Queue             *Queue
	BatchSize         int
	BatchingWindowSec int
	MaxConcurrency    int
	ReportItemFailure bool
}

// Function is a declared Lambda function as the local runtime needs it.
type Function struct {
	Name        string // the logical (and local) function name, e.g. fileflow-worker
	Handler     string // functions/<Handler>: "worker", "dispatch"
	Timeout     time.Duration
	MemoryMB    int
	Reserved    int
	Env         map[string]string // translated to local names
	Mappings    []Mapping
	LogFormat   string
	Provisioned int // provisioned concurrency declared (warm environments)
}

// Stack is what was created.
type Stack struct {
	Buckets       []string
	Versioned     []string // buckets with versioning enabled
	IngestBucket  string
	OutputBucket  string
	Table         string
	Queues        map[string]*Queue // by name
	Functions     []*Function
	Notifications []Notification
	Topics        map[string]string // local topic ARN by name
}

// Apply creates the graph's resources on the local servers.
func Apply(ctx context.Context, c Clients, g *plan.Graph) (*Stack, error) {
	st := &Stack{Queues: map[string]*Queue{}, Topics: map[string]string{}}
	translate := map[string]string{} // mock ARN/URL/name -> local

	for _, b := range g.OfType("aws:s3/bucketV2:BucketV2") {
		name := fmt.Sprint(b.State["bucket"])
		if _, err := c.S3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
			return nil, fmt.Errorf("provision: bucket %s: %w", name, err)
		}
		st.Buckets = append(st.Buckets, name)
		switch {
		case strings.HasSuffix(b.Name, "-ingest"):
			st.IngestBucket = name
		case strings.HasSuffix(b.Name, "-output"):
			st.OutputBucket = name
		}
	}

	for _, v := range g.OfType("aws:s3/bucketVersioningV2:BucketVersioningV2") {
		bucket := fmt.Sprint(v.Inputs["bucket"])
		if !slices.Contains(st.Buckets, bucket) {
			return nil, fmt.Errorf("provision: versioning of undeclared bucket %q", bucket)
		}
		conf, _ := v.Inputs["versioningConfiguration"].(map[string]any)
		if conf["status"] != "Enabled" {
			continue
		}
		if _, err := c.S3.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(bucket),
			VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}}); err != nil {
			return nil, fmt.Errorf("provision: versioning of bucket %s: %w", bucket, err)
		}
		st.Versioned = append(st.Versioned, bucket)
	}

	// Queues: dead-letter targets first, so redrive policies can name them.
	queues := g.OfType("aws:sqs/queue:Queue")
	sort.SliceStable(queues, func(i, j int) bool {
		_, ri := queues[i].Inputs["redrivePolicy"]
		_, rj := queues[j].Inputs["redrivePolicy"]
		return !ri && rj
	})
	byMockARN := map[string]*Queue{}
	for _, q := range queues {
		name := fmt.Sprint(q.State["name"])
		attrs := map[string]string{}
		if v, ok := q.Inputs["visibilityTimeoutSeconds"].(float64); ok {
			attrs[string(sqstypes.QueueAttributeNameVisibilityTimeout)] = strconv.Itoa(int(v))
		}
		if v, ok := q.Inputs["messageRetentionSeconds"].(float64); ok {
			attrs[string(sqstypes.QueueAttributeNameMessageRetentionPeriod)] = strconv.Itoa(int(v))
		}
		if v, ok := q.Inputs["receiveWaitTimeSeconds"].(float64); ok {
			attrs[string(sqstypes.QueueAttributeNameReceiveMessageWaitTimeSeconds)] = strconv.Itoa(int(v))
		}
		lq := &Queue{Name: name}
		if rp, ok := q.Inputs["redrivePolicy"].(string); ok {
			var p struct {
				DeadLetterTargetArn string `json:"deadLetterTargetArn"`
				MaxReceiveCount     int    `json:"maxReceiveCount"`
			}
			if err := json.Unmarshal([]byte(rp), &p); err != nil {
				return nil, fmt.Errorf("provision: queue %s redrive policy: %w", name, err)
			}
			dlq, ok := byMockARN[p.DeadLetterTargetArn]
			if !ok {
				return nil, fmt.Errorf("provision: queue %s: DLQ %s not declared", name, p.DeadLetterTargetArn)
			}
			local, err := json.Marshal(map[string]any{"deadLetterTargetArn": dlq.ARN, "maxReceiveCount": p.MaxReceiveCount})
			if err != nil {
				return nil, err
			}
			attrs[string(sqstypes.QueueAttributeNameRedrivePolicy)] = string(local)
			lq.DLQ, lq.MaxReceive = dlq, p.MaxReceiveCount
		}
		out, err := c.SQS.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
		if err != nil {
			return nil, fmt.Errorf("provision: queue %s: %w", name, err)
		}
		lq.URL = aws.ToString(out.QueueUrl)
		a, err := c.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
			QueueUrl: out.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn, sqstypes.QueueAttributeNameVisibilityTimeout},
		})
		if err != nil {
			return nil, fmt.Errorf("provision: queue %s: %w", name, err)
		}
		lq.ARN = a.Attributes[string(sqstypes.QueueAttributeNameQueueArn)]
		lq.Visibility, _ = strconv.Atoi(a.Attributes[string(sqstypes.QueueAttributeNameVisibilityTimeout)])
		byMockARN[fmt.Sprint(q.State["arn"])] = lq
		translate[fmt.Sprint(q.State["arn"])] = lq.ARN
		translate[fmt.Sprint(q.State["url"])] = lq.URL
		st.Queues[name] = lq
	}

	for _, t := range g.OfType("aws:sns/topic:Topic") {
		name := fmt.Sprint(t.State["name"])
		out, err := c.SNS.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(name)})
		if err != nil {
			return nil, fmt.Errorf("provision: topic %s: %w", name, err)
		}
		st.Topics[name] = aws.ToString(out.TopicArn)
		translate[fmt.Sprint(t.State["arn"])] = aws.ToString(out.TopicArn)
	}

	tables := g.OfType("aws:dynamodb/table:Table")
	for _, t := range tables {
		name := fmt.Sprint(t.State["name"])
		if err := createTable(ctx, c.DynamoDB, name, t.Inputs); err != nil {
			return nil, fmt.Errorf("provision: table %s: %w", name, err)
		}
		st.Table = name
	}

	for _, n := range g.OfType("aws:s3/bucketNotification:BucketNotification") {
		bucket := fmt.Sprint(n.Inputs["bucket"])
		qs, _ := n.Inputs["queues"].([]any)
		for _, x := range qs {
			qm, _ := x.(map[string]any)
			lq, ok := byMockARN[fmt.Sprint(qm["queueArn"])]
			if !ok {
				return nil, fmt.Errorf("provision: notification on %s names an undeclared queue", bucket)
			}
			prefix, _ := qm["filterPrefix"].(string)
			suffix, _ := qm["filterSuffix"].(string)
			st.Notifications = append(st.Notifications, Notification{Bucket: bucket, Queue: lq, Prefix: prefix, Suffix: suffix})
		}
	}

	fnByMockARN := map[string]*Function{}
	for _, f := range g.OfType("aws:lambda/function:Function") {
		name := fmt.Sprint(f.State["name"])
		fn := &Function{Name: name, Env: map[string]string{}}
		fn.Handler = handlerOf(name)
		if v, ok := f.Inputs["timeout"].(float64); ok {
			fn.Timeout = time.Duration(v) * time.Second
		} else {
			fn.Timeout = 3 * time.Second
		}
		if v, ok := f.Inputs["memorySize"].(float64); ok {
			fn.MemoryMB = int(v)
		}
		if v, ok := f.Inputs["reservedConcurrentExecutions"].(float64); ok {
			fn.Reserved = int(v)
		}
		if lc, ok := f.Inputs["loggingConfig"].(map[string]any); ok {
			fn.LogFormat, _ = lc["logFormat"].(string)
		}
		if env, ok := f.Inputs["environment"].(map[string]any); ok {
			vars, _ := env["variables"].(map[string]any)
			for k, v := range vars {
				s := fmt.Sprint(v)
				if local, ok := translate[s]; ok {
					s = local
				}
				fn.Env[k] = s
			}
		}
		fnByMockARN[fmt.Sprint(f.State["arn"])] = fn
		st.Functions = append(st.Functions, fn)
	}
	for _, a := range g.OfType("aws:lambda/alias:Alias") {
		for _, fn := range st.Functions {
			if fn.Name == fmt.Sprint(a.Inputs["functionName"]) {
				fnByMockARN[fmt.Sprint(a.State["arn"])] = fn
			}
		}
	}
	for _, pc := range g.OfType("aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig") {
		for _, fn := range st.Functions {
			if fn.Name == fmt.Sprint(pc.Inputs["functionName"]) {
				n, _ := pc.Inputs["provisionedConcurrentExecutions"].(float64)
				fn.Provisioned = int(n)
			}
		}
	}
	for _, m := range g.OfType("aws:lambda/eventSourceMapping:EventSourceMapping") {
		fn, ok := fnByMockARN[fmt.Sprint(m.Inputs["functionName"])]
		if !ok {
			return nil, fmt.Errorf("provision: mapping %s targets an undeclared function", m.Name)
		}
		q, ok := byMockARN[fmt.Sprint(m.Inputs["eventSourceArn"])]
		if !ok {
			return nil, fmt.Errorf("provision: mapping %s reads an undeclared queue", m.Name)
		}
		mp := Mapping{Queue: q, BatchSize: 10, MaxConcurrency: 1000}
		if v, ok := m.Inputs["batchSize"].(float64); ok {
			mp.BatchSize = int(v)
		}
		if v, ok := m.Inputs["maximumBatchingWindowInSeconds"].(float64); ok {
			mp.BatchingWindowSec = int(v)
		}
		if sc, ok := m.Inputs["scalingConfig"].(map[string]any); ok {
			if v, ok := sc["maximumConcurrency"].(float64); ok {
				mp.MaxConcurrency = int(v)
			}
		}
		if types, ok := m.Inputs["functionResponseTypes"].([]any); ok {
			for _, t := range types {
				if t == "ReportBatchItemFailures" {
					mp.ReportItemFailure = true
				}
			}
		}
		fn.Mappings = append(fn.Mappings, mp)
	}
	return st, nil
}

// handlerOf maps a function name (<component>-<handler>) to its functions/ directory.
func handlerOf(name string) string {
	if i := strings.LastIndexByte(name, '-'); i >= 0 {
		return name[i+1:]
	}
	return name
}

func createTable(ctx context.Context, db *dynamodb.Client, name string, in map[string]any) error {
	var attrs []ddbtypes.AttributeDefinition
	for _, x := range asList(in["attributes"]) {
		m := x.(map[string]any)
		attrs = append(attrs, ddbtypes.AttributeDefinition{
			AttributeName: aws.String(fmt.Sprint(m["name"])), AttributeType: ddbtypes.ScalarAttributeType(fmt.Sprint(m["type"])),
		})
	}
	keys := func(hash, rng any) []ddbtypes.KeySchemaElement {
		ks := []ddbtypes.KeySchemaElement{{AttributeName: aws.String(fmt.Sprint(hash)), KeyType: ddbtypes.KeyTypeHash}}
		if s, ok := rng.(string); ok && s != "" {
			ks = append(ks, ddbtypes.KeySchemaElement{AttributeName: aws.String(s), KeyType: ddbtypes.KeyTypeRange})
		}
		return ks
	}
	input := &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		AttributeDefinitions: attrs,
		KeySchema:            keys(in["hashKey"], in["rangeKey"]),
		BillingMode:          ddbtypes.BillingModePayPerRequest, // locally capacity means nothing
	}
	for _, x := range asList(in["globalSecondaryIndexes"]) {
		m := x.(map[string]any)
		p := &ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionType(fmt.Sprint(m["projectionType"]))}
		for _, a := range asList(m["nonKeyAttributes"]) {
			p.NonKeyAttributes = append(p.NonKeyAttributes, fmt.Sprint(a))
		}
		input.GlobalSecondaryIndexes = append(input.GlobalSecondaryIndexes, ddbtypes.GlobalSecondaryIndex{
			IndexName: aws.String(fmt.Sprint(m["name"])), KeySchema: keys(m["hashKey"], m["rangeKey"]), Projection: p,
		})
	}
	if _, err := db.CreateTable(ctx, input); err != nil {
		return err
	}
	if err := dynamodb.NewTableExistsWaiter(db).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, time.Minute); err != nil {
		return err
	}
	if ttl, ok := in["ttl"].(map[string]any); ok && ttl["enabled"] == true {
		if _, err := db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
			TableName:               aws.String(name),
			TimeToLiveSpecification: &ddbtypes.TimeToLiveSpecification{AttributeName: aws.String(fmt.Sprint(ttl["attributeName"])), Enabled: aws.Bool(true)},
		}); err != nil {
			return err
		}
	}
	return nil
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
