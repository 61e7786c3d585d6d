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
	"slices"
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

// A file shipped whole lately has its block map in memory (dir_recent.go):
// its first change is already a delta of the 1 KiB blocks it touched. One
// whose mtime was old when it shipped (a scan of an old tree) keeps no map
// and its first change goes whole; so does a recent file's after a restart
// (the maps are memory only), and from then on its index map (files of 4
// KiB and more get one at their first change) makes the next change a
// delta.
func TestDirSourceRecentFileFirstChangeIsDelta(t *testing.T) {
	base := t.TempDir()
	root, spool := filepath.Join(base, "tree"), t.TempDir()
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	sink := &dirSink{}
	cfg := &Dir{Root: root, SpoolDir: spool}
	src := startDirSource(t, cfg, sink)
	m := newDirModel(t)
	src.converge(t, m)
	msg, msg2, old := filepath.Join(root, "msg"), filepath.Join(root, "msg2"), filepath.Join(root, "old")
	dirWrite(t, msg, string(randomBytes(40, 20<<10)), 0o644)
	dirWrite(t, msg2, string(randomBytes(41, 20<<10)), 0o644)
	// old arrives by a move from outside the tree with an mtime of a day ago.
	outside := filepath.Join(base, "old")
	dirWrite(t, outside, string(randomBytes(42, 20<<10)), 0o644)
	day := time.Now().Add(-24 * time.Hour)
	if err := os.Chtimes(outside, day, day); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(outside, old); err != nil {
		t.Fatal(err)
	}
	src.converge(t, m)

	patch := func(p string, seed uint64) (batch.Record, int) {
		t.Helper()
		time.Sleep(30 * time.Millisecond) // a new mtime
		n := len(sink.records())
		writeAt(t, p, 5000, randomBytes(seed, 1000)) // bytes 5000..5999: blocks 4 and 5
		src.converge(t, m)
		recs, size := shipped(sink, n)
		if len(recs) != 1 {
			t.Fatalf("1,000 bytes of %s changed: shipped %d records", filepath.Base(p), len(recs))
		}
		return recs[0], size
	}
	r, size := patch(msg, 50)
	if r.Op != dirtree.OpDelta {
		t.Fatalf("the first change of a file shipped lately: shipped %s (%d bytes), want a delta", r.Op, size)
	}
	if d, _ := dirtree.ParseDelta(r.Op, r.Data); !slices.Equal(d.Blocks, []uint32{4, 5}) || d.BlockSize != 1<<10 || size > 2<<10+300 {
		t.Fatalf("1,000 bytes changed in a 20 KiB file: delta of blocks %v of %d bytes, %d framed", d.Blocks, d.BlockSize, size)
	}
	t.Logf("1,000 bytes changed in a 20 KiB file shipped lately: %d bytes shipped", size)
	if r, size = patch(old, 51); r.Op != dirtree.OpPut {
		t.Fatalf("the first change of a file whose mtime was a day old when it shipped: %s (%d bytes), want a put", r.Op, size)
	}
	// That change gave old a block map in the index (a file of 4 KiB or
	// more gets one at its first change): the next change is a delta.
	if r, size = patch(old, 52); r.Op != dirtree.OpDelta {
		t.Fatalf("the second change of old: %s (%d bytes), want a delta", r.Op, size)
	}
	// msg2 changed to most of its blocks: whole.
	n := len(sink.records())
	writeAt(t, msg2, 0, randomBytes(53, 12<<10))
	src.converge(t, m)
	if recs, _ := shipped(sink, n); len(recs) != 1 || recs[0].Op != dirtree.OpPut {
		t.Fatalf("12 KiB of a 20 KiB file shipped lately changed: shipped %v, want a put", recs)
	}
}

// The recent maps stay within their budget of block hashes, the oldest
// going first, and answer only for the content (hash and size) they
// describe.
func TestDirRecentMapsBudget(t *testing.T) {
	c := newDirRecentMaps(3 * 160)
	sum := func(i int) [32]byte { return sha256.Sum256([]byte{byte(i)}) }
	blocks := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 160) } // 10 blocks
	for i := range 5 {
		c.add(sum(i), 10<<10, 1<<10, blocks(i))
	}
	c.add(sum(4), 10<<10, 1<<10, blocks(9)) // already kept: unchanged
	for i := range 5 {
		bs, b, ok := c.get(sum(i), 10<<10)
		if want := i >= 2; ok != want || (ok && (bs != 1<<10 || !bytes.Equal(b, blocks(i)))) {
			t.Errorf("map %d: kept %v (block size %d), want kept %v with its own blocks", i, ok, bs, want)
		}
	}
	if _, _, ok := c.get(sum(3), 10<<10+1); ok {
		t.Errorf("a map answered for content of another size")
	}
	if c.used != 3*160 || len(c.maps) != 3 {
		t.Errorf("used %d bytes in %d maps, want 480 in 3", c.used, len(c.maps))
	}
	c.add(sum(7), 1<<20, 1<<10, make([]byte, 4*160)) // larger than the budget: not kept
	if _, _, ok := c.get(sum(7), 1<<20); ok || len(c.maps) != 3 {
		t.Errorf("a map over the whole budget was kept")
	}
	var none *dirRecentMaps // sync mode has none
	none.add(sum(1), 1, 1, nil)
	if _, _, ok := none.get(sum(1), 1); ok {
		t.Errorf("a nil cache answered")
	}
}
