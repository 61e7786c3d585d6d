package tcp

import (
	"testing"

	"golang.org/x/time/rate"
)

// The window's cap and the client's own limit: the lower applies, and 0
// lifts the window's cap only.
func TestSetWindowLimit(t *testing.T) {
	for _, c := range []struct {
		own, window int64
		want        rate.Limit
	}{
		{0, 0, rate.Inf},
		{0, 1 << 20, 1 << 20},
		{4 << 20, 0, 4 << 20},
		{4 << 20, 1 << 20, 1 << 20},
		{4 << 20, 8 << 20, 4 << 20},
	} {
		cl, err := NewClient(ClientConfig{Addr: "127.0.0.1:1", Stream: "app", Token: testToken, Insecure: true, BandwidthLimit: c.own}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cl.SetWindowLimit(c.window)
		if got := cl.limiter.Limit(); got != c.want {
			t.Errorf("own limit %d, window cap %d: limiter at %v, want %v", c.own, c.window, got, c.want)
		}
		cl.SetWindowLimit(0)
		if got, want := cl.limiter.Limit(), rate.Limit(c.own); got != want && (c.own != 0 || got != rate.Inf) {
			t.Errorf("own limit %d, window cap lifted: limiter at %v", c.own, got)
		}
		cl.Close()
	}
}

// SetBandwidthLimit replaces the client's own limit (a reload of
// [tcp] bandwidth_limit); a window's cap still applies on top of it.
func TestSetBandwidthLimit(t *testing.T) {
	cl, err := NewClient(ClientConfig{Addr: "127.0.0.1:1", Stream: "app", Token: testToken, Insecure: true, BandwidthLimit: 4 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, c := range []struct {
		own, window int64
		want        rate.Limit
	}{
		{1 << 20, 0, 1 << 20},
		{1 << 20, 2 << 20, 1 << 20},
		{8 << 20, 2 << 20, 2 << 20},
		{0, 2 << 20, 2 << 20},
		{0, 0, rate.Inf},
		{512 << 10, 0, 512 << 10},
	} {
		cl.SetWindowLimit(c.window)
		cl.SetBandwidthLimit(c.own)
		if got := cl.limiter.Limit(); got != c.want {
			t.Errorf("own limit set to %d, window cap %d: limiter at %v, want %v", c.own, c.window, got, c.want)
		}
	}
}
