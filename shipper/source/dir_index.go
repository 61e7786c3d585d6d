package source

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ferry-dr/ferry/internal/fsutil"
)

// The dir source's index lives in the spool directory. It says, for every
// path of the tree, which state the replica holds (or will hold once it has
// applied every durable record): type, mode, mtime, size and content hash,
// plus the inode and ctime seen when that state was read (change detection
// only). A restart or an inotify overflow compares the tree with it and
// ships only the differences.
//
//	SPOOL/dirindex          snapshot, replaced atomically (temp, fsync, rename, fsync dir)
//	SPOOL/dirindex.pending  paths touched since the snapshot, appended and fsynced before
//	                        the records touching them are handed to the spool
//
// The snapshot is written only between flushes, after the last batch of the
// flush is durable, so it never claims a state whose records could still be
// lost. It may lag: whatever was shipped after it is named in the pending
// log, and a pending path (and everything under it) counts as unknown on
// load, so it is shipped again in full (or deleted). Both are harmless:
// puts carry full content and deletes of missing paths succeed.
//
// Snapshot layout (big-endian): "FERRYDIX" | u32 version (2) | u64 batches |
// u64 count | count entries | u32 CRC-32C of everything before it.
// Entry: u16 pathlen | path | u8 kind | u8 flags (1 = pending) | u32 mode |
// i64 mtime | i64 size | u64 ino | i64 ctime | [32] sha256 | u16 targetlen | target |
// u32 block size | u32 block count | block hashes (dir_delta.go; not in version 1).
//
// Pending log: frames of u32 body length | u32 CRC-32C of body | body, the
// body u64 batches | (u16 len | path)*. A torn last frame is ignored: it was
// never fsynced, so no record after it reached the spool.
const (
	dirIndexFile   = "dirindex"
	dirPendingFile = "dirindex.pending"
	dirIndexMagic  = "FERRYDIX"
)

var dirCRC = crc32.MakeTable(crc32.Castagnoli)

type dirKind uint8

const (
	dirKindUnknown dirKind = iota // pending path whose state is not known
	dirKindFile
	dirKindDir
	dirKindLink
)

func (k dirKind) String() string {
	switch k {
	case dirKindFile:
		return "file"
	case dirKindDir:
		return "dir"
	case dirKindLink:
		return "symlink"
	}
	return "unknown"
}

// dirEntry is the replica's state of one path as the source shipped it.
type dirEntry struct {
	Kind    dirKind
	Pending bool // shipped after the snapshot or otherwise unknown: ship again
	Mode    uint32
	Mtime   int64 // Unix ns
	Size    int64
	Ino     uint64
	Ctime   int64 // Unix ns
	Hash    [32]byte
	Target  string
	// Blocks is the block map of the content (dir_delta.go): a
	// dirtree.BlockHashLen-byte hash per BlockSize bytes; nil for none.
	BlockSize uint32
	Blocks    []byte
}

// dirIndex is the index in memory. Paths are slash-separated and relative
// to the root; the root itself is ".".
type dirIndex struct {
	dir      string // spool dir
	entries  map[string]*dirEntry
	kids     map[string]map[string]struct{} // parent path -> child paths
	batches  uint64                         // batches appended (the source cursor) as of entries
	pending  *os.File
	logSize  int64
	snapSize int64 // bytes of the last snapshot
}

func newDirIndex(dir string) *dirIndex {
	return &dirIndex{dir: dir, entries: map[string]*dirEntry{}, kids: map[string]map[string]struct{}{}}
}

// dirParent is the parent of a path ("." for a top-level name, "" for the root).
func dirParent(p string) string {
	if p == "." {
		return ""
	}
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return "."
}

// dirJoin joins a directory path and a name.
func dirJoin(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

func (x *dirIndex) get(p string) *dirEntry { return x.entries[p] }

func (x *dirIndex) set(p string, e *dirEntry) {
	if _, ok := x.entries[p]; !ok && p != "." {
		par := dirParent(p)
		k := x.kids[par]
		if k == nil {
			k = map[string]struct{}{}
			x.kids[par] = k
		}
		k[p] = struct{}{}
	}
	x.entries[p] = e
}

// removeTree forgets p and everything under it.
func (x *dirIndex) removeTree(p string) {
	for c := range x.kids[p] {
		x.removeTree(c)
	}
	delete(x.kids, p)
	if _, ok := x.entries[p]; ok {
		delete(x.entries, p)
		if k := x.kids[dirParent(p)]; k != nil {
			delete(k, p)
		}
	}
}

// markPending marks p and everything under it unknown, adding p if the index
// does not know it (a path shipped for the first time after the snapshot).
func (x *dirIndex) markPending(p string) {
	e := x.entries[p]
	if e == nil {
		x.set(p, &dirEntry{Kind: dirKindUnknown, Pending: true})
		return
	}
	e.Pending = true
	for c := range x.kids[p] {
		x.markPending(c)
	}
}

// open loads the snapshot and the pending log from the spool dir. exists is
// false when there is no snapshot (a new source, or a lost index).
func (x *dirIndex) open() (exists bool, err error) {
	path := filepath.Join(x.dir, dirIndexFile)
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return false, fmt.Errorf("dir index: %w", err)
	default:
		if err := x.decode(raw); err != nil {
			return false, fmt.Errorf("dir index %s is damaged (%v); remove it to ship the whole tree again", path, err)
		}
		exists, x.snapSize = true, int64(len(raw))
	}
	lpath := filepath.Join(x.dir, dirPendingFile)
	raw, err = os.ReadFile(lpath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return exists, fmt.Errorf("dir index: %w", err)
	}
	good := 0
	for len(raw)-good >= 8 {
		n := int(binary.BigEndian.Uint32(raw[good:]))
		if n < 8 || len(raw)-good-8 < n {
			break
		}
		body := raw[good+8 : good+8+n]
		if crc32.Checksum(body, dirCRC) != binary.BigEndian.Uint32(raw[good+4:]) {
			break
		}
		for rest := body[8:]; len(rest) >= 2; {
			l := int(binary.BigEndian.Uint16(rest))
			if len(rest) < 2+l {
				break
			}
			x.markPending(string(rest[2 : 2+l]))
			rest = rest[2+l:]
		}
		good += 8 + n
	}
	f, err := os.OpenFile(lpath, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return exists, fmt.Errorf("dir index: %w", err)
	}
	// Cut a torn tail so new frames follow the last whole one.
	if err := f.Truncate(int64(good)); err != nil {
		f.Close()
		return exists, fmt.Errorf("dir index: %w", err)
	}
	if _, err := f.Seek(int64(good), io.SeekStart); err != nil {
		f.Close()
		return exists, fmt.Errorf("dir index: %w", err)
	}
	x.pending, x.logSize = f, int64(good)
	return exists, nil
}

func (x *dirIndex) close() {
	if x.pending != nil {
		x.pending.Close()
		x.pending = nil
	}
}

// logPending durably records that records for paths may be shipped in
// batches up to batches. It must return before those records reach the spool.
func (x *dirIndex) logPending(batches uint64, paths []string) error {
	var body []byte
	body = binary.BigEndian.AppendUint64(body, batches)
	for _, p := range paths {
		body = binary.BigEndian.AppendUint16(body, uint16(len(p)))
		body = append(body, p...)
	}
	frame := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint32(frame, uint32(len(body)))
	binary.BigEndian.PutUint32(frame[4:], crc32.Checksum(body, dirCRC))
	frame = append(frame, body...)
	if _, err := x.pending.Write(frame); err != nil {
		return fmt.Errorf("write %s: %w", dirPendingFile, err)
	}
	if err := x.pending.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dirPendingFile, err)
	}
	x.logSize += int64(len(frame))
	return nil
}

// persist writes the snapshot atomically and then empties the pending log.
// Call it only when every batch appended so far is durable.
func (x *dirIndex) persist() error {
	snap := x.encode()
	if err := fsutil.WriteFileAtomic(filepath.Join(x.dir, dirIndexFile), snap, 0o644); err != nil {
		return fmt.Errorf("dir index: %w", err)
	}
	x.snapSize = int64(len(snap))
	// A crash before this truncation leaves paths marked pending that need
	// not be: they are shipped again, which is harmless.
	if err := x.pending.Truncate(0); err != nil {
		return fmt.Errorf("dir index: %w", err)
	}
	if _, err := x.pending.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("dir index: %w", err)
	}
	x.logSize = 0
	return nil
}

const dirEntryFixed = 2 + 1 + 1 + 4 + 8 + 8 + 8 + 8 + 32 + 2

func (x *dirIndex) encode() []byte {
	paths := make([]string, 0, len(x.entries))
	n := 0
	for p, e := range x.entries {
		paths = append(paths, p)
		n += dirEntryFixed + len(p) + len(e.Target) + 8 + len(e.Blocks)
	}
	sort.Strings(paths)
	b := make([]byte, 0, 28+n+4)
	b = append(b, dirIndexMagic...)
	b = binary.BigEndian.AppendUint32(b, 2)
	b = binary.BigEndian.AppendUint64(b, x.batches)
	b = binary.BigEndian.AppendUint64(b, uint64(len(paths)))
	for _, p := range paths {
		e := x.entries[p]
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
		flags := byte(0)
		if e.Pending {
			flags = 1
		}
		b = append(b, byte(e.Kind), flags)
		b = binary.BigEndian.AppendUint32(b, e.Mode)
		b = binary.BigEndian.AppendUint64(b, uint64(e.Mtime))
		b = binary.BigEndian.AppendUint64(b, uint64(e.Size))
		b = binary.BigEndian.AppendUint64(b, e.Ino)
		b = binary.BigEndian.AppendUint64(b, uint64(e.Ctime))
		b = append(b, e.Hash[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.Target)))
		b = append(b, e.Target...)
		b = dirAppendBlockMap(b, e)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, dirCRC))
}

func (x *dirIndex) decode(raw []byte) error {
	if len(raw) < 32 || !bytes.Equal(raw[:8], []byte(dirIndexMagic)) {
		return errors.New("not a ferry dir index")
	}
	body := raw[:len(raw)-4]
	if crc32.Checksum(body, dirCRC) != binary.BigEndian.Uint32(raw[len(raw)-4:]) {
		return errors.New("checksum mismatch")
	}
	v := binary.BigEndian.Uint32(body[8:])
	if v != 1 && v != 2 {
		return fmt.Errorf("version %d, this ferry reads 1 and 2", v)
	}
	x.batches = binary.BigEndian.Uint64(body[12:])
	count := binary.BigEndian.Uint64(body[20:])
	rest := body[28:]
	for i := uint64(0); i < count; i++ {
		if len(rest) < dirEntryFixed {
			return fmt.Errorf("entry %d truncated", i)
		}
		pl := int(binary.BigEndian.Uint16(rest))
		if len(rest) < dirEntryFixed+pl {
			return fmt.Errorf("entry %d truncated", i)
		}
		p := string(rest[2 : 2+pl])
		r := rest[2+pl:]
		e := &dirEntry{Kind: dirKind(r[0]), Pending: r[1]&1 != 0}
		e.Mode = binary.BigEndian.Uint32(r[2:])
		e.Mtime = int64(binary.BigEndian.Uint64(r[6:]))
		e.Size = int64(binary.BigEndian.Uint64(r[14:]))
		e.Ino = binary.BigEndian.Uint64(r[22:])
		e.Ctime = int64(binary.BigEndian.Uint64(r[30:]))
		copy(e.Hash[:], r[38:70])
		tl := int(binary.BigEndian.Uint16(r[70:]))
		r = r[72:]
		if len(r) < tl {
			return fmt.Errorf("entry %d truncated", i)
		}
		e.Target = string(r[:tl])
		rest = r[tl:]
		if v == 2 {
			var err error
			if rest, err = dirReadBlockMap(rest, e); err != nil {
				return fmt.Errorf("entry %q: %v", p, err)
			}
		}
		if e.Kind > dirKindLink {
			return fmt.Errorf("entry %q has unknown kind %d", p, e.Kind)
		}
		x.set(p, e)
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d bytes after the last entry", len(rest))
	}
	return nil
}

// checkCursor reconciles the index with the cursor the spool recovered
// (the number of batches durably appended). An index ahead of the spool
// claims records a crash lost (fsync "off", or a spool replaced): every
// path becomes pending, so the tree is shipped again in full.
func (x *dirIndex) checkCursor(cursor uint64, exists bool, log *slog.Logger) {
	switch {
	case !exists && cursor > 0:
		log.Warn("dir index missing but the spool has shipped this tree before: shipping the whole tree again; "+
			"files deleted while ferry was stopped stay on the replica", "index", filepath.Join(x.dir, dirIndexFile))
	case x.batches > cursor:
		log.Warn("dir index is ahead of the spool (records lost in a crash?): shipping the whole tree again",
			"index_batches", x.batches, "spool_batches", cursor)
		for _, e := range x.entries {
			e.Pending = true
		}
	}
	x.batches = max(x.batches, cursor)
}
