package apply

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/syncrec"
)

// SyncLog applies one peer's stream of a ferry sync record stream
// (docs/SYNC.md, "Record streams"): it appends every record, one JSON
// object per line, to a file that others append to as well (the
// application's own log, or a file every peer's SyncLog appends to), each
// line marked with its origin (syncrec.Mark: the peer and the record's
// seq), and fsyncs.
//
// Its state is the file's inode and its size after the last Apply. The
// file is not ferry's alone, so a crash between an Apply and its
// checkpoint cannot be undone by cutting the file: Restore reads the
// file from that size on instead and finds the lines of this peer
// already there, and Apply skips those records. A new state reads the
// whole file, so the records of this peer a lost state had applied are
// not applied twice either.
type SyncLog struct {
	Path string
	Peer string // the peer's site id, written as every line's origin
	// MaxLine caps the lines Restore reads; a longer line is skipped
	// (it cannot be one of ours: no record is longer). Default 16 MiB.
	MaxLine int
	Log     *slog.Logger

	st     syncLogState
	skipTo uint64 // this peer's records up to this seq are in the file
	buf    []byte
}

type syncLogState struct {
	Ino  uint64 `json:"ino"`
	Size int64  `json:"size"`
}

var _ receiver.Stateful = (*SyncLog)(nil)

func (a *SyncLog) String() string { return "sync-log:" + a.Path }

// Restore finds the lines of this peer written since the checkpoint's
// size (the whole file when the state is new, or the file is another one
// or shorter than it was).
func (a *SyncLog) Restore(state json.RawMessage) error {
	a.st, a.skipTo = syncLogState{}, 0
	if state != nil {
		if err := json.Unmarshal(state, &a.st); err != nil {
			return fmt.Errorf("apply %s: checkpoint state unreadable: %v: %w", a, err, receiver.ErrFatal)
		}
	}
	f, err := os.OpenFile(a.Path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("apply %s: %w: %w", a, err, receiver.ErrFatal)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("apply %s: %w: %w", a, err, receiver.ErrFatal)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("apply %s is %s, not a regular file: %w", a, fsutil.FileKind(fi.Mode()), receiver.ErrFatal)
	}
	from := a.st.Size
	if state == nil || inode(fi) != a.st.Ino || fi.Size() < from {
		if state != nil {
			a.logger().Warn("the log is not the file (or shorter than) the checkpoint left: reading it whole for this peer's records",
				"file", a.Path, "peer", a.Peer, "checkpoint_inode", a.st.Ino, "inode", inode(fi), "checkpoint_size", a.st.Size, "size", fi.Size())
		}
		from = 0
	}
	n, err := a.scan(io.NewSectionReader(f, from, fi.Size()-from))
	if err != nil {
		return fmt.Errorf("apply %s: read from offset %d: %w: %w", a, from, err, receiver.ErrFatal)
	}
	if n > 0 {
		a.logger().Info("found records of the peer applied before a restart; they are not applied again",
			"file", a.Path, "peer", a.Peer, "records", n, "up_to_seq", a.skipTo)
	}
	return nil
}

// scan sets skipTo to the newest seq of this peer's lines in r and
// returns how many it found.
func (a *SyncLog) scan(r io.Reader) (int, error) {
	max := a.MaxLine
	if max <= 0 {
		max = 16 << 20
	}
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	for {
		line, err := readLine(br, max)
		if len(line) > 0 {
			whole := syncrec.CheckObject(line) == nil
			if !whole {
				if torn, rest, ok := syncrec.Split(line); ok {
					// A line cut short by a crash (perhaps this applier's
					// own, killed while writing it): that record is not in
					// the file, the line after the cut part may be.
					a.logger().Warn("a line of the log was cut short by a crash of its writer and the next line appended to it; a record of this peer cut so is applied again",
						"file", a.Path, "peer", a.Peer, "cut_bytes", len(torn))
					line, whole = rest, true
				}
			}
			if o, ok, perr := syncrec.Parse(line); whole && ok && perr == nil && o.Site == a.Peer {
				a.skipTo = o.Seq
				n++
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return n, nil
		case errors.Is(err, errLineTooLong):
			continue
		case err != nil:
			return n, err
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line, newline included; a line over max is skipped
// to its end and reported as errLineTooLong.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var dst []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(dst)+len(frag) > max {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			return nil, errLineTooLong
		}
		dst = append(dst, frag...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return dst, err
		}
	}
}

// Apply appends the records after skipTo, marked, in whole lines, and
// fsyncs. A failed write or fsync is fatal: a torn line cannot be cut
// from a file others append to.
func (a *SyncLog) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	a.buf = a.buf[:0]
	for i := range recs.Len() {
		seq, data := recs.Seq(i), recs.Data(i)
		if seq <= a.skipTo {
			continue
		}
		if o, ok, _ := syncrec.Parse(data); ok {
			return fmt.Errorf("apply %s: record %d of segment %s from peer %s already carries an origin (%s %d): a site shipped a record it did not write; it is not applied: %w",
				a, seq, meta.Name(), a.Peer, o.Site, o.Seq, receiver.ErrFatal)
		}
		if err := syncrec.CheckObject(data); err != nil {
			return fmt.Errorf("apply %s: record %d of segment %s from peer %s: %v (a sync record stream is one JSON object per line): %w",
				a, seq, meta.Name(), a.Peer, err, receiver.ErrFatal)
		}
		a.buf = syncrec.Mark(a.buf, data, syncrec.Origin{Site: a.Peer, Seq: seq})
	}
	if len(a.buf) == 0 {
		return nil
	}
	f, err := os.OpenFile(a.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return fmt.Errorf("apply %s: %w: %w", a, err, receiver.ErrFatal)
	}
	defer f.Close()
	if err := a.write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("apply %s: fsync: %w: %w", a, err, receiver.ErrFatal)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("apply %s: %w: %w", a, err, receiver.ErrFatal)
	}
	a.st = syncLogState{Ino: inode(fi), Size: fi.Size()}
	return nil
}

// write appends the buffer one line per write. A write is whole between
// the application's own (which must also write each line in one write),
// and a SIGKILL can cut it only where it crosses a page boundary, so one
// line at a time is the least a crash can cut; what it cuts, Restore and
// the sync source recognise (syncrec.Split).
func (a *SyncLog) write(f *os.File) error {
	for b := a.buf; len(b) > 0; {
		n := bytes.IndexByte(b, '\n') + 1 // every marked line ends with one
		if _, err := f.Write(b[:n]); err != nil {
			return fmt.Errorf("apply %s: write: %w (the log may now hold a torn line): %w", a, err, receiver.ErrFatal)
		}
		b = b[n:]
	}
	return nil
}

// State is the file's inode and size after the last Apply.
func (a *SyncLog) State() (json.RawMessage, error) { return json.Marshal(a.st) }

func (a *SyncLog) Close() error { return nil }

func (a *SyncLog) logger() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}
