package apply

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
)

// File appends every record's data to a file and fsyncs it. Its
// state is the file size, so a restart truncates whatever was appended
// after the last checkpoint: exactly-once.
type File struct {
	Path      string
	f         *os.File
	size      int64
	deferSync bool          // DeferSync
	w         *bufio.Writer // reused across Applies
}

var _ receiver.SyncDeferrer = (*File)(nil)

type fileState struct {
	Size int64 `json:"size"`
}

func (a *File) String() string { return "file:" + a.Path }

// Restore opens the file and cuts it back to the checkpointed size.
func (a *File) Restore(state json.RawMessage) error {
	f, err := os.OpenFile(a.Path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("apply file %s: %w: %w", a.Path, err, receiver.ErrFatal)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("apply file %s: %w: %w", a.Path, err, receiver.ErrFatal)
	}
	var st fileState
	if state == nil {
		if fi.Size() != 0 {
			f.Close()
			return fmt.Errorf("apply file %s already holds %d bytes but the receiver state is new; move the file away or use a new path: %w", a.Path, fi.Size(), receiver.ErrFatal)
		}
	} else if err := json.Unmarshal(state, &st); err != nil {
		f.Close()
		return fmt.Errorf("apply file %s: checkpoint state unreadable: %v: %w", a.Path, err, receiver.ErrFatal)
	}
	switch {
	case fi.Size() < st.Size:
		f.Close()
		return fmt.Errorf("apply file %s is %d bytes, shorter than the %d the checkpoint recorded: it was changed outside ferry: %w", a.Path, fi.Size(), st.Size, receiver.ErrFatal)
	case fi.Size() > st.Size:
		// Appended after the last checkpoint (crash mid-apply): undo.
		if err := f.Truncate(st.Size); err != nil {
			f.Close()
			return fmt.Errorf("apply file %s: truncate to checkpoint: %w: %w", a.Path, err, receiver.ErrFatal)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("apply file %s: fsync: %w: %w", a.Path, err, receiver.ErrFatal)
		}
	}
	a.f, a.size = f, st.Size
	return nil
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

// State is the file size after the last Apply.
func (a *File) State() (json.RawMessage, error) {
	return FileState(a.size), nil
}

// FileState is the checkpoint state of a File applier whose replica holds
// size bytes: what ferry rejoin starts a receiver with after cutting the
// file back to the fork.
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
	if a.w == nil {
		a.w = bufio.NewWriterSize(nil, 1<<20)
	}
	w := a.w
	w.Reset(&writebackWriter{f: a.f, off: a.size})
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

// writebackWriter writes at off, advancing, and starts the writeback of
// what it wrote every writebackEvery bytes.
type writebackWriter struct {
	f       *os.File
	off     int64
	pending int64 // written since the last startWriteback
}

const writebackEvery = 4 << 20

func (w *writebackWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	w.pending += int64(n)
	if w.pending >= writebackEvery {
		startWriteback(w.f, w.off-w.pending, w.pending)
		w.pending = 0
	}
	return n, err
}
