package dirtree

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/hugepage"
)

// The example of docs/DIRTREE.md ("Header"), byte for byte, and one with
// every field far from zero, written out by hand.
func TestHeaderGolden(t *testing.T) {
	hello := sha256.Sum256([]byte("hello\n"))
	x := sha256.Sum256([]byte("x"))
	cases := []struct {
		name         string
		mode         uint32
		mtime        int64
		size, offset int64
		sum          *[32]byte
		want         string
	}{
		{"docs example", 0o644, 1735787045000000006, 6, 0, &hello,
			"01" + "000001a4" + "1816c11eeef33206" + "0000000000000006" + "0000000000000000" +
				"5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"},
		{"setuid, negative mtime, 1 TiB chunk", 0o4755, -5, 1 << 40, 77, &x,
			"01" + "000009ed" + "fffffffffffffffb" + "0000010000000000" + "000000000000004d" + hex.EncodeToString(x[:])},
		{"no sum", 0o755, 0, 0, 0, nil, "01" + "000001ed" + strings.Repeat("00", 24) + strings.Repeat("00", 32)},
	}
	for _, c := range cases {
		b := AppendHeader(nil, c.mode, c.mtime, c.size, c.offset, c.sum)
		if got := hex.EncodeToString(b); got != c.want {
			t.Fatalf("%s: header\n got %s\nwant %s", c.name, got, c.want)
		}
		if len(b) != HeaderLen {
			t.Fatalf("%s: %d bytes, HeaderLen %d", c.name, len(b), HeaderLen)
		}
		h, rest, err := ParseHeader(append(b, "tail"...))
		if err != nil {
			t.Fatalf("%s: ParseHeader: %v", c.name, err)
		}
		want := Header{Mode: c.mode, Mtime: c.mtime, Size: c.size, Offset: c.offset}
		if c.sum != nil {
			want.SHA256 = *c.sum
		}
		if h != want || string(rest) != "tail" {
			t.Fatalf("%s: ParseHeader = %+v, %q; want %+v, \"tail\"", c.name, h, rest, want)
		}
	}
}

func TestParseHeaderRefuses(t *testing.T) {
	good := AppendHeader(nil, 0o644, 1, 4, 0, nil)
	badVersion := bytes.Clone(good)
	badVersion[0] = 2
	cases := []struct {
		name, wantInErr string
		data            []byte
	}{
		{"empty", "shorter than the 61-byte header", nil},
		{"short", "shorter than the 61-byte header", good[:HeaderLen-1]},
		{"version", "header version 2", badVersion},
		{"file type bits", "bits beyond 07777", AppendHeader(nil, 0o100644, 1, 4, 0, nil)},
		{"bit 12", "bits beyond 07777", AppendHeader(nil, 0o10000, 1, 4, 0, nil)},
		{"top bit", "bits beyond 07777", AppendHeader(nil, 1<<31|0o644, 1, 4, 0, nil)},
		{"size", "oversize record header", AppendHeader(nil, 0o644, 1, 1<<44+1, 0, nil)},
		{"offset", "oversize record header", AppendHeader(nil, 0o644, 1, 4, 1<<44+1, nil)},
		{"negative size", "oversize record header", AppendHeader(nil, 0o644, 1, -1, 0, nil)},
	}
	for _, c := range cases {
		_, _, err := ParseHeader(c.data)
		if err == nil || !strings.Contains(err.Error(), c.wantInErr) {
			t.Errorf("%s: ParseHeader: %v, want an error saying %q", c.name, err, c.wantInErr)
		}
	}
	// The limits themselves are allowed; so is every permission bit.
	if _, _, err := ParseHeader(AppendHeader(nil, 0o7777, 1, 1<<44, 1<<44, nil)); err != nil {
		t.Fatalf("mode 07777, size and offset 2^44: %v", err)
	}
}

func TestCheckPayload(t *testing.T) {
	data := []byte("data")
	sum := sha256.Sum256(data)
	h := func(size, off int64, s *[32]byte) Header {
		hd := Header{Mode: 0o644, Size: size, Offset: off}
		if s != nil {
			hd.SHA256 = *s
		}
		return hd
	}
	cases := []struct {
		name, op  string
		h         Header
		payload   []byte
		wantInErr string // "" for none
	}{
		{"put", OpPut, h(4, 0, &sum), data, ""},
		{"put size", OpPut, h(5, 0, &sum), data, "header says 5"},
		{"put sum", OpPut, h(4, 0, &[32]byte{1}), data, "does not match the sha256"},
		{"chunk", OpChunk, h(10, 6, nil), data, ""},
		{"chunk empty", OpChunk, h(10, 0, nil), nil, "empty chunk"},
		{"chunk overrun", OpChunk, h(10, 8, nil), data, "overrun the file size"},
		{"attr", OpAttr, h(4, 0, &sum), nil, ""},
		{"attr payload", OpAttr, h(4, 0, &sum), data, "want none"},
		{"mkdir", OpMkdir, h(0, 0, nil), nil, ""},
		{"mkdir payload", OpMkdir, h(0, 0, nil), data, "want none"},
		{"symlink", OpSymlink, h(4, 0, nil), data, ""},
		{"symlink empty", OpSymlink, h(0, 0, nil), nil, "symlink target"},
		{"symlink size", OpSymlink, h(3, 0, nil), data, "symlink target"},
		{"symlink nul", OpSymlink, h(3, 0, nil), []byte("a\x00b"), "symlink target"},
		{"del", OpDel, h(0, 0, nil), nil, "carries no header"},
	}
	for _, c := range cases {
		err := CheckPayload(c.op, c.h, c.payload)
		switch {
		case c.wantInErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantInErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantInErr)):
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.wantInErr)
		}
	}
}

// FileRecords keeps every record within maxRecord framed bytes and within
// ChunkSize of content, and the records read back as the file.
func TestFileRecords(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+5)
	for _, c := range []struct {
		name      string
		n         int
		maxRecord int
		records   int
	}{
		{"empty", 0, 16 << 20, 1},
		{"one put", 100, 16 << 20, 1},
		{"put at ChunkSize", ChunkSize, 16 << 20, 1},
		{"chunks of ChunkSize", 3<<20 + 80, 16 << 20, 4},
		{"chunks under max_record_size", 1000, 400, 0},
	} {
		data := content[:c.n]
		recs, sum, err := FileRecords("dir/name", data, 0o640, 42, c.maxRecord)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if sum != sha256.Sum256(data) {
			t.Fatalf("%s: sum %x", c.name, sum)
		}
		if c.records > 0 && len(recs) != c.records {
			t.Fatalf("%s: %d records, want %d", c.name, len(recs), c.records)
		}
		var got []byte
		for i, r := range recs {
			if err := r.CheckSize(c.maxRecord); err != nil {
				t.Fatalf("%s record %d: %v", c.name, i, err)
			}
			if string(r.Key) != "dir/name" {
				t.Fatalf("%s record %d: key %q", c.name, i, r.Key)
			}
			h, payload, err := ParseHeader(r.Data)
			if err == nil {
				err = CheckPayload(r.Op, h, payload)
			}
			if err != nil {
				t.Fatalf("%s record %d (%s): %v", c.name, i, r.Op, err)
			}
			last := i == len(recs)-1
			wantOp, wantSum := OpChunk, [32]byte{}
			if len(recs) == 1 {
				wantOp = OpPut
			}
			if last {
				wantSum = sum
			}
			if r.Op != wantOp || h.Mode != 0o640 || h.Mtime != 42 || h.Size != int64(c.n) ||
				h.Offset != int64(len(got)) || h.SHA256 != wantSum || len(payload) > ChunkSize {
				t.Fatalf("%s record %d: %s %+v with %d bytes", c.name, i, r.Op, h, len(payload))
			}
			got = append(got, payload...)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: records carry %d bytes, want %d", c.name, len(got), len(data))
		}
	}
	// A chunk record at ChunkRoom is exactly maxRecord framed bytes.
	key, maxRecord := "a/b", 500
	room := ChunkRoom(key, maxRecord)
	r := batch.Record{Op: OpChunk, Key: []byte(key), Data: make([]byte, HeaderLen+room)}
	if r.FramedSize() != maxRecord {
		t.Fatalf("ChunkRoom %d gives a %d-byte record, want %d", room, r.FramedSize(), maxRecord)
	}
	if _, _, err := FileRecords(strings.Repeat("k", 400), []byte("x"), 0o644, 0, 400); err == nil {
		t.Fatal("FileRecords took a key with no room left for content")
	}
}

// ReadFileRecords gives exactly FileRecords' records, and refuses a
// reader that gives fewer or more bytes than the size it was told.
func TestReadFileRecordsIsFileRecords(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+5)
	for _, c := range []struct {
		n, maxRecord int
	}{{0, 16 << 20}, {100, 16 << 20}, {ChunkSize, 16 << 20}, {ChunkSize + 1, 16 << 20}, {3<<20 + 80, 16 << 20}, {1000, 400}, {3<<20 + 80, 70000}} {
		data := content[:c.n]
		want, wantSum := wantFileRecords("dir/name", data, 0o640, 42, c.maxRecord)
		got, sum, err := ReadFileRecords("dir/name", bytes.NewReader(data), int64(len(data)), 0o640, 42, c.maxRecord)
		if err != nil {
			t.Fatalf("%d bytes, max_record_size %d: %v", c.n, c.maxRecord, err)
		}
		if sum != wantSum || len(got) != len(want) {
			t.Fatalf("%d bytes, max_record_size %d: %d records with sum %x, want %d with %x", c.n, c.maxRecord, len(got), sum, len(want), wantSum)
		}
		for i := range want {
			if got[i].Op != want[i].Op || !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].Data, want[i].Data) {
				t.Fatalf("%d bytes, max_record_size %d: record %d differs", c.n, c.maxRecord, i)
			}
		}
	}
	data := content[:3<<20]
	if _, _, err := ReadFileRecords("k", bytes.NewReader(data[:len(data)-1]), int64(len(data)), 0o644, 0, 16<<20); err == nil || !strings.Contains(err.Error(), "shrank") {
		t.Fatalf("a short reader gave %v, want an error saying the file shrank", err)
	}
	if _, _, err := ReadFileRecords("k", bytes.NewReader(data), int64(len(data)-1), 0o644, 0, 16<<20); err == nil || !strings.Contains(err.Error(), "grew") {
		t.Fatalf("a long reader gave %v, want an error saying the file grew", err)
	}
	if _, _, err := ReadFileRecords(strings.Repeat("k", 400), bytes.NewReader([]byte("x")), 1, 0o644, 0, 400); err == nil {
		t.Fatal("ReadFileRecords took a key with no room left for content")
	}
}

// wantFileRecords builds a whole file's records as docs/DIRTREE.md states
// them, from the content in hand: one put when it fits in ChunkSize and
// in a record, else chunks at offsets 0, n, 2n, ..., the last carrying
// the file's hash.
func wantFileRecords(key string, content []byte, mode uint32, mtime int64, maxRecord int) ([]batch.Record, [32]byte) {
	sum := sha256.Sum256(content)
	limit := min(ChunkSize, ChunkRoom(key, maxRecord))
	if len(content) <= limit {
		data := AppendHeader(nil, mode, mtime, int64(len(content)), 0, &sum)
		return []batch.Record{{Op: OpPut, Key: []byte(key), Data: append(data, content...)}}, sum
	}
	var recs []batch.Record
	for off := 0; off < len(content); off += limit {
		part := content[off:min(off+limit, len(content))]
		var s *[32]byte
		if off+len(part) == len(content) {
			s = &sum
		}
		data := AppendHeader(nil, mode, mtime, int64(len(content)), int64(off), s)
		recs = append(recs, batch.Record{Op: OpChunk, Key: []byte(key), Data: append(data, part...)})
	}
	return recs, sum
}

// ReadFileRecords reads a large file into memory advised for huge pages
// (a push of a 16 MiB WAL segment otherwise spends more CPU faulting in
// fresh 4 KiB pages than reading), one buffer for all its records: each
// record's data ends at its own capacity, so appending to one cannot
// overwrite the next.
func TestReadFileRecordsHugePages(t *testing.T) {
	content := bytes.Repeat([]byte("WAL!"), (16<<20)/4)
	recs, _, err := ReadFileRecords("000000010000000000000001", bytes.NewReader(content), int64(len(content)), 0o600, 1, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := hugepage.Advised(recs[0].Data); err != nil || !ok {
		t.Errorf("a 16 MiB file's records are not in memory advised for huge pages (%v)", err)
	}
	for i, r := range recs {
		if cap(r.Data) != len(r.Data) {
			t.Fatalf("record %d: data of %d bytes has capacity %d", i, len(r.Data), cap(r.Data))
		}
	}
	next := bytes.Clone(recs[1].Data)
	_ = append(recs[0].Data, 'x')
	if !bytes.Equal(recs[1].Data, next) {
		t.Fatal("appending to record 0's data changed record 1's")
	}
}
