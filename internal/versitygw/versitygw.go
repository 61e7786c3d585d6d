// Package versitygw starts a real S3 server, the Versity S3 gateway with its
// posix backend, for tests. Each Server owns a loopback port, a temporary
// directory and random root keys, so tests using it can run in parallel.
//
// The gateway binary is looked up in $FERRY_VERSITYGW, then $PATH, then
// $(go env GOPATH)/bin. When it is missing, Start fails the test (it never
// skips it): a storage test that silently vanishes is worse than a red one.
// Install it with:
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
package versitygw

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// InstallHint tells a developer how to get the gateway binary.
const InstallHint = "install it with `go install github.com/versity/versitygw/cmd/versitygw@v1.8.0` " +
	"or point $FERRY_VERSITYGW at the binary"

// startTimeout bounds how long Start waits for the gateway to answer.
const startTimeout = 10 * time.Second

// Server is a running versitygw process. Its fields are fixed for the
// lifetime of the Server, across Stop and Restart.
type Server struct {
	Endpoint  string // "http://127.0.0.1:PORT" ("https://…" for StartTLS)
	AccessKey string // root access key
	SecretKey string // root secret key
	Dir       string // posix backend root: one sub-directory per bucket
	CAFile    string // PEM certificate to trust; set only by StartTLS

	bin      string
	addr     string // 127.0.0.1:PORT
	certFile string
	keyFile  string
	logFile  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start launches a gateway on a free loopback port with a fresh posix root
// under t.TempDir() and waits (at most ~10 s) until it answers HTTP. No bucket
// exists yet; use CreateBucket. The process is killed on t.Cleanup. Start
// calls t.Fatalf if the binary is missing or the gateway does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS is Start with HTTPS: the gateway serves a freshly generated
// self-signed certificate for 127.0.0.1, written to s.CAFile.
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, useTLS bool) *Server {
	t.Helper()
	bin, err := findBinary()
	if err != nil {
		t.Fatalf("versitygw: %v; %s", err, InstallHint)
	}
	tmp := t.TempDir()
	s := &Server{
		AccessKey: "ferry" + randomHex(t, 6),
		SecretKey: randomHex(t, 20),
		Dir:       filepath.Join(tmp, "root"),
		bin:       bin,
		logFile:   filepath.Join(tmp, "versitygw.log"),
	}
	if err := os.Mkdir(s.Dir, 0o755); err != nil {
		t.Fatalf("versitygw: %v", err)
	}
	scheme := "http"
	if useTLS {
		scheme = "https"
		s.certFile, s.keyFile, s.CAFile = writeSelfSigned(t, tmp)
	}
	t.Cleanup(s.Stop)

	// A port picked by listening on :0 and closing can be taken by someone
	// else before the gateway binds it; try a few ports before giving up.
	var lastErr error
	for range 3 {
		s.addr = ferrytest.FreeAddr(t) // Restart keeps it
		s.Endpoint = scheme + "://" + s.addr
		if lastErr = s.launch(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("versitygw: %v; is %s a working versitygw? (%s)", lastErr, s.bin, InstallHint)
	return nil
}

// Stop kills the gateway and waits for it to exit. The data directory stays,
// so Restart brings the same buckets and objects back. Stop is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart stops the gateway if it is running and starts it again on the same
// port, directory and keys, like an S3 server coming back after an outage.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	// The old listening socket is gone once the process is reaped, but be
	// tolerant of a slow kernel.
	for range 3 {
		if err = s.launch(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("versitygw restart on %s: %v", s.addr, err)
}

// Client returns a minio client with the root keys, for setting up and
// inspecting buckets behind the code under test.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	opts := &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:       strings.HasPrefix(s.Endpoint, "https://"),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	}
	if s.CAFile != "" {
		tr, err := transportTrusting(s.CAFile)
		if err != nil {
			t.Fatalf("versitygw client: %v", err)
		}
		opts.Transport = tr
	}
	c, err := minio.New(s.addr, opts)
	if err != nil {
		t.Fatalf("versitygw client: %v", err)
	}
	return c
}

// CreateBucket creates the named bucket and fails the test if it cannot.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("versitygw: create bucket %s: %v", name, err)
	}
}

// Log returns what the gateway has written to stdout and stderr so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logFile)
	return string(b)
}

// launch starts the process on s.addr and waits until it answers.
func (s *Server) launch() error {
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	args := []string{"--port", s.addr, "--quiet"}
	if s.certFile != "" {
		args = append(args, "--cert", s.certFile, "--key", s.keyFile)
	}
	args = append(args, "posix", s.Dir)
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY="+s.AccessKey,
		"ROOT_SECRET_KEY="+s.SecretKey,
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()

	if err := s.waitReady(done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%w; gateway log:\n%s", err, tail(s.Log(), 2000))
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

// waitReady polls until the gateway answers a request signed with its own
// random keys, the process exits, or startTimeout passes. Requiring a signed
// success (not just any HTTP answer) makes sure the port is not held by
// some other server that grabbed it between ferrytest.FreeAddr and the bind.
func (s *Server) waitReady(exited <-chan struct{}) error {
	opts := &minio.Options{
		Creds:      credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:     strings.HasPrefix(s.Endpoint, "https://"),
		Region:     "us-east-1",
		MaxRetries: 1,
	}
	if s.CAFile != "" {
		tr, err := transportTrusting(s.CAFile)
		if err != nil {
			return err
		}
		opts.Transport = tr
	}
	client, err := minio.New(s.addr, opts)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ListBuckets(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if minio.ToErrorResponse(err).StatusCode != 0 {
			return fmt.Errorf("%s answers but rejects this gateway's keys (another server on the port?): %v", s.Endpoint, err)
		}
		select {
		case <-exited:
			return fmt.Errorf("gateway exited during start-up")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gateway did not answer on %s within %s: %v", s.Endpoint, startTimeout, err)
		}
	}
}

// findBinary looks in $FERRY_VERSITYGW, $PATH and $(go env GOPATH)/bin.
func findBinary() (string, error) {
	if p := os.Getenv("FERRY_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("$FERRY_VERSITYGW: %w", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var tried []string
	for _, dir := range gopathBins() {
		p := filepath.Join(dir, "versitygw")
		tried = append(tried, p)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("binary not found in $FERRY_VERSITYGW, $PATH or %s", strings.Join(tried, ", "))
}

// gopathBins lists candidate GOPATH bin directories, GOBIN first.
func gopathBins() []string {
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	for _, p := range filepath.SplitList(gopath) {
		dirs = append(dirs, filepath.Join(p, "bin"))
	}
	return dirs
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("versitygw: random key: %v", err)
	}
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// Running reports whether the gateway process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}
