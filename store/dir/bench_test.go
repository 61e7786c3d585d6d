package dir_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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
		if err := s.ListTree(b.Context(), "", nil, func(store.Object) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != 100*31 {
			b.Fatalf("listed %d objects, want %d", n, 100*31)
		}
	}
}

// BenchmarkListTree is a many-stream receiver's listing of the whole
// store per poll (issue 23): 100 stream directories of 20 segments each
// and two sub-directories of one object, listed every 200 ms. "idle":
// nothing changes between listings; "busy": 10 streams get a new segment
// before each (100 streams sealing every 2 s). cpu-us/op is the process's
// CPU time per listing (the writes and waits between listings are not
// counted). It takes 0.2 s per op: run it with -benchtime 20x or so.
func BenchmarkListTree(b *testing.B) {
	for _, busy := range []bool{false, true} {
		b.Run(map[bool]string{false: "idle", true: "busy"}[busy], func(b *testing.B) {
			root := b.TempDir()
			s, err := dir.New(root)
			if err != nil {
				b.Fatal(err)
			}
			const streams = 100
			next := make([]uint64, streams)
			put := func(i int) {
				name := fmt.Sprintf("s-%03d/%s", i, batch.SegmentName(1, next[i]+1, next[i]+10))
				next[i] += 10
				p := filepath.Join(root, filepath.FromSlash(name))
				if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			for i := range streams {
				for _, d := range []string{"generations", "watermarks"} {
					p := filepath.Join(root, fmt.Sprintf("s-%03d", i), d)
					if err := os.MkdirAll(p, 0o755); err != nil {
						b.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(p, "x"), []byte("x"), 0o644); err != nil {
						b.Fatal(err)
					}
				}
				for range 20 {
					put(i)
				}
			}
			var cpu time.Duration
			for op := 0; b.Loop(); op++ {
				b.StopTimer()
				if busy {
					for i := range 10 {
						put((op*10 + i) % streams)
					}
				}
				time.Sleep(200 * time.Millisecond)
				b.StartTimer()
				cpu0 := cpuTime()
				if err := s.ListTree(b.Context(), "", nil, func(store.Object) error { return nil }); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - cpu0
			}
			b.ReportMetric(float64(cpu)/float64(b.N)/1e3, "cpu-us/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
