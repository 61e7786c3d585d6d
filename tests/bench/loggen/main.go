// Command loggen writes deterministic, log-like input for ferry's throughput
// benchmark: a mix of nginx access lines, logfmt application lines, JSON
// event lines and the occasional multi-line stack trace.
//
//	loggen -size 1GiB -seed 1 -o /tmp/ferry-bench/input-1GiB.log
//
// The same -size and -seed always give the same bytes, whatever the number of
// CPUs: the output is cut into chunks of a fixed number of lines, and each
// chunk is generated from (seed, chunk index) alone, so chunks can be built in
// parallel and written in order. The output is exactly -size bytes and ends
// with a newline.
//
// The content is tuned to compress like real logs (zstd -1 around 4-8x):
// request ids are random hex, clients and paths follow skewed distributions
// over a vocabulary, numbers vary. It is not repeated text, which would make
// any compressor look fast.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

const (
	// linesPerChunk is fixed so that a chunk's first timestamp is known
	// without generating the chunks before it.
	linesPerChunk = 8192
	// lineStep is the average gap between two records' timestamps. Record j
	// of the whole file lies in [j*lineStep, (j+1)*lineStep) after the start,
	// so timestamps never go backwards, also across chunks.
	lineStep = 400 * time.Microsecond
)

// startTime is a fixed epoch: the output must not depend on the wall clock.
var startTime = time.Date(2025, time.March, 14, 9, 26, 53, 0, time.UTC)

func main() {
	sizeFlag := flag.String("size", "1GiB", "output size, e.g. 256MiB, 1GiB or a byte count")
	seed := flag.Uint64("seed", 1, "seed; the same size and seed give the same bytes")
	out := flag.String("o", "-", "output file (written to FILE.tmp, then renamed); - for stdout")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: loggen [-size 1GiB] [-seed N] [-o FILE]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loggen: -size: %v\n", err)
		os.Exit(2)
	}
	if err := run(*out, size, *seed); err != nil {
		fmt.Fprintf(os.Stderr, "loggen: %v\n", err)
		os.Exit(1)
	}
}

func run(path string, size int64, seed uint64) error {
	if path == "-" {
		return generate(os.Stdout, size, seed)
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := generate(f, size, seed); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	return os.Rename(tmp, path)
}

// generate writes exactly size bytes of log lines to w.
func generate(w io.Writer, size int64, seed uint64) error {
	if size == 0 {
		return nil
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	v := newVocab(seed)

	// Chunks are generated ahead by a bounded number of goroutines and
	// consumed in index order; buffers are recycled through free.
	window := 2 * runtime.GOMAXPROCS(0)
	free := make(chan []byte, window+1)
	var pending []chan []byte
	next := uint64(0)
	written := int64(0)
	for written < size {
		for len(pending) < window {
			ch := make(chan []byte, 1)
			var buf []byte
			select {
			case buf = <-free:
			default:
			}
			go func(idx uint64, buf []byte) { ch <- v.chunk(buf[:0], seed, idx) }(next, buf)
			pending = append(pending, ch)
			next++
		}
		buf := <-pending[0]
		pending = pending[1:]

		if rem := size - written; int64(len(buf)) >= rem {
			return finish(bw, buf, rem)
		}
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		written += int64(len(buf))
		select {
		case free <- buf:
		default:
		}
	}
	return bw.Flush()
}

// finish writes the first whole lines of buf and pads with one filler line so
// that exactly rem bytes are written and the output ends with a newline.
func finish(bw *bufio.Writer, buf []byte, rem int64) error {
	const (
		minPad = 64
		header = "# loggen: padding to the requested size "
	)
	cut := 0
	for i, c := range buf {
		if int64(i+1) > rem-minPad {
			break
		}
		if c == '\n' {
			cut = i + 1
		}
	}
	if _, err := bw.Write(buf[:cut]); err != nil {
		return err
	}
	n := int(rem) - cut
	pad := make([]byte, 0, n)
	if n > len(header)+1 {
		pad = append(pad, header...)
	}
	for len(pad) < n-1 {
		pad = append(pad, '.')
	}
	pad = append(pad, '\n')
	if _, err := bw.Write(pad); err != nil {
		return err
	}
	return bw.Flush()
}

// parseSize accepts a whole number with an optional unit: B, KiB, MiB, GiB,
// TiB, or kB, MB, GB, TB.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q: want a whole number and a unit, e.g. 256MiB", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	units := map[string]int64{
		"": 1, "b": 1,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	}
	mult, ok := units[strings.ToLower(strings.TrimSpace(t[i:]))]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)", s)
	}
	if hi, lo := bits.Mul64(uint64(n), uint64(mult)); hi != 0 || lo > 1<<62 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n * mult, nil
}
