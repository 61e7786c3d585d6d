package dirtree

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// The examples of docs/DIRTREE.md ("Appends and block deltas"), byte for
// byte, written out by hand.
func TestDeltaGolden(t *testing.T) {
	hello := sha256.Sum256([]byte("hello\n"))
	helloWorld := sha256.Sum256([]byte("hello\nworld\n"))
	h := DeltaHeader{Mode: 0o644, Mtime: 1735787045000000006, BaseSize: 6, BaseSHA256: hello, Size: 12, SHA256: helloWorld}
	hdr := "02" + "000001a4" + "1816c11eeef33206" + "0000000000000006" + hex.EncodeToString(hello[:]) +
		"000000000000000c" + hex.EncodeToString(helloWorld[:])
	app := AppendAppendRecord(nil, h, []byte("world\n"))
	if got, want := hex.EncodeToString(app), hdr+"776f726c640a"; got != want {
		t.Fatalf("append\n got %s\nwant %s", got, want)
	}
	d, err := ParseDelta(OpAppend, app)
	if err != nil || d.DeltaHeader != h || string(d.Tail) != "world\n" {
		t.Fatalf("ParseDelta(append) = %+v, %v", d, err)
	}

	// A 200-byte file of 64-byte blocks whose blocks 1 and 3 (the short
	// last one, 8 bytes) changed.
	h2 := DeltaHeader{Mode: 0o600, Mtime: 5, BaseSize: 200, BaseSHA256: hello, Size: 200, SHA256: helloWorld}
	blocks := append(bytes.Repeat([]byte{'b'}, 64), "last8..."...)
	del := AppendDeltaRecord(nil, h2, 64, []uint32{1, 3}, blocks)
	want := "02" + "00000180" + "0000000000000005" + "00000000000000c8" + hex.EncodeToString(hello[:]) +
		"00000000000000c8" + hex.EncodeToString(helloWorld[:]) +
		"00000040" + "00000002" + "00000001" + "00000003" + hex.EncodeToString(blocks)
	if got := hex.EncodeToString(del); got != want {
		t.Fatalf("delta\n got %s\nwant %s", got, want)
	}
	d, err = ParseDelta(OpDelta, del)
	if err != nil || d.DeltaHeader != h2 || d.BlockSize != 64 || len(d.Blocks) != 2 {
		t.Fatalf("ParseDelta(delta) = %+v, %v", d, err)
	}
	if off, b := d.Block(1); off != 192 || string(b) != "last8..." {
		t.Fatalf("block 1 at %d: %q", off, b)
	}
	if off, b := d.Block(0); off != 64 || !bytes.Equal(b, blocks[:64]) {
		t.Fatalf("block 0 at %d: %q", off, b)
	}
	// The put header parser (and so an older ferry) refuses both by version.
	for _, data := range [][]byte{app, del} {
		if _, _, err := ParseHeader(data); err == nil || !strings.Contains(err.Error(), "record header version 2; this ferry reads 1 (upgrade ferry)") {
			t.Fatalf("ParseHeader of a delta record: %v", err)
		}
	}
}

func TestParseDeltaRefuses(t *testing.T) {
	h := DeltaHeader{Mode: 0o644, BaseSize: 100, Size: 200}
	good := AppendDeltaRecord(nil, h, 64, []uint32{1, 2, 3}, make([]byte, 64+64+8))
	if _, err := ParseDelta(OpDelta, good); err != nil {
		t.Fatalf("good delta: %v", err)
	}
	badVersion := bytes.Clone(good)
	badVersion[0] = 1
	grow := func(base, size int64) DeltaHeader { return DeltaHeader{Mode: 0o644, BaseSize: base, Size: size} }
	cases := []struct {
		name, op, wantInErr string
		data                []byte
	}{
		{"other op", OpPut, "not append or delta", good},
		{"short", OpDelta, "shorter than the 93-byte header", good[:DeltaHeaderLen-1]},
		{"version", OpDelta, "delta record header version 1; this ferry reads 2", badVersion},
		{"mode", OpAppend, "bits beyond 07777", AppendAppendRecord(nil, DeltaHeader{Mode: 0o100644, BaseSize: 1, Size: 2}, []byte("x"))},
		{"oversize", OpAppend, "oversize record header", AppendAppendRecord(nil, grow(1, 1<<44+1), []byte("x"))},
		{"append shrinks", OpAppend, "does not grow the file", AppendAppendRecord(nil, grow(5, 5), nil)},
		{"append tail", OpAppend, "append carries 2 bytes, its header says 1", AppendAppendRecord(nil, grow(5, 6), []byte("xy"))},
		{"no block list", OpDelta, "no block list", AppendAppendRecord(nil, grow(5, 6), []byte("x"))},
		{"block size", OpDelta, "not a power of two", AppendDeltaRecord(nil, grow(200, 200), 100, []uint32{0}, make([]byte, 100))},
		{"block size small", OpDelta, "not a power of two", AppendDeltaRecord(nil, grow(200, 200), 32, []uint32{0}, make([]byte, 32))},
		{"list short", OpDelta, "lists 3 blocks", AppendDeltaRecord(nil, grow(200, 200), 64, []uint32{0, 1, 2}, nil)[:DeltaHeaderLen+8+4]},
		{"order", OpDelta, "out of order", AppendDeltaRecord(nil, grow(200, 200), 64, []uint32{1, 1}, make([]byte, 128))},
		{"past size", OpDelta, "past the 4 blocks", AppendDeltaRecord(nil, grow(200, 200), 64, []uint32{4}, make([]byte, 64))},
		{"content", OpDelta, "carries 63 bytes of blocks, its block list says 64", AppendDeltaRecord(nil, grow(200, 200), 64, []uint32{0}, make([]byte, 63))},
		{"uncovered growth", OpDelta, "carries 1 of the 2 blocks from offset 128", AppendDeltaRecord(nil, grow(130, 200), 64, []uint32{3}, make([]byte, 8))},
	}
	for _, c := range cases {
		_, err := ParseDelta(c.op, c.data)
		if err == nil || !strings.Contains(err.Error(), c.wantInErr) {
			t.Errorf("%s: ParseDelta: %v, want an error saying %q", c.name, err, c.wantInErr)
		}
	}
}

func TestBlockHasher(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 100) // 1000 bytes: 15 blocks of 64, one of 40
	for _, step := range []int{1, 7, 64, 1000} {
		b := NewBlockHasher(64)
		for off := 0; off < len(data); off += step {
			b.Write(data[off:min(off+step, len(data))])
		}
		sums := b.Sums()
		if len(sums) != 16*BlockHashLen {
			t.Fatalf("step %d: %d bytes of sums", step, len(sums))
		}
		for k := 0; k < 16; k++ {
			s := sha256.Sum256(data[k*64 : min(k*64+64, len(data))])
			if !bytes.Equal(sums[k*BlockHashLen:(k+1)*BlockHashLen], s[:BlockHashLen]) {
				t.Fatalf("step %d: block %d sum differs", step, k)
			}
		}
	}
	if s := NewBlockHasher(64).Sums(); len(s) != 0 {
		t.Fatalf("empty: %x", s)
	}
	for size, want := range map[int64]int{0: 1 << 10, 64<<10 - 1: 1 << 10, 64 << 10: 4 << 10, 4 << 20: 4 << 10, 4<<20 + 1: 8 << 10, 16 << 20: 16 << 10, 1 << 30: 64 << 10} {
		if got := DeltaBlockSize(size); got != want {
			t.Errorf("DeltaBlockSize(%d) = %d, want %d", size, got, want)
		}
	}
}

// FuzzParseDelta: no input makes the parser panic, and what it accepts
// encodes back to the same bytes and has its blocks within the file.
func FuzzParseDelta(f *testing.F) {
	h := DeltaHeader{Mode: 0o644, BaseSize: 100, Size: 200}
	f.Add(true, AppendDeltaRecord(nil, h, 64, []uint32{1, 2, 3}, make([]byte, 136)))
	f.Add(false, AppendAppendRecord(nil, h, make([]byte, 100)))
	f.Add(true, []byte{2})
	f.Fuzz(func(t *testing.T, delta bool, data []byte) {
		op := OpAppend
		if delta {
			op = OpDelta
		}
		d, err := ParseDelta(op, data)
		if err != nil {
			return
		}
		if d.Mode&^0o7777 != 0 || d.Size < 0 || d.Size > maxFileSize || d.BaseSize < 0 || d.BaseSize > maxFileSize {
			t.Fatalf("accepted %+v", d.DeltaHeader)
		}
		var re []byte
		if delta {
			for n := range d.Blocks {
				if off, b := d.Block(n); off+int64(len(b)) > d.Size || len(b) == 0 {
					t.Fatalf("block %d: %d bytes at %d past size %d", n, len(b), off, d.Size)
				}
			}
			re = AppendDeltaRecord(nil, d.DeltaHeader, d.BlockSize, d.Blocks, d.Data)
		} else {
			re = AppendAppendRecord(nil, d.DeltaHeader, d.Tail)
		}
		if !bytes.Equal(re, data) {
			t.Fatalf("re-encoded\n%x\nparsed from\n%x", re, data)
		}
		Describe(op, data)
	})
}
