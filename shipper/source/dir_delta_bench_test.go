//go:build linux

package source

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDirChangeBytes measures the record bytes (framed, before
// compression) the source ships for changes to a file it has shipped,
// each change shipped on its own: 200-byte appends to a 1 MiB mailbox and
// 4 KiB patches of a 16 MiB index. b.N is not used: the figures are per
// change, over a fixed run (go test -run '^$' -bench DirChangeBytes
// -benchtime 1x ./shipper/source/).
func BenchmarkDirChangeBytes(b *testing.B) {
	for _, c := range []struct {
		name    string
		size    int
		changes int
		change  func(rng *rand.Rand, f *os.File, size int) error
	}{
		{"append-200B-to-1MiB", 1 << 20, 1000, func(rng *rand.Rand, f *os.File, size int) error {
			fi, err := f.Stat()
			if err == nil {
				_, err = f.WriteAt(benchText(rng, 200), fi.Size())
			}
			return err
		}},
		{"patch-4KiB-in-16MiB", 16 << 20, 100, func(rng *rand.Rand, f *os.File, size int) error {
			_, err := f.WriteAt(benchText(rng, 4<<10), int64(rng.IntN(size/(4<<10)))*(4<<10))
			return err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				root := b.TempDir()
				p := filepath.Join(root, "file")
				rng := rand.New(rand.NewPCG(1, 2))
				if err := os.WriteFile(p, benchText(rng, c.size), 0o600); err != nil {
					b.Fatal(err)
				}
				sink := &dirSink{}
				src := &Dir{Root: root, SpoolDir: b.TempDir(), Debounce: time.Millisecond, MaxDelay: 5 * time.Millisecond,
					Settle: time.Millisecond, Log: quiet}
				run := startDirSourceB(b, src, sink)
				waitShipped(b, sink, 0)
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				start, first := len(sink.records()), 0
				for i := range c.changes {
					if i == 1 {
						first = len(sink.records())
					}
					n := len(sink.records())
					time.Sleep(2 * time.Millisecond) // a new mtime
					if err := c.change(rng, f, c.size); err != nil {
						b.Fatal(err)
					}
					waitShipped(b, sink, n)
				}
				f.Close()
				run()
				total, firstBytes := 0, 0
				for i, r := range sink.records()[start:] {
					total += r.FramedSize()
					if start+i < first {
						firstBytes += r.FramedSize()
					}
				}
				rest := float64(total-firstBytes) / float64(c.changes-1)
				b.ReportMetric(float64(total), "bytes")
				b.ReportMetric(rest, "bytes/later-change")
				fmt.Fprintf(os.Stderr, "%s: %d changes, %d bytes shipped: the first %d, each later one %.0f\n", c.name, c.changes, total, firstBytes, rest)
			}
		})
	}
}

func benchText(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghij klmnopqrstuvwxyz\n"[rng.IntN(28)]
	}
	return b
}

// startDirSourceB runs src until the returned function is called.
func startDirSourceB(b *testing.B, src *Dir, sink *dirSink) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sink) }()
	return func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			b.Fatal(err)
		}
	}
}

// waitShipped waits until a record after the first n finishes "file".
func waitShipped(b *testing.B, sink *dirSink, n int) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		recs := sink.records()
		for _, r := range recs[n:] {
			if string(r.Key) != "file" {
				continue
			}
			switch r.Op {
			case "put", "append", "delta", "attr":
				return
			case "chunk":
				if len(r.Data) >= 61 && !bytes.Equal(r.Data[29:61], make([]byte, 32)) { // the last chunk carries the hash
					return
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
	b.Fatal("the change was not shipped")
}
