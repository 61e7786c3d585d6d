package ferrytest

import (
	"net"
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
