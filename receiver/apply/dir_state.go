//go:build linux

package apply

import (
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/dirtree"
)

// dirApplierState is the applier's state in the checkpoint.
type dirApplierState struct {
	Partial *dirPartial   `json:"partial,omitempty"`
	Peer    *dirPeerState `json:"sync,omitempty"`
}

// Restore opens the root (creating it) and brings the file being assembled
// back to the checkpoint. A new state needs an empty root.
func (a *Dir) Restore(state json.RawMessage) error {
	if err := os.MkdirAll(a.Root, 0o755); err != nil {
		return a.fatalf("%v", err)
	}
	f, err := os.Open(a.Root)
	if err != nil {
		return a.fatalf("%v", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.IsDir() {
		f.Close()
		return a.fatalf("not a directory")
	}
	var st dirApplierState
	if state == nil && a.Ledger == nil {
		l, err := os.Open(a.Root)
		if err != nil {
			f.Close()
			return a.fatalf("%v", err)
		}
		names, _ := l.Readdirnames(1)
		l.Close()
		if len(names) > 0 {
			f.Close()
			return a.fatalf("the directory already holds files (%q, ...) but the receiver state is new; move them away or use an empty directory", names[0])
		}
	} else if state == nil {
		// ferry sync: the root is the site's own tree.
	} else if err := json.Unmarshal(state, &st); err != nil {
		f.Close()
		return a.fatalf("checkpoint state unreadable: %v", err)
	}
	a.root = f
	a.renamed = nil
	if st.Peer != nil {
		a.peer = *st.Peer
	}
	if err := a.resetPartial(st.Partial); err != nil {
		return fmt.Errorf("apply dir %s: %w", a.Root, err)
	}
	return nil
}

// State is the file being assembled, if any.
func (a *Dir) State() (json.RawMessage, error) {
	var st dirApplierState
	if a.partial != nil {
		c, err := a.partial.clone()
		if err != nil {
			return nil, err
		}
		st.Partial = c
	}
	if a.peer.VerKey != "" || a.peer.ContKey != "" {
		p := a.peer
		st.Peer = &p
	}
	return json.Marshal(st)
}

// resetPartial makes p (a checkpointed or saved state, nil for none) the
// file being assembled: its staging file is cut back to p.Offset and every
// other staging file is removed. A missing staging file makes p lost.
func (a *Dir) resetPartial(p *dirPartial) error {
	if a.partial != nil && a.partial.f != nil {
		a.partial.f.Close()
	}
	a.partial = nil
	keep := ""
	if p != nil {
		keep = dirStagingFile(p.Seq)
	}
	if err := a.clearStaging(keep); err != nil {
		return err
	}
	if p == nil {
		return nil
	}
	q := &dirPartial{Path: p.Path, Seq: p.Seq, Size: p.Size, Offset: p.Offset, Ino: p.Ino, Hash: p.Hash}
	if q.Offset < 0 || q.Offset >= q.Size || dirtree.CheckKey(q.Path, dirtree.OpChunk) != nil {
		return dirFatal("checkpoint state names an impossible partial file %+v", *p)
	}
	a.partial = q
	sd, err := a.openStaging(false)
	if err != nil {
		return err
	}
	var fd int
	if sd != nil {
		fd, err = unix.Openat(int(sd.Fd()), keep, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if sd == nil || errors.Is(err, unix.ENOENT) {
		q.lost = true
		return nil
	}
	if err != nil {
		return dirFatal("open %s/%s: %v", dirtree.StagingDir, keep, err)
	}
	q.f = os.NewFile(uintptr(fd), sd.Name()+"/"+keep)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return dirFatal("%v", err)
	}
	if st.Ino != q.Ino {
		return dirFatal("%s/%s is not the file the checkpoint names (inode %d, want %d); it was replaced outside ferry", dirtree.StagingDir, keep, st.Ino, q.Ino)
	}
	if st.Size < q.Offset {
		return dirFatal("%s/%s is %d bytes, shorter than the %d the checkpoint recorded; it was changed outside ferry", dirtree.StagingDir, keep, st.Size, q.Offset)
	}
	if st.Size > q.Offset {
		if err := q.f.Truncate(q.Offset); err != nil {
			return dirFatal("truncate %s/%s: %v", dirtree.StagingDir, keep, err)
		}
		if err := q.f.Sync(); err != nil {
			return dirFatal("fsync %s/%s: %v", dirtree.StagingDir, keep, err)
		}
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(q.Hash); err != nil {
		return dirFatal("checkpoint hash state for %q unreadable: %v", q.Path, err)
	}
	q.h = h
	return nil
}
