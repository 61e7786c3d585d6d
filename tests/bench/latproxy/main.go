// Command latproxy is a TCP proxy that adds network latency, the way
// netem's delay does, for benchmarks that need a store "across a network"
// on one machine (restore.sh puts it between ferry restore and versitygw).
//
//	latproxy -target 127.0.0.1:9000 -delay 10ms [-bw 50MB] [-addr-file F]
//
// Every chunk read from one side is written to the other side delay later.
// Each direction has a timestamped queue: the reader stamps a chunk with
// its release time and goes on reading, and the writer waits for each
// chunk's own time, so a stream keeps its throughput and only gains the
// delay (a sleep per read would instead cap a stream at one read per
// delay). A round trip therefore costs 2×delay more than on loopback.
//
// -bw caps each direction of each connection at that many bytes per
// second, as a serialising link would (a chunk leaves once the previous
// one has, plus its own transmission time); a real WAN stream is also held
// back by its congestion window, so one connection rarely fills the pipe.
// The queue holds at most -queue bytes per direction; beyond that the
// reader waits (backpressure, like a full socket buffer).
//
// It listens on -listen (default a free loopback port), writes its address
// to -addr-file when given, and runs until killed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "`host:port` to listen on")
	target := flag.String("target", "", "`host:port` to forward to (required)")
	delay := flag.Duration("delay", 10*time.Millisecond, "one-way delay added to every chunk in each direction")
	bw := flag.String("bw", "0", "per-connection, per-direction cap in bytes per second (e.g. 50MB, 40MiB; 0: none)")
	queue := flag.String("queue", "64MiB", "bytes held in flight per direction before the reader waits")
	addrFile := flag.String("addr-file", "", "write the listening address to this `file`")
	flag.Parse()
	if *target == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	rate, err := parseBytes(*bw)
	if err != nil {
		log.Fatalf("latproxy: -bw: %v", err)
	}
	q, err := parseBytes(*queue)
	if err != nil || q < chunkSize {
		log.Fatalf("latproxy: -queue %q: want a size of at least %d bytes", *queue, chunkSize)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("latproxy: %v", err)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			log.Fatalf("latproxy: %v", err)
		}
	}
	p := &proxy{target: *target, link: link{delay: *delay, rate: rate, queue: q}}
	log.Fatalf("latproxy: %v", p.serve(ln))
}

// chunkSize is the largest read forwarded as one chunk.
const chunkSize = 64 << 10

// link is what one direction of a connection goes through.
type link struct {
	delay time.Duration // added to every chunk
	rate  int64         // bytes per second; 0: no cap
	queue int64         // bytes in flight before the reader waits
}

type proxy struct {
	target string
	link   link
}

func (p *proxy) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				log.Printf("latproxy: %v", err)
				return
			}
			defer up.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); p.link.pipe(up, c) }()
			go func() { defer wg.Done(); p.link.pipe(c, up) }()
			wg.Wait()
		}()
	}
}

// chunk is bytes read at one time and due at another.
type chunk struct {
	data []byte // nil: the source ended (err says how)
	due  time.Time
	err  error
}

// pipe copies src to dst, each chunk delayed by l.delay (and paced by
// l.rate), until src ends; then it half-closes dst, also delayed. On a
// write error it closes both so the other direction ends too.
func (l link) pipe(dst, src net.Conn) {
	slots := int(max(l.queue/chunkSize, 1)) // a chunk holds a slot from read to write
	ch := make(chan chunk, slots)
	free := make(chan struct{}, slots)
	for range slots {
		free <- struct{}{}
	}
	done := make(chan struct{})
	go func() {
		defer close(ch)
		var last time.Time // when the previous chunk finished "transmitting"
		for {
			select {
			case <-free:
			case <-done:
				return
			}
			buf := make([]byte, chunkSize)
			n, err := src.Read(buf)
			now := time.Now()
			if l.rate > 0 && n > 0 {
				last = maxTime(now, last).Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
				now = last
			}
			if n > 0 {
				ch <- chunk{data: buf[:n], due: now.Add(l.delay)}
			}
			if err != nil {
				ch <- chunk{due: maxTime(now, last).Add(l.delay), err: err}
				return
			}
		}
	}()
	defer close(done)
	for c := range ch {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if c.data == nil {
			if tc, ok := dst.(*net.TCPConn); ok && errors.Is(c.err, io.EOF) {
				tc.CloseWrite()
				return
			}
			dst.Close()
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			src.Close()
			dst.Close()
			return
		}
		free <- struct{}{}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// parseBytes reads "0", "50MB", "40MiB", "512KiB", "1000000".
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want a whole number and a unit, e.g. 50MB", s)
	}
	mult := map[string]int64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown unit %q", s, unit)
	}
	return n * mult, nil
}
