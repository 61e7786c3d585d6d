package shipper

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Record ops of a replicated directory tree (docs/DIRTREE.md). The key is
// the slash-separated path relative to the root ("." is the root itself).
const (
	DirOpPut     = "put"     // whole regular file: header + content
	DirOpChunk   = "chunk"   // part of a large regular file: header + bytes at offset
	DirOpAttr    = "attr"    // regular file whose content is unchanged: header only
	DirOpDel     = "del"     // remove the path, whatever it is
	DirOpMkdir   = "mkdir"   // directory (created if missing): header only
	DirOpRmdir   = "rmdir"   // remove the directory and everything under it
	DirOpSymlink = "symlink" // symbolic link: header + target

	// A baseline: every path of the tree shipped in full between these
	// two records (key ".", data a DirBaselineData as JSON). The applier
	// does nothing for them.
	DirOpBaselineBegin = "baseline-begin"
	DirOpBaselineEnd   = "baseline-end"
)

// DirBaselineData is the data of a baseline-begin or baseline-end record,
// JSON so that "ferry cat --json" shows it as it is. Version is 1; readers
// ignore unknown fields.
type DirBaselineData struct {
	Version   int       `json:"version"`
	StartedAt time.Time `json:"started_at"`          // when the walk began (both records)
	BeginSeq  uint64    `json:"begin_seq,omitempty"` // end: the seq of its begin record
	Paths     uint64    `json:"paths,omitempty"`     // end: paths the walk shipped
}

// DirHeaderLen is the size of the fixed header that starts the data of
// put, chunk, attr, mkdir and symlink records:
//
//	u8 version (1) | u32 mode | i64 mtime (Unix ns) | u64 size | u64 offset | [32] sha256
//
// big-endian. size is the whole file's size (the target's length for a
// symlink), offset where a chunk's bytes go, sha256 the whole file's content
// (put, attr and the last chunk; zero otherwise).
const DirHeaderLen = 1 + 4 + 8 + 8 + 8 + 32

// DirVersion is the header version this ferry writes and reads.
const DirVersion = 1

// AppendDirHeader appends a record header to dst.
func AppendDirHeader(dst []byte, mode uint32, mtime int64, size, offset int64, sum *[32]byte) []byte {
	dst = append(dst, DirVersion)
	dst = binary.BigEndian.AppendUint32(dst, mode)
	dst = binary.BigEndian.AppendUint64(dst, uint64(mtime))
	dst = binary.BigEndian.AppendUint64(dst, uint64(size))
	dst = binary.BigEndian.AppendUint64(dst, uint64(offset))
	if sum == nil {
		sum = &[32]byte{}
	}
	return append(dst, sum[:]...)
}

// DirHeader is a decoded record header.
type DirHeader struct {
	Mode   uint32
	Mtime  int64 // Unix nanoseconds
	Size   int64
	Offset int64
	SHA256 [32]byte
}

// ParseDirHeader decodes the header at the front of a put, chunk, attr,
// mkdir or symlink record's data and returns it with the bytes after it.
func ParseDirHeader(data []byte) (DirHeader, []byte, error) {
	var h DirHeader
	if len(data) < DirHeaderLen {
		return h, nil, fmt.Errorf("record data is %d bytes, shorter than the %d-byte header", len(data), DirHeaderLen)
	}
	if data[0] != DirVersion {
		return h, nil, fmt.Errorf("record header version %d; this ferry reads %d (upgrade ferry)", data[0], DirVersion)
	}
	h.Mode = binary.BigEndian.Uint32(data[1:])
	h.Mtime = int64(binary.BigEndian.Uint64(data[5:]))
	size, offset := binary.BigEndian.Uint64(data[13:]), binary.BigEndian.Uint64(data[21:])
	if size > maxDirFileSize || offset > maxDirFileSize {
		return h, nil, fmt.Errorf("record header size %d, offset %d: over the limit %d", size, offset, uint64(maxDirFileSize))
	}
	h.Size, h.Offset = int64(size), int64(offset)
	copy(h.SHA256[:], data[29:DirHeaderLen])
	return h, data[DirHeaderLen:], nil
}

// maxDirFileSize is the largest size or offset a header may carry (16 TiB).
const maxDirFileSize = 1 << 44
