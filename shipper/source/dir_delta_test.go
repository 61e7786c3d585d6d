//go:build linux

package source

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/treetest"
)

// applyDelta applies an append or delta record to the model, checking
// its base as the dir applier does.
func (m *dirModel) applyDelta(r batch.Record) {
	t := m.t
	key := string(r.Key)
	d, err := dirtree.ParseDelta(r.Op, r.Data)
	if err != nil {
		t.Fatalf("%s %q: %v", r.Op, key, err)
	}
	n := m.nodes[key]
	if n.Kind != "file" || int64(len(n.Content)) != d.BaseSize || sha256.Sum256([]byte(n.Content)) != d.BaseSHA256 {
		t.Fatalf("%s %q made against content the replica does not have (%d bytes, want %d)", r.Op, key, len(n.Content), d.BaseSize)
	}
	next := []byte(n.Content)
	if r.Op == dirtree.OpAppend {
		next = append(next, d.Tail...)
	} else {
		if d.Size > int64(len(next)) {
			next = append(next, make([]byte, d.Size-int64(len(next)))...)
		}
		next = next[:d.Size]
		for i := range d.Blocks {
			off, b := d.Block(i)
			copy(next[off:], b)
		}
	}
	if sha256.Sum256(next) != d.SHA256 {
		t.Fatalf("%s %q: the result does not have the record's sha256", r.Op, key)
	}
	m.nodes[key] = treetest.Node{Kind: "file", Mode: d.Mode, Mtime: d.Mtime, Content: string(next)}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// shipped returns the records shipped since n and the bytes they take
// framed (what max_record_size and the segments count).
func shipped(sink *dirSink, n int) ([]batch.Record, int) {
	recs := sink.records()[n:]
	size := 0
	for _, r := range recs {
		size += r.FramedSize()
	}
	return recs, size
}

func writeAt(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// A 1 MiB file that gains 100 bytes ships one append record of those 100
// bytes and its header; one rewritten with a different head and grown
// ships no append.
func TestDirSourceAppendShipsTheNewBytes(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "mbox")
	dirWrite(t, p, string(randomBytes(1, 1<<20)), 0o600)
	sink, src, m := startConverged(t, &Dir{Root: root, SpoolDir: t.TempDir()})
	n := len(sink.records())
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(randomBytes(2, 100))
	f.Close()
	src.converge(t, m)
	recs, size := shipped(sink, n)
	if len(recs) != 1 || recs[0].Op != dirtree.OpAppend || len(recs[0].Data) != dirtree.DeltaHeaderLen+100 {
		t.Fatalf("100 bytes appended to 1 MiB: shipped %d records (%d bytes), want one append of 100 bytes", len(recs), size)
	}
	t.Logf("100 bytes appended to a 1 MiB file: %d bytes shipped", size)

	// The same size and more, but the head differs: not an append.
	n = len(sink.records())
	b := randomBytes(3, 1<<20+300)
	dirWrite(t, p, string(b), 0o600)
	src.converge(t, m)
	recs, _ = shipped(sink, n)
	for _, r := range recs {
		if r.Op == dirtree.OpAppend {
			t.Fatalf("a rewritten file shipped as an append")
		}
	}
}

// A 4 MiB file with one 4 KiB block changed in place ships about that
// block, once the file has changed before (its first change builds the
// block map). A change of most of it ships the file whole.
func TestDirSourceDeltaShipsChangedBlocks(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "index")
	dirWrite(t, p, string(randomBytes(4, 4<<20)), 0o644)
	sink, src, m := startConverged(t, &Dir{Root: root, SpoolDir: t.TempDir()})
	writeAt(t, p, 100, []byte("first change"))
	src.converge(t, m)
	for i, off := range []int64{1<<20 + 8<<10, 3 << 20} {
		time.Sleep(30 * time.Millisecond) // a new mtime
		n := len(sink.records())
		writeAt(t, p, off, randomBytes(uint64(10+i), 4<<10))
		src.converge(t, m)
		recs, size := shipped(sink, n)
		if len(recs) != 1 || recs[0].Op != dirtree.OpDelta {
			t.Fatalf("one 4 KiB block changed: shipped %d records (%d bytes), want one delta", len(recs), size)
		}
		d, _ := dirtree.ParseDelta(dirtree.OpDelta, recs[0].Data)
		if len(d.Blocks) != 1 || len(d.Data) != 4<<10 || size > 4<<10+200 {
			t.Fatalf("one 4 KiB block changed: delta of %d blocks, %d bytes (%d framed)", len(d.Blocks), len(d.Data), size)
		}
		t.Logf("4 KiB changed in a 4 MiB file: %d bytes shipped", size)
	}
	// Half a file or more changed (600 KiB of 1 MiB, which would fit in
	// one record), or more than a record holds: the file goes whole.
	q := filepath.Join(root, "small")
	dirWrite(t, q, string(randomBytes(5, 1<<20)), 0o644)
	src.converge(t, m)
	writeAt(t, q, 0, []byte("first change"))
	src.converge(t, m)
	// A patched block and 100 bytes more (1 MiB: still 4 KiB blocks): a
	// delta of both blocks.
	n := len(sink.records())
	writeAt(t, q, 8<<10, []byte("patched"))
	writeAt(t, q, 1<<20, randomBytes(30, 100))
	src.converge(t, m)
	recs, _ := shipped(sink, n)
	if len(recs) != 1 || recs[0].Op != dirtree.OpDelta {
		t.Fatalf("a block patched and the file grown: shipped %d records, want one delta", len(recs))
	}
	if d, _ := dirtree.ParseDelta(dirtree.OpDelta, recs[0].Data); len(d.Blocks) != 2 || len(d.Data) != 4<<10+100 {
		t.Fatalf("a block patched and the file grown: delta of blocks %v, %d bytes", d.Blocks, len(d.Data))
	}
	for _, c := range []struct {
		p    string
		size int
	}{{q, 600 << 10}, {p, 3 << 20}} {
		n := len(sink.records())
		writeAt(t, c.p, 0, randomBytes(20, c.size))
		src.converge(t, m)
		recs, _ = shipped(sink, n)
		for _, r := range recs {
			if r.Op == dirtree.OpDelta {
				t.Fatalf("%d bytes of %s changed: shipped a delta; want the file whole", c.size, filepath.Base(c.p))
			}
		}
	}
}

// The index keeps block maps (snapshot version 2) and still reads a
// version 1 snapshot, which has none.
func TestDirIndexBlockMaps(t *testing.T) {
	dir := t.TempDir()
	x := newDirIndex(dir)
	if _, err := x.open(); err != nil {
		t.Fatal(err)
	}
	blocks := bytes.Repeat([]byte{7}, 3*dirtree.BlockHashLen)
	x.set("f", &dirEntry{Kind: dirKindFile, Mode: 0o644, Size: 9000, BlockSize: 4096, Blocks: blocks})
	x.set("g", &dirEntry{Kind: dirKindFile, Mode: 0o644, Size: 3})
	if err := x.persist(); err != nil {
		t.Fatal(err)
	}
	x.close()
	y := newDirIndex(dir)
	if _, err := y.open(); err != nil {
		t.Fatal(err)
	}
	y.close()
	if e := y.get("f"); e.BlockSize != 4096 || !bytes.Equal(e.Blocks, blocks) {
		t.Fatalf("block map after reload: %d %x", e.BlockSize, e.Blocks)
	}
	if e := y.get("g"); e.Blocks != nil || e.Size != 3 {
		t.Fatalf("g after reload: %+v", e)
	}

	// A version 1 snapshot of one file, as ferry before block maps wrote it.
	v1 := append([]byte(dirIndexMagic), 0, 0, 0, 1)
	v1 = binary.BigEndian.AppendUint64(v1, 7) // batches
	v1 = binary.BigEndian.AppendUint64(v1, 1) // count
	v1 = binary.BigEndian.AppendUint16(v1, 1)
	v1 = append(v1, 'h', byte(dirKindFile), 0)
	v1 = binary.BigEndian.AppendUint32(v1, 0o600)
	for _, v := range []uint64{11, 5, 12, 13} { // mtime, size, ino, ctime
		v1 = binary.BigEndian.AppendUint64(v1, v)
	}
	sum := sha256.Sum256([]byte("hello"))
	v1 = append(v1, sum[:]...)
	v1 = binary.BigEndian.AppendUint16(v1, 0)
	v1 = binary.BigEndian.AppendUint32(v1, crc32.Checksum(v1, dirCRC))
	old := t.TempDir()
	os.WriteFile(filepath.Join(old, dirIndexFile), v1, 0o644)
	z := newDirIndex(old)
	if _, err := z.open(); err != nil {
		t.Fatalf("version 1 snapshot: %v", err)
	}
	z.close()
	if e := z.get("h"); e == nil || e.Size != 5 || e.Hash != sum || e.Blocks != nil || z.batches != 7 {
		t.Fatalf("version 1 entry: %+v", e)
	}
}

// An append larger than a record goes as several, each made against the
// content the one before it makes (the model checks every base).
func TestDirSourceLargeAppendSplits(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "mbox")
	dirWrite(t, p, string(randomBytes(6, 200<<10)), 0o600)
	sink, src, m := startConverged(t, &Dir{Root: root, SpoolDir: t.TempDir(), ChunkSize: 64 << 10})
	n := len(sink.records())
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(randomBytes(7, 150<<10))
	f.Close()
	src.converge(t, m)
	recs, _ := shipped(sink, n)
	if len(recs) != 3 {
		t.Fatalf("150 KiB appended in records of 64 KiB: %d records", len(recs))
	}
	for _, r := range recs {
		if d, err := dirtree.ParseDelta(r.Op, r.Data); err != nil || len(d.Tail) > 64<<10 {
			t.Fatalf("%s record: %v", r.Op, err)
		}
	}
}
