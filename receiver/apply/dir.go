//go:build linux

package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
)

// Dir applies the records of a dir: source (docs/DIRTREE.md) to a
// directory tree: files are replaced atomically (temp file in the same
// directory, fsync, rename, directory fsync before Apply returns), chunked
// files are assembled in ROOT/.ferry-staging and renamed into place on
// their last chunk, symlinks are made as links and never followed.
//
// Paths are resolved one element at a time from the root with O_NOFOLLOW.
// A key that is absolute, holds "." or "..", names a reserved temp file,
// or leads through a symlink or a file in the replica stops the receiver
// with an error naming the record and the segment; nothing is written
// outside the root and nothing is skipped silently. The one exception is a
// record that a later record of the same segment supersedes (it names the
// offending element or one of its ancestors): that happens when a segment
// is applied again after a crash, and skipping it converges to the same tree.
//
// Its state in the checkpoint is the file being assembled (path, bytes so
// far, hash state), so a crash between Apply and the checkpoint is undone
// on restart: the staging file is cut back, and replaying the segment
// converges (puts carry full content, deletes of missing paths succeed).
type Dir struct {
	Root string
	// Ledger, when set, makes this the applier of a peer's stream in
	// ferry sync (dir_peer.go); Peer names that peer. The root is then the
	// site's own tree, which need not start empty.
	Ledger *dirsync.Ledger
	Peer   string
	// Rebuild: the tree is being rebuilt from the streams in the store
	// (ferry sync --rejoin) and holds nothing but what the appliers put
	// there, one stream after the other: nothing in it is a local change.
	// A parent directory made for a file of one stream before another
	// stream's mkdir of it is then not taken for one.
	Rebuild bool
	peer    dirPeerState

	root    *os.File
	staging *os.File // ROOT/.ferry-staging, open while it exists
	partial *dirPartial
	syncs   map[[2]uint64]*os.File // directories to fsync before Apply returns

	appended map[string]*dirAppended // files this applier appended to (dir_delta.go)
	segment  string                  // the segment being applied (dir_rename.go)
	renamed  []dirRenameMarker       // the rename marker's list; nil: not read yet (dir_rename.go)
	touched  dirTouched              // paths the segment's records name (dir_rename.go)
}

var (
	_ receiver.Applier  = (*Dir)(nil)
	_ receiver.Stateful = (*Dir)(nil)
)

// parseDir builds the applier for "dir:PATH" (Parse).
func parseDir(spec string) (receiver.Applier, error) {
	_, arg, _ := strings.Cut(spec, ":")
	if arg == "" {
		return nil, fmt.Errorf("apply %q: dir: needs a directory", spec)
	}
	return &Dir{Root: arg}, nil
}

func (a *Dir) String() string { return "dir:" + a.Root }

func (a *Dir) fatalf(format string, args ...any) error {
	return fmt.Errorf("apply dir %s: %s: %w", a.Root, fmt.Sprintf(format, args...), receiver.ErrFatal)
}

// dirFatal is an error retrying cannot fix; Apply adds the record and segment.
func dirFatal(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), receiver.ErrFatal)
}

func (a *Dir) Close() error {
	a.closeSyncs()
	if a.partial != nil && a.partial.f != nil {
		a.partial.f.Close()
	}
	if a.staging != nil {
		a.staging.Close()
		a.staging = nil
	}
	if a.root != nil {
		err := a.root.Close()
		a.root = nil
		return err
	}
	return nil
}

// Apply applies the records in order. On an error it brings the file being
// assembled back to where it was, so a retry applies the segment afresh.
func (a *Dir) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	if a.root == nil {
		return a.fatalf("not restored")
	}
	var start *dirPartial
	if a.partial != nil {
		var err error
		if start, err = a.partial.clone(); err != nil {
			return a.fatalf("%v", err)
		}
	}
	a.syncs = map[[2]uint64]*os.File{}
	a.touched = dirTouched{}
	var err error
	if a.Ledger != nil {
		err = a.applyPeer(ctx, meta, recs)
	} else {
		err = a.applyAll(ctx, meta, recs)
	}
	if err == nil {
		err = a.finish()
	}
	if err == nil && a.Ledger != nil {
		a.Ledger.Lock()
		err = a.Ledger.SetAppliedToEnd(a.Peer, meta.Name(), a.peer.ContKey)
		a.Ledger.Unlock()
		if err != nil {
			err = a.fatalf("%v", err)
		}
	}
	if err != nil {
		a.closeSyncs()
		if rerr := a.resetPartial(start); rerr != nil && !errors.Is(err, receiver.ErrFatal) {
			err = fmt.Errorf("apply dir %s: %w", a.Root, rerr)
		}
	}
	return err
}

func (a *Dir) applyAll(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	wrap := func(i int, err error) error {
		r := recs.At(i)
		return fmt.Errorf("apply dir %s: segment %s record seq %d (%s %q): %w", a.Root, meta.Name(), r.Seq, r.Op, r.Key, err)
	}
	i, err := a.renameResume(meta.Name(), recs.Len())
	if err != nil {
		return err
	}
	for i < recs.Len() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if j := dirPutRunEnd(recs, i); j-i > 1 {
			next, err := a.putRun(recs, i, j)
			if err != nil {
				return wrap(next, err)
			}
			i = next
			continue
		}
		if err := a.applyRecord(recs, i); err != nil {
			return wrap(i, err)
		}
		i++
	}
	return nil
}

// finish makes everything this Apply did durable.
func (a *Dir) finish() error {
	if p := a.partial; p != nil {
		if p.lost {
			return a.fatalf("the staging file for %q (chunks from seq %d) is missing from %s and this segment neither finishes nor drops it; it was removed outside ferry",
				p.Path, p.Seq, dirtree.StagingDir)
		}
		if p.dirty {
			if err := p.f.Sync(); err != nil {
				return a.fatalf("fsync %s/%s: %v", dirtree.StagingDir, dirStagingFile(p.Seq), err)
			}
			p.dirty = false
		}
	} else if a.staging != nil {
		if err := a.clearStaging(""); err != nil {
			return err
		}
	}
	err := a.flushSyncs()
	a.closeSyncs()
	return err
}
