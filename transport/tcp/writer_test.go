package tcp

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// A second shipper on a stream whose first is connected is refused at the
// handshake, naming the first (its client id, address, host, pid, spool);
// the refusal is retryable, and once the first has gone the second gets
// the stream.
func TestSecondShipperRefused(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	first := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true,
		ClientID: "ship-a", Site: "dc1", Host: "host-a", PID: 4242, Spool: "/var/lib/ferry/a"}, nil)
	s1 := makeSegment(t, "app", 1, 1, 1, "a")
	if err := put(t, first, s1); err != nil {
		t.Fatal(err)
	}
	first.mu.Lock()
	firstAddr := first.conn.l.conn.LocalAddr().String()
	first.mu.Unlock()
	second := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true,
		ClientID: "ship-b", Host: "host-b", Spool: "/var/lib/ferry/b", ReconnectMin: time.Millisecond}, nil)
	s2 := makeSegment(t, "app", 1, 2, 1, "b")
	err := put(t, second, s2)
	if err == nil || !errors.Is(err, ErrRefused) || !store.IsRetryable(err) || !strings.Contains(err.Error(), "code busy") {
		t.Fatalf("second shipper: %v; want a retryable busy refusal", err)
	}
	for _, w := range []string{`client_id "ship-a"`, `site "dc1"`, `host "host-a"`, "pid 4242", `spool "/var/lib/ferry/a"`, firstAddr, `client_id "ship-b"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not mention %q", err, w)
		}
	}
	// The first keeps the stream.
	if err := put(t, first, makeSegment(t, "app", 1, 2, 1, "a")); err != nil {
		t.Fatalf("first shipper after the refusal: %v", err)
	}

	first.Close()
	s3 := makeSegment(t, "app", 1, 3, 1, "b")
	err = store.Retry(t.Context(), store.RetryPolicy{Min: time.Millisecond, Max: 20 * time.Millisecond}, nil, "put", func(ctx context.Context) error {
		return second.Put(ctx, "app/"+s3.name, s3.data)
	})
	if err != nil {
		t.Fatalf("second shipper once the first has gone: %v", err)
	}
	wantInbox(t, inbox, s1.name, batch.SegmentName(1, 2, 2), s3.name)
}

// A new link of the same shipper (same client id, host, site and spool;
// the pid may differ, as after a restart) replaces its old one, which
// may be half-dead: the old one is closed.
func TestSameShipperReconnectReplaces(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	id := helloMsg{Version: 1, Stream: "app", Generation: 1, Token: testToken, ClientID: "ship-a", Host: "host-a", PID: 1, Spool: "/s"}
	stale := rawDial(t, addr)
	if f := rawHello(t, stale, id); f.typ != frameWelcome {
		t.Fatalf("answer %s %q, want WELCOME", typeName(f.typ), f.payload)
	}
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true,
		ClientID: "ship-a", Host: "host-a", PID: 2, Spool: "/s"}, nil)
	s := makeSegment(t, "app", 1, 1, 1, "a")
	if err := put(t, c, s); err != nil {
		t.Fatalf("reconnect of the same shipper: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := readUntilEOF(stale); done <- err }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the replaced link is still open")
	}
	wantInbox(t, inbox, s.name)

	// Another spool on the same host is another shipper.
	other := rawDial(t, addr)
	id.Spool = "/other"
	f := rawHello(t, other, id)
	var r refuseMsg
	if f.typ != frameRefuse || decodeJSON(f, &r) != nil || r.Code != codeBusy {
		t.Fatalf("answer %s %q, want REFUSE busy", typeName(f.typ), f.payload)
	}
}

// Many reconnects of one shipper, each replacing the last, leave one
// writer and lose nothing.
func TestReconnectStorm(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	var names []string
	for i := range 20 {
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, ClientID: "ship-a", PID: i + 1}, nil)
		s := makeSegment(t, "app", 1, uint64(i+1), 1, "x"+strconv.Itoa(i))
		if err := put(t, c, s); err != nil {
			t.Fatalf("reconnect %d: %v", i, err)
		}
		names = append(names, s.name)
	}
	wantInbox(t, inbox, names...)
}
