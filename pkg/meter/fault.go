package meter

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Fault is what a proxy does to one request instead of forwarding it plainly: the
// failures an AWS SDK client meets in AWS, at the wire, so the SDK's own retries and
// the handlers' answers to what is left are what get tested.
type Fault int

const (
	Pass Fault = iota
	// Throttle answers at once with the service's throttling error (S3 503 SlowDown,
	// DynamoDB ProvisionedThroughputExceededException, SQS RequestThrottled, SNS
	// Throttling); the request never reaches the server.
	Throttle
	// ServerError answers at once with a 500 InternalError; never forwarded.
	ServerError
	// Reset closes the connection (TCP RST) before the request is forwarded.
	Reset
	// LostResponse forwards the request and then closes the connection instead of
	// answering: the call took effect, and its caller cannot know it did.
	LostResponse
	// Timeout holds the request, never forwarded, until its caller gives up or
	// [Proxy.Hang] passes, then closes the connection.
	Timeout
	// Slow forwards the request after [Proxy.SlowBy].
	Slow
	// Duplicate forwards the request twice, answering with the second answer: a send
	// whose first response was lost and that was sent again. Only for bodies the proxy
	// buffers (every service but S3); for S3 it is Pass.
	Duplicate
	numFaults
)

var faultNames = [...]string{"pass", "throttle", "server-error", "reset", "lost-response", "timeout", "slow", "duplicate"}

func (f Fault) String() string {
	if f >= 0 && int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// Faults lists every fault but Pass, in order.
func Faults() []Fault {
	out := make([]Fault, 0, numFaults-1)
	for f := Pass + 1; f < numFaults; f++ {
		out = append(out, f)
	}
	return out
}

// inject carries out f for the request; it returns true when the request has been
// dealt with (answered, dropped or forwarded) and the proxy must do nothing more.
func (p *Proxy) inject(f Fault, w http.ResponseWriter, r *http.Request, body []byte, forward func(http.ResponseWriter)) bool {
	switch f {
	case Throttle, ServerError:
		writeError(w, p.Service, f)
		return true
	case Reset:
		reset(w)
		return true
	case Timeout:
		hang := p.Hang
		if hang == 0 {
			hang = 5 * time.Second
		}
		select {
		case <-time.After(hang):
		case <-r.Context().Done():
		}
		reset(w)
		return true
	case Slow:
		by := p.SlowBy
		if by == 0 {
			by = 500 * time.Millisecond
		}
		select {
		case <-time.After(by):
		case <-r.Context().Done():
			return true
		}
	case LostResponse:
		forward(&discard{header: http.Header{}, status: http.StatusOK})
		reset(w)
		return true
	case Duplicate:
		if body != nil {
			forward(&discard{header: http.Header{}, status: http.StatusOK})
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
	}
	return false
}

// reset closes the client's connection with a TCP RST, or aborts it.
func reset(w http.ResponseWriter) {
	for {
		if u, ok := w.(interface{ Unwrap() http.ResponseWriter }); ok {
			w = u.Unwrap()
			continue
		}
		break
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// writeError answers with the service's own error for f, in its protocol's shape, so the
// SDK reads the code it would read from AWS.
func writeError(w http.ResponseWriter, service string, f Fault) {
	status := http.StatusInternalServerError
	switch service {
	case "S3":
		code, msg := "InternalError", "We encountered an internal error. Please try again."
		if f == Throttle {
			status, code, msg = http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate."
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>fileflow-chaos</RequestId></Error>`, code, msg)
	case "SNS":
		code := "InternalFailure"
		if f == Throttle {
			status, code = http.StatusBadRequest, "Throttling"
		}
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>injected by fileflow chaos</Message></Error><RequestId>fileflow-chaos</RequestId></ErrorResponse>`, code)
	default: // JSON protocols: DynamoDB, SQS
		prefix, code := "com.amazonaws.dynamodb.v20120810#", "InternalServerError"
		if service == "SQS" {
			prefix, code = "com.amazonaws.sqs#", "InternalError"
		}
		if f == Throttle {
			status, code = http.StatusBadRequest, "ProvisionedThroughputExceededException"
			if service == "SQS" {
				code = "RequestThrottled"
				w.Header().Set("X-Amzn-Query-Error", "RequestThrottled;Sender")
			}
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"__type":"%s%s","message":"injected by fileflow chaos"}`, prefix, code)
	}
}

// discard is a response writer that keeps the status and headers and drops the body:
// a forwarded request's answer that its caller never gets.
type discard struct {
	header http.Header
	status int
}

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(code int)        { d.status = code }
