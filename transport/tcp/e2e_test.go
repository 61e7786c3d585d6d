package tcp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/transport/tcp"
)

// The wiring the CLI does: shipper -> Client ~~ Server -> inbox -> receiver.
// Records shipped over the link are applied, the applied watermark comes
// back to the shipper side, and a shipper with a fresh spool continues the
// stream (seq and hash chain) from what the receiver holds.
func TestShipperToReceiverOverLink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inboxDir, stateDir := t.TempDir(), t.TempDir()
	replica := filepath.Join(t.TempDir(), "replica.log")
	inbox, err := dir.New(inboxDir)
	if err != nil {
		t.Fatal(err)
	}

	var applied atomic.Pointer[receiver.Receiver]
	srv := &tcp.Server{
		Token: "tok", Insecure: true, Inbox: inbox, Stream: "app", Generation: 1,
		IOTimeout: time.Second, HeartbeatInterval: 50 * time.Millisecond,
		Applied: func(string) uint64 {
			if r := applied.Load(); r != nil {
				return r.Checkpoint().LastSeq
			}
			return 0
		},
	}
	ln, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()

	ap, err := apply.Parse("file:"+replica, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := receiver.Open(receiver.Config{Stream: "app", StateDir: stateDir, Store: inbox, Applier: ap,
		PollMin: 10 * time.Millisecond, PollMax: 50 * time.Millisecond}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	applied.Store(rcv)
	go rcv.Run(ctx)

	ship := func(from, to int) *tcp.Client {
		t.Helper()
		c, err := tcp.NewClient(tcp.ClientConfig{Addr: ln.Addr().String(), Stream: "app", Token: "tok", Insecure: true,
			HeartbeatInterval: 50 * time.Millisecond}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		sh, err := shipper.New(ctx, shipper.Config{
			Spool:   spool.Config{Dir: t.TempDir(), Stream: "app", Policy: batch.FlushPolicy{MaxRecords: 10}},
			Targets: []shipper.Target{{Name: "link", Store: c}},
			Retry:   store.RetryPolicy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		}, quiet)
		if err != nil {
			t.Fatalf("shipper.New: %v", err)
		}
		defer sh.Close()
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- sh.Run(rctx) }()
		for i := from; i <= to; i++ {
			seq, err := sh.Append(ctx, batch.Record{Data: fmt.Appendf(nil, "line %d\n", i)})
			if err != nil || seq != uint64(i) {
				t.Fatalf("Append #%d: seq %d, %v", i, seq, err)
			}
		}
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		if err := sh.Drain(dctx); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		rcancel()
		if err := <-done; err != nil {
			t.Fatalf("shipper Run: %v", err)
		}
		return c
	}

	c := ship(1, 25)
	defer c.Close()
	waitApplied(t, c, 25)

	// A shipper with a fresh spool finds seq 25 over the link and goes on.
	c2 := ship(26, 30)
	defer c2.Close()
	waitApplied(t, c2, 30)

	got, err := os.ReadFile(replica)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if string(got) != want.String() {
		t.Fatalf("replica:\n%s\nwant:\n%s", got, want.String())
	}
}

// waitApplied waits until the link reports seq applied.
func waitApplied(t *testing.T, c *tcp.Client, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, a := c.Watermarks()
		if a >= seq {
			if r < a {
				t.Fatalf("received watermark %d below applied %d", r, a)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("applied watermark %d (received %d), want %d", a, r, seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var quiet = slog.New(slog.DiscardHandler)

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
