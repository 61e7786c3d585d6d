package versitygw

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind classifies S3 requests for counting and fault matching. The proxy
// assumes path-style addressing (http://host/bucket/key), which is what
// minio-go uses for an IP endpoint.
type Kind string

const (
	Put    Kind = "PUT"    // PUT of an object or a bucket
	Get    Kind = "GET"    // GET of an object
	Head   Kind = "HEAD"   // HEAD of an object or a bucket (StatObject, BucketExists)
	List   Kind = "LIST"   // GET on a bucket: ListObjects
	Delete Kind = "DELETE" // DELETE of an object or a bucket
	Other  Kind = "OTHER"  // anything else: GetBucketLocation, POST, …
)

// Fault is what the proxy does to one matching request instead of (or on
// the way to) forwarding it. Build one with Status, SlowDown, DropRequest,
// DropResponse or Stall.
type Fault struct {
	mode   faultMode
	status int
	code   string
	n      int
	d      time.Duration
}

type faultMode int

const (
	modeStatus faultMode = iota + 1
	modeDropRequest
	modeDropResponse
	modeLoseResponse
	modeStall
)

// Status answers with an S3 XML error of the given HTTP status and code
// without forwarding. An empty code picks a usual one for the status
// (InternalError for 500, ServiceUnavailable for 503, …).
func Status(status int, code string) Fault {
	if code == "" {
		code = defaultCode(status)
	}
	return Fault{mode: modeStatus, status: status, code: code}
}

// SlowDown is S3's throttling answer: 503 with code SlowDown.
func SlowDown() Fault { return Status(http.StatusServiceUnavailable, "SlowDown") }

// DropRequest reads the first n bytes of the request body, then closes the
// connection without answering: the client sees a reset mid-upload. Nothing
// is forwarded.
func DropRequest(n int) Fault { return Fault{mode: modeDropRequest, n: n} }

// DropResponse forwards the request, then sends the response status line,
// headers and only the first n bytes of the body before closing the
// connection. For a PUT the object has been stored: only the answer is lost.
func DropResponse(n int) Fault { return Fault{mode: modeDropResponse, n: n} }

// LoseResponse forwards the request, then closes the connection without
// sending any of the answer: for a PUT, the object is stored but the client
// cannot know it.
func LoseResponse() Fault { return Fault{mode: modeLoseResponse} }

// Stall holds the request for d (or until the client gives up), then
// forwards it normally.
func Stall(d time.Duration) Fault { return Fault{mode: modeStall, d: d} }

func (f Fault) String() string {
	switch f.mode {
	case modeStatus:
		return fmt.Sprintf("status %d %s", f.status, f.code)
	case modeDropRequest:
		return fmt.Sprintf("drop request after %d body bytes", f.n)
	case modeDropResponse:
		return fmt.Sprintf("drop response after %d body bytes", f.n)
	case modeLoseResponse:
		return "lose response"
	case modeStall:
		return fmt.Sprintf("stall %s", f.d)
	}
	return "no fault"
}

// Request is one request as the proxy saw it.
type Request struct {
	Kind   Kind
	Method string
	Path   string     // URL path: "/bucket/key"
	Query  url.Values // e.g. list-type, prefix, delimiter, start-after
	Fault  string     // the injected fault, "" if forwarded untouched
}

type rule struct {
	kind  Kind
	left  int
	fault Fault
}

// FaultProxy is an HTTP reverse proxy in front of an S3 server that counts
// requests by Kind, records every complete PUT body, and injects programmed
// faults. It is safe for concurrent use.
type FaultProxy struct {
	URL  string // "http://127.0.0.1:PORT": use as the S3 endpoint
	Addr string // "127.0.0.1:PORT"

	srv    *httptest.Server
	target *url.URL
	rp     *httputil.ReverseProxy
	closed chan struct{}
	once   sync.Once

	mu     sync.Mutex
	rules  []*rule
	counts map[Kind]int
	log    []Request
	bodies map[string][][]byte
}

// NewFaultProxy starts a proxy forwarding to target (an http:// endpoint
// such as Server.Endpoint). Call Close when done, typically via t.Cleanup.
func NewFaultProxy(target string) *FaultProxy {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		panic(fmt.Sprintf("versitygw.NewFaultProxy: target %q is not an http:// endpoint", target))
	}
	p := &FaultProxy{
		target: u,
		closed: make(chan struct{}),
		counts: map[Kind]int{},
		bodies: map[string][][]byte{},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // the Host header is covered by the SigV4 signature
		},
		ErrorLog: log.New(io.Discard, "", 0), // a stopped backend gives 502s; tests expect them
	}
	p.srv = httptest.NewServer(p)
	p.URL = p.srv.URL
	p.Addr = p.srv.Listener.Addr().String()
	return p
}

// Close stops the proxy, cutting short any stalled requests.
func (p *FaultProxy) Close() {
	p.once.Do(func() { close(p.closed) })
	p.srv.CloseClientConnections()
	p.srv.Close()
}

// Inject makes the next n requests of the given kind suffer f. Rules are
// consumed in the order they were added.
func (p *FaultProxy) Inject(kind Kind, n int, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &rule{kind: kind, left: n, fault: f})
}

// ClearFaults drops all pending rules.
func (p *FaultProxy) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Pending reports how many injected faults have not been used yet.
func (p *FaultProxy) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.rules {
		n += r.left
	}
	return n
}

// Count returns how many requests of kind the proxy has received, faulted
// or not.
func (p *FaultProxy) Count(kind Kind) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[kind]
}

// Counts returns a copy of all counters.
func (p *FaultProxy) Counts() map[Kind]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[Kind]int, len(p.counts))
	for k, v := range p.counts {
		m[k] = v
	}
	return m
}

// Requests returns every request received since the start or the last
// ResetCounts, in arrival order.
func (p *FaultProxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.log...)
}

// ResetCounts zeroes the counters and forgets recorded requests and bodies.
func (p *FaultProxy) ResetCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[Kind]int{}
	p.log = nil
	p.bodies = map[string][][]byte{}
}

// Bodies returns the payload of every object PUT the proxy read completely
// for "bucket/key", in arrival order, whether it was then faulted or
// forwarded. aws-chunked (streaming SigV4) bodies are decoded, so two
// attempts carrying the same data compare equal even though their chunk
// signatures differ.
func (p *FaultProxy) Bodies(bucketKey string) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.bodies[bucketKey]...)
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, bucketKey := classify(r)
	f, faulty := p.take(r, kind)

	if faulty && f.mode == modeDropRequest {
		_, _ = io.CopyN(io.Discard, r.Body, int64(f.n))
		hangUp(w)
		return
	}

	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the client went away mid-body
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if kind == Put && bucketKey != "" {
		p.record(bucketKey, decodePayload(r.Header, body))
	}

	if faulty {
		switch f.mode {
		case modeStall:
			select {
			case <-time.After(f.d):
			case <-r.Context().Done():
				return
			case <-p.closed:
				hangUp(w)
				return
			}
		case modeStatus:
			writeS3Error(w, r, f.status, f.code)
			return
		case modeDropResponse:
			p.forwardTruncated(w, r, f.n)
			return
		case modeLoseResponse:
			p.forwardTruncated(w, r, -1)
			return
		}
	}
	p.rp.ServeHTTP(w, r)
}

// take records the request and returns the fault it must suffer, if any.
func (p *FaultProxy) take(req *http.Request, kind Kind) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[kind]++
	entry := Request{Kind: kind, Method: req.Method, Path: req.URL.Path, Query: req.URL.Query()}
	for _, r := range p.rules {
		if r.kind == kind && r.left > 0 {
			r.left--
			entry.Fault = r.fault.String()
			p.log = append(p.log, entry)
			return r.fault, true
		}
	}
	p.log = append(p.log, entry)
	return Fault{}, false
}

func (p *FaultProxy) record(bucketKey string, payload []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bodies[bucketKey] = append(p.bodies[bucketKey], payload)
}

// forwardTruncated sends r to the target and relays the status, headers and
// the first n body bytes of its answer, then closes the connection. With n
// < 0 it relays nothing at all.
func (p *FaultProxy) forwardTruncated(w http.ResponseWriter, r *http.Request, n int) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = p.target.Scheme
	out.URL.Host = p.target.Host
	out.Host = r.Host
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		hangUp(w)
		return
	}
	full, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	if n < 0 {
		hangUp(w)
		return
	}
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %s\r\n", resp.Status)
	resp.Header.Del("Transfer-Encoding")
	resp.Header.Set("Content-Length", strconv.Itoa(len(full)))
	resp.Header.Set("Connection", "close")
	_ = resp.Header.Write(buf)
	buf.WriteString("\r\n")
	if r.Method != http.MethodHead {
		buf.Write(full[:min(n, len(full))])
	}
	_ = buf.Flush()
}

// hangUp closes the client connection without an HTTP answer.
func hangUp(w http.ResponseWriter) {
	if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
		conn.Close()
	}
}

func writeS3Error(w http.ResponseWriter, r *http.Request, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>fault injected by ferry's test proxy</Message>`+
		`<Resource>%s</Resource><RequestId>ferry-fault</RequestId></Error>`, code, r.URL.Path)
}

func defaultCode(status int) string {
	switch status {
	case http.StatusInternalServerError:
		return "InternalError"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailable"
	case http.StatusTooManyRequests:
		return "TooManyRequests"
	case http.StatusBadGateway:
		return "BadGateway"
	case http.StatusGatewayTimeout:
		return "GatewayTimeout"
	}
	return "InjectedFault"
}

// classify returns the request's Kind and, for object requests, "bucket/key".
func classify(r *http.Request) (Kind, string) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(path, "/")
	objectKey := ""
	if bucket != "" && key != "" {
		objectKey = bucket + "/" + key
	}
	switch r.Method {
	case http.MethodPut:
		return Put, objectKey
	case http.MethodHead:
		return Head, objectKey
	case http.MethodDelete:
		return Delete, objectKey
	case http.MethodGet:
		switch {
		case objectKey != "":
			return Get, objectKey
		case bucket != "" && !r.URL.Query().Has("location"):
			return List, ""
		}
	}
	return Other, objectKey
}

// decodePayload strips aws-chunked framing ("<hex size>;chunk-signature=…
// \r\n<data>\r\n", ending with a zero-size chunk and optional trailers) from
// a streaming-SigV4 body. Other bodies are returned as they are.
func decodePayload(h http.Header, body []byte) []byte {
	if !strings.HasPrefix(h.Get("X-Amz-Content-Sha256"), "STREAMING-") &&
		!strings.Contains(h.Get("Content-Encoding"), "aws-chunked") {
		return body
	}
	br := bufio.NewReader(bytes.NewReader(body))
	var out bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return body // not well-formed; keep the raw bytes for the test to see
		}
		sizeHex, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		size, err := strconv.ParseInt(sizeHex, 16, 64)
		if err != nil || size < 0 {
			return body
		}
		if size == 0 {
			return out.Bytes()
		}
		if _, err := io.CopyN(&out, br, size); err != nil {
			return body
		}
		if crlf, err := br.ReadString('\n'); err != nil || strings.TrimRight(crlf, "\r\n") != "" {
			return body
		}
	}
}
