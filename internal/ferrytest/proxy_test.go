package ferrytest

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestProxyCuts(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				b := make([]byte, 10)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
				}
			}()
		}
	}()
	p := StartProxy(t, ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	time.Sleep(100 * time.Millisecond)
	p.CutAll()
	if p.Cuts() == 0 {
		t.Fatal("no cuts")
	}
}

// FreeAddr's ports are outside the ephemeral range, so no outgoing
// connection can take one between a server's restarts, and free.
func TestFreeAddr(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		addr := FreeAddr(t)
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port < 10000 || port >= low {
			t.Fatalf("FreeAddr gave %s, outside [10000, %d)", addr, low)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr gave %s, which cannot be listened on: %v", addr, err)
		}
		ln.Close()
	}
}
