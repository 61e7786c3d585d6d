//go:build linux

package apply

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
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

	root    *os.File
	staging *os.File // ROOT/.ferry-staging, open while it exists
	partial *dirPartial
	syncs   map[[2]uint64]*os.File // directories to fsync before Apply returns
}

var (
	_ receiver.Applier  = (*Dir)(nil)
	_ receiver.Stateful = (*Dir)(nil)
)

// dirMaxOpenSyncs caps the directories held open for the fsync at the end
// of Apply; beyond it they are fsynced early.
const dirMaxOpenSyncs = 256

// dirPartial is a chunked file being assembled.
type dirPartial struct {
	Path   string `json:"path"`
	Seq    uint64 `json:"seq"` // of its first chunk; names the staging file
	Size   int64  `json:"size"`
	Offset int64  `json:"offset"` // bytes assembled
	Ino    uint64 `json:"ino"`    // of the staging file; recognises it once renamed into place
	Hash   []byte `json:"hash"`   // sha256 state after Offset bytes

	f     *os.File
	h     hash.Hash
	dirty bool // written since the last fsync
	// lost: the staging file was gone on restore. The crash came after the
	// file was published or dropped; its remaining chunks are skipped.
	lost bool
}

type dirApplierState struct {
	Partial *dirPartial `json:"partial,omitempty"`
}

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
	if state == nil {
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
	} else if err := json.Unmarshal(state, &st); err != nil {
		f.Close()
		return a.fatalf("checkpoint state unreadable: %v", err)
	}
	a.root = f
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
	return json.Marshal(st)
}

func (p *dirPartial) clone() (*dirPartial, error) {
	c := &dirPartial{Path: p.Path, Seq: p.Seq, Size: p.Size, Offset: p.Offset, Ino: p.Ino, Hash: p.Hash, lost: p.lost}
	if p.h != nil {
		b, err := p.h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return nil, err
		}
		c.Hash = b
	}
	return c, nil
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
func (a *Dir) Apply(ctx context.Context, meta *batch.Meta, recs []batch.Record) error {
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
	err := a.applyAll(ctx, meta, recs)
	if err == nil {
		err = a.finish()
	}
	if err != nil {
		a.closeSyncs()
		if rerr := a.resetPartial(start); rerr != nil && !errors.Is(err, receiver.ErrFatal) {
			err = fmt.Errorf("apply dir %s: %w", a.Root, rerr)
		}
	}
	return err
}

func (a *Dir) applyAll(ctx context.Context, meta *batch.Meta, recs []batch.Record) error {
	wrap := func(i int, err error) error {
		r := &recs[i]
		return fmt.Errorf("apply dir %s: segment %s record seq %d (%s %q): %w", a.Root, meta.Name(), r.Seq, r.Op, r.Key, err)
	}
	for i := 0; i < len(recs); {
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

// Limits of a run of puts applied together.
const (
	dirRunRecords  = 256
	dirRunBytes    = 16 << 20
	dirSyncWorkers = 16
)

// dirPutRunEnd returns the end of the run of put, mkdir, del and rmdir
// records starting at i, or i+1 if it holds fewer than two puts.
func dirPutRunEnd(recs []batch.Record, i int) int {
	j, n, puts := i, 0, 0
	for ; j < len(recs) && j-i < dirRunRecords && n < dirRunBytes; j++ {
		switch recs[j].Op {
		case dirtree.OpPut:
			puts++
		case dirtree.OpMkdir, dirtree.OpDel, dirtree.OpRmdir:
		default:
			goto end
		}
		n += len(recs[j].Data)
	}
end:
	if puts < 2 {
		return i + 1
	}
	return j
}

// dirStagedPut is a put whose temp file is written but not yet in place.
type dirStagedPut struct {
	i         int
	dir       *os.File
	base, tmp string
	f         *os.File
}

// putRun applies the puts recs[i:j] as a group: it writes every temp
// file, fsyncs them in parallel, then renames them into place in record
// order and puts back the mtimes of the directories it touched. Each file
// is still durable before its rename; the fsyncs merely overlap. A mkdir,
// del or rmdir among them is applied at once (so the puts below a new
// directory find it), unless the order against a staged put matters: the
// run ends before a mkdir or delete of a path that a staged put will
// replace or lies below, a delete of a directory holding one, or a mkdir
// of its directory (its time would be put back to the old one). It
// returns the index of the record after the run, or of the record that
// failed.
func (a *Dir) putRun(recs []batch.Record, i, j int) (int, error) {
	if a.partial != nil {
		if err := a.dropPartial(); err != nil {
			return i, err
		}
	}
	var staged []*dirStagedPut
	mtimes := map[[2]uint64]unix.Timespec{}
	dirs := map[[2]uint64]*os.File{}
	defer func() {
		for _, s := range staged {
			if s.f != nil {
				s.f.Close()
				unix.Unlinkat(int(s.dir.Fd()), s.tmp, 0)
			}
			s.dir.Close()
		}
	}()
	restored := false
	defer func() {
		if !restored { // an error midway: still put the directories' times back
			for id, d := range dirs {
				dirSetMtime(int(d.Fd()), mtimes[id])
			}
		}
	}()
	keys, parents, above := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for k := i; k < j; k++ {
		rec := &recs[k]
		key := string(rec.Key)
		if rec.Op != dirtree.OpPut {
			if dirClashes(keys, key) || (rec.Op == dirtree.OpMkdir && parents[key]) || (rec.Op != dirtree.OpMkdir && above[key]) {
				j = k
				break
			}
			if err := a.applyRecord(recs, k); err != nil {
				return k, err
			}
			continue
		}
		if err := dirtree.CheckKey(key, rec.Op); err != nil {
			return k, fmt.Errorf("refused: %v: %w", err, receiver.ErrFatal)
		}
		keys[key] = true
		parents[dirOfKey(key)] = true
		for d := dirOfKey(key); d != "."; d = dirOfKey(d) {
			above[d] = true
		}
		h, payload, err := dirtree.ParseHeader(rec.Data)
		if err == nil {
			err = dirtree.CheckPayload(rec.Op, h, payload)
		}
		if err != nil {
			return k, fmt.Errorf("%v: %w", err, receiver.ErrFatal)
		}
		dir, base, skip, err := a.parent(recs, k, key, true)
		if err != nil {
			return k, err
		}
		if skip {
			continue
		}
		s := &dirStagedPut{i: k, dir: dir, base: base, tmp: dirtree.TempName(rec.Seq)}
		staged = append(staged, s)
		var st unix.Stat_t
		if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
			return k, err
		}
		id := [2]uint64{uint64(st.Dev), st.Ino}
		if _, ok := mtimes[id]; !ok {
			mtimes[id], dirs[id] = st.Mtim, dir
		}
		if s.f, err = a.createTemp(dir, s.tmp); err != nil {
			return k, err
		}
		if err := dirWriteMeta(s.f, payload, h); err != nil {
			return k, err
		}
	}
	// Overlap the fsyncs: the journal commits them together.
	errs := make([]error, len(staged))
	var wg sync.WaitGroup
	sem := make(chan struct{}, dirSyncWorkers)
	for n, s := range staged {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[n] = s.f.Sync()
		}()
	}
	wg.Wait()
	for n, s := range staged {
		if errs[n] != nil {
			return s.i, fmt.Errorf("fsync %s: %v: %w", s.tmp, errs[n], receiver.ErrFatal)
		}
	}
	for _, s := range staged {
		s.f.Close()
		s.f = nil
		if err := dirReplace(int(s.dir.Fd()), s.tmp, int(s.dir.Fd()), s.base); err != nil {
			return s.i, err
		}
	}
	restored = true
	for id, d := range dirs {
		if err := dirSetMtime(int(d.Fd()), mtimes[id]); err != nil {
			return j - 1, err
		}
		if err := a.syncLater(d); err != nil {
			return j - 1, err
		}
	}
	return j, nil
}

// dirOfKey is the directory of a key ("." for a top-level name).
func dirOfKey(key string) string {
	if d := strings.LastIndexByte(key, '/'); d >= 0 {
		return key[:d]
	}
	return "."
}

// dirClashes reports whether key or one of its ancestors is in keys.
func dirClashes(keys map[string]bool, key string) bool {
	for p := key; ; {
		if keys[p] {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

// createTemp creates the temp file tmp in dir, replacing one a crash left.
func (a *Dir) createTemp(dir *os.File, tmp string) (*os.File, error) {
	fd := int(dir.Fd())
	if err := unix.Unlinkat(fd, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	tfd, err := unix.Openat(fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(tfd), tmp), nil
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

// flushSyncs fsyncs the directories noted by syncLater, several at a time.
func (a *Dir) flushSyncs() error {
	dirs := make([]*os.File, 0, len(a.syncs))
	for _, d := range a.syncs {
		dirs = append(dirs, d)
	}
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, dirSyncWorkers)
	for n, d := range dirs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[n] = d.Sync()
		}()
	}
	wg.Wait()
	for n, err := range errs {
		if err != nil {
			return a.fatalf("fsync directory %s: %v", dirs[n].Name(), err)
		}
	}
	return nil
}

func (a *Dir) closeSyncs() {
	for k, d := range a.syncs {
		d.Close()
		delete(a.syncs, k)
	}
}

// syncLater notes that directory d changed and must be fsynced before
// Apply returns.
func (a *Dir) syncLater(d *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return err
	}
	k := [2]uint64{uint64(st.Dev), st.Ino}
	if _, ok := a.syncs[k]; ok {
		return nil
	}
	if len(a.syncs) >= dirMaxOpenSyncs {
		if err := a.flushSyncs(); err != nil {
			return err
		}
		a.closeSyncs()
	}
	fd, err := unix.Dup(int(d.Fd()))
	if err != nil {
		return err
	}
	unix.CloseOnExec(fd)
	a.syncs[k] = os.NewFile(uintptr(fd), d.Name())
	return nil
}

// dirNotDirError is a path element that is not a directory in the replica.
type dirNotDirError struct {
	path   string
	target string // set when it is a symlink
	link   bool
}

func (e *dirNotDirError) Error() string {
	if e.link {
		return fmt.Sprintf("%q is a symlink in the replica (to %q); refusing to write through it", e.path, e.target)
	}
	return fmt.Sprintf("%q is not a directory in the replica", e.path)
}

var errDirNoParent = errors.New("parent directory missing")

// openParent resolves the directory holding key's last element from the
// root, one element at a time, never following a symlink. With create,
// missing directories are made (0755; a later mkdir record sets their mode
// and time); without, a missing one is errDirNoParent.
func (a *Dir) openParent(key string, create bool) (*os.File, string, error) {
	elems := strings.Split(key, "/")
	fd, err := unix.Dup(int(a.root.Fd()))
	if err != nil {
		return nil, "", err
	}
	unix.CloseOnExec(fd)
	for i, e := range elems[:len(elems)-1] {
		next, err := dirOpenAt(fd, e)
		if errors.Is(err, unix.ENOENT) && create {
			err = dirMkdirKeepMtime(fd, e, 0o755)
			if err == nil {
				next, err = dirOpenAt(fd, e)
			}
		}
		if err != nil {
			p := strings.Join(elems[:i+1], "/")
			var st unix.Stat_t
			switch {
			case errors.Is(err, unix.ENOENT):
				err = errDirNoParent
			case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR):
				if unix.Fstatat(fd, e, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					buf := make([]byte, 4096)
					n, _ := unix.Readlinkat(fd, e, buf)
					err = &dirNotDirError{path: p, link: true, target: string(buf[:max(n, 0)])}
				} else {
					err = &dirNotDirError{path: p}
				}
			default:
				err = fmt.Errorf("open %s: %w", p, err)
			}
			unix.Close(fd)
			return nil, "", err
		}
		unix.Close(fd)
		fd = next
	}
	dir := strings.Join(elems[:len(elems)-1], "/")
	if dir == "" {
		dir = "."
	}
	return os.NewFile(uintptr(fd), a.Root+"/"+dir), elems[len(elems)-1], nil
}

func dirOpenAt(fd int, name string) (int, error) {
	return unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// dirSuperseded reports whether a record after recs[i] names p or one of its
// ancestors: then what recs[i] would do to p is undone anyway, which is how
// a segment applied again after a crash meets the state it left behind.
func dirSuperseded(recs []batch.Record, i int, p string) bool {
	for j := i + 1; j < len(recs); j++ {
		k := string(recs[j].Key)
		if k == p || strings.HasPrefix(p, k+"/") {
			return true
		}
	}
	return false
}

// parent resolves key's directory for a record, turning a path through a
// symlink or file into a fatal error unless a later record supersedes it
// (skip is then true).
func (a *Dir) parent(recs []batch.Record, i int, key string, create bool) (dir *os.File, base string, skip bool, err error) {
	dir, base, err = a.openParent(key, create)
	var nd *dirNotDirError
	switch {
	case err == nil:
		return dir, base, false, nil
	case errors.As(err, &nd):
		if dirSuperseded(recs, i, nd.path) {
			return nil, "", true, nil
		}
		return nil, "", false, fmt.Errorf("%v: %w", err, receiver.ErrFatal)
	case errors.Is(err, errDirNoParent):
		return nil, "", true, nil
	}
	return nil, "", false, err
}

// dirMkdirKeepMtime makes directory name in fd (mode perm) unless it
// exists, leaving fd's mtime as it was.
func dirMkdirKeepMtime(fd int, name string, perm uint32) error {
	return dirKeepMtime(fd, func() error {
		if err := unix.Mkdirat(fd, name, perm); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return nil
	})
}

// dirKeepMtime runs fn, which changes entries of directory fd, and puts the
// directory's mtime back: only mkdir records set a directory's time.
func dirKeepMtime(fd int, fn func() error) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	err := fn()
	if terr := dirSetMtime(fd, st.Mtim); terr != nil && err == nil {
		err = terr
	}
	return err
}

// dirSetMtime sets the mtime of the file open as fd (any kind of fd,
// O_PATH included), leaving its atime.
func dirSetMtime(fd int, mtime unix.Timespec) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, mtime}
	return unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), ts, 0)
}

func dirNsec(t int64) unix.Timespec { return unix.NsecToTimespec(t) }

// dirRemoveAll removes name in directory dfd and, if it is a directory,
// everything under it, never following a symlink. Missing is success.
func dirRemoveAll(dfd int, name string) error {
	err := unix.Unlinkat(dfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, oerr := dirOpenAt(dfd, name)
	if oerr != nil {
		if errors.Is(oerr, unix.ENOENT) {
			return nil
		}
		if errors.Is(oerr, unix.ENOTDIR) || errors.Is(oerr, unix.ELOOP) {
			return err // not a directory after all: the unlink error stands
		}
		return oerr
	}
	d := os.NewFile(uintptr(fd), name)
	names, err := d.Readdirnames(-1)
	if err != nil {
		d.Close()
		return err
	}
	for _, n := range names {
		if err := dirRemoveAll(fd, n); err != nil {
			d.Close()
			return err
		}
	}
	d.Close()
	if err := unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// dirReplace renames oldName in odir to newName in ndir, removing a
// directory tree that stands at newName first (a type change).
func dirReplace(odir int, oldName string, ndir int, newName string) error {
	err := unix.Renameat(odir, oldName, ndir, newName)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTDIR) {
		if err := dirRemoveAll(ndir, newName); err != nil {
			return err
		}
		err = unix.Renameat(odir, oldName, ndir, newName)
	}
	return err
}

func dirStagingFile(seq uint64) string { return fmt.Sprintf("%016x.part", seq) }

// continues says whether rec is the next chunk of the file being assembled.
func (a *Dir) continues(rec *batch.Record) bool {
	p := a.partial
	if rec.Op != dirtree.OpChunk || string(rec.Key) != p.Path {
		return false
	}
	h, _, err := dirtree.ParseHeader(rec.Data)
	return err == nil && h.Offset > 0 && h.Offset == p.Offset && h.Size == p.Size
}

func (a *Dir) applyRecord(recs []batch.Record, i int) error {
	rec := &recs[i]
	key := string(rec.Key)
	if rec.Op == dirtree.OpBaselineBegin || rec.Op == dirtree.OpBaselineEnd {
		if err := dirtree.CheckBaseline(rec.Op, rec.Key, rec.Data); err != nil {
			return fmt.Errorf("%v: %w", err, receiver.ErrFatal)
		}
		return nil
	}
	if err := dirtree.CheckKey(key, rec.Op); err != nil {
		return fmt.Errorf("refused: %v: %w", err, receiver.ErrFatal)
	}
	if a.partial != nil && !a.continues(rec) {
		if err := a.dropPartial(); err != nil {
			return err
		}
	}
	bad := func(err error) error { return fmt.Errorf("%v: %w", err, receiver.ErrFatal) }
	switch rec.Op {
	case dirtree.OpDel, dirtree.OpRmdir:
		if len(rec.Data) != 0 {
			return bad(fmt.Errorf("malformed record: %s carries %d bytes of data, want none", rec.Op, len(rec.Data)))
		}
		return a.remove(recs, i, key)
	case dirtree.OpPut, dirtree.OpChunk, dirtree.OpAttr, dirtree.OpMkdir, dirtree.OpSymlink:
	default:
		return bad(fmt.Errorf("unknown op %q (this ferry applies put, chunk, attr, del, rmdir, mkdir, symlink, baseline-begin, baseline-end; upgrade ferry?)", rec.Op))
	}
	h, payload, err := dirtree.ParseHeader(rec.Data)
	if err == nil {
		err = dirtree.CheckPayload(rec.Op, h, payload)
	}
	if err != nil {
		return bad(err)
	}
	switch rec.Op {
	case dirtree.OpPut:
		return a.put(recs, i, key, h, payload)
	case dirtree.OpChunk:
		return a.chunk(recs, i, key, h, payload)
	case dirtree.OpAttr:
		return a.attr(recs, i, key, h)
	case dirtree.OpMkdir:
		return a.mkdir(recs, i, key, h)
	default: // symlink
		return a.symlink(recs, i, key, h, string(payload))
	}
}

func (a *Dir) remove(recs []batch.Record, i int, key string) error {
	dir, base, skip, err := a.parent(recs, i, key, false)
	if err != nil || skip {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	if err := dirKeepMtime(fd, func() error { return dirRemoveAll(fd, base) }); err != nil {
		return err
	}
	return a.syncLater(dir)
}

func (a *Dir) put(recs []batch.Record, i int, key string, h dirtree.Header, payload []byte) error {
	dir, base, skip, err := a.parent(recs, i, key, true)
	if err != nil || skip {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	tmp := dirtree.TempName(recs[i].Seq)
	err = dirKeepMtime(fd, func() error {
		f, err := a.createTemp(dir, tmp)
		if err != nil {
			return err
		}
		if err := a.writeOut(f, payload, h); err != nil {
			f.Close()
			unix.Unlinkat(fd, tmp, 0)
			return err
		}
		f.Close()
		return dirReplace(fd, tmp, fd, base)
	})
	if err != nil {
		return err
	}
	return a.syncLater(dir)
}

// writeOut writes payload (if any) to f, sets its mode and mtime and
// fsyncs it. A failed fsync is fatal.
func (a *Dir) writeOut(f *os.File, payload []byte, h dirtree.Header) error {
	if err := dirWriteMeta(f, payload, h); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %v: %w", f.Name(), err, receiver.ErrFatal)
	}
	return nil
}

// dirWriteMeta writes payload (if any) to f and sets its mode and mtime.
func dirWriteMeta(f *os.File, payload []byte, h dirtree.Header) error {
	if len(payload) > 0 {
		if _, err := f.Write(payload); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(int(f.Fd()), h.Mode); err != nil {
		return err
	}
	return dirSetMtime(int(f.Fd()), dirNsec(h.Mtime))
}

func (a *Dir) mkdir(recs []batch.Record, i int, key string, h dirtree.Header) error {
	if key == "." {
		fd := int(a.root.Fd())
		if err := unix.Fchmod(fd, h.Mode); err != nil {
			return err
		}
		if err := dirSetMtime(fd, dirNsec(h.Mtime)); err != nil {
			return err
		}
		return a.syncLater(a.root)
	}
	dir, base, skip, err := a.parent(recs, i, key, true)
	if err != nil || skip {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	var sub int
	err = dirKeepMtime(fd, func() error {
		var st unix.Stat_t
		err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		case err == nil || errors.Is(err, unix.ENOENT):
			if err == nil { // a file or symlink becomes a directory
				if err := unix.Unlinkat(fd, base, 0); err != nil {
					return err
				}
			}
			if err := unix.Mkdirat(fd, base, 0o700); err != nil {
				return err
			}
		default:
			return err
		}
		sub, err = dirOpenAt(fd, base)
		return err
	})
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(sub), a.Root+"/"+key)
	defer d.Close()
	if err := unix.Fchmod(sub, h.Mode); err != nil {
		return err
	}
	if err := dirSetMtime(sub, dirNsec(h.Mtime)); err != nil {
		return err
	}
	if err := a.syncLater(d); err != nil {
		return err
	}
	return a.syncLater(dir)
}

func (a *Dir) symlink(recs []batch.Record, i int, key string, h dirtree.Header, target string) error {
	dir, base, skip, err := a.parent(recs, i, key, true)
	if err != nil || skip {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	tmp := dirtree.TempName(recs[i].Seq)
	err = dirKeepMtime(fd, func() error {
		if err := unix.Unlinkat(fd, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		if err := unix.Symlinkat(target, fd, tmp); err != nil {
			return err
		}
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, dirNsec(h.Mtime)}
		if err := unix.UtimesNanoAt(fd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			unix.Unlinkat(fd, tmp, 0)
			return err
		}
		return dirReplace(fd, tmp, fd, base)
	})
	if err != nil {
		return err
	}
	return a.syncLater(dir)
}

// attr sets the mode and mtime of a file whose content the replica has.
func (a *Dir) attr(recs []batch.Record, i int, key string, h dirtree.Header) error {
	dir, base, skip, err := a.parent(recs, i, key, false)
	if err != nil {
		return err
	}
	if skip {
		if dirSuperseded(recs, i, key) {
			return nil
		}
		return fmt.Errorf("the replica has no %q to set the mode and time of: %w", key, receiver.ErrFatal)
	}
	defer dir.Close()
	fd, err := unix.Openat(int(dir.Fd()), base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	var st unix.Stat_t
	if err == nil {
		defer unix.Close(fd)
		err = unix.Fstat(fd, &st)
	}
	switch {
	case err != nil && !errors.Is(err, unix.ENOENT):
		return err
	case dirSuperseded(recs, i, key):
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != h.Size {
			return nil
		}
	case err != nil:
		return fmt.Errorf("the replica has no %q to set the mode and time of: %w", key, receiver.ErrFatal)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%q is not a regular file in the replica: %w", key, receiver.ErrFatal)
	case st.Size != h.Size:
		return fmt.Errorf("replica file %q is %d bytes, the record says %d: %w", key, st.Size, h.Size, receiver.ErrFatal)
	}
	proc := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Fchmodat(unix.AT_FDCWD, proc, h.Mode, 0); err != nil {
		return err
	}
	if err := dirSetMtime(fd, dirNsec(h.Mtime)); err != nil {
		return err
	}
	// The change is to the file's inode: fsync it (an O_PATH descriptor
	// cannot be fsynced; reopen it for reading, or sync the filesystem).
	if rfd, err := unix.Open(proc, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		err = unix.Fsync(rfd)
		unix.Close(rfd)
		if err != nil {
			return fmt.Errorf("fsync %s: %v: %w", key, err, receiver.ErrFatal)
		}
		return nil
	}
	if err := unix.Syncfs(int(a.root.Fd())); err != nil {
		return fmt.Errorf("syncfs: %v: %w", err, receiver.ErrFatal)
	}
	return nil
}

// chunk adds a chunk (checked by dirtree.CheckPayload) to the file being
// assembled and publishes the file on its last chunk.
func (a *Dir) chunk(recs []batch.Record, i int, key string, h dirtree.Header, payload []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), receiver.ErrFatal)
	}
	if h.Offset == 0 {
		if err := a.startPartial(recs[i].Seq, key, h.Size); err != nil {
			return err
		}
	} else if a.partial == nil {
		return bad("chunk at offset %d, but no file is being assembled (its chunk at offset 0 is missing)", h.Offset)
	}
	p := a.partial
	if !p.lost {
		if _, err := p.f.WriteAt(payload, h.Offset); err != nil {
			return err
		}
		p.h.Write(payload)
		p.dirty = true
	}
	p.Offset += int64(len(payload))
	if p.Offset < p.Size {
		return nil
	}
	if p.lost {
		// Published or dropped before the crash; the replica holds the
		// published file unless a later record of this segment changed it.
		a.partial = nil
		if a.isPublished(key, p.Ino) || dirSuperseded(recs, i, key) {
			return nil
		}
		return bad("the staging file for %q (chunks from seq %d) is missing from %s and the replica does not hold the published file; it was removed outside ferry",
			key, p.Seq, dirtree.StagingDir)
	}
	if [32]byte(p.h.Sum(nil)) != h.SHA256 {
		a.dropPartial()
		return bad("assembled content of %d bytes does not match the sha256 in the last chunk", p.Size)
	}
	return a.publish(recs, i, key, h)
}

func (a *Dir) isPublished(key string, ino uint64) bool {
	dir, base, err := a.openParent(key, false)
	if err != nil {
		return false
	}
	defer dir.Close()
	var st unix.Stat_t
	return unix.Fstatat(int(dir.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Ino == ino
}

func (a *Dir) publish(recs []batch.Record, i int, key string, h dirtree.Header) error {
	p := a.partial
	if err := a.writeOut(p.f, nil, h); err != nil {
		return err
	}
	dir, base, skip, err := a.parent(recs, i, key, true)
	if err != nil || skip {
		if skip {
			return a.dropPartial()
		}
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	err = dirKeepMtime(fd, func() error {
		return dirReplace(int(a.staging.Fd()), dirStagingFile(p.Seq), fd, base)
	})
	if errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("rename %s/%s to %q: the replica spans filesystems; the dir applier needs the whole tree on one: %w",
			dirtree.StagingDir, dirStagingFile(p.Seq), key, receiver.ErrFatal)
	}
	if err != nil {
		return err
	}
	p.f.Close()
	a.partial = nil
	if err := a.syncLater(a.staging); err != nil {
		return err
	}
	return a.syncLater(dir)
}

// openStaging opens ROOT/.ferry-staging, creating it if create is set. It
// returns a nil file (and no error) when it does not exist.
func (a *Dir) openStaging(create bool) (*os.File, error) {
	if a.staging != nil {
		return a.staging, nil
	}
	rfd := int(a.root.Fd())
	fd, err := dirOpenAt(rfd, dirtree.StagingDir)
	if errors.Is(err, unix.ENOENT) && create {
		err = dirMkdirKeepMtime(rfd, dirtree.StagingDir, 0o700)
		if err == nil {
			if err = a.syncLater(a.root); err == nil {
				fd, err = dirOpenAt(rfd, dirtree.StagingDir)
			}
		}
	}
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, dirFatal("open %s: %v", dirtree.StagingDir, err)
	}
	a.staging = os.NewFile(uintptr(fd), a.Root+"/"+dirtree.StagingDir)
	return a.staging, nil
}

func (a *Dir) startPartial(seq uint64, key string, size int64) error {
	sd, err := a.openStaging(true)
	if err != nil {
		return err
	}
	name := dirStagingFile(seq)
	sfd := int(sd.Fd())
	if err := unix.Unlinkat(sfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	fd, err := unix.Openat(sfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	a.partial = &dirPartial{Path: key, Seq: seq, Size: size, Ino: st.Ino,
		f: os.NewFile(uintptr(fd), sd.Name()+"/"+name), h: sha256.New(), dirty: true}
	return a.syncLater(sd)
}

// dropPartial abandons the file being assembled (the source started over
// or moved on) and removes its staging file.
func (a *Dir) dropPartial() error {
	p := a.partial
	a.partial = nil
	if p.f != nil {
		p.f.Close()
	}
	if p.lost || a.staging == nil {
		return nil
	}
	if err := unix.Unlinkat(int(a.staging.Fd()), dirStagingFile(p.Seq), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// clearStaging removes everything in the staging directory but keep, and
// the directory itself when keep is empty.
func (a *Dir) clearStaging(keep string) error {
	sd, err := a.openStaging(false)
	if err != nil || sd == nil {
		return err
	}
	l, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(sd.Fd())))
	if err != nil {
		return dirFatal("list %s: %v", dirtree.StagingDir, err)
	}
	names, err := l.Readdirnames(-1)
	l.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return dirFatal("list %s: %v", dirtree.StagingDir, err)
	}
	for _, n := range names {
		if n != keep {
			if err := dirRemoveAll(int(sd.Fd()), n); err != nil {
				return dirFatal("clean %s: %v", dirtree.StagingDir, err)
			}
		}
	}
	if keep != "" {
		return nil
	}
	sd.Close()
	a.staging = nil
	rfd := int(a.root.Fd())
	err = dirKeepMtime(rfd, func() error {
		if err := unix.Unlinkat(rfd, dirtree.StagingDir, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		return nil
	})
	if err != nil {
		return dirFatal("remove %s: %v", dirtree.StagingDir, err)
	}
	if a.syncs != nil {
		return a.syncLater(a.root)
	}
	return nil
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
