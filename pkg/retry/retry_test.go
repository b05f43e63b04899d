package retry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
)

type retryableErr struct{ retry bool }

func (e retryableErr) Error() string        { return "sdk error" }
func (e retryableErr) RetryableError() bool { return e.retry }

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"plain error", errors.New("connection reset"), Retryable},
		{"marked permanent", fmt.Errorf("process: %w", MarkPermanent(errors.New("corrupt gzip"))), Permanent},
		{"deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), Retryable},
		{"S3 SlowDown", &smithy.GenericAPIError{Code: "SlowDown"}, Throttled},
		{"DynamoDB throughput", fmt.Errorf("commit: %w", &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException"}), Throttled},
		{"access denied", &smithy.GenericAPIError{Code: "AccessDenied"}, Permanent},
		{"no such bucket", &smithy.GenericAPIError{Code: "NoSuchBucket"}, Permanent},
		{"key too long", &smithy.GenericAPIError{Code: "KeyTooLongError"}, Permanent},
		{"5xx", &smithy.GenericAPIError{Code: "InternalError"}, Retryable},
		{"versitygw: parent is a file", fmt.Errorf("put: %w", &smithy.GenericAPIError{Code: "ObjectParentIsFile"}), Permanent},
		{"versitygw: key is a directory", &smithy.GenericAPIError{Code: "ExistingObjectIsDirectory"}, Permanent},
		{"MinIO: parent is an object", &smithy.GenericAPIError{Code: "XMinioParentIsObject"}, Permanent},
		{"MinIO: key is a directory", &smithy.GenericAPIError{Code: "XMinioObjectExistsAsDirectory"}, Permanent},
		{"SDK says not retryable", retryableErr{retry: false}, Permanent},
		{"SDK says retryable", retryableErr{retry: true}, Retryable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Classify(tt.err), tt.want.String())
		})
	}
	assert.Nil(t, MarkPermanent(nil))
}

func TestDelayGrowsAndIsCapped(t *testing.T) {
	p := Policy{Base: time.Second, Cap: 10 * time.Second, Rand: func() float64 { return 0.999999 }}
	var prev time.Duration
	for attempt := 1; attempt <= 4; attempt++ {
		d := p.Delay(attempt, Retryable)
		assert.Greater(t, d, prev, "attempt %d", attempt)
		prev = d
	}
	assert.LessOrEqual(t, p.Delay(40, Retryable), 10*time.Second)
	assert.LessOrEqual(t, p.Delay(1000, Retryable), 10*time.Second)
	assert.Greater(t, p.Delay(1, Throttled), p.Delay(1, Retryable), "throttles back off harder")
}

func TestDelayFullJitter(t *testing.T) {
	zero := Policy{Base: time.Second, Cap: time.Minute, Rand: func() float64 { return 0 }}
	assert.Equal(t, time.Duration(0), zero.Delay(5, Retryable), "full jitter reaches zero")
	zero.Min = time.Second
	assert.Equal(t, time.Second, zero.Delay(5, Retryable), "but never below Min")
	half := Policy{Base: time.Second, Cap: time.Minute, Rand: func() float64 { return 0.5 }}
	assert.Equal(t, 4*time.Second, half.Delay(4, Retryable)) // 0.5 x 1 s x 2^3
	// The default policy draws different delays (not a constant).
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[DefaultPolicy.Delay(6, Retryable)] = true
	}
	assert.Greater(t, len(seen), 10)
}

func TestVisibilitySeconds(t *testing.T) {
	assert.Equal(t, int32(0), VisibilitySeconds(-time.Second))
	assert.Equal(t, int32(1), VisibilitySeconds(time.Millisecond))
	assert.Equal(t, int32(2), VisibilitySeconds(1500*time.Millisecond))
	assert.Equal(t, int32(43200), VisibilitySeconds(48*time.Hour))
}

func TestKeyConflict(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want Conflict
	}{
		{fmt.Errorf("upload: %w", &smithy.GenericAPIError{Code: "ObjectParentIsFile", Message: "Object parent already exists as a file."}), ParentIsObject},
		{&smithy.GenericAPIError{Code: "XMinioParentIsObject"}, ParentIsObject},
		{&smithy.GenericAPIError{Code: "ExistingObjectIsDirectory"}, KeyIsPrefix},
		{&smithy.GenericAPIError{Code: "XMinioObjectExistsAsDirectory"}, KeyIsPrefix},
		{&smithy.GenericAPIError{Code: "InternalError"}, NoConflict},
		{errors.New("ObjectParentIsFile"), NoConflict}, // by code, never by message text
		{nil, NoConflict},
	} {
		assert.Equal(t, tt.want, KeyConflict(tt.err), "%v", tt.err)
	}
}
