package dir_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// BenchmarkPutSegment measures a segment Put into a stream directory that
// already holds n segments of the same generation, each Put a new segment
// right after them. The new segment is removed again outside the timer, so
// the directory keeps n segments however long the benchmark runs. Run it on
// a real disk: TMPDIR decides where.
func BenchmarkPutSegment(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789"), 1024)
	for _, n := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("segments=%d", n), func(b *testing.B) {
			root := b.TempDir()
			s, err := dir.New(root)
			if err != nil {
				b.Fatal(err)
			}
			stream := filepath.Join(root, "app")
			if err := os.Mkdir(stream, 0o755); err != nil {
				b.Fatal(err)
			}
			for i := range uint64(n) {
				name := batch.SegmentName(1, 10*i+1, 10*i+10)
				if err := os.WriteFile(filepath.Join(stream, name), data, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			name := batch.SegmentName(1, 10*uint64(n)+1, 10*uint64(n)+10)
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for range b.N {
				if err := s.Put(b.Context(), "app/"+name, data); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.Remove(filepath.Join(stream, name)); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkPutFreshMemory is a sealed segment's Put as the shipper makes
// it: 2.5 MiB whose pages the process has just taken from the operating
// system and written (each segment is assembled in new memory), so the
// kernel touches them first in Put. It times the Put only; the pages are
// mapped and filled outside the timer.
func BenchmarkPutFreshMemory(b *testing.B) {
	const size = 5 << 19
	src := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	root := b.TempDir()
	s, err := dir.New(root)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := range uint64(b.N) {
		b.StopTimer()
		data, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			b.Fatal(err)
		}
		copy(data, src)
		name := "app/" + batch.SegmentName(1, 10*i+1, 10*i+10)
		b.StartTimer()
		if err := s.Put(b.Context(), name, data); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := syscall.Munmap(data); err != nil {
			b.Fatal(err)
		}
		if err := os.Remove(filepath.Join(root, name)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkListTreeManyStreams lists a store of 100 streams, each with 30
// segments and a generations/ directory holding one marker, as a
// many-stream receiver does on every poll.
func BenchmarkListTreeManyStreams(b *testing.B) {
	root := b.TempDir()
	s, err := dir.New(root)
	if err != nil {
		b.Fatal(err)
	}
	for st := range 100 {
		stream := filepath.Join(root, fmt.Sprintf("s-%03d", st))
		if err := os.MkdirAll(filepath.Join(stream, "generations"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stream, "generations", "0000000000000001"), []byte("g"), 0o644); err != nil {
			b.Fatal(err)
		}
		for i := range uint64(30) {
			name := batch.SegmentName(1, 10*i+1, 10*i+10)
			if err := os.WriteFile(filepath.Join(stream, name), []byte("x"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for range b.N {
		n := 0
		if err := s.ListTree(b.Context(), "", func(store.Object) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != 100*31 {
			b.Fatalf("listed %d objects, want %d", n, 100*31)
		}
	}
}
