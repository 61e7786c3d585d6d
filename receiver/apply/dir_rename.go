//go:build linux

package apply

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
)

// rename applies a rename record: the old path, which must hold what the
// record expects (a file of that mode, mtime, size and SHA-256, or a
// directory of that mode and mtime), is renamed to key with renameat(2),
// both parents resolved from the root without following a symlink, their
// mtimes kept, and both fsynced before Apply returns.
//
// Applied again after a crash (the segment replayed before its checkpoint)
// it is a no-op: the new path already holds what the record expects, and
// whatever stands at the old path was made again by the segment's earlier
// records, which the rename moved away the first time, so it goes. A
// rename that an earlier record of the segment could undo on such a replay
// is made durable at once and marked (dirTouched.renameUnsafe, below), so the
// replay resumes after it. A record that a later record of the segment
// rewrites (dirRenameSuperseded) is skipped when the paths are not as
// expected, as the other ops do. Anything else is a replica that diverged
// from the source: fatal, naming both paths and what each holds.
func (a *Dir) rename(recs batch.Records, i int, key string, data []byte) error {
	rn, err := dirtree.ParseRename(data)
	if err == nil {
		err = dirtree.CheckRename(key, rn)
	}
	if err != nil {
		return fmt.Errorf("refused: %v: %w", err, receiver.ErrFatal)
	}
	superseded := func() bool {
		return dirRenameSuperseded(recs, i, rn.Old) || dirRenameSuperseded(recs, i, key)
	}
	odir, obase, oerr := a.openParent(rn.Old, false)
	if oerr == nil {
		defer odir.Close()
	}
	ndir, nbase, nerr := a.openParent(key, false)
	if nerr == nil {
		defer ndir.Close()
	}
	for _, e := range []error{oerr, nerr} {
		var nd *dirNotDirError
		switch {
		case e == nil, errors.Is(e, errDirNoParent):
		case errors.As(e, &nd):
			if dirSuperseded(recs, i, rn.Old) || dirSuperseded(recs, i, key) || dirRenameSuperseded(recs, i, nd.path) {
				return nil
			}
			return fmt.Errorf("%v: %w", e, receiver.ErrFatal)
		default:
			return e
		}
	}
	var oldSt, newSt string // what stands there, for the error
	oldMatch, newMatch := false, false
	if oerr == nil {
		if oldMatch, oldSt, err = dirRenameMatch(odir, obase, rn); err != nil {
			return err
		}
	} else {
		oldSt = "nothing (its directory is missing)"
	}
	if nerr == nil {
		if newMatch, newSt, err = dirRenameMatch(ndir, nbase, rn); err != nil {
			return err
		}
	} else {
		newSt = "nothing (its directory is missing)"
	}
	switch {
	case newMatch && (!oldMatch || rn.Kind == dirtree.RenameFile || !dirIsEmptyAt(ndir, nbase)):
		// Applied before: the new path holds what moved. (A file at the
		// old path with the same content, mode and time would move over
		// it unchanged; removing it is the same.) A matching directory at
		// the old path beside a non-empty one at the new path is one the
		// segment's earlier records made again on replay.
		if oldSt == "nothing" || oerr != nil || dirRenameSuperseded(recs, i, rn.Old) {
			return nil
		}
		fd := int(odir.Fd())
		if err := dirKeepMtime(fd, func() error { return dirRemoveAll(fd, obase) }); err != nil {
			return err
		}
		return a.syncLater(odir)
	case oldMatch && nerr == nil:
		unsafe := a.touched.renameUnsafe(recs, i, rn.Old, key)
		if unsafe {
			// Everything before the rename is durable before it.
			if err := a.flushSyncs(); err != nil {
				return err
			}
			a.closeSyncs()
		}
		err := a.renameAt(odir, obase, ndir, nbase)
		if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTDIR) {
			if superseded() {
				return nil
			}
			return fmt.Errorf("replica diverged: cannot rename %q to %q, which holds %s: %w", rn.Old, key, newSt, receiver.ErrFatal)
		}
		if err != nil {
			return err
		}
		if unsafe {
			return a.renamedDurably(recs, i, odir, ndir)
		}
		if err := a.syncLater(odir); err != nil {
			return err
		}
		return a.syncLater(ndir)
	case superseded():
		return nil
	}
	return fmt.Errorf("replica diverged: the rename from %q expects %s there, the replica holds %s (and %s at %q): %w",
		rn.Old, dirRenameWant(rn), oldSt, newSt, key, receiver.ErrFatal)
}

// renameAt renames obase in odir to nbase in ndir, keeping both
// directories' mtimes (only mkdir records set a directory's time).
func (a *Dir) renameAt(odir *os.File, obase string, ndir *os.File, nbase string) error {
	ofd, nfd := int(odir.Fd()), int(ndir.Fd())
	return dirKeepMtime(ofd, func() error {
		return dirKeepMtime(nfd, func() error { return unix.Renameat(ofd, obase, nfd, nbase) })
	})
}

// dirRenameMatch reports whether name in dir holds what rn expects, and
// describes what is there ("nothing" when missing). Never follows a symlink.
func dirRenameMatch(dir *os.File, name string, rn dirtree.Rename) (bool, string, error) {
	fd := int(dir.Fd())
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, "nothing", nil
		}
		return false, "", err
	}
	mode, mtime := st.Mode&0o7777, st.Mtim.Nano()
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		desc := fmt.Sprintf("a directory (mode %#o, mtime %d)", mode, mtime)
		return rn.Kind == dirtree.RenameDir && mode == rn.Mode && mtime == rn.Mtime, desc, nil
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return false, "a symlink", nil
	default:
		return false, "a special file", nil
	}
	desc := fmt.Sprintf("a file of %d bytes (mode %#o, mtime %d)", st.Size, mode, mtime)
	if rn.Kind != dirtree.RenameFile || mode != rn.Mode || mtime != rn.Mtime || st.Size != rn.Size {
		return false, desc, nil
	}
	ffd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, "", err
	}
	f := os.NewFile(uintptr(ffd), name)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, "", fmt.Errorf("read %s: %w", name, err)
	}
	if [32]byte(h.Sum(nil)) != rn.SHA256 {
		return false, desc + " with other content", nil
	}
	return true, desc, nil
}

func dirRenameWant(rn dirtree.Rename) string {
	if rn.Kind == dirtree.RenameDir {
		return fmt.Sprintf("a directory (mode %#o, mtime %d)", rn.Mode, rn.Mtime)
	}
	return fmt.Sprintf("a file of %d bytes (mode %#o, mtime %d, sha256 %x)", rn.Size, rn.Mode, rn.Mtime, rn.SHA256)
}

// dirIsEmptyAt reports whether name in dir is an empty directory.
func dirIsEmptyAt(dir *os.File, name string) bool {
	fd, err := dirOpenAt(int(dir.Fd()), name)
	if err != nil {
		return false
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	names, _ := d.Readdirnames(1)
	return len(names) == 0
}

// dirRenameSuperseded reports whether a record after recs[i] makes p what
// it must be whatever recs[i] finds there: one that names p, replaces or
// removes an ancestor of p (a mkdir of an ancestor does neither), or moves
// p or an ancestor away. Stricter than dirSuperseded: a rename that finds
// the wrong content is only let go when the segment certainly rewrites it.
func dirRenameSuperseded(recs batch.Records, i int, p string) bool {
	for j := i + 1; j < recs.Len(); j++ {
		r := recs.At(j)
		k := string(r.Key)
		if k == p || (r.Op != dirtree.OpMkdir && strings.HasPrefix(p, k+"/")) {
			return true
		}
		if r.Op != dirtree.OpRename {
			continue
		}
		if rn, err := dirtree.ParseRename(r.Data); err == nil && (rn.Old == p || strings.HasPrefix(p, rn.Old+"/")) {
			return true
		}
	}
	return false
}

// Exactly once for a rename that the segment's earlier records could undo
// when the segment is applied again: one whose old or new path (or
// something below either, or an ancestor other than by mkdir) an earlier
// record of the segment writes, removes or moves. Applied again, that
// record would clobber what the rename moved there, and nothing in the
// segment carries the moved content. So such a rename is made durable at
// once, with everything before it, and the root's marker file
// (dirRenameMark) records the segment and the rename's index: a segment
// applied again resumes after it. Every other rename is checked by
// content and needs no marker.
//
// The marker keeps the last such rename of each of the last
// dirRenameMarks segments that had one, not only the latest segment's: the
// receiver applies up to 64 segments (its maxGroup) past one checkpoint,
// and a crash applies them all again, the earlier ones first; a damaged
// checkpoint slot falls back to the save before. An entry for a segment
// that can no longer be applied again is harmless.

// dirRenameMark is the marker at the root; its name is one the source never
// ships and no key may name (dirtree.Reserved).
const dirRenameMark = dirtree.TempPrefix + "renamed" + dirtree.TempSuffix

// dirRenameMarks bounds the segments the marker remembers: more than the
// two checkpoint groups of segments a crash can apply again.
const dirRenameMarks = 256

type dirRenameMarker struct {
	Segment string `json:"segment"`
	Index   int    `json:"index"` // of the rename record in the segment
}

// dirRenameMarkers is the marker file: oldest segment first. A marker of
// one entry alone ({"segment":..., "index":...}, written before the list)
// reads as a list of one.
type dirRenameMarkers struct {
	dirRenameMarker
	Renames []dirRenameMarker `json:"renames,omitempty"`
}

// dirTouched indexes the paths the records of a segment name, up to a
// record, so that renameUnsafe costs the depth of the paths it checks
// rather than every record before the rename: a segment of Maildir flag
// changes is mostly renames.
type dirTouched struct {
	n     int              // recs[:n] are indexed
	paths map[string]uint8 // dirNamed, dirNamedNotMkdir, dirAbove
}

const (
	dirNamed         = 1 << iota // a record names the path (a rename: its old path too)
	dirNamedNotMkdir             // ... a record other than mkdir
	dirAbove                     // a named path is below it
)

// add indexes recs[t.n:i].
func (t *dirTouched) add(recs batch.Records, i int) {
	if t.paths == nil {
		t.paths = map[string]uint8{}
	}
	mark := func(op, k string) {
		bits := uint8(dirNamed)
		if op != dirtree.OpMkdir {
			bits |= dirNamedNotMkdir
		}
		t.paths[k] |= bits
		for j := strings.LastIndexByte(k, '/'); j > 0; j = strings.LastIndexByte(k[:j], '/') {
			t.paths[k[:j]] |= dirAbove
		}
	}
	for ; t.n < i; t.n++ {
		r := recs.At(t.n)
		mark(r.Op, string(r.Key))
		if r.Op == dirtree.OpRename {
			if rn, err := dirtree.ParseRename(r.Data); err == nil {
				mark(r.Op, rn.Old)
			}
		}
	}
}

// renameUnsafe reports whether a record before recs[i] names old or key
// as described above: names it, names something below it, or (other than
// mkdir) names an ancestor of it. t indexes recs from its start.
func (t *dirTouched) renameUnsafe(recs batch.Records, i int, old, key string) bool {
	t.add(recs, i)
	for _, p := range []string{old, key} {
		if t.paths[p]&(dirNamed|dirAbove) != 0 {
			return true
		}
		for j := strings.LastIndexByte(p, '/'); j > 0; j = strings.LastIndexByte(p[:j], '/') {
			if t.paths[p[:j]]&dirNamedNotMkdir != 0 {
				return true
			}
		}
	}
	return false
}

// renamedDurably fsyncs both parents of the rename recs[i] has just made
// and then records it in the marker (temp file, fsync, rename, fsync root).
func (a *Dir) renamedDurably(recs batch.Records, i int, dirs ...*os.File) error {
	for _, d := range dirs {
		if err := d.Sync(); err != nil {
			return dirFatal("fsync directory %s: %v", d.Name(), err)
		}
	}
	marks, err := a.renameMarks()
	if err != nil {
		return err
	}
	marks = slices.DeleteFunc(marks, func(m dirRenameMarker) bool { return m.Segment == a.segment })
	if len(marks) >= dirRenameMarks {
		marks = marks[len(marks)-dirRenameMarks+1:]
	}
	marks = append(marks, dirRenameMarker{Segment: a.segment, Index: i})
	b, err := json.Marshal(dirRenameMarkers{Renames: marks})
	if err != nil {
		return err
	}
	a.renamed = nil // read again if this write fails
	fd := int(a.root.Fd())
	tmp := dirtree.TempName(recs.Seq(i))
	err = dirKeepMtime(fd, func() error {
		f, err := a.createTemp(a.root, tmp)
		if err != nil {
			return err
		}
		_, err = f.Write(b)
		if err == nil {
			if err = f.Sync(); err != nil {
				err = dirFatal("fsync %s: %v", dirRenameMark, err)
			}
		}
		f.Close()
		if err == nil {
			err = unix.Renameat(fd, tmp, fd, dirRenameMark)
		}
		if err != nil {
			unix.Unlinkat(fd, tmp, 0)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := a.root.Sync(); err != nil {
		return dirFatal("fsync %s: %v", a.Root, err)
	}
	a.renamed = marks
	return nil
}

// renameResume is where applying the segment named seg starts: after the
// last rename the marker records for it (a segment applied again after a
// crash or an error), else at its first record.
func (a *Dir) renameResume(seg string, n int) (int, error) {
	a.segment = seg
	marks, err := a.renameMarks()
	if err != nil {
		return 0, err
	}
	k := slices.IndexFunc(marks, func(m dirRenameMarker) bool { return m.Segment == seg })
	if k < 0 {
		return 0, nil
	}
	m := marks[k]
	if m.Index < 0 || m.Index >= n {
		return 0, dirFatal("%s/%s names record %d of segment %s, which has %d", a.Root, dirRenameMark, m.Index, seg, n)
	}
	if a.partial != nil { // the rename dropped it the first time
		if err := a.dropPartial(); err != nil {
			return 0, err
		}
	}
	return m.Index + 1, nil
}

// renameMarks is the marker's list, read once after Restore and then kept
// as this applier writes it.
func (a *Dir) renameMarks() ([]dirRenameMarker, error) {
	if a.renamed != nil {
		return a.renamed, nil
	}
	fd, err := unix.Openat(int(a.root.Fd()), dirRenameMark, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		a.renamed = []dirRenameMarker{}
		return a.renamed, nil
	}
	if err != nil {
		return nil, dirFatal("open %s: %v", dirRenameMark, err)
	}
	f := os.NewFile(uintptr(fd), dirRenameMark)
	defer f.Close()
	var m dirRenameMarkers
	if b, err := io.ReadAll(f); err != nil {
		return nil, err
	} else if err := json.Unmarshal(b, &m); err != nil {
		return nil, dirFatal("%s/%s unreadable: %v", a.Root, dirRenameMark, err)
	}
	if m.Segment != "" {
		m.Renames = append(m.Renames, m.dirRenameMarker)
	}
	a.renamed = append([]dirRenameMarker{}, m.Renames...)
	return a.renamed, nil
}
