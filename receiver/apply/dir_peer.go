//go:build linux

package apply

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
)

// A Dir with a Ledger applies a peer's stream for ferry sync
// (docs/SYNC.md): every change comes after a version record, and the
// ledger decides what it does to the local tree (apply, drop, or resolve a
// conflict). An Apply decides every record of the segment first, under the
// ledger's lock, makes the decisions durable in the ledger, and only then
// touches the tree: the site's dir: source, which takes the same lock,
// then recognises what was applied and does not ship it back.

// dirPeerState is the sync part of the applier's checkpoint state: a
// version record whose change is in the next segment, and the decision on
// a chunked file whose chunks go on there.
type dirPeerState struct {
	VerKey  string           `json:"ver_key,omitempty"`
	Ver     json.RawMessage  `json:"ver,omitempty"`
	ContKey string           `json:"cont_key,omitempty"`
	Cont    dirsync.Decision `json:"cont,omitzero"`
}

func (a *Dir) applyPeer(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	a.Ledger.Lock()
	defer a.Ledger.Unlock()
	start := a.peer
	err := a.applyPeerLocked(ctx, meta, recs)
	if err != nil {
		a.peer = start
	}
	return err
}

func (a *Dir) applyPeerLocked(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	wrap := func(i int, err error) error {
		r := recs.At(i)
		return fmt.Errorf("apply dir %s: segment %s record seq %d (%s %q): %w", a.Root, meta.Name(), r.Seq, r.Op, r.Key, err)
	}
	acts := make([]dirsync.Decision, recs.Len())
	decided := map[string]bool{}
	// The segment applied again after a crash or an error midway: the
	// tree is half applied, so it gets the decisions it got the first
	// time (dirsync.Ledger.Decided), not new ones.
	again, replay := a.Ledger.Decided(a.Peer, meta.Name(), recs.Len())
	// Applied to its end before (the checkpoint was not written): a path
	// changed here since is a local change, not to be undone.
	var changed map[string]bool
	if replay && a.Ledger.AppliedToEnd(a.Peer, meta.Name()) {
		changed = a.changedSinceApplied(meta, recs, again)
	}
	a.Ledger.BeginSegment()
	defer a.Ledger.EndSegment()
	for i := 0; i < recs.Len(); i++ {
		rec := recs.At(i)
		key := string(rec.Key)
		switch {
		case rec.Op == dirtree.OpBaselineBegin || rec.Op == dirtree.OpBaselineEnd:
			acts[i] = dirsync.Decision{Act: dirsync.ActApply}
			continue
		case rec.Op == dirtree.OpVersion:
			if err := dirtree.CheckKey(key, dirtree.OpMkdir); err != nil {
				return wrap(i, fmt.Errorf("refused: %v: %w", err, receiver.ErrFatal))
			}
			if _, err := dirsync.ParseVersion(rec.Data); err != nil {
				return wrap(i, fmt.Errorf("%v: %w", err, receiver.ErrFatal))
			}
			a.peer.VerKey, a.peer.Ver = key, append(json.RawMessage(nil), rec.Data...)
			acts[i] = dirsync.Decision{Act: dirsync.ActSkip}
			continue
		}
		if rec.Op == dirtree.OpChunk && a.peer.ContKey == key && a.peer.VerKey != key {
			if h, _, err := dirtree.ParseHeader(rec.Data); err == nil && h.Offset > 0 {
				acts[i] = a.peer.Cont
				if dirLastChunk(rec) { // the file is whole: nothing goes on
					a.peer.ContKey, a.peer.Cont = "", dirsync.Decision{}
				}
				continue
			}
		}
		if a.peer.VerKey != key {
			return wrap(i, fmt.Errorf("no version record before it: not a ferry sync stream, or a damaged one: %w", receiver.ErrFatal))
		}
		ver, _ := dirsync.ParseVersion(a.peer.Ver)
		a.peer.VerKey, a.peer.Ver = "", nil
		st, err := dirRecordState(rec)
		if err != nil {
			return wrap(i, fmt.Errorf("%v: %w", err, receiver.ErrFatal))
		}
		d := dirsync.Decision{}
		if replay {
			d = again[i]
			if changed[key] {
				d = dirsync.Decision{Act: dirsync.ActSkip}
			}
		} else {
			in := dirsync.Incoming{
				Peer: a.Peer, Seq: rec.Seq, Key: key, Ver: ver, State: st,
				Disk: a.diskState(key), CheckDisk: !decided[key],
				LocalHash:     func() []byte { return a.hashLocal(key) },
				Below:         func(fn func(string, dirsync.State)) { a.below(key, fn) },
				DecidedBefore: func(p string) bool { return dirDecidedAbove(decided, p) },
			}
			if a.Rebuild {
				in.CheckDisk, in.Below, in.Rebuild = false, nil, true
			}
			if d, err = a.Ledger.Decide(in); err != nil {
				return wrap(i, err)
			}
		}
		acts[i] = d
		decided[key] = true
		if d.Copy != "" {
			decided[d.Copy] = true
		}
		if rec.Op == dirtree.OpChunk && !dirLastChunk(rec) {
			a.peer.ContKey, a.peer.Cont = key, d
		} else if a.peer.ContKey == key {
			a.peer.ContKey, a.peer.Cont = "", dirsync.Decision{}
		}
	}
	if !replay {
		if err := a.Ledger.SetDecided(a.Peer, meta.Name(), acts); err != nil {
			return a.fatalf("%v", err)
		}
	}
	if err := a.Ledger.Sync(); err != nil {
		return a.fatalf("%v", err)
	}
	for i := 0; i < recs.Len(); i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec := recs.At(i)
		key := string(rec.Key)
		var err error
		switch d := acts[i]; d.Act {
		case dirsync.ActSkip:
		case dirsync.ActApply:
			err = a.applyRecord(recs, i)
		case dirsync.ActRenameApply:
			if err = a.keepAside(key, d.Copy); err == nil {
				err = a.applyRecord(recs, i)
			}
		case dirsync.ActAsCopy:
			if rec.Op == dirtree.OpDel || rec.Op == dirtree.OpRmdir {
				break
			}
			err = a.applyRecordAs(recs, i, d.Copy)
		default:
			err = fmt.Errorf("unknown sync decision %q: %w", d.Act, receiver.ErrFatal)
		}
		if err != nil {
			return wrap(i, err)
		}
	}
	a.Ledger.DoneApplying(a.Peer)
	return nil
}

// changedSinceApplied lists the paths of a segment applied to its end
// before a restart (its checkpoint not written) that the tree or the
// ledger shows changed here since (dirsync.Ledger.ChangedSince), but for
// a chunked file begun before the segment or going on after it: its
// chunks carry the assembly from one segment to the next.
func (a *Dir) changedSinceApplied(meta *batch.Meta, recs batch.Records, acts []dirsync.Decision) map[string]bool {
	chunked := map[string]bool{}  // a file begun before the segment, or going on after it
	started := map[string]bool{}  // a chunk at offset 0 in this segment
	complete := map[string]bool{} // its last chunk in this segment was its end
	for i := 0; i < recs.Len(); i++ {
		rec := recs.At(i)
		if rec.Op != dirtree.OpChunk {
			continue
		}
		key := string(rec.Key)
		h, _, err := dirtree.ParseHeader(rec.Data)
		if err != nil {
			chunked[key] = true
			continue
		}
		if h.Offset == 0 {
			started[key] = true
		} else if !started[key] {
			chunked[key] = true
		}
		complete[key] = dirLastChunk(rec)
	}
	for k, c := range complete {
		if !c {
			chunked[k] = true
		}
	}
	out := map[string]bool{}
	seen := map[string]bool{}
	for i := 0; i < recs.Len(); i++ {
		rec := recs.At(i)
		key := string(rec.Key)
		switch {
		case acts[i].Act != dirsync.ActApply && acts[i].Act != dirsync.ActRenameApply,
			rec.Op == dirtree.OpVersion || rec.Op == dirtree.OpBaselineBegin || rec.Op == dirtree.OpBaselineEnd,
			seen[key] || chunked[key]:
			continue
		}
		seen[key] = true
		if a.Ledger.ChangedSince(a.Peer, meta.FirstSeq, meta.LastSeq, key, a.diskState(key)) {
			out[key] = true
		}
	}
	if len(out) > 0 {
		a.Ledger.Log.Info("sync: a peer's segment applied again after a restart: paths changed here since it was applied keep their local change",
			"peer", a.Peer, "segment", meta.Name(), "paths", len(out))
	}
	return out
}

// Continuing is the key of the file whose chunks go on in the peer's next
// segment, as the checkpoint the receiver restored says ("" for none):
// everything else its segments up to the checkpoint wrote is in the tree.
func (a *Dir) Continuing() string { return a.peer.ContKey }

// dirLastChunk reports whether a chunk record ends its file.
func dirLastChunk(rec batch.Record) bool {
	h, payload, err := dirtree.ParseHeader(rec.Data)
	return err == nil && h.Offset+int64(len(payload)) >= h.Size
}

// dirDecidedAbove reports whether key or one of its ancestors was decided
// earlier in the segment.
func dirDecidedAbove(decided map[string]bool, key string) bool {
	for p := key; ; {
		if decided[p] {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

// dirRecordState is the state a record leaves at its key.
func dirRecordState(rec batch.Record) (dirsync.State, error) {
	switch rec.Op {
	case dirtree.OpDel, dirtree.OpRmdir:
		return dirsync.Absent, nil
	case dirtree.OpAppend, dirtree.OpDelta: // dir_delta.go; the source sends whole files in sync mode
		return dirsync.State{}, fmt.Errorf("an op %q record in a ferry sync stream, which carries whole files only (docs/DIRTREE.md)", rec.Op)
	case dirtree.OpRename: // the source ships renames as del + put in sync mode
		return dirsync.State{}, errors.New("a rename record in a ferry sync stream, which ships renames as del + put")
	}
	h, payload, err := dirtree.ParseHeader(rec.Data)
	if err != nil {
		return dirsync.State{}, err
	}
	switch rec.Op {
	case dirtree.OpMkdir:
		return dirsync.State{Kind: dirsync.KindDir, Mode: h.Mode, Mtime: h.Mtime}, nil
	case dirtree.OpSymlink:
		return dirsync.State{Kind: dirsync.KindLink, Mode: h.Mode, Mtime: h.Mtime, Size: h.Size, Target: string(payload)}, nil
	case dirtree.OpPut, dirtree.OpAttr, dirtree.OpChunk:
		st := dirsync.State{Kind: dirsync.KindFile, Mode: h.Mode, Mtime: h.Mtime, Size: h.Size}
		if h.SHA256 != ([32]byte{}) {
			st.Hash = append([]byte(nil), h.SHA256[:]...)
		}
		return st, nil
	}
	return dirsync.State{}, fmt.Errorf("unknown op %q", rec.Op)
}

// dirStatState is the sync state of what st describes.
func dirStatState(st *unix.Stat_t, target string) dirsync.State {
	mode := uint32(st.Mode & 0o7777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return dirsync.State{Kind: dirsync.KindDir, Mode: mode, Mtime: st.Mtim.Nano()}
	case unix.S_IFLNK:
		return dirsync.State{Kind: dirsync.KindLink, Mode: mode, Mtime: st.Mtim.Nano(), Size: st.Size, Target: target}
	case unix.S_IFREG:
		return dirsync.State{Kind: dirsync.KindFile, Mode: mode, Mtime: st.Mtim.Nano(), Size: st.Size}
	}
	return dirsync.Absent // special files are not replicated
}

// diskState is what the local tree holds at key, never following a symlink.
func (a *Dir) diskState(key string) dirsync.State {
	if key == "." {
		var st unix.Stat_t
		if unix.Fstat(int(a.root.Fd()), &st) != nil {
			return dirsync.Absent
		}
		return dirStatState(&st, "")
	}
	dir, base, err := a.openParent(key, false)
	if err != nil {
		return dirsync.Absent
	}
	defer dir.Close()
	var st unix.Stat_t
	if unix.Fstatat(int(dir.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return dirsync.Absent
	}
	target := ""
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		buf := make([]byte, 4096)
		if n, err := unix.Readlinkat(int(dir.Fd()), base, buf); err == nil {
			target = string(buf[:n])
		}
	}
	return dirStatState(&st, target)
}

// hashLocal is the SHA-256 of the local file at key (nil if unreadable).
func (a *Dir) hashLocal(key string) []byte {
	dir, base, err := a.openParent(key, false)
	if err != nil {
		return nil
	}
	defer dir.Close()
	fd, err := unix.Openat(int(dir.Fd()), base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil
	}
	return h.Sum(nil)
}

// below calls fn with every path under key in the local tree (not the
// applier's own temporary names).
func (a *Dir) below(key string, fn func(string, dirsync.State)) {
	base := filepath.Join(a.Root, filepath.FromSlash(key))
	filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == base {
			return nil
		}
		rel, err := filepath.Rel(a.Root, p)
		if err != nil {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if dirtree.Reserved(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fn(rel, a.diskState(rel))
		return nil
	})
}

// keepAside renames the local version at key to name (a conflict's
// loser), unless a crash left that done already.
func (a *Dir) keepAside(key, name string) error {
	dir, base, err := a.openParent(key, false)
	if errors.Is(err, errDirNoParent) {
		return nil
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	cdir, cbase, err := a.openParent(name, false)
	if err != nil {
		return err
	}
	defer cdir.Close()
	fd := int(dir.Fd())
	err = dirKeepMtime(fd, func() error {
		return unix.Renameat2(fd, base, int(cdir.Fd()), cbase, unix.RENAME_NOREPLACE)
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EEXIST) {
		return nil // renamed before a crash (the copy is there), or nothing to keep
	}
	if err != nil {
		return fmt.Errorf("keep %q aside as %q: %w", key, name, err)
	}
	return a.syncLater(dir)
}
