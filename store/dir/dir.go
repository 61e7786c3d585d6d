// Package dir implements store.Store on a local directory: the embedded
// default store, and the one a receiver writes when it keeps a local copy.
//
// Object "s/x" lives at <root>/s/x. Put writes a temp file beside it, fsyncs
// it, publishes it with a hard link (which fails instead of replacing an
// existing file, so no writer can ever overwrite another) and fsyncs the
// directory. Temp files are named ".<base>.<random>.tmp" and List skips them,
// so a crash leaves at most an ignored temp file behind, never a torn object.
// Options.PublishBeforeSync trades that last guarantee for one fsync less
// per Put; see there.
//
// A segment (store.ParseSegmentObject) that overlaps a stored segment of its
// generation in the same directory is refused exactly, whichever side the
// overlap is on and however Puts race, across goroutines and processes:
// segment Puts into a directory hold an flock(2) on its
// ".segments-lock.tmp" while they read the directory's names, look for an
// overlap and link. Writing and fsyncing the data happen outside the lock.
//
// Store is also a store.Swapper. A Swap holds an flock(2) on a lock file
// beside the object while it reads, compares, writes a temp file, fsyncs it
// and renames it over the object; versions are the hex SHA-256 of the
// content. Lock files (".<base>.swap-lock.tmp" and ".segments-lock.tmp")
// are never removed; see lock.go.
//
// The directory layout has limits S3 does not share. A name cannot be both an
// object and a "directory" ("s" and "s/x"), and names whose last element has
// the temp-file shape (".*.tmp") are reserved. Both are refused with errors
// wrapping store.ErrPermanent, as are permission errors and read-only
// filesystems. The filesystem must support hard links and flock(2).
package dir

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/store"
)

// Store is a store.Store on a local directory. It is safe for concurrent use,
// also by several processes sharing the root.
type Store struct {
	root string
	opts Options

	// dirs holds directories under root that exist and whose entry has been
	// fsynced in their parent by this Store, so each parent is synced once
	// per process rather than on every Put.
	dirs sync.Map // absolute path -> struct{}

	tree treeCache // what ListTree read
}

var _ store.Store = (*Store)(nil)

// Options changes how a Store writes. The zero value is New's behaviour.
type Options struct {
	// PublishBeforeSync makes Put publish an object under its final name
	// before its data is durable: write the temp file without fsync, link
	// it to the final name, unlink the temp, fsync the file, fsync the
	// directory. On ext4 that is one journal commit per Put instead of two.
	//
	// While the machine stays up little changes for callers: Put returns
	// nil only once the object is durable and never overwrites. But Get
	// and List may see the object (complete) before its Put has returned,
	// and if the write or the file's fsync then fails, Put removes the
	// object again. (If only the directory's fsync fails, the object stays,
	// its content durable, and a retry of the Put confirms it.)
	//
	// The crash contract is weaker: after a power loss or kernel crash, an
	// object whose Put had not returned nil may be present with partial,
	// zeroed or no content. An object whose Put returned nil is intact. (A
	// process crash alone tears nothing; the kernel still has the data.)
	// Use it only where every object carries its own checksum, every writer
	// keeps its data until Put returns nil and resends it otherwise, and the
	// owner removes torn objects after a crash before trusting the store
	// (a link receiver's inbox: tcp.RecoverInbox).
	PublishBeforeSync bool

	// MustExist makes opening fail, naming root, if root does not exist,
	// instead of creating it: for callers that only read (or only add to)
	// a store someone else made, to whom a missing root means a mistyped
	// path, never a new empty store. The error wraps fs.ErrNotExist.
	MustExist bool
}

// New returns a Store rooted at root, creating root (and its parents, each
// fsynced into its own parent) if it does not exist. It fails, naming the
// path, if root is not a directory or cannot be created. New does not probe
// whether root is writable, so a read-only root can still be read; Put then
// fails with an error wrapping store.ErrPermanent.
func New(root string) (*Store, error) {
	return NewWithOptions(root, Options{})
}

// NewWithOptions is New with the writes configured by o.
func NewWithOptions(root string, o Options) (*Store, error) {
	if root == "" {
		return nil, errors.New("open dir store: root path is empty; set it to a directory")
	}
	root = filepath.Clean(root)
	fi, err := os.Stat(root)
	switch {
	case err == nil && !fi.IsDir():
		return nil, fmt.Errorf("open dir store %s: not a directory: %w", root, store.ErrPermanent)
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && o.MustExist:
		return nil, &fs.PathError{Op: "open dir store", Path: root, Err: syscall.ENOENT}
	case errors.Is(err, fs.ErrNotExist):
		if err := mkdirAll(root); err != nil {
			return nil, fail("open dir store", root, err)
		}
	default:
		return nil, fail("open dir store", root, err)
	}
	return &Store{root: root, opts: o}, nil
}

// String returns "dir:" followed by the root directory.
func (s *Store) String() string { return "dir:" + s.root }

// Put stores data under name durably, never overwriting; see store.Store.
// An existing object is compared with data by streaming it from disk.
func (s *Store) Put(ctx context.Context, name string, data []byte) error {
	final, f, err := s.create(ctx, "put", name)
	if err != nil {
		return err
	}
	// Through a long-lived buffer: a segment's bytes are usually fresh
	// memory, which the kernel reads far slower (fsutil.WriteBounced).
	if _, err := fsutil.WriteBounced(f.Write, data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fail("put", name, err)
	}
	return s.publish(ctx, name, final, f, bytes.NewReader(data), int64(len(data)))
}

// create checks name and makes the temp file its object is written to
// before publish names it: a new file beside final, open for reading and
// writing.
func (s *Store) create(ctx context.Context, op, name string) (final string, f *os.File, err error) {
	if err := checkName(name); err != nil {
		return "", nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := ctx.Err(); err != nil {
		return "", nil, fmt.Errorf("%s %s: %w", op, name, err)
	}
	final = s.path(name)
	dir := filepath.Dir(final)
	if err := s.ensureDir(dir); err != nil {
		return "", nil, fail(op, name, err)
	}
	f, err = createTemp(dir, filepath.Base(final))
	if errors.Is(err, fs.ErrNotExist) {
		// A directory was removed behind the cache's back; recreate it once.
		s.dirs.Clear()
		if err = s.ensureDir(dir); err == nil {
			f, err = createTemp(dir, filepath.Base(final))
		}
	}
	if err != nil {
		return "", nil, fail(op, name, err)
	}
	return final, f, nil
}

// publish is the second half of Put (and of a staged object's Publish):
// f is the open, written temp file, content (size bytes) what it holds,
// for comparing with an object found under the name. It makes f durable
// and links it to final, in the order the Options say, and closes it and
// removes the temp file whatever happens.
func (s *Store) publish(ctx context.Context, name, final string, f *os.File, content io.ReaderAt, size int64) error {
	if s.opts.PublishBeforeSync {
		return s.publishThenSync(ctx, name, final, f, content, size)
	}
	tmp := f.Name()
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fail("put", name, err)
	}
	linkErr := s.link(ctx, name, tmp, final)
	if linkErr != nil {
		err := s.linkFailed(name, final, content, size, linkErr)
		f.Close()
		os.Remove(tmp)
		return err
	}
	closeErr := f.Close()
	rmErr := os.Remove(tmp)
	// One directory fsync makes both the link and the unlink durable.
	if err := fsutil.SyncPath(filepath.Dir(final)); err != nil {
		return fail("put", name, err)
	}
	if err := cmp.Or(closeErr, rmErr); err != nil {
		// The object is published, its content synced; a retry of this
		// Put succeeds.
		return fail("put", name, err)
	}
	return nil
}

// linkFailed is Put's answer when link failed with err: the existing
// object's comparison with content if name is taken, an overlap's
// ErrConflict as it is, and otherwise err.
func (s *Store) linkFailed(name, final string, content io.ReaderAt, size int64, err error) error {
	switch {
	case errors.Is(err, fs.ErrExist):
		return s.matchExisting(name, final, content, size)
	case errors.Is(err, store.ErrConflict):
		return err
	}
	return fail("put", name, err)
}

// publishThenSync is publish under Options.PublishBeforeSync: it links f
// to final, unlinks the temp, and only then fsyncs the file and the
// directory, together; the fsync of the file also commits the link and
// the unlink, which is the saving. If the file's fsync fails, final is
// removed again: its content was never durable, so no later Put may find
// it and call it a match.
func (s *Store) publishThenSync(ctx context.Context, name, final string, f *os.File, content io.ReaderAt, size int64) error {
	tmp := f.Name()
	linkErr := s.link(ctx, name, tmp, final)
	rmErr := os.Remove(tmp)
	if linkErr != nil {
		err := s.linkFailed(name, final, content, size, linkErr)
		f.Close()
		return err
	}
	fileErr, dirErr := fsutil.SyncWithDir(f.Sync, filepath.Dir(final))
	if cerr := f.Close(); fileErr == nil {
		fileErr = cerr
	}
	if fileErr != nil {
		os.Remove(final)
		fsutil.SyncPath(filepath.Dir(final)) // best effort: the Put fails anyway
		return fail("put", name, fileErr)
	}
	if dirErr != nil {
		// The content is durable; a retry finds it and syncs the directory.
		return fail("put", name, dirErr)
	}
	if rmErr != nil {
		// The object is published; a retry of this Put succeeds.
		return fail("put", name, rmErr)
	}
	return nil
}

// link publishes the temp file tmp as final, the object name. Link, unlike
// rename, fails with EEXIST rather than replace final. A segment is linked
// under its directory's segments lock, and only if no stored segment
// overlaps it (findOverlap); otherwise link returns store.OverlapError.
// The lock is released once the link exists: the directory's fsync, which
// follows, need not be inside it, as another Put finds the entry either
// way.
//
// Reading the names takes time in proportion to the directory's size. On
// the 2-vCPU test VM (BenchmarkPutSegment, on tmpfs) the lock and the
// reading add about 50 µs to a Put beside 10 segments and 5-6 ms beside
// 10,000; the fsyncs of a Put on its ext4 disk take 1-3 ms.
func (s *Store) link(ctx context.Context, name, tmp, final string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	seg, ok := store.ParseSegmentObject(name)
	if !ok {
		return os.Link(tmp, final)
	}
	dir := filepath.Dir(final)
	unlock, err := lock(ctx, segmentsLock(dir), true)
	if err != nil {
		return err
	}
	defer unlock()
	stored, found, err := findOverlap(dir, seg)
	if err != nil {
		return err
	}
	if found {
		return store.OverlapError(seg, stored)
	}
	return os.Link(tmp, final)
}

// findOverlap looks through the names in dir (no stat) for a segment that
// overlaps seg, and returns the lowest-named one. If seg's own name is
// there, it reports none: Put then compares the contents, as for any name.
func findOverlap(dir string, seg store.SegmentObject) (stored store.SegmentObject, found bool, err error) {
	d, err := os.Open(dir)
	if err != nil {
		return stored, false, err
	}
	defer d.Close()
	i := strings.LastIndexByte(seg.Name, '/') + 1
	stream, base := seg.Name[:i], seg.Name[i:]
	genPrefix := base[:9] // "GGGGGGGG-"
	for {
		names, err := d.Readdirnames(4096)
		for _, n := range names {
			if len(n) != len(base) || n[:9] != genPrefix {
				continue // not a segment of this generation: cheap test first
			}
			if n == base {
				return stored, false, nil
			}
			gen, first, last, ok := batch.ParseSegmentName(n)
			if !ok || gen != seg.Gen || first > seg.Last || last < seg.First {
				continue
			}
			if !found || stream+n < stored.Name {
				stored = store.SegmentObject{Name: stream + n, Gen: gen, First: first, Last: last}
				found = true
			}
		}
		if errors.Is(err, io.EOF) {
			return stored, found, nil
		}
		if err != nil {
			return stored, false, err
		}
	}
}

// matchExisting is Put's answer when final already exists: nil if it holds
// exactly content's size bytes, an error wrapping store.ErrConflict
// otherwise.
func (s *Store) matchExisting(name, final string, content io.ReaderAt, size int64) error {
	same, err := sameContent(final, content, size)
	if err != nil {
		return fail("put", name, err)
	}
	if !same {
		return fmt.Errorf("put %s: %w: %s was left untouched; find which writer produced it",
			name, store.ErrConflict, final)
	}
	// The object may have been linked by a concurrent Put that has not yet
	// synced the directory, or (under PublishBeforeSync, perhaps in another
	// process sharing the root) the file itself; sync both so that success
	// here means durable.
	if err := fsutil.SyncPath(final); err != nil {
		return fail("put", name, err)
	}
	if err := fsutil.SyncPath(filepath.Dir(final)); err != nil {
		return fail("put", name, err)
	}
	return nil
}

// Get opens the named object. A missing object, or a name that is a
// directory here, gives an error wrapping store.ErrNotFound. ctx is checked
// when opening only; reads from the returned file do not watch it.
func (s *Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	f, err := os.Open(s.path(name))
	if isMissing(err) {
		return nil, fmt.Errorf("get %s: %w: %w", name, store.ErrNotFound, err)
	}
	if err != nil {
		return nil, fail("get", name, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: %s is not a regular file", store.ErrNotFound, f.Name())
	}
	if err != nil {
		f.Close()
		return nil, fail("get", name, err)
	}
	return f, nil
}

var _ store.DirLister = (*Store)(nil)

// ListDirs reports the directories directly in dir whose names CheckDir
// accepts; see store.DirLister.
func (s *Store) ListDirs(ctx context.Context, dir string, fn func(name string) error) error {
	if err := store.CheckDir(dir); err != nil {
		return fmt.Errorf("list: %w: %w", store.ErrPermanent, err)
	}
	entries, err := s.readDir("list", dir)
	if err != nil {
		return err
	}
	return listDirs(ctx, dir, entries, fn)
}

// listDirs reports the directories among entries, those of dir; see ListDirs.
func listDirs(ctx context.Context, dir string, entries []os.DirEntry, fn func(name string) error) error {
	for _, e := range entries {
		name := dir + e.Name() + "/"
		if !e.IsDir() || isTemp(e.Name()) || store.CheckDir(name) != nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(name); err != nil {
			return err
		}
	}
	return nil
}

// List reports the regular files directly in dir, skipping sub-directories,
// temp files and names CheckName refuses; see store.Store.
func (s *Store) List(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	label, entries, err := s.listDir(ctx, dir)
	if err != nil {
		return err
	}
	return listFiles(ctx, dir, label, after, entries, nil, fn)
}

// listDir checks dir and reads it for a listing; label names it in errors
// ("/" for the root).
func (s *Store) listDir(ctx context.Context, dir string) (label string, entries []os.DirEntry, err error) {
	if err := store.CheckDir(dir); err != nil {
		return "", nil, fmt.Errorf("list: %w: %w", store.ErrPermanent, err)
	}
	label = dir
	if label == "" {
		label = "/"
	}
	if err := ctx.Err(); err != nil {
		return "", nil, fmt.Errorf("list %s: %w", label, err)
	}
	entries, err = s.readDir("list", label)
	return label, entries, err
}

// readDir reads directory dir (label names it in errors: "/" for the root)
// sorted by file name; a missing directory has no entries. Every name
// shares the dir prefix, so entries come in the lexical order of the full
// names.
func (s *Store) readDir(op, label string) ([]os.DirEntry, error) {
	dir := label
	if dir == "/" {
		dir = ""
	}
	entries, err := os.ReadDir(filepath.Join(s.root, filepath.FromSlash(dir)))
	if isMissing(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fail(op, label, err)
	}
	return entries, nil
}

// listFiles reports the objects among entries, those of dir, named after
// after; see List. known, if set, gives what it knows of a name without a
// stat (ListTree's cache).
func listFiles(ctx context.Context, dir, label, after string, entries []os.DirEntry,
	known func(name string) (store.Object, bool), fn func(store.Object) error) error {
	for _, e := range entries {
		name := dir + e.Name()
		if name <= after || !e.Type().IsRegular() || isTemp(e.Name()) || store.CheckName(name) != nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %s: %w", label, err)
		}
		if known != nil {
			if o, ok := known(name); ok {
				if err := fn(o); err != nil {
					return err
				}
				continue
			}
		}
		info, err := e.Info()
		if isMissing(err) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return fail("list", label, err)
		}
		if err := fn(store.Object{Name: name, Size: info.Size(), ModTime: info.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the named object and fsyncs its directory. A missing object,
// or a name that is a directory here, is left alone and gives nil. An object
// that was ever swapped is removed under its Swap lock, so that a Swap in
// progress either finishes first or finds it gone.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	path := s.path(name)
	fi, err := os.Lstat(path)
	if isMissing(err) || (err == nil && fi.IsDir()) {
		return nil
	}
	if err != nil {
		return fail("delete", name, err)
	}
	unlock, err := lock(ctx, swapLock(path), false)
	switch {
	case err == nil:
		defer unlock()
	case !isMissing(err): // missing: never swapped
		return fail("delete", name, err)
	}
	if err := os.Remove(path); err != nil {
		if isMissing(err) {
			return nil
		}
		return fail("delete", name, err)
	}
	if err := fsutil.SyncPath(filepath.Dir(path)); err != nil {
		return fail("delete", name, err)
	}
	return nil
}

// path maps a valid object name to its file.
func (s *Store) path(name string) string {
	return filepath.Join(s.root, filepath.FromSlash(name))
}

// ensureDir creates dir (which lies under root) and its missing parents. On
// the first call per directory it fsyncs the parent even if the directory
// already existed: a concurrent Put, or a process that crashed, may have
// created it without the parent's sync completing.
func (s *Store) ensureDir(dir string) error {
	if dir == s.root {
		return nil
	}
	if _, ok := s.dirs.Load(dir); ok {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := s.ensureDir(parent); err != nil {
		return err
	}
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		var fi fs.FileInfo
		if fi, err = os.Stat(dir); err == nil && !fi.IsDir() {
			return fmt.Errorf("%s is an object, not a directory: %w", dir, store.ErrPermanent)
		}
	}
	if err != nil {
		return err
	}
	if err := fsutil.SyncPath(parent); err != nil {
		return err
	}
	s.dirs.Store(dir, struct{}{})
	return nil
}

// mkdirAll is os.MkdirAll that also fsyncs the parent of each directory it
// creates, so a crash cannot lose the new entries.
func mkdirAll(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory: %w", dir, store.ErrPermanent)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return fsutil.SyncPath(parent)
}

// createTemp creates a new temp file in dir for the object base, open for
// reading and writing.
func createTemp(dir, base string) (*os.File, error) {
	if len(base) > 64 {
		base = strings.ToValidUTF8(base[:64], "")
	}
	var f *os.File
	var err error
	for range 10 {
		tmp := filepath.Join(dir, "."+base+"."+strconv.FormatUint(rand.Uint64(), 36)+".tmp")
		f, err = os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	return f, err
}

// writeTemp writes data to a new temp file in dir and returns it open and
// not yet synced. On error no temp file remains.
func writeTemp(dir, base string, data []byte) (*os.File, error) {
	f, err := createTemp(dir, base)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

// syncClose fsyncs and closes f, a temp file writeTemp made, and removes
// it if either fails.
func syncClose(f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// compareChunk is how much sameContent reads of each side at a time.
const compareChunk = 256 << 10

// sameContent reports whether the regular file at path holds exactly the
// size bytes of content. It compares sizes first, then streams both in
// chunks.
func sameContent(path string, content io.ReaderAt, size int64) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%s is a directory, not an object: %w", path, store.ErrPermanent)
	}
	if fi.Size() != size {
		return false, nil
	}
	n := min(size, compareChunk)
	stored, want := make([]byte, n+1), make([]byte, n)
	for off := int64(0); off < size; {
		k := min(n, size-off)
		if _, err := io.ReadFull(f, stored[:k]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return false, nil // shrank since Stat
			}
			return false, err
		}
		if got, err := content.ReadAt(want[:k], off); int64(got) < k {
			return false, fmt.Errorf("read back what was written: %w", cmp.Or(err, io.ErrUnexpectedEOF))
		}
		if !bytes.Equal(stored[:k], want[:k]) {
			return false, nil
		}
		off += k
	}
	// Objects are immutable, but a stray writer may have appended.
	k, err := f.Read(stored[:1])
	if k > 0 {
		return false, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return true, nil
}

// checkName applies store.CheckName and also refuses names the temp files
// reserve. Both are wrapped as permanent: no retry can fix a name.
func checkName(name string) error {
	err := store.CheckName(name)
	if err == nil && isTemp(name[strings.LastIndexByte(name, '/')+1:]) {
		err = fmt.Errorf("object name %q has the shape of a temp file (.*.tmp), which the dir store reserves", name)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", store.ErrPermanent, err)
	}
	return nil
}

// isTemp reports whether a file name has the shape writeTemp gives.
func isTemp(base string) bool {
	return strings.HasPrefix(base, ".") && strings.HasSuffix(base, ".tmp")
}

// isMissing reports errors meaning the path does not exist, including a
// path whose parent is a regular file.
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// fail wraps err with op and object, adding store.ErrPermanent to errors no
// retry can fix: permission denied, read-only filesystem, name too long.
func fail(op, name string, err error) error {
	permanent := errors.Is(err, fs.ErrPermission) ||
		errors.Is(err, syscall.EROFS) ||
		errors.Is(err, syscall.ENAMETOOLONG)
	if permanent && !errors.Is(err, store.ErrPermanent) {
		return fmt.Errorf("%s %s: %w: %w", op, name, store.ErrPermanent, err)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}
