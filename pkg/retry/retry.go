// Package retry classifies failures (permanent, retryable, throttled) and computes
// exponential backoff with full jitter for SQS redelivery.
//
// A message whose file failed in its own processing is reported as a batch item failure
// with its visibility timeout set to [Policy.Delay] of its ApproximateReceiveCount: each
// retry uses one of its receives, and the last one records the file's end. A message
// that waits on something other than its own processing (the ledger, a parent task) is
// sent again instead (pkg/job's SendAgain, counted in a message attribute, bounded): a
// fresh receive count, the delay of all its attempts so far. The functions that do so
// declare the recursion config that lets Lambda run such chains.
package retry

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/aws/smithy-go"
)

// Class is what to do about an error.
type Class int

// The classes, from the cheapest to act on to the most expensive.
const (
	// Retryable errors may succeed later: network faults, timeouts, 5xx answers.
	Retryable Class = iota
	// Throttled errors say a downstream service asked us to slow down.
	Throttled
	// Permanent errors will fail the same way again: corrupt or unsupported input,
	// access denied, a missing bucket. Retrying them only burns money.
	Permanent
)

func (c Class) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case Throttled:
		return "throttled"
	case Permanent:
		return "permanent"
	default:
		return "unknown"
	}
}

// permanentError marks an error as permanent.
type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() error   { return e.err }
func (e *permanentError) Permanent() bool { return true }

// MarkPermanent wraps err so that [Classify] calls it permanent. Nil stays nil.
func MarkPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// throttleCodes are the API error codes AWS services use to ask callers to slow down.
var throttleCodes = map[string]bool{
	"Throttling": true, "ThrottlingException": true, "ThrottledException": true,
	"RequestThrottledException": true, "TooManyRequestsException": true,
	"ProvisionedThroughputExceededException": true, "RequestLimitExceeded": true,
	"SlowDown": true, "RequestThrottled": true, "TransactionInProgressException": true,
}

// permanentCodes are API error codes that retrying cannot fix.
var permanentCodes = map[string]bool{
	"AccessDenied": true, "AccessDeniedException": true, "AllAccessDisabled": true,
	"NoSuchBucket": true, "InvalidObjectState": true, "InvalidArgument": true,
	"KMS.DisabledException": true, "KMS.NotFoundException": true, "InvalidRange": true,
	"EntityTooLarge": true, "ValidationException": true, "ResourceNotFoundException": true, "KeyTooLongError": true,
}

// Conflict says how a write's key collides with other keys on an S3-API server that
// stores objects as files of a POSIX file system — versitygw's posix backend, MinIO —
// and so cannot hold a key that is both an object and a prefix of other keys ("a.zip"
// and "a.zip/x"). AWS S3 holds both. Such a write fails the same way until one of the
// keys is removed: [Classify] calls it Permanent.
type Conflict int

// The conflicts [KeyConflict] reports.
const (
	NoConflict Conflict = iota
	// ParentIsObject: an object exists at a prefix of the written key (writing "a.zip/x"
	// when "a.zip" exists).
	ParentIsObject
	// KeyIsPrefix: objects exist under the written key (writing "a.zip" when "a.zip/x"
	// exists).
	KeyIsPrefix
)

// conflictCodes are the API error codes of key conflicts, as the servers send them:
// versitygw v1.8.0 answers PutObject, CopyObject and CompleteMultipartUpload with 409
// ObjectParentIsFile, and PutObject and CopyObject with 409 ExistingObjectIsDirectory
// (seen against a running versitygw; its CompleteMultipartUpload onto a key with objects
// under it answers 500 InternalError, which stays Retryable); MinIO's are in its
// cmd/api-errors.go.
var conflictCodes = map[string]Conflict{
	"ObjectParentIsFile":            ParentIsObject, // versitygw, 409
	"XMinioParentIsObject":          ParentIsObject, // MinIO, 400
	"ExistingObjectIsDirectory":     KeyIsPrefix,    // versitygw, 409
	"XMinioObjectExistsAsDirectory": KeyIsPrefix,    // MinIO, 409
}

// KeyConflict says whether err is an API error of a key conflict, and which.
func KeyConflict(err error) Conflict {
	var api smithy.APIError
	if errors.As(err, &api) {
		return conflictCodes[api.ErrorCode()]
	}
	return NoConflict
}

// Classify decides by behaviour, not by concrete type:
//   - an error with a Permanent() bool method that says true (anywhere in its chain) is
//     Permanent;
//   - an AWS API error is Throttled or Permanent by its code (a key conflict, see
//     [KeyConflict], is Permanent);
//   - an error with a RetryableError() bool method that says false is Permanent;
//   - everything else (timeouts, connection resets, 5xx) is Retryable.
func Classify(err error) Class {
	if err == nil {
		return Retryable
	}
	var p interface{ Permanent() bool }
	if errors.As(err, &p) && p.Permanent() {
		return Permanent
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Retryable
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		code := api.ErrorCode()
		switch {
		case throttleCodes[code]:
			return Throttled
		case permanentCodes[code], conflictCodes[code] != NoConflict:
			return Permanent
		}
	}
	var r interface{ RetryableError() bool }
	if errors.As(err, &r) && !r.RetryableError() {
		return Permanent
	}
	return Retryable
}

// Policy is exponential backoff with full jitter: the n-th retry waits a uniformly random
// time in [Min, min(Cap, Base·2^(n-1))]. Throttled errors start from ThrottleBase, so a
// struggling downstream gets more room.
type Policy struct {
	Base         time.Duration // first retry's upper bound
	ThrottleBase time.Duration // first retry's upper bound after a throttle; default 4 x Base
	Cap          time.Duration // no retry waits longer
	Min          time.Duration // no retry waits less (SQS visibility has whole seconds)
	// Rand returns a float in [0, 1); nil means math/rand/v2. Tests inject their own.
	Rand func() float64
}

// DefaultPolicy waits up to 2 s, 4 s, 8 s … capped at 15 minutes, at least 1 s.
var DefaultPolicy = Policy{Base: 2 * time.Second, Cap: 15 * time.Minute, Min: time.Second}

// Delay is the wait before retry number attempt (1 for the first retry) of an error of
// class c. Attempts below 1 count as 1.
func (p Policy) Delay(attempt int, c Class) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	base := p.Base
	if c == Throttled {
		base = p.ThrottleBase
		if base == 0 {
			base = 4 * p.Base
		}
	}
	upper := p.Cap
	if shift := attempt - 1; shift < 62 {
		if grown := float64(base) * math.Pow(2, float64(shift)); grown < float64(p.Cap) {
			upper = time.Duration(grown)
		}
	}
	r := rand.Float64
	if p.Rand != nil {
		r = p.Rand
	}
	d := time.Duration(r() * float64(upper))
	if d < p.Min {
		d = p.Min
	}
	if d > p.Cap {
		d = p.Cap
	}
	return d
}

// MaxVisibility is SQS's upper bound on a message's visibility timeout (12 hours).
const MaxVisibility = 12 * time.Hour

// VisibilitySeconds turns a delay into an SQS visibility timeout: whole seconds, rounded
// up, within 0..12 h.
func VisibilitySeconds(d time.Duration) int32 {
	if d <= 0 {
		return 0
	}
	if d > MaxVisibility {
		d = MaxVisibility
	}
	return int32((d + time.Second - 1) / time.Second)
}
