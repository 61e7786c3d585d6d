package apply

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/receiver"
)

// File appends every record's data to a file and fsyncs it. Its state
// is the file's size (and inode), so it applies exactly once across
// crashes; and it trusts nothing else about the file (docs/FORMAT.md,
// "The file: applier's state"): it opens it without following a symbolic
// link, checks before every append that the file is still the one it
// opened and as long as ferry left it, and never cuts bytes it cannot show
// it wrote, unless Repair says to.
type File struct {
	Path string
	// Repair lets Restore accept a replica that is not as the checkpoint
	// left it, where that can be repaired: bytes past the checkpointed size
	// that the segments after the checkpoint do not account for are cut
	// (logged with their offsets), and a replica with another inode than
	// the checkpoint's is adopted (logged). A replica shorter than the
	// checkpoint says is refused all the same.
	Repair bool
	// Log gets what Restore finds past the checkpoint and what Repair
	// cuts; nil logs nothing.
	Log *slog.Logger

	f         *os.File
	ino       uint64        // of f
	size      int64         // applied: what State records
	end       int64         // the size ferry left the file at: size, or more (a tail, or a failed write)
	tail      tail          // found past the checkpoint by Restore, not yet accounted for
	seg       string        // the segment being applied, for messages
	deferSync bool          // DeferSync
	w         *bufio.Writer // reused across Applies
	scratch   []byte        // tail comparisons
}

// tail is the range [from, end) of the replica that Restore found past
// the checkpointed size. Bytes ferry applied and did not checkpoint before
// a crash are exactly what the segments after the checkpoint apply again,
// so each Apply compares what it would write there with what is there:
// the part that matches was ferry's; a byte that differs, or bytes left
// over once the receiver has caught up with the store (CaughtUp), were
// not.
type tail struct{ from, end int64 }

func (t tail) open() bool { return t.end > t.from }

var (
	_ receiver.GroupSyncable  = (*File)(nil)
	_ receiver.CatchUpChecker = (*File)(nil)
)

type fileState struct {
	Size int64 `json:"size"`
	// Ino is the replica's inode number, absent in a state written before
	// it was recorded or by ferry rejoin (FileState): not checked then.
	Ino uint64 `json:"ino,omitempty"`
}

func (a *File) String() string { return "file:" + a.Path }

// Restore opens the file (never through a symbolic link) and checks it
// against the checkpointed state: not shorter than its size, the same
// inode. Bytes past the size are checked against what the next Applies
// write (tail); with Repair they are cut at once instead.
func (a *File) Restore(state json.RawMessage) error {
	a.f, a.size, a.end, a.tail, a.w = nil, 0, 0, tail{}, nil
	var st fileState
	if state != nil {
		if err := json.Unmarshal(state, &st); err != nil {
			return fmt.Errorf("apply file %s: checkpoint state unreadable: %v: %w", a.Path, err, receiver.ErrFatal)
		}
	}
	f, fi, err := openReplica(a.Path)
	if err != nil {
		return err
	}
	if err := a.restore(f, inode(fi), fi.Size(), state == nil, st); err != nil {
		f.Close()
		return err
	}
	return nil
}

// openReplica opens path for writing, creating it, and refuses a symbolic
// link or anything but a regular file. It returns the file's FileInfo
// as opened.
func openReplica(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, nil, fmt.Errorf("apply file %s is a symbolic link: ferry writes only to a file it opens itself; give the link's target as the path: %w", path, receiver.ErrFatal)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("apply file %s: %w: %w", path, err, receiver.ErrFatal)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("is %s, not a regular file", fsutil.FileKind(fi.Mode()))
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("apply file %s %w: %w", path, err, receiver.ErrFatal)
	}
	return f, fi, nil
}

func (a *File) restore(f *os.File, ino uint64, found int64, fresh bool, st fileState) error {
	switch {
	case fresh && found != 0:
		return fmt.Errorf("apply file %s already holds %d bytes but the receiver state is new; move the file away or use a new path: %w", a.Path, found, receiver.ErrFatal)
	case found < st.Size:
		return fmt.Errorf("apply file %s is %d bytes, shorter than the %d the checkpoint recorded: it was changed outside ferry; restore it, or rebuild it with ferry restore into a new state: %w", a.Path, found, st.Size, receiver.ErrFatal)
	case st.Ino != 0 && st.Ino != ino && !a.Repair:
		return fmt.Errorf("apply file %s is inode %d, but the checkpoint's replica was inode %d: the file was replaced since; if it holds the replica as the checkpoint left it (restored from a backup, say), run ferry receive --repair once to accept it: %w", a.Path, ino, st.Ino, receiver.ErrFatal)
	case st.Ino != 0 && st.Ino != ino:
		a.logger().Warn("replica replaced since the checkpoint: accepted (--repair)", "file", a.Path, "checkpoint_inode", st.Ino, "inode", ino, "size", found)
	}
	a.f, a.ino, a.size, a.end = f, ino, st.Size, found
	if found == st.Size {
		return nil
	}
	a.tail = tail{from: st.Size, end: found}
	if a.Repair {
		return a.cut(st.Size, "past the checkpoint (--repair cuts them without checking them against the store)")
	}
	a.logger().Info("replica is longer than the checkpoint: the bytes past it are checked against the segments applied next",
		"file", a.Path, "checkpoint_size", st.Size, "size", found)
	return nil
}

// cut truncates the replica to at, durably, and logs the range: bytes
// ferry did not write (or, with Repair at Restore, could not yet show it
// wrote), which only Repair may cut.
func (a *File) cut(at int64, why string) error {
	if err := a.f.Truncate(at); err != nil {
		return fmt.Errorf("apply file %s: cut to %d bytes: %w: %w", a.Path, at, err, receiver.ErrFatal)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("apply file %s: fsync: %w: %w", a.Path, err, receiver.ErrFatal)
	}
	a.logger().Warn("cut bytes from the replica", "file", a.Path, "from", at, "to", a.end, "bytes", a.end-at, "why", why)
	a.end, a.tail = at, tail{}
	return nil
}

// CaughtUp is told that the receiver has applied everything the store
// holds after the checkpoint: what is left of the tail Restore found was
// not written by ferry. It is refused, or cut with Repair.
func (a *File) CaughtUp() error {
	if a.f == nil || !a.tail.open() {
		return nil
	}
	// The Applies since Restore matched the tail up to a.size.
	return fmt.Errorf("apply file %s is %d bytes, but the segments after the checkpoint account for its first %d only: the %d bytes after offset %d were not written by ferry; stop whatever writes to the file, then run ferry receive --repair once to cut them (the cut is logged): %w",
		a.Path, a.tail.end, a.size, a.tail.end-a.size, a.size, receiver.ErrFatal)
}

// checkReplica checks, before an append, that the path still names the
// file the applier opened and that the file is as long as ferry left it:
// a replica truncated, appended to, replaced or turned into a symbolic
// link while the receiver runs stops it.
func (a *File) checkReplica() error {
	fi, err := a.f.Stat()
	if err != nil {
		return fmt.Errorf("apply file %s: %w: %w", a.Path, err, receiver.ErrFatal)
	}
	if fi.Size() != a.end {
		how := "appended to"
		if fi.Size() < a.end {
			how = "truncated"
		}
		return fmt.Errorf("apply file %s is %d bytes, but ferry left it at %d: it was %s by something else while the receiver ran; stop whatever writes to it (ferry receive --repair can cut bytes past the checkpoint, not restore lost ones): %w",
			a.Path, fi.Size(), a.end, how, receiver.ErrFatal)
	}
	li, err := os.Lstat(a.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("apply file %s was removed or renamed while the receiver ran (it had inode %d): %w", a.Path, a.ino, receiver.ErrFatal)
	case err != nil:
		return fmt.Errorf("apply file %s: %w: %w", a.Path, err, receiver.ErrFatal)
	case !os.SameFile(fi, li):
		return fmt.Errorf("apply file %s is now %s with inode %d, not the file of inode %d the receiver opened: it was replaced while the receiver ran: %w",
			a.Path, fsutil.FileKind(li.Mode()), inode(li), a.ino, receiver.ErrFatal)
	}
	return nil
}

// matchTail checks that p, which an Apply writes at off inside the tail,
// is what the replica holds there, and once the whole tail matched logs
// that it was ferry's own. A difference is fatal. (With Repair, Restore
// cut the tail: there is none to match.)
func (a *File) matchTail(p []byte, off int64) error {
	const chunk = 1 << 20
	if a.scratch == nil {
		a.scratch = make([]byte, chunk)
	}
	for done := 0; done < len(p); {
		q := p[done:min(len(p), done+chunk)]
		b := a.scratch[:len(q)]
		if _, err := a.f.ReadAt(b, off+int64(done)); err != nil {
			return fmt.Errorf("read the bytes past the checkpoint: %w: %w", err, receiver.ErrFatal)
		}
		if i := mismatch(b, q); i >= 0 {
			at := off + int64(done+i)
			return fmt.Errorf("byte %d, of the %d bytes found past the checkpointed size %d, is not what segment %s applies there: they were not all written by ferry; stop whatever writes to the file, then run ferry receive --repair once to cut them (the cut is logged): %w",
				at, a.tail.end-a.tail.from, a.tail.from, a.seg, receiver.ErrFatal)
		}
		done += len(q)
	}
	if off+int64(len(p)) == a.tail.end {
		a.logger().Info("the bytes past the checkpoint are what the segments after it apply: ferry applied them before a restart; kept",
			"file", a.Path, "from", a.tail.from, "to", a.tail.end, "bytes", a.tail.end-a.tail.from)
		a.tail = tail{}
	}
	return nil
}

// mismatch is the index of the first byte where a and b differ, or -1.
func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

func (a *File) logger() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// DeferSync makes the following Applies skip their fsync (true) until one
// after DeferSync(false), whose fsync covers them all.
func (a *File) DeferSync(deferred bool) { a.deferSync = deferred }

// Sync makes everything applied durable. A failed fsync is fatal.
func (a *File) Sync() error {
	if a.f == nil {
		return fmt.Errorf("apply file %s: not restored: %w", a.Path, receiver.ErrFatal)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("apply file %s: fsync: %w: %w", a.Path, err, receiver.ErrFatal)
	}
	return nil
}

// SyncPath is the replica: every deferred write is to it, so a sync of
// its file system makes them durable (receiver.SyncGroup).
func (a *File) SyncPath() string { return a.Path }

// State is the file size after the last Apply, and its inode.
func (a *File) State() (json.RawMessage, error) {
	return json.Marshal(fileState{Size: a.size, Ino: a.ino})
}

// FileState is the checkpoint state of a File applier whose replica holds
// size bytes, of any inode: what ferry rejoin starts a receiver with after
// cutting the file back to the fork.
func FileState(size int64) json.RawMessage {
	data, _ := json.Marshal(fileState{Size: size})
	return data
}

// FileSize is the replica size in a File applier's checkpoint state; ok is
// false when state is not a File applier's.
func FileSize(state json.RawMessage) (size int64, ok bool) {
	var fs struct {
		Size *int64 `json:"size"`
	}
	if len(state) == 0 || json.Unmarshal(state, &fs) != nil || fs.Size == nil {
		return 0, false
	}
	return *fs.Size, true
}

// Apply appends the records' data and fsyncs. A failed fsync is fatal.
func (a *File) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	if a.f == nil {
		return fmt.Errorf("apply file %s: not restored: %w", a.Path, receiver.ErrFatal)
	}
	if err := a.checkReplica(); err != nil {
		return err
	}
	a.seg = meta.Name()
	if a.w == nil {
		a.w = bufio.NewWriterSize(nil, 1<<20)
	}
	w := a.w
	w.Reset(&replicaWriter{a: a, off: a.size})
	defer w.Reset(nil)
	n := int64(0)
	for i := range recs.Len() {
		k, err := w.Write(recs.Data(i))
		n += int64(k)
		if err != nil {
			return fmt.Errorf("apply file %s: %w", a.Path, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("apply file %s: %w", a.Path, err)
	}
	// Deferred: a later Apply's fsync, or Sync, makes it durable.
	if !a.deferSync {
		if err := a.Sync(); err != nil {
			return err
		}
	}
	a.size += n
	return nil
}

func (a *File) Close() error {
	if a.f == nil {
		return nil
	}
	return a.f.Close()
}

// replicaWriter writes at off, advancing: over the tail Restore found it
// compares instead (matchTail), past it it writes, and starts the
// writeback of what it wrote every writebackEvery bytes.
type replicaWriter struct {
	a       *File
	off     int64
	pending int64 // written since the last startWriteback
}

const writebackEvery = 4 << 20

func (w *replicaWriter) Write(p []byte) (int, error) {
	a, n := w.a, 0
	if a.tail.open() && w.off < a.tail.end {
		k := int(min(int64(len(p)), a.tail.end-w.off))
		if err := a.matchTail(p[:k], w.off); err != nil {
			return 0, err
		}
		w.off += int64(k)
		n, p = k, p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	k, err := a.f.WriteAt(p, w.off)
	w.off += int64(k)
	a.end = max(a.end, w.off)
	if err != nil {
		// A failed write may have grown the file by more than it reports
		// (tmpfs out of space: 0 bytes written, 128 KiB more file): that
		// is ferry's too, and the retry writes over it.
		if fi, serr := a.f.Stat(); serr == nil {
			a.end = max(a.end, fi.Size())
		}
	}
	w.pending += int64(k)
	if w.pending >= writebackEvery {
		startWriteback(a.f, w.off-w.pending, w.pending)
		w.pending = 0
	}
	return n + k, err
}
