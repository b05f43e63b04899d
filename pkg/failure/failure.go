// Package failure is the typed error a file's failure carries from where it happens to
// the ledger and the job's report: a code (S3 Batch Operations' ErrorCode column), the
// HTTP status that goes with it, and whether retrying can help. Codes are never guessed
// from an error's text: the code that knows what failed says so.
package failure

import (
	"errors"
	"fmt"
)

// The codes fileflow reports.
const (
	Rejected         = "Rejected"         // a processing rule refuses the file (403)
	NoRule           = "NoMatchingRule"   // no processing rule matches the file (400)
	TooLarge         = "EntityTooLarge"   // over a rule's or the archive limits' size (413)
	NoSuchKey        = "NoSuchKey"        // the object is gone (404)
	AccessDenied     = "AccessDenied"     // the function may not read it (403)
	Superseded       = "Superseded"       // a newer revision of the key was processed instead (412)
	Corrupt          = "CorruptContent"   // the content cannot be read (a broken gzip, a bad archive member) (422)
	InvalidEntry     = "InvalidEntry"     // a manifest row, zip entry or task entry that is not a file (400)
	OutputConflict   = "OutputConflict"   // the output key cannot be written where another object is (409)
	KeyTooLong       = "KeyTooLongError"  // the output key would be over S3's 1,024 bytes (400)
	ProcessorFailed  = "PermanentFailure" // a processor failed for good (400)
	RetriesExhausted = "RetriesExhausted" // transient failures until the last receive (500)
	Internal         = "InternalError"    // a panic or an unexpected state (500)
)

// status is each code's HTTP status in a report.
var status = map[string]int{
	Rejected: 403, NoRule: 400, TooLarge: 413, NoSuchKey: 404, AccessDenied: 403, Superseded: 412,
	Corrupt: 422, InvalidEntry: 400, OutputConflict: 409, KeyTooLong: 400, ProcessorFailed: 400, RetriesExhausted: 500, Internal: 500,
}

// Error is a failure with its report code. It is permanent unless made with [Transient].
type Error struct {
	Code      string
	Err       error
	transient bool
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Permanent says whether retrying cannot help (pkg/retry asks by this method).
func (e *Error) Permanent() bool { return !e.transient }

// Status is the code's HTTP status.
func (e *Error) Status() int { return StatusOf(e.Code) }

// New is a permanent failure with a code.
func New(code string, err error) error { return &Error{Code: code, Err: err} }

// Newf is [New] with a formatted message.
func Newf(code, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// Transient is a failure with a code that retrying may still fix (a missing key that
// may yet appear): the code is reported if it is still failing on the last receive.
func Transient(code string, err error) error { return &Error{Code: code, Err: err, transient: true} }

// StatusOf is a code's HTTP status (500 for a code it does not know).
func StatusOf(code string) int {
	if s, ok := status[code]; ok {
		return s
	}
	return 500
}

// Coder is an error of another package that knows its code (so that package need not
// import this one).
type Coder interface{ FailureCode() string }

// CodeOf is err's code and status: of the outermost [*Error] or [Coder] in its chain,
// else def.
func CodeOf(err error, def string) (string, int) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch c := e.(type) {
		case *Error:
			return c.Code, StatusOf(c.Code)
		case Coder:
			return c.FailureCode(), StatusOf(c.FailureCode())
		}
	}
	return def, StatusOf(def)
}
