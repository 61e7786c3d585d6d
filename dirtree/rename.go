package dirtree

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// OpRename moves a file or directory within the tree: key is the new path,
// the data a rename header naming the old path and what the source expects
// to find there (the state the source shipped for it). A receiver older
// than this op refuses the stream at the first rename with "unknown op
// "rename" ... upgrade ferry?": the op name is what tells it.
const OpRename = "rename"

// RenameVersion is the rename header version this ferry writes and reads.
const RenameVersion = 1

// Kinds of what a rename moves.
const (
	RenameFile byte = 1
	RenameDir  byte = 2
)

// RenameHeaderLen is the size of the fixed part of a rename record's data,
// which the old path follows:
//
//	u8 version (1) | u8 kind (1 file, 2 dir) | u32 mode | i64 mtime (Unix ns) | u64 size | [32] sha256 | old path
//
// big-endian. mode and mtime are the old path's as shipped (a directory's
// too: the applier tells the directory the source moved from one a replay
// made again by them); size and sha256 are the file's content, zero for a
// directory.
const RenameHeaderLen = 1 + 1 + 4 + 8 + 8 + 32

// Rename is a decoded rename header.
type Rename struct {
	Old    string // the path moved away from
	Kind   byte   // RenameFile or RenameDir
	Mode   uint32 // st_mode & 07777
	Mtime  int64  // Unix nanoseconds
	Size   int64  // a file's size; 0 for a directory
	SHA256 [32]byte
}

// AppendRename appends the data of a rename record to dst.
func AppendRename(dst []byte, r Rename) []byte {
	dst = append(dst, RenameVersion, r.Kind)
	dst = binary.BigEndian.AppendUint32(dst, r.Mode)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Mtime))
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Size))
	dst = append(dst, r.SHA256[:]...)
	return append(dst, r.Old...)
}

// ParseRename decodes the data of a rename record. It refuses a short
// header, another version, an unknown kind, mode bits beyond 07777, a size
// over 16 TiB, a directory with a size or hash, and an empty old path. The
// old path's shape is CheckRename's to check.
func ParseRename(data []byte) (Rename, error) {
	var r Rename
	if len(data) < RenameHeaderLen {
		return r, fmt.Errorf("malformed rename: data is %d bytes, shorter than the %d-byte header", len(data), RenameHeaderLen)
	}
	if data[0] != RenameVersion {
		return r, fmt.Errorf("rename header version %d; this ferry reads %d (upgrade ferry)", data[0], RenameVersion)
	}
	r.Kind = data[1]
	r.Mode = binary.BigEndian.Uint32(data[2:])
	r.Mtime = int64(binary.BigEndian.Uint64(data[6:]))
	size := binary.BigEndian.Uint64(data[14:])
	copy(r.SHA256[:], data[22:RenameHeaderLen])
	r.Old = string(data[RenameHeaderLen:])
	switch {
	case r.Kind != RenameFile && r.Kind != RenameDir:
		return r, fmt.Errorf("malformed rename: kind %d (1 file, 2 dir)", r.Kind)
	case r.Mode&^0o7777 != 0:
		return r, fmt.Errorf("malformed rename: mode %#o has bits beyond 07777", r.Mode)
	case size > maxFileSize:
		return r, fmt.Errorf("oversize rename header: size %d (limit %d)", size, uint64(maxFileSize))
	case r.Kind == RenameDir && (size != 0 || r.SHA256 != [32]byte{}):
		return r, errors.New("malformed rename: a directory's rename carries a size or hash")
	case r.Old == "":
		return r, errors.New("malformed rename: no old path")
	}
	r.Size = int64(size)
	return r, nil
}

// CheckRename refuses a rename to key whose old path is not a clean
// relative path (CheckKey), is the new path itself, or is an ancestor or a
// descendant of it (a directory moved into itself, or over its parent).
func CheckRename(key string, r Rename) error {
	if err := CheckKey(r.Old, OpRename); err != nil {
		return fmt.Errorf("rename from %q: %v", r.Old, err)
	}
	switch {
	case r.Old == key:
		return fmt.Errorf("rename from %q to itself", r.Old)
	case strings.HasPrefix(key, r.Old+"/"):
		return fmt.Errorf("rename from %q into itself (to %q)", r.Old, key)
	case strings.HasPrefix(r.Old, key+"/"):
		return fmt.Errorf("rename from %q over its own ancestor %q", r.Old, key)
	}
	return nil
}

// String describes the rename for people (ferry cat).
func (r Rename) String() string {
	t := time.Unix(0, r.Mtime).UTC().Format(time.RFC3339Nano)
	if r.Kind == RenameDir {
		return fmt.Sprintf("from %q (dir, mode %#o, mtime %s)", r.Old, r.Mode, t)
	}
	return fmt.Sprintf("from %q (file, %d bytes, sha256 %s, mode %#o, mtime %s)", r.Old, r.Size, hex.EncodeToString(r.SHA256[:]), r.Mode, t)
}
