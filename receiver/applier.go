package receiver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// Applier makes a verified segment's records take effect on the secondary.
// Apply returns only once the effect is durable; the receiver advances its
// checkpoint after that. An error wrapping ErrFatal stops the receiver;
// any other error is retried with backoff and the checkpoint stays. The
// records and the bytes they point to are valid only until Apply returns:
// the receiver reuses their memory for later segments.
type Applier interface {
	Apply(ctx context.Context, meta *batch.Meta, recs []batch.Record) error
	Close() error
	String() string
}

// Stateful appliers keep state in the checkpoint so a crash between Apply
// and the checkpoint write is undone on restart: exactly-once.
type Stateful interface {
	// State is the applier's state after the last Apply.
	State() (json.RawMessage, error)
	// Restore is called once before the first Apply with the state saved
	// in the checkpoint (nil for a new checkpoint) and undoes anything
	// applied after it.
	Restore(state json.RawMessage) error
}

// SyncDeferrer is a Stateful applier whose Apply can leave making its
// writes durable to later: after DeferSync(true) Apply does not fsync, and
// Sync (or an Apply after DeferSync(false)) makes everything applied
// durable. When several segments are ready the receiver applies them as a
// group with one fsync and one checkpoint; a crash in between loses
// nothing, as Restore undoes what the checkpoint does not cover.
type SyncDeferrer interface {
	Stateful
	DeferSync(deferred bool)
	Sync() error
}

// ErrFatal marks applier errors that retrying cannot fix.
var ErrFatal = errors.New("fatal apply error")

// ParseApplier builds an applier from its spec: file:PATH, exec:CMD or
// stdout.
func ParseApplier(spec string, stdout io.Writer) (Applier, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "file":
		if arg == "" {
			return nil, fmt.Errorf("apply %q: file: needs a path", spec)
		}
		return &FileApplier{Path: arg}, nil
	case "exec":
		if strings.TrimSpace(arg) == "" {
			return nil, fmt.Errorf("apply %q: exec: needs a command", spec)
		}
		return &ExecApplier{Command: arg}, nil
	case "stdout":
		if arg != "" {
			return nil, fmt.Errorf("apply %q: stdout takes no argument", spec)
		}
		return &WriterApplier{W: stdout, Name: "stdout"}, nil
	case "dir":
		return parseDirApplier(spec)
	}
	return nil, fmt.Errorf("apply %q: unknown applier (want file:PATH, dir:PATH, exec:CMD or stdout)", spec)
}

// FileApplier appends every record's data to a file and fsyncs it. Its
// state is the file size, so a restart truncates whatever was appended
// after the last checkpoint: exactly-once.
type FileApplier struct {
	Path      string
	f         *os.File
	size      int64
	deferSync bool          // DeferSync
	w         *bufio.Writer // reused across Applies
}

type fileState struct {
	Size int64 `json:"size"`
}

func (a *FileApplier) String() string { return "file:" + a.Path }

// Restore opens the file and cuts it back to the checkpointed size.
func (a *FileApplier) Restore(state json.RawMessage) error {
	f, err := os.OpenFile(a.Path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("apply file %s: %w: %w", a.Path, err, ErrFatal)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("apply file %s: %w: %w", a.Path, err, ErrFatal)
	}
	var st fileState
	if state == nil {
		if fi.Size() != 0 {
			f.Close()
			return fmt.Errorf("apply file %s already holds %d bytes but the receiver state is new; move the file away or use a new path: %w", a.Path, fi.Size(), ErrFatal)
		}
	} else if err := json.Unmarshal(state, &st); err != nil {
		f.Close()
		return fmt.Errorf("apply file %s: checkpoint state unreadable: %v: %w", a.Path, err, ErrFatal)
	}
	switch {
	case fi.Size() < st.Size:
		f.Close()
		return fmt.Errorf("apply file %s is %d bytes, shorter than the %d the checkpoint recorded: it was changed outside ferry: %w", a.Path, fi.Size(), st.Size, ErrFatal)
	case fi.Size() > st.Size:
		// Appended after the last checkpoint (crash mid-apply): undo.
		if err := f.Truncate(st.Size); err != nil {
			f.Close()
			return fmt.Errorf("apply file %s: truncate to checkpoint: %w: %w", a.Path, err, ErrFatal)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("apply file %s: fsync: %w: %w", a.Path, err, ErrFatal)
		}
	}
	a.f, a.size = f, st.Size
	return nil
}

// DeferSync makes the following Applies skip their fsync (true) until one
// after DeferSync(false), whose fsync covers them all.
func (a *FileApplier) DeferSync(deferred bool) { a.deferSync = deferred }

// Sync makes everything applied durable. A failed fsync is fatal.
func (a *FileApplier) Sync() error {
	if a.f == nil {
		return fmt.Errorf("apply file %s: not restored: %w", a.Path, ErrFatal)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("apply file %s: fsync: %w: %w", a.Path, err, ErrFatal)
	}
	return nil
}

// State is the file size after the last Apply.
func (a *FileApplier) State() (json.RawMessage, error) {
	return json.Marshal(fileState{Size: a.size})
}

// Apply appends the records' data and fsyncs. A failed fsync is fatal.
func (a *FileApplier) Apply(ctx context.Context, meta *batch.Meta, recs []batch.Record) error {
	if a.f == nil {
		return fmt.Errorf("apply file %s: not restored: %w", a.Path, ErrFatal)
	}
	if a.w == nil {
		a.w = bufio.NewWriterSize(nil, 1<<20)
	}
	w := a.w
	w.Reset(&writebackWriter{f: a.f, off: a.size})
	defer w.Reset(nil)
	n := int64(0)
	for i := range recs {
		k, err := w.Write(recs[i].Data)
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

func (a *FileApplier) Close() error {
	if a.f == nil {
		return nil
	}
	return a.f.Close()
}

// ExecApplier runs a shell command once per segment with the records' data
// on stdin and FERRY_STREAM, FERRY_GENERATION, FERRY_FIRST_SEQ,
// FERRY_LAST_SEQ and FERRY_SEGMENT in its environment. A non-zero exit is
// retried with backoff and the checkpoint stays; the command sees a segment
// again after a crash, so it should be idempotent by FERRY_LAST_SEQ.
type ExecApplier struct {
	Command string
	Stdout  io.Writer // default os.Stderr (stdout may carry data)
	Stderr  io.Writer // default os.Stderr
}

func (a *ExecApplier) String() string { return "exec:" + a.Command }

func (a *ExecApplier) Apply(ctx context.Context, meta *batch.Meta, recs []batch.Record) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", a.Command)
	cmd.Env = append(os.Environ(),
		"FERRY_STREAM="+meta.Stream,
		"FERRY_GENERATION="+strconv.FormatUint(uint64(meta.Generation), 10),
		"FERRY_FIRST_SEQ="+strconv.FormatUint(meta.FirstSeq, 10),
		"FERRY_LAST_SEQ="+strconv.FormatUint(meta.LastSeq, 10),
		"FERRY_SEGMENT="+meta.Name(),
	)
	// On cancellation kill the whole process group: a child the shell
	// started must not go on applying after the receiver stopped (and
	// re-runs the segment), nor hold the stdin pipe and block Wait.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdout, cmd.Stderr = a.Stdout, a.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stderr
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	pr, pw := io.Pipe()
	cmd.Stdin = pr
	written := make(chan struct{})
	go func() {
		defer close(written)
		w := bufio.NewWriterSize(pw, 1<<20)
		for i := range recs {
			if _, err := w.Write(recs[i].Data); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(w.Flush())
	}()
	err := cmd.Run()
	pr.Close()
	<-written // the records are not touched after Apply returns
	if err != nil {
		return fmt.Errorf("apply exec %q for segment %s: %w", a.Command, meta.Name(), err)
	}
	return nil
}

func (a *ExecApplier) Close() error { return nil }

// WriterApplier writes the records' data to a writer (stdout). A crash
// between a write and the checkpoint repeats that segment on restart.
type WriterApplier struct {
	W    io.Writer
	Name string
	w    *bufio.Writer // reused across Applies
}

func (a *WriterApplier) String() string { return a.Name }

func (a *WriterApplier) Apply(ctx context.Context, meta *batch.Meta, recs []batch.Record) error {
	if a.w == nil {
		a.w = bufio.NewWriterSize(nil, 1<<20)
	}
	w := a.w
	w.Reset(a.W)
	defer w.Reset(nil)
	for i := range recs {
		if _, err := w.Write(recs[i].Data); err != nil {
			return fmt.Errorf("apply %s: %w: %w", a.Name, err, ErrFatal)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("apply %s: %w: %w", a.Name, err, ErrFatal)
	}
	return nil
}

func (a *WriterApplier) Close() error { return nil }

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
