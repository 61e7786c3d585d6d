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
