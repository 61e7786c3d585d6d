package ferrytest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FreeAddr returns a loopback address nothing listens on, for a server a
// test starts (and may kill and restart on the same address). The port
// is below the kernel's ephemeral range: a port from that range (what
// listening on :0 gives) can be taken between restarts as the local port
// of any outgoing connection on the machine, and the restarted server then
// fails with "address already in use" (seen in the chaos suite, with the
// other suites running beside it).
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	for range 50 {
		port := 10000 + rand.IntN(low-10000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	t.Fatalf("no free loopback port between 10000 and %d in 50 tries", low)
	return ""
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux:
// /proc/sys/net/ipv4/ip_local_port_range), 32768 where it cannot be read.
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if n, _ := fmt.Sscan(string(b), &lo, &hi); n == 2 && lo > 11000 {
			low = lo
		}
	}
	return low
}
