// Package s3e2e runs the real ferry binary, as separate processes, against
// a real S3 server: versitygw, started per test on its own loopback port,
// optionally behind internal/versitygw's fault-injecting proxy, which also
// counts requests by kind.
//
// TestMain builds ./cmd/ferry once. ferry gets its S3 settings the way an
// operator would give them: the AWS_* environment (no config file) unless a
// test says otherwise. Every test owns its server (or proxy), bucket,
// prefixes and temp dirs, and every byte ferry prints in a test is checked
// for the secret keys when the test ends.
package s3e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/receiver"
)

// ferryBin is the binary TestMain built.
var ferryBin string

func TestMain(m *testing.M) {
	os.Exit(ferrytest.Main(m, &ferryBin))
}

// harness is one test's S3 server and bucket, the optional fault proxy in
// front of it, and every ferry run the test made.
type harness struct {
	t      *testing.T
	srv    *versitygw.Server
	proxy  *versitygw.FaultProxy // nil unless withProxy
	bucket string
	tmp    string

	mu      sync.Mutex
	secrets []string        // must never appear in ferry's output
	outputs []func() string // every run's stdout+stderr, read at cleanup
}

type harnessOption func(*harness)

// withProxy puts a FaultProxy between ferry and the server.
func withProxy(h *harness) {
	h.proxy = versitygw.NewFaultProxy(h.srv.Endpoint)
	h.t.Cleanup(h.proxy.Close)
}

// newHarness starts a server with one bucket named after the test.
func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, tmp: t.TempDir(), bucket: "ferry-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))}
	if len(h.bucket) > 63 {
		h.bucket = strings.TrimRight(h.bucket[:63], "-")
	}
	// Registered first, so it runs last: after the processes are killed
	// and their output is complete.
	t.Cleanup(h.checkNoSecrets)
	h.srv = versitygw.Start(t)
	h.secrets = append(h.secrets, h.srv.SecretKey)
	h.srv.CreateBucket(t, h.bucket)
	for _, o := range opts {
		o(h)
	}
	return h
}

// endpoint is the URL ferry talks to: the proxy if there is one.
func (h *harness) endpoint() string {
	if h.proxy != nil {
		return h.proxy.URL
	}
	return h.srv.Endpoint
}

// addSecret makes the end-of-test check look for s too (e.g. a wrong key
// a test hands to ferry).
func (h *harness) addSecret(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.secrets = append(h.secrets, s)
}

func (h *harness) recordOutput(f func() string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.outputs = append(h.outputs, f)
}

// checkNoSecrets fails the test if any ferry run printed a secret.
func (h *harness) checkNoSecrets() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, out := range h.outputs {
		text := out()
		for _, s := range h.secrets {
			if i := strings.Index(text, s); i >= 0 {
				lo, hi := max(0, i-200), min(len(text), i+len(s)+50)
				h.t.Errorf("ferry printed a secret key (%d characters) in its output:\n…%s…",
					len(s), strings.ReplaceAll(text[lo:hi], s, "<SECRET>"))
			}
		}
	}
}

// env is ferry's environment: this process's, minus every AWS_* variable,
// plus the server's endpoint, region and root keys, then overrides
// ("KEY=value"; "KEY=" with nothing after = removes KEY). The shared AWS
// files point nowhere, so nothing on the host leaks in.
func (h *harness) env(overrides ...string) []string {
	vars := map[string]string{
		"AWS_ENDPOINT_URL_S3":         h.endpoint(),
		"AWS_REGION":                  "us-east-1",
		"AWS_ACCESS_KEY_ID":           h.srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY":       h.srv.SecretKey,
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(h.tmp, "no-aws-credentials"),
		"AWS_CONFIG_FILE":             filepath.Join(h.tmp, "no-aws-config"),
	}
	for _, o := range overrides {
		k, v, _ := strings.Cut(o, "=")
		vars[k] = v
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	for k, v := range vars {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// writeConfig writes a TOML config file into the test's temp dir.
func (h *harness) writeConfig(name, body string) string {
	h.t.Helper()
	path := filepath.Join(h.tmp, name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return path
}

// cmd runs ferry with env (nil: h.env()), recording its output for the
// secret check.
func (h *harness) cmd(env []string) ferrytest.Cmd {
	if env == nil {
		env = h.env()
	}
	return ferrytest.Cmd{Bin: ferryBin, Env: env, RecordOutput: h.recordOutput}
}

// run runs ferry to completion with env (nil: h.env()) and stdin (nil: none).
func (h *harness) run(env []string, stdin io.Reader, args ...string) ferrytest.Result {
	h.t.Helper()
	return h.cmd(env).Run(h.t, stdin, args...)
}

// ferry runs ferry with the default environment and wants exit 0.
func (h *harness) ferry(stdin io.Reader, args ...string) ferrytest.Result {
	h.t.Helper()
	r := h.run(nil, stdin, args...)
	if r.Code != 0 {
		h.t.Fatalf("want exit 0:\n%s", r)
	}
	return r
}

// start starts a long-running ferry with env (nil: h.env()), killed on
// cleanup if still running.
func (h *harness) start(env []string, stdin io.Reader, args ...string) *ferrytest.Process {
	h.t.Helper()
	return h.cmd(env).Start(h.t, stdin, args...)
}

// stream is one stream under one prefix of the harness's bucket, with its
// own spool, state and replica.
type stream struct {
	h       *harness
	name    string
	prefix  string
	spool   string
	state   string
	replica string
}

func (h *harness) newStream(prefix, name string) *stream {
	dir := h.t.TempDir()
	return &stream{
		h:       h,
		name:    name,
		prefix:  prefix,
		spool:   filepath.Join(dir, "spool"),
		state:   filepath.Join(dir, "state"),
		replica: filepath.Join(dir, "replica.out"),
	}
}

// url is the stream's store URL.
func (s *stream) url() string { return "s3://" + s.h.bucket + "/" + s.prefix }

// dirKey is the object key prefix of the stream's segments.
func (s *stream) dirKey() string { return s.prefix + "/" + s.name + "/" }

func (s *stream) shipArgs(extra ...string) []string {
	return append([]string{"ship", "--store", s.url(), "--stream", s.name, "--spool", s.spool}, extra...)
}

func (s *stream) receiveArgs(extra ...string) []string {
	return append([]string{"receive", "--store", s.url(), "--stream", s.name, "--state", s.state,
		"--apply", "file:" + s.replica}, extra...)
}

// ship runs ferry ship with data on stdin and wants exit 0.
func (s *stream) ship(data []byte, extra ...string) ferrytest.Result {
	s.h.t.Helper()
	return s.h.ferry(bytes.NewReader(data), s.shipArgs(extra...)...)
}

// receiveOnce runs ferry receive --once and wants exit 0.
func (s *stream) receiveOnce(extra ...string) ferrytest.Result {
	s.h.t.Helper()
	return s.h.ferry(nil, s.receiveArgs(append([]string{"--once"}, extra...)...)...)
}

// wantReplica fails the test unless the replica is exactly want.
func (s *stream) wantReplica(want []byte, what string) {
	s.h.t.Helper()
	got, err := os.ReadFile(s.replica)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.h.t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		s.h.t.Fatalf("replica %s: %s", what, describeDiff(want, got))
	}
}

// objects lists the keys directly under dir (a key prefix ending in "/"),
// straight from the server (not through the proxy, so not counted).
func (h *harness) objects(dir string) []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	for o := range h.srv.Client(h.t).ListObjects(ctx, h.bucket, minio.ListObjectsOptions{Prefix: dir}) {
		if o.Err != nil {
			h.t.Fatalf("list s3://%s/%s: %v", h.bucket, dir, o.Err)
		}
		if !strings.HasSuffix(o.Key, "/") {
			keys = append(keys, o.Key)
		}
	}
	slices.Sort(keys)
	return keys
}

// object reads one object straight from the server.
func (h *harness) object(key string) []byte {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obj, err := h.srv.Client(h.t).GetObject(ctx, h.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		h.t.Fatalf("get s3://%s/%s: %v", h.bucket, key, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		h.t.Fatalf("read s3://%s/%s: %v", h.bucket, key, err)
	}
	return data
}

// segments returns the names of the stream's segments in the bucket, in
// order. Anything else under the stream's prefix that is not a sub-"dir"
// fails the test: ferry must not leave temp objects behind.
func (s *stream) segments() []string {
	s.h.t.Helper()
	var names []string
	for _, key := range s.h.objects(s.dirKey()) {
		name := strings.TrimPrefix(key, s.dirKey())
		if _, _, _, ok := batch.ParseSegmentName(name); !ok {
			s.h.t.Fatalf("unexpected object s3://%s/%s among the segments", s.h.bucket, key)
		}
		names = append(names, name)
	}
	return names
}

// lastStoredSeq is the highest seq any stored segment ends at.
func (s *stream) lastStoredSeq() uint64 {
	s.h.t.Helper()
	names := s.segments()
	if len(names) == 0 {
		return 0
	}
	_, _, last, _ := batch.ParseSegmentName(names[len(names)-1])
	return last
}

// checkContiguous explains how names fail to cover seq 1..total exactly
// once in order, or returns "".
func checkContiguous(names []string, total uint64) string {
	var next uint64 = 1
	for _, n := range names {
		_, first, last, ok := batch.ParseSegmentName(n)
		switch {
		case !ok:
			return fmt.Sprintf("%s is not a segment name", n)
		case first != next:
			return fmt.Sprintf("segment %s starts at seq %d, want %d (gap or overlap)", n, first, next)
		}
		next = last + 1
	}
	if next-1 != total {
		return fmt.Sprintf("segments end at seq %d, want %d (%d segments)", next-1, total, len(names))
	}
	return ""
}

// checkpoint is the part of the receiver's checkpoint the tests read.
type checkpoint struct {
	Generation uint32
	LastSeq    uint64
	Segment    string
}

// checkpoint reads the receiver's checkpoint as ferry status does; it is
// zero while there is none.
func (s *stream) checkpoint() checkpoint {
	s.h.t.Helper()
	cp, _, err := receiver.LoadCheckpoint(s.state)
	if err != nil {
		s.h.t.Fatal(err)
	}
	return checkpoint{Generation: cp.Generation, LastSeq: cp.LastSeq, Segment: cp.Segment}
}

// numbered returns n lines numbered from first. Line k carries k and some
// varied text, so a record lost, doubled or reordered shows in a compare.
func numbered(first, n int) []byte {
	words := []string{"GET /api/v1/orders", "POST /login", "user=alice", "user=bob", "status=200",
		"status=404", "latency_ms=12", "latency_ms=250", "cache=miss", "cache=hit", "db=primary"}
	var b bytes.Buffer
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, "%08d %s %s %x\n", i, words[i%len(words)], words[(i*7+3)%len(words)], uint32(i)*2654435761)
	}
	return b.Bytes()
}

// describeDiff says where got first differs from want.
func describeDiff(want, got []byte) string {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	if i == len(want) && i == len(got) {
		return "identical"
	}
	line := bytes.Count(want[:i], []byte("\n")) + 1
	around := func(b []byte) string {
		lo := bytes.LastIndexByte(b[:min(i, len(b))], '\n') + 1
		hi := min(len(b), lo+120)
		if j := bytes.IndexByte(b[lo:hi], '\n'); j >= 0 {
			hi = lo + j
		}
		return fmt.Sprintf("%q", b[lo:hi])
	}
	return fmt.Sprintf("want %d bytes, got %d; first difference at byte %d (line %d): want %s, got %s",
		len(want), len(got), i, line, around(want), around(got))
}
