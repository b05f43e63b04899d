package meter

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// Proxy is a reverse proxy in front of one local AWS-API server that counts the
// requests passing through by operation, at the wire: it sees what separate processes
// (the handler binaries) call, which an in-process middleware cannot. It keeps the
// client's Host header, so SigV4 signatures still verify at the server.
type Proxy struct {
	Service string // "S3", "SQS", "DynamoDB"
	Calls   *Calls
	// Delay, if set, returns how long to hold a request before forwarding it (fault
	// injection for tests: a slow dependency).
	Delay func(r *http.Request) time.Duration
	// DelayBody is Delay for requests told apart by their body (JSON protocols): the
	// body is buffered for it.
	DelayBody func(r *http.Request, body []byte) time.Duration
	// After, if set, is called once the server has answered, with its status code and
	// response headers.
	After func(r *http.Request, status int, header http.Header)
	// Record, if set, is called once the server has answered with the request, its body
	// where the operation is told by it (JSON and query protocols, S3 DeleteObjects;
	// nil for other S3 requests, whose bodies are objects) and the status code.
	Record func(r *http.Request, body []byte, status int)
	// Fault, if set, picks a fault to inject into each request (op is its operation, as
	// counted); Pass forwards it plainly. Hang bounds a Timeout (default 5 s), SlowBy is
	// a Slow request's delay (default 500 ms).
	Fault  func(r *http.Request, op string) Fault
	Hang   time.Duration
	SlowBy time.Duration

	srv *http.Server
	URL string // the proxy's endpoint, http://127.0.0.1:PORT
}

// StartProxy listens on a free loopback port and forwards to target.
func StartProxy(service, target string, calls *Calls) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Service: service, Calls: calls, URL: "http://" + l.Addr().String()}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // the signature covers Host
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if p.DelayBody != nil || (p.Record != nil && bodyTellsOperation(p.Service, r)) || (p.Fault != nil && p.Service != "S3") {
			var err error
			body, err = io.ReadAll(io.LimitReader(r.Body, 16<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		op := Operation(p.Service, r)
		if op == http.MethodPost && body != nil {
			if form, err := url.ParseQuery(string(body)); err == nil && form.Get("Action") != "" {
				op = form.Get("Action") // the query protocol (SNS) names it in the body
			}
		}
		p.Calls.add(p.Service + "." + op)
		if p.DelayBody != nil {
			if d := p.DelayBody(r, body); d > 0 {
				select {
				case <-time.After(d):
				case <-r.Context().Done():
					return // the client gave up (its function was stopped): never forwarded
				}
			}
		}
		if p.Delay != nil {
			if d := p.Delay(r); d > 0 {
				select {
				case <-time.After(d):
				case <-r.Context().Done():
					return
				}
			}
		}
		forward := func(w http.ResponseWriter) {
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			rp.ServeHTTP(sw, r)
			if p.After != nil {
				p.After(r, sw.status, sw.Header())
			}
			if p.Record != nil {
				p.Record(r, body, sw.status)
			}
		}
		if p.Fault != nil {
			if f := p.Fault(r, op); f != Pass && p.inject(f, w, r, body, forward) {
				return
			}
		}
		forward(w)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

// bodyTellsOperation: the request's body names its operation or resources (every
// protocol but S3's REST, and S3's DeleteObjects, whose body lists the keys).
func bodyTellsOperation(service string, r *http.Request) bool {
	if service != "S3" {
		return true
	}
	return r.Method == http.MethodPost && r.URL.Query().Has("delete")
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap returns the wrapped writer (http.ResponseController, and a fault's reset).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush passes flushes through (streaming responses).
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Close stops the proxy.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return p.srv.Shutdown(ctx)
}

// Operation names the API operation of a request: from X-Amz-Target for the JSON
// protocols (SQS, DynamoDB), from the method, path and query for S3.
func Operation(service string, r *http.Request) string {
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		if i := strings.LastIndexByte(t, '.'); i >= 0 {
			return t[i+1:]
		}
		return t
	}
	if service != "S3" {
		if a := r.URL.Query().Get("Action"); a != "" {
			return a
		}
		return r.Method
	}
	q := r.URL.Query()
	segs := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)
	hasKey := len(segs) == 2 && segs[1] != ""
	switch r.Method {
	case http.MethodGet:
		switch {
		case !hasKey && segs[0] == "":
			return "ListBuckets"
		case !hasKey:
			return "ListObjectsV2"
		case q.Has("uploadId"):
			return "ListParts"
		default:
			return "GetObject"
		}
	case http.MethodHead:
		if !hasKey {
			return "HeadBucket"
		}
		return "HeadObject"
	case http.MethodPut:
		switch {
		case !hasKey:
			return "CreateBucket"
		case q.Has("partNumber") && r.Header.Get("X-Amz-Copy-Source") != "":
			return "UploadPartCopy"
		case q.Has("partNumber"):
			return "UploadPart"
		case r.Header.Get("X-Amz-Copy-Source") != "":
			return "CopyObject"
		default:
			return "PutObject"
		}
	case http.MethodPost:
		switch {
		case q.Has("uploads"):
			return "CreateMultipartUpload"
		case q.Has("uploadId"):
			return "CompleteMultipartUpload"
		case q.Has("delete"):
			return "DeleteObjects"
		}
	case http.MethodDelete:
		if q.Has("uploadId") {
			return "AbortMultipartUpload"
		}
		return "DeleteObject"
	}
	return r.Method
}
