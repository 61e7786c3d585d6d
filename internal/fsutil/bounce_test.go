package fsutil

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// overlaps says whether p's memory lies within data's.
func overlaps(p, data []byte) bool {
	if len(p) == 0 || len(data) == 0 {
		return false
	}
	ps, ds := uintptr(unsafe.Pointer(&p[0])), uintptr(unsafe.Pointer(&data[0]))
	return ps < ds+uintptr(len(data)) && ds < ps+uintptr(len(p))
}

// TestWriteBouncedCopies: a large write reaches the writer whole and in
// order, but never as the caller's memory (the point of the bounce
// buffer: fresh pages are dear for the kernel to read); a small one is
// passed through as it is.
func TestWriteBouncedCopies(t *testing.T) {
	for _, size := range []int{0, 10, bounceMin - 1, bounceMin, bounceSize, bounceSize + 1, 3*bounceSize + 12345} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + i>>9)
		}
		var got bytes.Buffer
		calls := 0
		n, err := WriteBounced(func(p []byte) (int, error) {
			calls++
			if size >= bounceMin && overlaps(p, data) {
				t.Fatalf("size %d: write was handed the caller's memory", size)
			}
			if len(p) > bounceSize {
				t.Fatalf("size %d: a piece of %d bytes, over %d", size, len(p), bounceSize)
			}
			return got.Write(p)
		}, data)
		if err != nil || n != size {
			t.Fatalf("size %d: WriteBounced = %d, %v", size, n, err)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("size %d: the writer got other bytes", size)
		}
		if want := max(1, (size+bounceSize-1)/bounceSize); size >= bounceMin && calls != want {
			t.Fatalf("size %d: %d writes, want %d", size, calls, want)
		}
	}
}

// TestWriteBouncedErrors: the first error stops the write and the count
// says how far it got; a short write without an error is one too.
func TestWriteBouncedErrors(t *testing.T) {
	data := make([]byte, 3*bounceSize)
	boom := errors.New("disk full")
	calls := 0
	n, err := WriteBounced(func(p []byte) (int, error) {
		calls++
		if calls == 2 {
			return 100, boom
		}
		return len(p), nil
	}, data)
	if !errors.Is(err, boom) || n != bounceSize+100 || calls != 2 {
		t.Fatalf("WriteBounced = %d, %v after %d calls; want %d, %v after 2", n, err, calls, bounceSize+100, boom)
	}
	n, err = WriteBounced(func(p []byte) (int, error) { return len(p) - 1, nil }, data)
	if !errors.Is(err, io.ErrShortWrite) || n != bounceSize-1 {
		t.Fatalf("short write: WriteBounced = %d, %v", n, err)
	}
}

func TestReadFileBounced(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 100, bounceMin, 2*bounceSize + 7} {
		data := bytes.Repeat([]byte{byte(size), 1, 2, 3, 4}, size/5+1)[:size]
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFileBounced(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: ReadFileBounced = %d bytes, %v", size, len(got), err)
		}
	}
	if _, err := ReadFileBounced(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
}

// TestReadFileInto: a file that fits in the caller's buffer is read into
// it (the result aliases it), a larger one into a new slice; both whole.
func TestReadFileInto(t *testing.T) {
	dir := t.TempDir()
	buf := make([]byte, 0, 3*bounceSize)
	for _, size := range []int{0, 100, 2*bounceSize + 7, 3 * bounceSize, 3*bounceSize + 1} {
		data := bytes.Repeat([]byte{byte(size), 1, 2, 3, 4}, size/5+1)[:size]
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFileInto(p, buf)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: ReadFileInto = %d bytes, %v", size, len(got), err)
		}
		if fits := size <= cap(buf); size > 0 && overlaps(got, buf[:cap(buf)]) != fits {
			t.Fatalf("size %d, buffer of %d: read into the buffer %v, want %v", size, cap(buf), !fits, fits)
		}
	}
	if _, err := ReadFileInto(filepath.Join(dir, "missing"), buf); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
}
