//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runProxy forwards every connection on -listen to -to and counts the
// payload bytes each way (TCP/IP headers are not counted). "up" is what
// the connecting side (the tool's source side) sent, "down" what came back.
// On SIGTERM or SIGINT it writes "up N\ndown N\nconns N\n" to -stats and
// exits; with -live it also keeps "up N\ndown N\n" current in a file,
// which treegen run reads to split the bytes by phase.
func runProxy(args []string) error {
	fl := flag.NewFlagSet("proxy", flag.ContinueOnError)
	listen := fl.String("listen", "127.0.0.1:0", "address to accept on")
	to := fl.String("to", "", "address to forward to")
	stats := fl.String("stats", "", "file for the counts, written at exit")
	addrFile := fl.String("addr-file", "", "file to write the listening address to once listening")
	live := fl.String("live", "", "file to keep the counts in while running (rewritten at most every 50 ms)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *to == "" || *stats == "" {
		return errors.New("want -to and -stats")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *addrFile != "" {
		if err := writeFileAtomic(*addrFile, ln.Addr().String()+"\n"); err != nil {
			return err
		}
	}
	var up, down, conns atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ln.Close()
	}()
	var open sync.Map
	if *live != "" {
		go func() {
			last := ""
			for range time.Tick(50 * time.Millisecond) {
				if cur := fmt.Sprintf("up %d\ndown %d\n", up.Load(), down.Load()); cur != last {
					if writeFileAtomic(*live, cur) == nil {
						last = cur
					}
				}
			}
		}()
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		conns.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			s, err := net.Dial("tcp", *to)
			if err != nil {
				fmt.Fprintf(os.Stderr, "treegen proxy: %v\n", err)
				return
			}
			defer s.Close()
			open.Store(c, s)
			defer open.Delete(c)
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn, n *atomic.Int64) {
				io.Copy(countingWriter{dst, n}, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(s, c, &up)
			go pipe(c, s, &down)
			<-done
			<-done
		}()
	}
	// Stopped: cut the connections still open (their bytes are counted as
	// they pass) and report.
	open.Range(func(k, v any) bool {
		k.(net.Conn).Close()
		v.(net.Conn).Close()
		return true
	})
	wg.Wait()
	return writeFileAtomic(*stats, fmt.Sprintf("up %d\ndown %d\nconns %d\n", up.Load(), down.Load(), conns.Load()))
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func writeFileAtomic(name, s string) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// runFreePort prints a loopback port that was free a moment ago.
func runFreePort(args []string) error {
	if len(args) != 0 {
		return errors.New("usage: treegen freeport")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	return nil
}
