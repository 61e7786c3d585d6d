package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// startProxy runs a proxy with l in front of an echo server.
func startProxy(t *testing.T, l link) string {
	t.Helper()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &proxy{target: echo.Addr().String(), link: l}
	go p.serve(ln)
	return ln.Addr().String()
}

// roundTrip sends data through addr to the echo server, half-closes, reads
// everything back and returns how long that took.
func roundTrip(t *testing.T, addr string, data []byte) time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, want the %d sent", len(got), len(data))
	}
	return took
}

// A small message pays the delay twice (there and back); a large stream
// pays it about twice too, not once per chunk.
func TestDelayWithoutSerialising(t *testing.T) {
	const delay = 50 * time.Millisecond
	addr := startProxy(t, link{delay: delay, queue: 64 << 20})
	if took := roundTrip(t, addr, []byte("ping")); took < 2*delay {
		t.Errorf("a round trip took %v, want at least 2×%v", took, delay)
	}
	data := make([]byte, 16<<20) // >= 256 chunks: a sleep per read would take 12 s or more
	rand.Read(data)
	took := roundTrip(t, addr, data)
	if took < 2*delay {
		t.Errorf("16 MiB round trip took %v, want at least 2×%v", took, delay)
	}
	if took > 8*time.Second { // loaded machines took 3 s; serialised it is 12 s or more
		t.Errorf("16 MiB round trip took %v: the delay serialises the stream", took)
	}
}

func TestBandwidthCap(t *testing.T) {
	addr := startProxy(t, link{rate: 4 << 20, queue: 64 << 20})
	data := make([]byte, 1<<20)
	// 1 MiB each way at 4 MiB/s: the two directions overlap, so about 0.25 s.
	if took := roundTrip(t, addr, data); took < 230*time.Millisecond {
		t.Errorf("1 MiB at 4 MiB/s took %v, want at least 0.25 s", took)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "50MB": 50e6, "40 MiB": 40 << 20, "512KiB": 512 << 10, "7": 7} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "5XB", "-1"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) succeeded", in)
		}
	}
}
