package tcp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/testpki"
	"github.com/ferry-dr/ferry/store"
)

func TestTLS(t *testing.T) {
	p := testpki.New(t)
	srv, inbox, _ := insecureServer(t)
	srv.Insecure = false
	srv.TLS = serverTLS(t, p, false)
	addr, _ := startServer(t, srv)
	ctls := clientTLS(t, p.CAFile, "", "", "")
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, TLS: ctls}, nil)
	s := makeSegment(t, "app", 1, 1, 5, "x")
	if err := c.Put(context.Background(), "app/"+s.name, s.data); err != nil {
		t.Fatalf("Put over TLS: %v", err)
	}
	if !bytes.Equal(mustGet(t, inbox, "app/"+s.name), s.data) {
		t.Fatal("inbox copy differs")
	}

	t.Run("untrusted server certificate", func(t *testing.T) {
		other := testpki.New(t)
		ctls := clientTLS(t, other.CAFile, "", "", "")
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, TLS: ctls}, nil)
		err := c.Put(context.Background(), "app/"+s.name, s.data)
		t.Logf("error: %v", err)
		if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Put to an untrusted receiver: %v", err)
		}
	})
	t.Run("plaintext client", func(t *testing.T) {
		c := insecureClient(t, addr)
		err := c.Put(context.Background(), "app/"+s.name, s.data)
		t.Logf("error: %v", err)
		if err == nil || !strings.Contains(err.Error(), "TLS") {
			t.Fatalf("plaintext Put to a TLS receiver: %v, want an error mentioning TLS", err)
		}
	})
}

func TestTLSClientAgainstPlaintextServer(t *testing.T) {
	p := testpki.New(t)
	srv, _, _ := insecureServer(t)
	var serverLog ferrytest.LockedBuffer
	srv.Log = serverLog.Logger(slog.LevelDebug)
	addr, _ := startServer(t, srv)
	ctls := clientTLS(t, p.CAFile, "", "", "")
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, TLS: ctls}, nil)
	s := makeSegment(t, "app", 1, 1, 1, "x")
	if err := c.Put(context.Background(), "app/"+s.name, s.data); err == nil {
		t.Fatal("TLS Put to a plaintext receiver succeeded")
	}
	if !strings.Contains(serverLog.String(), "started a TLS handshake") {
		t.Fatalf("server log does not explain the TLS mismatch:\n%s", serverLog.String())
	}
}

func TestMutualTLS(t *testing.T) {
	p := testpki.New(t)
	inbox, _ := newInbox(t)
	var serverLog ferrytest.LockedBuffer
	srv := &Server{TLS: serverTLS(t, p, true), Inbox: inbox, Log: serverLog.Logger(slog.LevelDebug)} // no token: mTLS
	addr, _ := startServer(t, srv)
	s := makeSegment(t, "app", 1, 1, 5, "x")

	t.Run("client without certificate", func(t *testing.T) {
		ctls := clientTLS(t, p.CAFile, "", "", "")
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: "unused", TLS: ctls}, nil)
		err := c.Put(context.Background(), "app/"+s.name, s.data)
		t.Logf("error: %v", err)
		if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Put without a client certificate: %v", err)
		}
		wantInbox(t, inbox)
		// The server logs its side of the failed handshake on its own
		// goroutine, possibly after the client has seen the error.
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(serverLog.String(), "TLS handshake failed") || !strings.Contains(serverLog.String(), "peer=127.0.0.1:") {
			if time.Now().After(deadline) {
				t.Fatalf("server log lacks the failed handshake:\n%s", serverLog.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other := testpki.New(t)
		cert, key := other.Issue(t, "intruder", false)
		ctls := clientTLS(t, p.CAFile, cert, key, "")
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", TLS: ctls}, nil)
		err := c.Put(context.Background(), "app/"+s.name, s.data)
		t.Logf("error: %v", err)
		if !errors.Is(err, store.ErrPermanent) {
			t.Fatalf("Put with a foreign certificate: %v", err)
		}
	})
	t.Run("client with certificate", func(t *testing.T) {
		cert, key := p.Issue(t, "shipper", false)
		ctls := clientTLS(t, p.CAFile, cert, key, "localhost")
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", TLS: ctls}, nil)
		if err := c.Put(context.Background(), "app/"+s.name, s.data); err != nil {
			t.Fatalf("Put with a client certificate: %v", err)
		}
		if !bytes.Equal(mustGet(t, inbox, "app/"+s.name), s.data) {
			t.Fatal("inbox copy differs")
		}
	})
}

// clientTLS is LoadClientTLS that fails the test on error.
func clientTLS(t *testing.T, caFile, certFile, keyFile, serverName string) *tls.Config {
	t.Helper()
	cfg, err := LoadClientTLS(caFile, certFile, keyFile, serverName)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestLoadTLSErrorsNameTheFile(t *testing.T) {
	p := testpki.New(t)
	cert, key := p.Issue(t, "receiver", true)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name string
		load func() error
		file string
	}{
		{"server cert missing", func() error { _, err := LoadServerTLS(missing, key, ""); return err }, missing},
		{"server key missing", func() error { _, err := LoadServerTLS(cert, missing, ""); return err }, missing},
		{"client CA missing", func() error { _, err := LoadServerTLS(cert, key, missing); return err }, missing},
		{"server key is a cert", func() error { _, err := LoadServerTLS(cert, cert, ""); return err }, cert},
		{"CA file holds no cert", func() error { _, err := LoadClientTLS(key, "", "", ""); return err }, key},
		{"client cert without key", func() error { _, err := LoadClientTLS("", cert, "", ""); return err }, cert},
	}
	for _, tc := range tests {
		err := tc.load()
		if err == nil || !strings.Contains(err.Error(), tc.file) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.file)
		}
	}
	cfg, err := LoadServerTLS(cert, key, p.CAFile)
	if err != nil || cfg.MinVersion < 0x0304 || cfg.ClientCAs == nil {
		t.Fatalf("LoadServerTLS = %+v, %v", cfg, err)
	}
}

// With tls_client_names, a certificate the client CA signed gets through
// only if it is named in the list; another is refused at the handshake,
// and the receiver's log quotes the name it presented, truncated.
func TestMutualTLSClientNames(t *testing.T) {
	p := testpki.New(t)
	inbox, _ := newInbox(t)
	var serverLog ferrytest.LockedBuffer
	stls := serverTLS(t, p, true)
	if err := RequireClientNames(stls, []string{"Shipper-A", "shipper-c"}); err != nil {
		t.Fatal(err)
	}
	// Every refusal logged (not one per LogInterval): this test reads both.
	srv := &Server{TLS: stls, Inbox: inbox, Log: serverLog.Logger(slog.LevelDebug), LogInterval: time.Nanosecond}
	addr, _ := startServer(t, srv)
	put := func(name string, seq int) error {
		cert, key := p.Issue(t, name, false)
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", TLS: clientTLS(t, p.CAFile, cert, key, "localhost")}, nil)
		s := makeSegment(t, "app", 1, uint64(seq), 1, "x")
		return c.Put(context.Background(), "app/"+s.name, s.data)
	}
	if err := put("shipper-a", 1); err != nil {
		t.Fatalf("a listed name (other case): %v", err)
	}
	long := "shipper-b-" + strings.Repeat("z", 200)
	for _, name := range []string{"shipper-b", long} {
		err := put(name, 2)
		t.Logf("error: %v", err)
		if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "tls_client_names") {
			t.Fatalf("%.20s: %v, want a permanent refusal mentioning tls_client_names", name, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(serverLog.String(), `common name \"shipper-b\"`) || !strings.Contains(serverLog.String(), "shipper-b-zzzz") {
		if time.Now().After(deadline) {
			t.Fatalf("server log does not name the refused certificates:\n%s", serverLog.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(serverLog.String(), strings.Repeat("z", 100)) {
		t.Fatalf("the presented name is logged untruncated:\n%s", serverLog.String())
	}
	if !strings.Contains(serverLog.String(), "add its name there") {
		t.Errorf("no hint at tls_client_names in the log:\n%s", serverLog.String())
	}
	if err := put("shipper-c", 2); err != nil {
		t.Fatalf("the second listed name: %v", err)
	}
	if err := RequireClientNames(serverTLS(t, p, false), []string{"x"}); err == nil {
		t.Fatal("client names without a client CA: no error")
	}
}
