// Package meter counts AWS SDK calls per service and operation, with a middleware added
// to an aws.Config. Tests and benchmarks use it to state costs as calls per file.
package meter

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// Calls counts SDK operations. The zero value is ready to use and safe for concurrent use.
type Calls struct {
	mu     sync.Mutex
	counts map[string]int64 // "Service.Operation" -> calls
}

// Attach adds the counting middleware to cfg, so every client built from it is counted.
// Each operation call counts once; the SDK's own retries of it add nothing.
func (c *Calls) Attach(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("fileflowMeter",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				c.add(awsmiddleware.GetServiceID(ctx) + "." + awsmiddleware.GetOperationName(ctx))
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

func (c *Calls) add(op string) {
	c.mu.Lock()
	if c.counts == nil {
		c.counts = map[string]int64{}
	}
	c.counts[op]++
	c.mu.Unlock()
}

// Snapshot returns a copy of the counts keyed "Service.Operation" (e.g. "DynamoDB.UpdateItem").
func (c *Calls) Snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// Reset sets every count to zero.
func (c *Calls) Reset() {
	c.mu.Lock()
	c.counts = nil
	c.mu.Unlock()
}

// Count is the number of calls to one operation ("DynamoDB.UpdateItem") or, given a
// service ("DynamoDB"), to all its operations.
func (c *Calls) Count(name string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.Contains(name, ".") {
		return c.counts[name]
	}
	var n int64
	for k, v := range c.counts {
		if strings.HasPrefix(k, name+".") {
			n += v
		}
	}
	return n
}

// dynamoWrites are the DynamoDB operations that consume write capacity.
var dynamoWrites = []string{"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}

// DynamoDBWrites is the number of DynamoDB write requests (a BatchWriteItem or
// TransactWriteItems counts once here; its items are counted by the caller if needed).
func (c *Calls) DynamoDBWrites() int64 {
	var n int64
	for _, op := range dynamoWrites {
		n += c.Count("DynamoDB." + op)
	}
	return n
}

// PerService sums the counts by service ("S3", "SQS", "DynamoDB").
func (c *Calls) PerService() map[string]int64 {
	out := map[string]int64{}
	for k, v := range c.Snapshot() {
		svc, _, _ := strings.Cut(k, ".")
		out[svc] += v
	}
	return out
}

// String lists the counts sorted by name, for logs and test failures.
func (c *Calls) String() string {
	snap := c.Snapshot()
	keys := make([]string, 0, len(snap))
	for k := range snap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(strconv.FormatInt(snap[k], 10))
	}
	return b.String()
}
