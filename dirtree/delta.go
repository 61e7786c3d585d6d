package dirtree

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/bits"
)

// Records that change a regular file the replica already holds, without
// sending it whole (docs/DIRTREE.md, "Appends and block deltas"). Both are
// made against a base: the size and SHA-256 of the content the replica
// holds, which the source knows from its index. The applier refuses either
// when its file is not that base, and checks the result against the new
// whole-file SHA-256.
const (
	OpAppend = "append" // the file only grew: delta header + the new bytes, written in place
	OpDelta  = "delta"  // blocks changed in place: delta header + block list + blocks, copy-on-write
)

// DeltaVersion is the first byte of an append or delta record's data. It
// is not the put header's Version, so a ferry that knows only put and
// chunk headers refuses these records by version, whichever way it reads
// them ("record header version 2; this ferry reads 1").
const DeltaVersion = 2

// DeltaHeaderLen is the size of the header that starts the data of append
// and delta records:
//
//	u8 version (2) | u32 mode | i64 mtime (Unix ns) | u64 base size | [32] base sha256 | u64 size | [32] sha256
//
// big-endian: the mode and mtime the file gets, the size and SHA-256 of
// the content the record applies to, and those of the content it makes.
const DeltaHeaderLen = 1 + 4 + 8 + 8 + 32 + 8 + 32

// Block sizes a delta record may use (powers of two), and the length of
// the truncated SHA-256 the source keeps per block in its index.
const (
	MinDeltaBlock = 64
	MaxDeltaBlock = 1 << 24
	BlockHashLen  = 16
)

// DeltaMinSize is the smallest file the dir: source keeps a block map of:
// below it, a changed file costs little more than a delta as a put.
const DeltaMinSize = 4 << 10

// smallFileBlock is the block size of a file under 64 KiB: at most 64
// blocks, so a 1-4 KiB patch of a message or a small index travels as a
// few KiB.
const smallFileBlock = 1 << 10

// DeltaHeader is a decoded append or delta header.
type DeltaHeader struct {
	Mode       uint32
	Mtime      int64
	BaseSize   int64
	BaseSHA256 [32]byte
	Size       int64
	SHA256     [32]byte
}

// Delta is a decoded append or delta record.
type Delta struct {
	DeltaHeader
	Tail      []byte   // append: the bytes from BaseSize to Size
	BlockSize int      // delta: the block size
	Blocks    []uint32 // delta: the indexes of the blocks carried, increasing
	Data      []byte   // delta: the blocks' content, one after the other
}

// Block returns the offset in the file and the content of the n-th block
// a delta carries. Every block but the file's last is BlockSize long.
func (d *Delta) Block(n int) (int64, []byte) {
	off := int64(d.Blocks[n]) * int64(d.BlockSize)
	start := n * d.BlockSize
	end := min(start+d.BlockSize, len(d.Data))
	return off, d.Data[start:end]
}

func appendDeltaHeader(dst []byte, h DeltaHeader) []byte {
	dst = append(dst, DeltaVersion)
	dst = binary.BigEndian.AppendUint32(dst, h.Mode)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Mtime))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.BaseSize))
	dst = append(dst, h.BaseSHA256[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Size))
	return append(dst, h.SHA256[:]...)
}

// AppendAppendRecord appends the data of an append record to dst: the
// header and tail, the bytes the file gained (h.Size - h.BaseSize of them).
func AppendAppendRecord(dst []byte, h DeltaHeader, tail []byte) []byte {
	return append(appendDeltaHeader(dst, h), tail...)
}

// AppendDeltaRecord appends the data of a delta record to dst: the header,
// u32 block size, u32 count, count u32 block indexes, then the blocks'
// content (data, every block blockSize long but the file's last).
func AppendDeltaRecord(dst []byte, h DeltaHeader, blockSize int, blocks []uint32, data []byte) []byte {
	dst = appendDeltaHeader(dst, h)
	dst = binary.BigEndian.AppendUint32(dst, uint32(blockSize))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(blocks)))
	for _, b := range blocks {
		dst = binary.BigEndian.AppendUint32(dst, b)
	}
	return append(dst, data...)
}

// ParseDelta decodes and checks the data of an append or delta record.
// It refuses another version, a short or oversize record, mode bits
// beyond 07777, an append that does not grow the file or whose tail is
// not Size - BaseSize bytes, and a delta whose block size is not a power
// of two in [MinDeltaBlock, MaxDeltaBlock], whose blocks are not
// increasing and within Size, whose content is not the blocks' length, or
// that leaves bytes past BaseSize uncovered (the applier has no content
// for them). Whether the result has the header's SHA-256 only the applier
// can check.
func ParseDelta(op string, data []byte) (*Delta, error) {
	if op != OpAppend && op != OpDelta {
		return nil, fmt.Errorf("op %q is not append or delta", op)
	}
	if len(data) < DeltaHeaderLen {
		return nil, fmt.Errorf("malformed record: %s data is %d bytes, shorter than the %d-byte header", op, len(data), DeltaHeaderLen)
	}
	if data[0] != DeltaVersion {
		return nil, fmt.Errorf("%s record header version %d; this ferry reads %d (upgrade ferry)", op, data[0], DeltaVersion)
	}
	d := &Delta{}
	d.Mode = binary.BigEndian.Uint32(data[1:])
	d.Mtime = int64(binary.BigEndian.Uint64(data[5:]))
	base := binary.BigEndian.Uint64(data[13:])
	copy(d.BaseSHA256[:], data[21:53])
	size := binary.BigEndian.Uint64(data[53:])
	copy(d.SHA256[:], data[61:93])
	rest := data[DeltaHeaderLen:]
	if d.Mode&^0o7777 != 0 {
		return nil, fmt.Errorf("malformed record: mode %#o has bits beyond 07777", d.Mode)
	}
	if base > maxFileSize || size > maxFileSize {
		return nil, fmt.Errorf("oversize record header: base size %d, size %d (limit %d)", base, size, uint64(maxFileSize))
	}
	d.BaseSize, d.Size = int64(base), int64(size)
	if op == OpAppend {
		if d.Size <= d.BaseSize {
			return nil, fmt.Errorf("malformed record: append from %d to %d bytes does not grow the file", d.BaseSize, d.Size)
		}
		if int64(len(rest)) != d.Size-d.BaseSize {
			return nil, fmt.Errorf("malformed record: append carries %d bytes, its header says %d", len(rest), d.Size-d.BaseSize)
		}
		d.Tail = rest
		return d, nil
	}
	if len(rest) < 8 {
		return nil, errors.New("malformed record: delta has no block list")
	}
	bs := binary.BigEndian.Uint32(rest)
	count := binary.BigEndian.Uint32(rest[4:])
	rest = rest[8:]
	if bs < MinDeltaBlock || bs > MaxDeltaBlock || bits.OnesCount32(bs) != 1 {
		return nil, fmt.Errorf("malformed record: delta block size %d is not a power of two from %d to %d", bs, MinDeltaBlock, MaxDeltaBlock)
	}
	if uint64(len(rest)) < 4*uint64(count) {
		return nil, fmt.Errorf("malformed record: delta lists %d blocks in %d bytes", count, len(rest))
	}
	d.BlockSize = int(bs)
	nblocks := (d.Size + int64(bs) - 1) / int64(bs)
	d.Blocks = make([]uint32, count)
	want := int64(0)
	for i := range d.Blocks {
		b := binary.BigEndian.Uint32(rest[4*i:])
		if int64(b) >= nblocks || (i > 0 && b <= d.Blocks[i-1]) {
			return nil, fmt.Errorf("malformed record: delta block %d (entry %d) is out of order or past the %d blocks of %d bytes", b, i, nblocks, d.Size)
		}
		d.Blocks[i] = b
		want += min(int64(bs), d.Size-int64(b)*int64(bs))
	}
	d.Data = rest[4*int(count):]
	if int64(len(d.Data)) != want {
		return nil, fmt.Errorf("malformed record: delta carries %d bytes of blocks, its block list says %d", len(d.Data), want)
	}
	if d.Size > d.BaseSize {
		// Every block from the one holding BaseSize on must be carried.
		first := d.BaseSize / int64(bs)
		have := int64(0)
		for _, b := range d.Blocks {
			if int64(b) >= first {
				have++
			}
		}
		if have != nblocks-first {
			return nil, fmt.Errorf("malformed record: delta grows the file from %d to %d bytes but carries %d of the %d blocks from offset %d",
				d.BaseSize, d.Size, have, nblocks-first, first*int64(bs))
		}
	}
	return d, nil
}

// DeltaInfo describes an append or delta record for people (ferry cat
// --json): everything but the content.
type DeltaInfo struct {
	Mode       string   `json:"mode"`
	Mtime      int64    `json:"mtime"`
	BaseSize   int64    `json:"base_size"`
	BaseSHA256 string   `json:"base_sha256"`
	Size       int64    `json:"size"`
	SHA256     string   `json:"sha256"`
	Bytes      int      `json:"bytes"` // content carried
	BlockSize  int      `json:"block_size,omitempty"`
	Blocks     []uint32 `json:"blocks,omitempty"`
	Error      string   `json:"error,omitempty"` // the record does not parse
}

// Describe returns the DeltaInfo of an append or delta record.
func Describe(op string, data []byte) DeltaInfo {
	d, err := ParseDelta(op, data)
	if err != nil {
		return DeltaInfo{Error: err.Error()}
	}
	return DeltaInfo{Mode: fmt.Sprintf("%04o", d.Mode), Mtime: d.Mtime, BaseSize: d.BaseSize,
		BaseSHA256: hex.EncodeToString(d.BaseSHA256[:]), Size: d.Size, SHA256: hex.EncodeToString(d.SHA256[:]),
		Bytes: len(d.Tail) + len(d.Data), BlockSize: d.BlockSize, Blocks: d.Blocks}
}

// DeltaBlockSize is the block size of the source's block map of a file of
// size bytes: 1 KiB under 64 KiB (at most 64 blocks, a 1 KiB map), else
// the smallest power of two from 4 KiB up that cuts the file into at most
// 1024 blocks, but at most 64 KiB (so the map costs at most 16 KiB, or
// 0.025% of a larger file).
func DeltaBlockSize(size int64) int {
	if size < 64<<10 {
		return smallFileBlock
	}
	bs := 4 << 10
	for bs < 64<<10 && (size+int64(bs)-1)/int64(bs) > 1024 {
		bs *= 2
	}
	return bs
}

// BlockHasher computes a block map: the first BlockHashLen bytes of the
// SHA-256 of every block of blockSize bytes of what is written to it (the
// last block may be shorter).
type BlockHasher struct {
	size int
	h    hash.Hash
	n    int // bytes in the current block
	sums []byte
}

// NewBlockHasher returns a BlockHasher for blocks of blockSize bytes.
func NewBlockHasher(blockSize int) *BlockHasher {
	return &BlockHasher{size: blockSize, h: sha256.New()}
}

func (b *BlockHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), b.size-b.n)
		b.h.Write(p[:k])
		b.n += k
		p = p[k:]
		if b.n == b.size {
			b.sums = b.h.Sum(b.sums)[:len(b.sums)+BlockHashLen]
			b.h.Reset()
			b.n = 0
		}
	}
	return n, nil
}

// Sums returns the map: BlockHashLen bytes per block, the short last
// block included.
func (b *BlockHasher) Sums() []byte {
	if b.n == 0 {
		return b.sums
	}
	return b.h.Sum(b.sums)[:len(b.sums)+BlockHashLen]
}
