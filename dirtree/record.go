// Package dirtree is the record format of a replicated directory tree
// (docs/DIRTREE.md): the ops, the fixed header that starts the data of
// put, chunk, attr, mkdir and symlink records, the rules for keys and the
// names the applier reserves, and the data of baseline records. The dir:
// source and `ferry push` write records with it, the dir: applier and
// `ferry fetch` read them with it. It does no I/O.
package dirtree

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/hugepage"
)

// Record ops of a replicated directory tree. The key is the slash-separated
// path relative to the root ("." is the root itself).
const (
	OpPut     = "put"     // whole regular file: header + content
	OpChunk   = "chunk"   // part of a large regular file: header + bytes at offset
	OpAttr    = "attr"    // regular file whose content is unchanged: header only
	OpDel     = "del"     // remove the path, whatever it is
	OpMkdir   = "mkdir"   // directory (created if missing): header only
	OpRmdir   = "rmdir"   // remove the directory and everything under it
	OpSymlink = "symlink" // symbolic link: header + target

	// The version of the change the next record(s) for the same key make
	// (ferry sync, docs/SYNC.md): data a JSON object, package dirsync.
	// Only sync streams carry it; ferry receive refuses it.
	OpVersion = "version"

	// A baseline: every path of the tree shipped in full between these
	// two records (key ".", data a BaselineData as JSON). The applier
	// does nothing for them.
	OpBaselineBegin = "baseline-begin"
	OpBaselineEnd   = "baseline-end"
)

// Ops lists every op of the format.
var Ops = []string{OpPut, OpChunk, OpAttr, OpDel, OpMkdir, OpRmdir, OpSymlink, OpBaselineBegin, OpBaselineEnd,
	OpAppend, OpDelta, OpRename}

// HeaderLen is the size of the fixed header that starts the data of
// put, chunk, attr, mkdir and symlink records:
//
//	u8 version (1) | u32 mode | i64 mtime (Unix ns) | u64 size | u64 offset | [32] sha256
//
// big-endian. mode is st_mode & 07777, size the whole file's size (the
// target's length for a symlink), offset where a chunk's bytes go, sha256
// the whole file's content (put, attr and the last chunk; zero otherwise).
const HeaderLen = 1 + 4 + 8 + 8 + 8 + 32

// Version is the header version this ferry writes and reads.
const Version = 1

// maxFileSize is the largest size or offset a header may carry (16 TiB).
const maxFileSize = 1 << 44

// ChunkSize is the content a chunk record carries unless max_record_size
// leaves less room (ChunkRoom); a file up to it goes as one put.
const ChunkSize = 1 << 20

// Header is a decoded record header.
type Header struct {
	Mode   uint32 // permission bits, st_mode & 07777
	Mtime  int64  // Unix nanoseconds
	Size   int64
	Offset int64
	SHA256 [32]byte
}

// AppendHeader appends a record header to dst. A nil sum writes zeros.
func AppendHeader(dst []byte, mode uint32, mtime int64, size, offset int64, sum *[32]byte) []byte {
	dst = append(dst, Version)
	dst = binary.BigEndian.AppendUint32(dst, mode)
	dst = binary.BigEndian.AppendUint64(dst, uint64(mtime))
	dst = binary.BigEndian.AppendUint64(dst, uint64(size))
	dst = binary.BigEndian.AppendUint64(dst, uint64(offset))
	if sum == nil {
		sum = &[32]byte{}
	}
	return append(dst, sum[:]...)
}

// ParseHeader decodes the header at the front of a put, chunk, attr,
// mkdir or symlink record's data and returns it with the bytes after it.
// It refuses a short header, another version, mode bits beyond 07777, and
// a size or offset over maxFileSize.
func ParseHeader(data []byte) (Header, []byte, error) {
	var h Header
	if len(data) < HeaderLen {
		return h, nil, fmt.Errorf("malformed record: data is %d bytes, shorter than the %d-byte header", len(data), HeaderLen)
	}
	if data[0] != Version {
		return h, nil, fmt.Errorf("record header version %d; this ferry reads %d (upgrade ferry)", data[0], Version)
	}
	h.Mode = binary.BigEndian.Uint32(data[1:])
	h.Mtime = int64(binary.BigEndian.Uint64(data[5:]))
	size := binary.BigEndian.Uint64(data[13:])
	offset := binary.BigEndian.Uint64(data[21:])
	copy(h.SHA256[:], data[29:HeaderLen])
	if h.Mode&^0o7777 != 0 {
		return h, nil, fmt.Errorf("malformed record: mode %#o has bits beyond 07777", h.Mode)
	}
	if size > maxFileSize || offset > maxFileSize {
		return h, nil, fmt.Errorf("oversize record header: size %d, offset %d (limit %d)", size, offset, uint64(maxFileSize))
	}
	h.Size, h.Offset = int64(size), int64(offset)
	return h, data[HeaderLen:], nil
}

// CheckPayload checks what follows the header of a put, chunk, attr, mkdir
// or symlink record against it: a put carries exactly Size bytes with the
// header's SHA-256, a chunk at least one byte that ends within Size, attr
// and mkdir nothing, a symlink its target (Size bytes, not empty, no NUL).
// Whether chunks continue one another is the reader's to check.
func CheckPayload(op string, h Header, payload []byte) error {
	switch op {
	case OpPut:
		if int64(len(payload)) != h.Size {
			return fmt.Errorf("malformed record: carries %d bytes of content, its header says %d", len(payload), h.Size)
		}
		if sha256.Sum256(payload) != h.SHA256 {
			return errors.New("content does not match the sha256 in its header")
		}
	case OpChunk:
		switch {
		case len(payload) == 0:
			return errors.New("malformed record: empty chunk")
		case h.Offset+int64(len(payload)) > h.Size:
			return fmt.Errorf("oversize chunk: %d bytes at offset %d overrun the file size %d", len(payload), h.Offset, h.Size)
		}
	case OpAttr, OpMkdir:
		if len(payload) != 0 {
			return fmt.Errorf("malformed record: %s carries %d bytes after its header, want none", op, len(payload))
		}
	case OpSymlink:
		if int64(len(payload)) != h.Size || len(payload) == 0 || strings.IndexByte(string(payload), 0) >= 0 {
			return fmt.Errorf("malformed record: symlink target of %d bytes (header says %d), empty or with a NUL byte", len(payload), h.Size)
		}
	default:
		return fmt.Errorf("op %q carries no header", op)
	}
	return nil
}

// ChunkRoom is the most content bytes a put or chunk record for key can
// carry and stay within maxRecord framed bytes (batch.Record.FramedSize).
// Below 1 the key is too long for maxRecord.
func ChunkRoom(key string, maxRecord int) int {
	return maxRecord - batch.RecordOverhead - len(OpChunk) - len(key) - HeaderLen
}

// FileRecords returns the records of one whole regular file under key
// whose content is in hand (ReadFileRecords over it): one put when the
// content fits in ChunkSize and in a record of maxRecord framed bytes,
// else chunks at offsets 0, n, 2n, ..., the last carrying the whole
// file's hash. It also returns that hash.
func FileRecords(key string, content []byte, mode uint32, mtime int64, maxRecord int) ([]batch.Record, [32]byte, error) {
	return ReadFileRecords(key, bytes.NewReader(content), int64(len(content)), mode, mtime, maxRecord)
}

// ReadFileRecords is FileRecords for a file of size bytes read from r:
// the same records, read straight into their data (no copy of the whole
// content beside them) and hashed as they are read. r must give exactly
// size bytes: fewer, or more, is an error (the file changed while it was
// read).
func ReadFileRecords(key string, r io.Reader, size int64, mode uint32, mtime int64, maxRecord int) ([]batch.Record, [32]byte, error) {
	var sum [32]byte
	limit := min(ChunkSize, ChunkRoom(key, maxRecord))
	if limit < 1 {
		return nil, sum, fmt.Errorf("name %q is too long for max_record_size %d", key, maxRecord)
	}
	if size < 0 || size > maxFileSize {
		return nil, sum, fmt.Errorf("size %d out of range", size)
	}
	op := OpPut
	if size > int64(limit) {
		op = OpChunk
	}
	h := sha256.New()
	nrec := max((size+int64(limit)-1)/int64(limit), 1)
	recs := make([]batch.Record, 0, nrec)
	// One buffer for every record's data, advised for huge pages: filling
	// fresh memory 4 KiB page by page cost a push of a 16 MiB WAL file
	// more CPU than reading it.
	buf := hugepage.Make(int(size + nrec*HeaderLen))
	for off := int64(0); off < size || len(recs) == 0; off += int64(limit) {
		n := int(min(int64(limit), size-off))
		data := buf[: HeaderLen+n : HeaderLen+n]
		buf = buf[HeaderLen+n:]
		if _, err := io.ReadFull(r, data[HeaderLen:]); err != nil {
			return nil, sum, fmt.Errorf("read %d bytes at offset %d of %d: %w (the file shrank?)", n, off, size, err)
		}
		h.Write(data[HeaderLen:])
		AppendHeader(data[:0], mode, mtime, size, off, nil)
		recs = append(recs, batch.Record{Op: op, Key: []byte(key), Data: data})
	}
	var extra [1]byte
	if n, _ := io.ReadFull(r, extra[:]); n > 0 {
		return nil, sum, fmt.Errorf("more than %d bytes to read: the file grew while it was read", size)
	}
	h.Sum(sum[:0])
	last := recs[len(recs)-1].Data
	AppendHeader(last[:0], mode, mtime, size, int64(len(recs)-1)*int64(limit), &sum)
	return recs, sum, nil
}
