//go:build linux

package source

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/shipper"
)

// A file the replica holds that changed is shipped as append records when
// it only grew (its first Size bytes still hash to the index's Hash), as
// one delta record when few of its blocks changed (compared with the block
// map in the index), and otherwise whole (docs/DIRTREE.md, "Appends and
// block deltas"). The index keeps a block map of a file from its first
// change on, if it is at least dirtree.DeltaMinSize: files that never
// change (most of a mail store) cost no map. A file shipped whole lately
// has its map in memory (dir_recent.go), so even its first change can be
// a delta.

// dirAppendMinBase is the smallest file an append is made for: below it,
// the append header's extra 32 bytes buy nothing.
const dirAppendMinBase = 128

// roomFor is the most content bytes a record of op for key p can carry
// with its header (hdr bytes) and stay within max_record_size and the
// chunk size.
func (r *dirRun) roomFor(op, p string, hdr int) int {
	return min(r.chunk, r.maxRecord-batch.RecordOverhead-len(op)-len(p)-hdr)
}

// tryIncremental ships a changed file the index knows as appends, a delta
// or (content unchanged) attributes, reading it through f, whose stat was
// st before the read. handled is false when the file is to go whole; the
// block map of its content is then already in entry. done is as tryFile's.
func (r *dirRun) tryIncremental(ctx context.Context, sink shipper.Sink, p string, f *os.File, st dirStat, e, entry *dirEntry,
	still func() bool, readStart time.Time) (done, handled bool, err error) {
	if len(e.Blocks) == 0 {
		if bs, blocks, ok := r.recent.get(e.Hash, e.Size); ok { // shipped whole lately (dir_recent.go)
			ec := *e
			ec.BlockSize, ec.Blocks = bs, blocks
			e = &ec
		}
	}
	appendable := st.size > e.Size && e.Size >= dirAppendMinBase
	if !appendable && st.size < dirtree.DeltaMinSize {
		return false, false, nil
	}
	room := r.roomFor(dirtree.OpAppend, p, dirtree.DeltaHeaderLen)
	if room < 1 {
		appendable = false
	}
	bs := dirtree.DeltaBlockSize(st.size)
	var bh *dirtree.BlockHasher
	if st.size >= dirtree.DeltaMinSize {
		bh = dirtree.NewBlockHasher(bs)
	}
	// One pass: the whole hash, the block map, and the hash at every
	// point an append record would start or end (e.Size, e.Size+room, ...).
	h := sha256.New()
	var cuts [][32]byte
	var headState []byte
	cut := int64(-1)
	if appendable {
		cut = e.Size
	}
	buf := make([]byte, min(1<<20, st.size)) // a small file grown gets no 1 MiB buffer
	for off := int64(0); off < st.size; {
		n := min(int64(len(buf)), st.size-off)
		if cut > off && cut < off+n {
			n = cut - off
		}
		if k, err := f.ReadAt(buf[:n], off); int64(k) != n {
			if !errors.Is(err, io.EOF) {
				r.warnOnce(p, "cannot read file; left as it was shipped", err)
				return true, true, nil
			}
			return false, true, nil
		}
		h.Write(buf[:n])
		if bh != nil {
			bh.Write(buf[:n])
		}
		off += n
		if off == cut {
			cuts = append(cuts, [32]byte(h.Sum(nil)))
			if headState == nil {
				headState, _ = h.(encoding.BinaryMarshaler).MarshalBinary()
			}
			cut += int64(room)
		}
	}
	if !still() {
		return r.dirtySince(p, readStart), true, nil
	}
	entry.Hash = [32]byte(h.Sum(nil))
	if bh != nil {
		entry.BlockSize, entry.Blocks = uint32(bs), bh.Sums()
	}
	switch {
	case st.size == e.Size && entry.Hash == e.Hash:
		r.idx.set(p, entry)
		r.clearWarned(p)
		if e.Mode == st.mode && e.Mtime == st.mtime {
			return true, true, nil // only the inode or ctime moved
		}
		hdr := dirtree.AppendHeader(nil, st.mode, st.mtime, st.size, 0, &entry.Hash)
		return true, true, r.emit(ctx, sink, batch.Record{Op: dirtree.OpAttr, Key: []byte(p), Data: hdr})
	case appendable && cuts[0] == e.Hash:
		return r.shipAppends(ctx, sink, p, f, st, e, entry, cuts, headState, room, still, readStart)
	case bh != nil && e.BlockSize == uint32(bs) && len(e.Blocks) > 0:
		return r.shipDelta(ctx, sink, p, f, st, e, entry, still, readStart)
	}
	return false, false, nil
}

// shipAppends ships the bytes from e.Size on as append records of at most
// room bytes, each made against the content before it (cuts: the hash at
// e.Size and at every room bytes after). It reads them again and checks
// them against the hashes of the first read.
func (r *dirRun) shipAppends(ctx context.Context, sink shipper.Sink, p string, f *os.File, st dirStat, e, entry *dirEntry,
	cuts [][32]byte, headState []byte, room int, still func() bool, readStart time.Time) (done, handled bool, err error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(headState); err != nil {
		return false, false, nil
	}
	var recs []batch.Record
	for j, base := 0, e.Size; base < st.size; j, base = j+1, base+int64(room) {
		end := min(base+int64(room), st.size)
		want := entry.Hash
		if j+1 < len(cuts) {
			want = cuts[j+1]
		}
		hd := dirtree.DeltaHeader{Mode: st.mode, Mtime: st.mtime, BaseSize: base, BaseSHA256: cuts[j], Size: end, SHA256: want}
		data := dirtree.AppendAppendRecord(make([]byte, 0, dirtree.DeltaHeaderLen+int(end-base)), hd, nil)
		data = data[:dirtree.DeltaHeaderLen+int(end-base)]
		if k, _ := f.ReadAt(data[dirtree.DeltaHeaderLen:], base); int64(k) != end-base {
			return false, true, nil
		}
		h.Write(data[dirtree.DeltaHeaderLen:])
		if [32]byte(h.Sum(nil)) != want {
			return false, true, nil // changed between the reads
		}
		recs = append(recs, batch.Record{Op: dirtree.OpAppend, Key: []byte(p), Data: data})
	}
	if !still() {
		return r.dirtySince(p, readStart), true, nil
	}
	r.idx.set(p, entry)
	r.clearWarned(p)
	for _, rec := range recs {
		if err := r.emit(ctx, sink, rec); err != nil {
			return true, true, err
		}
	}
	return true, true, nil
}

// shipDelta ships the blocks whose hashes differ from the index's map as
// one delta record, when they are less than half the file and fit in a
// record; otherwise the file goes whole (handled false).
func (r *dirRun) shipDelta(ctx context.Context, sink shipper.Sink, p string, f *os.File, st dirStat, e, entry *dirEntry,
	still func() bool, readStart time.Time) (done, handled bool, err error) {
	bs := int64(entry.BlockSize)
	var blocks []uint32
	changed := int64(0)
	for k := 0; k*dirtree.BlockHashLen < len(entry.Blocks); k++ {
		s := entry.Blocks[k*dirtree.BlockHashLen : (k+1)*dirtree.BlockHashLen]
		if (k+1)*dirtree.BlockHashLen > len(e.Blocks) || string(s) != string(e.Blocks[k*dirtree.BlockHashLen:(k+1)*dirtree.BlockHashLen]) {
			blocks = append(blocks, uint32(k))
			changed += min(bs, st.size-int64(k)*bs)
		}
	}
	room := r.roomFor(dirtree.OpDelta, p, dirtree.DeltaHeaderLen+8+4*len(blocks))
	if changed*2 >= st.size || changed > int64(room) {
		return false, false, nil
	}
	hd := dirtree.DeltaHeader{Mode: st.mode, Mtime: st.mtime, BaseSize: e.Size, BaseSHA256: e.Hash, Size: st.size, SHA256: entry.Hash}
	data := dirtree.AppendDeltaRecord(nil, hd, int(bs), blocks, nil)
	hdrLen := len(data)
	data = append(data, make([]byte, changed)...)
	pos := hdrLen
	for _, k := range blocks {
		n := min(bs, st.size-int64(k)*bs)
		b := data[pos : pos+int(n)]
		if got, _ := f.ReadAt(b, int64(k)*bs); int64(got) != n {
			return false, true, nil
		}
		sum := sha256.Sum256(b)
		if string(sum[:dirtree.BlockHashLen]) != string(entry.Blocks[int(k)*dirtree.BlockHashLen:(int(k)+1)*dirtree.BlockHashLen]) {
			return false, true, nil // changed between the reads
		}
		pos += int(n)
	}
	if !still() {
		return r.dirtySince(p, readStart), true, nil
	}
	r.idx.set(p, entry)
	r.clearWarned(p)
	return true, true, r.emit(ctx, sink, batch.Record{Op: dirtree.OpDelta, Key: []byte(p), Data: data})
}

// The block map in the index snapshot (version 2), after an entry's
// target: u32 block size | u32 count | count BlockHashLen-byte hashes.

func dirAppendBlockMap(b []byte, e *dirEntry) []byte {
	b = binary.BigEndian.AppendUint32(b, e.BlockSize)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Blocks)/dirtree.BlockHashLen))
	return append(b, e.Blocks...)
}

func dirReadBlockMap(r []byte, e *dirEntry) ([]byte, error) {
	if len(r) < 8 {
		return nil, errors.New("block map truncated")
	}
	bs, n := binary.BigEndian.Uint32(r), int(binary.BigEndian.Uint32(r[4:]))
	r = r[8:]
	if len(r) < n*dirtree.BlockHashLen {
		return nil, errors.New("block map truncated")
	}
	if n > 0 {
		if bs < dirtree.MinDeltaBlock || bs > dirtree.MaxDeltaBlock {
			return nil, fmt.Errorf("block size %d", bs)
		}
		e.BlockSize, e.Blocks = bs, append([]byte(nil), r[:n*dirtree.BlockHashLen]...)
	}
	return r[n*dirtree.BlockHashLen:], nil
}
