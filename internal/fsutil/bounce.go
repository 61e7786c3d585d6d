package fsutil

import (
	"fmt"
	"io"
	"os"
)

// Large writes and reads of freshly allocated memory go through a few
// long-lived buffers ("bounce" buffers) instead of handing the kernel the
// caller's slice.
//
// Why: the first time the kernel touches a page of a process's memory it
// may pay far more than a copy, and a segment's bytes are usually in pages
// the Go runtime has just taken from the operating system (a 2-3 MiB
// segment assembled per seal, while the runtime's memory limit keeps
// returning freed pages). Measured on this project's 2-core virtual
// machines (paravirtualised page tables), write(2) of 2.6 MB from pages
// the process had just written: 14-28 ms; from a buffer written to
// before: 0.7-1.3 ms. ferry ship spent 0.33 s writing its 186 MB of
// segments per GiB of input that way, against 0.18 s for 1.13 GB of
// journal written from one reused buffer. A user-space copy into a buffer
// the kernel has seen costs well under a millisecond per segment.
//
// The buffers are held for the life of the process (at most bounceKeep of
// bounceSize each), not in a sync.Pool: the garbage collector empties
// pools, and a new buffer is fresh memory again.
const (
	bounceSize = 256 << 10
	bounceKeep = 4
	// bounceMin is the smallest write that goes through a bounce buffer;
	// a small one costs a few pages at most.
	bounceMin = 64 << 10
)

var bounceFree = make(chan *[]byte, bounceKeep)

func getBounce() *[]byte {
	select {
	case b := <-bounceFree:
		return b
	default:
		b := make([]byte, bounceSize)
		return &b
	}
}

func putBounce(b *[]byte) {
	select {
	case bounceFree <- b:
	default: // enough kept; this one goes to the GC
	}
}

// WriteBounced writes data to w with write, in pieces of up to 256 KiB
// copied into a long-lived buffer first (see above) when data is large.
// It returns the bytes written and the first error, as io.Writer does;
// a short write without an error is io.ErrShortWrite. write is called
// with the bounce buffer, never with data's memory (when data is large),
// and must not keep it.
func WriteBounced(write func([]byte) (int, error), data []byte) (int, error) {
	if len(data) < bounceMin {
		return write(data)
	}
	b := getBounce()
	defer putBounce(b)
	done := 0
	for done < len(data) {
		p := (*b)[:copy(*b, data[done:])]
		n, err := write(p)
		done += n
		if err != nil {
			return done, err
		}
		if n < len(p) {
			return done, io.ErrShortWrite
		}
	}
	return done, nil
}

// ReadFileBounced is os.ReadFile, reading through a long-lived buffer
// (see above) into the slice it returns.
func ReadFileBounced(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return readBounced(f, fi.Size())
}

// readBounced reads f, of size bytes when it was opened, to its end
// through a bounce buffer.
func readBounced(f *os.File, size int64) ([]byte, error) {
	if size < bounceMin {
		return io.ReadAll(f)
	}
	out := make([]byte, 0, size)
	b := getBounce()
	defer putBounce(b)
	for {
		n, err := f.Read(*b)
		out = append(out, (*b)[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// ReadFileInto is ReadFileBounced reading into buf when the file fits in
// its capacity: a reader that keeps buf from call to call (a sender,
// segment after segment) reads each file into memory the kernel has seen
// already, with no allocation. A file larger than cap(buf) is read into
// a new slice, through a bounce buffer. The result aliases buf when the
// file fits.
func ReadFileInto(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size > int64(cap(buf)) {
		return readBounced(f, size)
	}
	buf = buf[:size]
	if n, err := io.ReadFull(f, buf); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("read %s: %d bytes, shorter than its size %d when opened: %w", path, n, size, err)
		}
		return nil, err
	}
	// A file that grew since the Stat is read whole, as os.ReadFile would.
	var one [1]byte
	if n, _ := f.Read(one[:]); n > 0 {
		return ReadFileBounced(path)
	}
	return buf, nil
}
