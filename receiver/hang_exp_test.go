package receiver_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/receiver"
)

func TestExpHang(t *testing.T) {
	st, _ := newStore(t)
	put(t, st, chain(t, 1, 2000)...)
	cfg := testConfig(t, st, &receiver.ExecApplier{Command: `sleep 30; true`})
	r := open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		t.Logf("returned %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("hang")
	}
}
