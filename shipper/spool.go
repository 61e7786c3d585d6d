package shipper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// FsyncMode says when the journal is fsynced.
type FsyncMode string

// Fsync modes (config "fsync").
const (
	FsyncAlways FsyncMode = "always" // every append, before it returns
	FsyncBatch  FsyncMode = "batch"  // group commit: one fsync covers all appends before it
	FsyncOff    FsyncMode = "off"    // leave it to the OS; a crash may lose accepted records
)

// SpoolConfig configures a Spool. Zero values get defaults where noted.
type SpoolConfig struct {
	Dir           string
	Stream        string
	Generation    uint32 // default 1
	Fsync         FsyncMode
	Policy        batch.FlushPolicy
	MaxRecordSize int   // framed bytes, default 16 MiB
	Limit         int64 // spool size that triggers backpressure, default 1 GiB
	Level         batch.Level
	// Now is the clock (tests inject one). Default time.Now.
	Now func() time.Time
	// SyncFile fsyncs a file; tests inject failures. Default (*os.File).Sync.
	SyncFile func(*os.File) error
	// CommitInterval bounds how long records appended by a source that
	// does not wait stay unsynced under fsync "batch". Default 100ms.
	CommitInterval time.Duration
}

// spoolState is state.json: what survives a restart besides the journal and
// the sealed segments.
type spoolState struct {
	Format     int    `json:"format"`
	Stream     string `json:"stream"`
	Generation uint32 `json:"generation"`
	SealedSeq  uint64 `json:"sealed_seq"` // last seq in a sealed segment
	LastHash   string `json:"last_hash"`  // hash of that segment (chain)
	Cursor     []byte `json:"cursor,omitempty"`
	Segment    string `json:"segment,omitempty"` // name of that segment
}

// SealedSegment is a segment waiting in the spool for its targets.
type SealedSegment struct {
	Name     string
	FirstSeq uint64
	LastSeq  uint64
	Size     int64
}

// Spool is the shipper's durable local buffer: the journal of the open
// batch, the sealed segments not yet confirmed by every target, and
// state.json. One process owns a spool at a time (flock on LOCK).
//
//	DIR/LOCK  DIR/state.json  DIR/journal  DIR/sealed/<segment name>
type Spool struct {
	cfg SpoolConfig
	log *slog.Logger

	lockFile *os.File

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	journal *os.File
	written uint64 // logical journal bytes ever written
	synced  uint64 // logical journal bytes known durable
	syncing bool
	jbuf    []byte

	builder *batch.Builder
	firstAt time.Time // arrival of the open batch's first record
	lastSeq uint64
	state   spoolState
	cursor  []byte

	sealed      []SealedSegment
	sealedBytes int64
	confirmed   map[string]uint64
	fatal       error
	stats       SpoolStats
}

// SpoolStats are counters for summaries and status.
type SpoolStats struct {
	RecordsIn     uint64
	BytesIn       int64 // framed, uncompressed
	SegmentsOut   uint64
	BytesSealed   int64 // segment bytes
	UncompSealed  int64 // uncompressed bytes in sealed segments
	LastSeq       uint64
	SealedPending int
	SpoolBytes    int64
}

// ErrSpoolFailed wraps the fatal error (an fsync failure) after which the
// spool refuses all work; the process must exit and recover on restart.
var ErrSpoolFailed = errors.New("spool failed")

// OpenSpool locks dir, recovers it (adopting segments sealed just before a
// crash, replaying the journal) and reseals a partial batch left by a
// previous run. targets names every target that must confirm a segment
// before it leaves the spool.
func OpenSpool(cfg SpoolConfig, targets []string, log *slog.Logger) (*Spool, error) {
	if cfg.Generation == 0 {
		cfg.Generation = 1
	}
	if cfg.MaxRecordSize <= 0 {
		cfg.MaxRecordSize = 16 << 20
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 1 << 30
	}
	if cfg.Fsync == "" {
		cfg.Fsync = FsyncBatch
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = 100 * time.Millisecond
	}
	if cfg.SyncFile == nil {
		cfg.SyncFile = (*os.File).Sync
	}
	if err := batch.CheckStream(cfg.Stream); err != nil {
		return nil, err
	}
	if err := fsutil.CheckWritableDir(cfg.Dir, "spool"); err != nil {
		return nil, err
	}
	lf, err := fsutil.Lock(cfg.Dir, "spool")
	if err != nil {
		return nil, err
	}
	b, err := batch.NewBuilder(cfg.Level)
	if err != nil {
		lf.Close()
		return nil, err
	}
	s := &Spool{cfg: cfg, log: log, lockFile: lf, builder: b, changed: make(chan struct{}),
		confirmed: map[string]uint64{}}
	for _, t := range targets {
		s.confirmed[t] = 0
	}
	if err := s.recover(); err != nil {
		lf.Close()
		if s.journal != nil {
			s.journal.Close()
		}
		return nil, fmt.Errorf("spool %s: %w", cfg.Dir, err)
	}
	return s, nil
}

// Fresh reports whether the spool has never sealed or journaled anything,
// so the shipper may continue a stream found in the store.
func (s *Spool) Fresh() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq == 0 && len(s.sealed) == 0
}

// Continue makes a fresh spool continue an existing stream after lastSeq
// whose last segment has hash lastHash.
func (s *Spool) Continue(lastSeq uint64, lastHash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastSeq != 0 || len(s.sealed) != 0 {
		return fmt.Errorf("spool is not fresh")
	}
	st := s.state
	st.SealedSeq, st.LastHash = lastSeq, lastHash
	if err := s.writeState(st); err != nil {
		return err
	}
	s.lastSeq = lastSeq
	s.stats.LastSeq = lastSeq
	s.builder.Reset(s.cfg.Stream, s.cfg.Generation, lastHash)
	return nil
}

func (s *Spool) path(p ...string) string { return filepath.Join(append([]string{s.cfg.Dir}, p...)...) }

func (s *Spool) recover() error {
	s.state = spoolState{Format: 1, Stream: s.cfg.Stream, Generation: s.cfg.Generation, LastHash: batch.ZeroHash}
	raw, err := os.ReadFile(s.path("state.json"))
	switch {
	case err == nil:
		var st spoolState
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("state.json is damaged (%v); restore it or start a new spool", err)
		}
		if st.Stream != s.cfg.Stream {
			return fmt.Errorf("spool belongs to stream %q, not %q", st.Stream, s.cfg.Stream)
		}
		if st.Generation != s.cfg.Generation {
			return fmt.Errorf("spool belongs to generation %d, not %d", st.Generation, s.cfg.Generation)
		}
		s.state = st
	case errors.Is(err, os.ErrNotExist):
		// Pin stream and generation now: the journal does not name them,
		// so a spool reopened under another stream would otherwise reseal
		// this stream's records into that one.
		if err := s.writeState(s.state); err != nil {
			return err
		}
	default:
		return err
	}
	if err := os.MkdirAll(s.path("sealed"), 0o755); err != nil {
		return err
	}
	if err := s.scanSealed(); err != nil {
		return err
	}
	s.lastSeq = s.state.SealedSeq
	s.cursor = s.state.Cursor
	s.builder.Reset(s.cfg.Stream, s.cfg.Generation, s.state.LastHash)

	j, err := os.OpenFile(s.path("journal"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	s.journal = j
	data, err := io.ReadAll(j)
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	off, replayed := 0, 0
	for off < len(data) {
		recs, cursor, n, err := parseEntry(data[off:])
		if errors.Is(err, errTornEntry) {
			s.log.Warn("journal has a torn tail from an interrupted write; dropping it",
				"journal", j.Name(), "offset", off, "bytes", len(data)-off)
			break
		}
		if err != nil {
			return fmt.Errorf("journal %s offset %d: %w", j.Name(), off, err)
		}
		contributes := false
		for i := range recs {
			r := &recs[i]
			if r.Seq <= s.state.SealedSeq {
				continue // already in a sealed segment
			}
			contributes = true
			if r.Seq != s.lastSeq+1 {
				return fmt.Errorf("journal %s: record seq %d follows %d (gap)", j.Name(), r.Seq, s.lastSeq)
			}
			if s.builder.Records() == 0 {
				s.firstAt = s.cfg.Now()
			}
			if err := s.builder.Add(r); err != nil {
				return err
			}
			s.lastSeq = r.Seq
			replayed++
		}
		// An entry whose records are all sealed is older than state.json's
		// cursor (a seal records the cursor after its records), and newer
		// entries may have been lost unsynced: only entries still holding
		// unsealed records move the cursor.
		if contributes {
			s.cursor = cursor
		}
		off += n
	}
	if off < len(data) {
		if err := j.Truncate(int64(off)); err != nil {
			return err
		}
	}
	if _, err := j.Seek(int64(off), io.SeekStart); err != nil {
		return err
	}
	// What the journal holds may be only in the page cache (the last run
	// was killed, not the machine): count it as written but not synced.
	// The reseal below makes its records durable in a segment anyway.
	s.written = uint64(off)
	s.stats.LastSeq = s.lastSeq
	if replayed > 0 {
		s.log.Info("resealing partial batch from journal", "records", replayed, "seq", s.lastSeq)
		if err := s.sealLocked("restart"); err != nil {
			return err
		}
	}
	return nil
}

// scanSealed loads the sealed/ listing and adopts a segment sealed after
// the last state.json write (a crash between the two).
func (s *Spool) scanSealed() error {
	ents, err := os.ReadDir(s.path("sealed"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			if base := strings.TrimSuffix(strings.TrimPrefix(name, "."), ".tmp"); base == s.state.Segment && base != "" {
				if _, err := os.Stat(s.path("sealed", base)); errors.Is(err, os.ErrNotExist) {
					// Crashed between state.json and the rename: finish it.
					if err := s.adoptTemp(name, base); err != nil {
						return err
					}
					name = base
					goto segment
				}
			}
			os.Remove(s.path("sealed", name)) // temp file of an interrupted seal
			continue
		}
	segment:
		gen, first, last, ok := batch.ParseSegmentName(name)
		if !ok || gen != s.cfg.Generation {
			return fmt.Errorf("unexpected file sealed/%s; move it away", name)
		}
		fi, err := os.Stat(s.path("sealed", name))
		if err != nil {
			return err
		}
		s.sealed = append(s.sealed, SealedSegment{Name: name, FirstSeq: first, LastSeq: last, Size: fi.Size()})
		s.sealedBytes += fi.Size()
	}
	sort.Slice(s.sealed, func(i, j int) bool { return s.sealed[i].FirstSeq < s.sealed[j].FirstSeq })
	if n := len(s.sealed); n > 0 && s.sealed[n-1].LastSeq > s.state.SealedSeq {
		seg := s.sealed[n-1]
		data, err := os.ReadFile(s.path("sealed", seg.Name))
		if err != nil {
			return err
		}
		sg, err := batch.Open(data)
		if err != nil {
			return fmt.Errorf("sealed/%s: %w", seg.Name, err)
		}
		st := s.state
		st.SealedSeq, st.LastHash = seg.LastSeq, sg.Hash
		if err := s.writeState(st); err != nil {
			return err
		}
		s.log.Info("adopted segment sealed before a crash", "segment", seg.Name)
	}
	return nil
}

// adoptTemp publishes the temp file of the segment state.json names, after
// checking it is the segment state.json describes.
func (s *Spool) adoptTemp(tmpName, name string) error {
	data, err := os.ReadFile(s.path("sealed", tmpName))
	if err != nil {
		return err
	}
	seg, err := batch.Open(data)
	if err != nil || seg.Hash != s.state.LastHash {
		return fmt.Errorf("sealed/%s does not match state.json (%v); the spool is damaged", tmpName, err)
	}
	if err := os.Rename(s.path("sealed", tmpName), s.path("sealed", name)); err != nil {
		return err
	}
	s.log.Info("finished publishing a segment sealed before a crash", "segment", name)
	return fsutil.SyncDir(s.path("sealed"))
}

func (s *Spool) writeState(st spoolState) error {
	b, _ := json.Marshal(st)
	if err := fsutil.WriteFileAtomic(s.path("state.json"), b, 0o644); err != nil {
		return s.fail(err)
	}
	s.state = st
	return nil
}

// fail records a fatal error: after an fsync failure nothing written since
// the last good fsync can be trusted, so the spool stops.
func (s *Spool) fail(err error) error {
	if s.fatal == nil {
		s.fatal = fmt.Errorf("%w: %w", ErrSpoolFailed, err)
		s.notify()
	}
	return s.fatal
}

func (s *Spool) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// SyncLoop is the background committer for fsync "batch": it fsyncs the
// journal when something unsynced is there, at most once per
// CommitInterval, so sources that do not wait still become durable within
// that interval, while a seal (which makes its records durable in the
// segment) usually gets there first and the journal bytes never have to
// reach the disk. Appenders that wait (WaitDurable) are committed at once,
// sharing one fsync. It returns when ctx ends or the spool fails.
func (s *Spool) SyncLoop(ctx context.Context) error {
	if s.cfg.Fsync != FsyncBatch {
		return nil
	}
	for {
		s.mu.Lock()
		ch, pending, fatal := s.changed, s.written > s.synced, s.fatal
		s.mu.Unlock()
		if fatal != nil {
			return fatal
		}
		if pending {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(s.cfg.CommitInterval):
			}
			s.mu.Lock()
			pos := s.written
			s.mu.Unlock()
			if err := s.WaitDurable(ctx, pos); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}

// Changed returns a channel closed at the next change of the spool
// (append, seal, confirm, failure).
func (s *Spool) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Cursor is the source position reached by the last accepted record, as
// passed to Append (nil if none).
func (s *Spool) Cursor() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.cursor...)
}

// Err is the spool's fatal error, if any.
func (s *Spool) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fatal
}

func (s *Spool) size() int64 { return s.sealedBytes + s.builder.Size() }

// Append assigns the next sequence numbers to recs (setting Seq, and Time
// when zero), writes them with cursor (nil: keep the previous cursor) as one
// journal entry, and seals
// whenever the flush policy says so. It blocks while the spool is over its
// limit (backpressure). It returns the journal position to pass to
// WaitDurable; under fsync "always" the records are already durable.
func (s *Spool) Append(ctx context.Context, recs []batch.Record, cursor []byte) (uint64, error) {
	for i := range recs {
		if err := recs[i].CheckSize(s.cfg.MaxRecordSize); err != nil {
			return 0, err
		}
		if err := checkTime(recs[i].Time); err != nil {
			return 0, err
		}
	}
	s.mu.Lock()
	for s.fatal == nil && s.size() >= s.cfg.Limit {
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-ch:
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.fatal != nil {
		return 0, s.fatal
	}
	now := s.cfg.Now()
	for i := range recs {
		recs[i].Seq = s.lastSeq + uint64(i) + 1
		if recs[i].Time.IsZero() {
			recs[i].Time = now
		}
	}
	callerCursor := cursor != nil
	if callerCursor {
		s.cursor = append([]byte(nil), cursor...)
	}
	cursor = s.cursor
	s.jbuf = appendEntry(s.jbuf[:0], recs, cursor)
	if _, err := s.journal.Write(s.jbuf); err != nil {
		return 0, s.fail(fmt.Errorf("write journal: %w", err))
	}
	s.written += uint64(len(s.jbuf))
	pos := s.written
	if cap(s.jbuf) > 8<<20 {
		s.jbuf = nil // don't pin one huge entry's buffer
	}
	if s.cfg.Fsync == FsyncAlways {
		if err := s.cfg.SyncFile(s.journal); err != nil {
			return 0, s.fail(fmt.Errorf("fsync journal: %w", err))
		}
		s.synced = s.written
	}
	lastSealedAt := -1
	for i := range recs {
		if s.builder.Records() == 0 {
			s.firstAt = now
		}
		if err := s.builder.Add(&recs[i]); err != nil {
			return 0, s.fail(err)
		}
		s.lastSeq = recs[i].Seq
		s.stats.RecordsIn++
		s.stats.BytesIn += int64(recs[i].FramedSize())
		if due, why := s.cfg.Policy.Due(s.builder.Size(), s.builder.Records(), s.firstAt, now); due {
			// Sealing mid-entry records this entry's cursor in state.json,
			// which also covers the records after the seal point: they must
			// be durable in the journal first, or a crash would skip them.
			midEntry := i < len(recs)-1 && callerCursor
			if err := s.sealSegment(why, cursor, midEntry); err != nil {
				return 0, err
			}
			lastSealedAt = i
		}
	}
	s.stats.LastSeq = s.lastSeq
	if lastSealedAt >= 0 {
		if err := s.rewriteJournal(recs[lastSealedAt+1:], cursor, pos); err != nil {
			return 0, err
		}
		pos = s.written // the leftover's new place, which a waiter must cover
	}
	s.notify()
	return pos, nil
}

// checkTime refuses a record time the framing cannot store (it is Unix
// nanoseconds in an int64), before the record reaches the journal: the
// builder would refuse it later and fail the whole spool.
func checkTime(t time.Time) error {
	if !t.IsZero() && !time.Unix(0, t.UnixNano()).Equal(t) {
		return fmt.Errorf("record time %s is outside the range ferry stores (years 1678-2262)", t.Format(time.RFC3339))
	}
	return nil
}

// WaitDurable blocks until the journal is durable up to pos (as returned by
// Append) under the configured fsync mode. With fsync "off" it returns at
// once. With "batch" one fsync serves every waiter (group commit).
func (s *Spool) WaitDurable(ctx context.Context, pos uint64) error {
	if s.cfg.Fsync == FsyncOff {
		return nil
	}
	s.mu.Lock()
	for {
		if s.fatal != nil {
			err := s.fatal
			s.mu.Unlock()
			return err
		}
		if s.synced >= pos {
			s.mu.Unlock()
			return nil
		}
		if !s.syncing {
			s.syncing = true
			target := s.written
			f := s.journal
			s.mu.Unlock()
			err := s.cfg.SyncFile(f)
			s.mu.Lock()
			s.syncing = false
			switch {
			case err != nil && f == s.journal:
				s.fail(fmt.Errorf("fsync journal: %w", err))
			case err != nil:
				// The journal was replaced while we synced; what it held is
				// sealed durably, and rewriteJournal advanced synced.
			case target > s.synced:
				s.synced = target
			}
			s.notify()
			continue
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		s.mu.Lock()
	}
}

// Deadline is when the open batch must seal by age (zero if nothing is
// open or max_age is off).
func (s *Spool) Deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.builder.Records() == 0 {
		return time.Time{}
	}
	return s.cfg.Policy.Deadline(s.firstAt)
}

// SealIfDue seals the open batch if the flush policy says so at now.
func (s *Spool) SealIfDue(now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if due, why := s.cfg.Policy.Due(s.builder.Size(), s.builder.Records(), s.firstAt, now); due {
		return s.sealLocked(why)
	}
	return s.fatal
}

// Seal seals whatever is open (shutdown, EOF, schedules). No-op when empty.
func (s *Spool) Seal(reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sealLocked(reason)
}

func (s *Spool) sealLocked(reason string) error {
	if s.fatal != nil {
		return s.fatal
	}
	if s.builder.Records() == 0 {
		return nil
	}
	if err := s.sealSegment(reason, s.cursor, false); err != nil {
		return err
	}
	err := s.rewriteJournal(nil, s.cursor, 0)
	s.notify()
	return err
}

// sealSegment writes the open batch as a sealed segment and records it in
// state.json with cursor, the source position after its last record. The
// journal is left alone: records it still holds are recognised as sealed by
// their seq on recovery, and entries lost unsynced held only sealed records
// whose cursor state.json now carries. When syncJournal is set (a seal in
// the middle of an entry that moves the cursor), the journal is fsynced
// first, because state.json's cursor then covers records only it holds.
func (s *Spool) sealSegment(reason string, cursor []byte, syncJournal bool) error {
	if syncJournal && s.cfg.Fsync != FsyncOff && s.synced < s.written {
		if err := s.cfg.SyncFile(s.journal); err != nil {
			return s.fail(fmt.Errorf("fsync journal: %w", err))
		}
		s.synced = s.written
	}
	data, meta, err := s.builder.Seal(s.cfg.Now())
	if err != nil {
		return s.fail(err)
	}
	// Order: the segment under a temp name (fsynced, directory fsynced),
	// then state.json naming it with the cursor after its records, then the
	// rename. A crash before state.json leaves a temp file recovery
	// deletes (the journal still has the records, or lost them together
	// with their cursor); after it, recovery finishes the rename. So a
	// sealed segment never exists without the cursor that goes with it.
	name := meta.Name()
	final := s.path("sealed", name)
	tmp := s.path("sealed", "."+name+".tmp")
	if err := s.writeSegmentTemp(tmp, data); err != nil {
		return s.fail(err)
	}
	hash := batch.Hash(data)
	st := s.state
	st.SealedSeq, st.LastHash, st.Cursor, st.Segment = meta.LastSeq, hash, append([]byte(nil), cursor...), name
	if err := s.writeState(st); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return s.fail(fmt.Errorf("publish sealed/%s: %w", name, err))
	}
	s.sealed = append(s.sealed, SealedSegment{Name: name, FirstSeq: meta.FirstSeq, LastSeq: meta.LastSeq, Size: int64(len(data))})
	s.sealedBytes += int64(len(data))
	s.stats.SegmentsOut++
	s.stats.BytesSealed += int64(len(data))
	s.stats.UncompSealed += meta.UncompressedSize
	s.builder.Reset(s.cfg.Stream, s.cfg.Generation, hash)
	s.log.Debug("sealed segment", "segment", name, "records", meta.Records, "bytes", len(data), "reason", reason)
	return nil
}

// writeSegmentTemp writes data to tmp durably: file and directory entry.
func (s *Spool) writeSegmentTemp(tmp string, data []byte) error {
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := s.cfg.SyncFile(f); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return fsutil.SyncDir(filepath.Dir(tmp))
}

// rewriteJournal drops what the seals just made durable and keeps only
// leftover, the records after the last seal point, with cursor; pos is the
// journal position of the entry that held them. Dropping is a plain
// truncate, not fsynced: entries a crash brings back hold only sealed
// records, which recovery skips by seq without taking their cursor. The
// leftover keeps the durability its entry had: if that entry was already
// committed (a waiter, fsync "always", or a cursor-moving seal mid-entry
// synced it), its replacement is atomic and fsynced; otherwise it is
// written like any new entry and the group committer syncs it.
func (s *Spool) rewriteJournal(leftover []batch.Record, cursor []byte, pos uint64) error {
	if len(leftover) > 0 && s.synced >= pos && s.cfg.Fsync != FsyncOff {
		buf := appendEntry(nil, leftover, cursor)
		path := s.path("journal")
		if err := fsutil.WriteFileAtomic(path, buf, 0o644); err != nil {
			return s.fail(err)
		}
		j, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o644)
		if err != nil {
			return s.fail(err)
		}
		s.journal.Close()
		s.journal = j
		s.synced = s.written
		return nil
	}
	if err := s.journal.Truncate(0); err != nil {
		return s.fail(fmt.Errorf("truncate journal: %w", err))
	}
	if _, err := s.journal.Seek(0, io.SeekStart); err != nil {
		return s.fail(err)
	}
	s.synced = s.written // everything written so far is sealed
	if len(leftover) == 0 {
		return nil
	}
	s.jbuf = appendEntry(s.jbuf[:0], leftover, cursor)
	if _, err := s.journal.Write(s.jbuf); err != nil {
		return s.fail(fmt.Errorf("write journal: %w", err))
	}
	s.written += uint64(len(s.jbuf))
	return nil
}

// Pending lists the sealed segments with LastSeq > after, oldest first.
func (s *Spool) Pending(after uint64) []SealedSegment {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.sealed), func(i int) bool { return s.sealed[i].LastSeq > after })
	return append([]SealedSegment(nil), s.sealed[i:]...)
}

// ReadSealed returns the bytes of a sealed segment.
func (s *Spool) ReadSealed(name string) ([]byte, error) {
	return os.ReadFile(s.path("sealed", name))
}

// Confirm records that target holds every segment up to lastSeq. Segments
// every target holds leave the spool.
func (s *Spool) Confirm(target string, lastSeq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lastSeq > s.confirmed[target] {
		s.confirmed[target] = lastSeq
	}
	low := lastSeq
	for _, c := range s.confirmed {
		low = min(low, c)
	}
	n := 0
	for n < len(s.sealed) && s.sealed[n].LastSeq <= low {
		if err := os.Remove(s.path("sealed", s.sealed[n].Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot remove confirmed segment from spool", "segment", s.sealed[n].Name, "err", err)
			break
		}
		s.sealedBytes -= s.sealed[n].Size
		n++
	}
	if n > 0 {
		s.sealed = append(s.sealed[:0], s.sealed[n:]...)
		s.notify()
	}
}

// Stats returns a snapshot of the counters.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.SealedPending = len(s.sealed)
	st.SpoolBytes = s.size()
	return st
}

// Close releases the journal and the lock. It does not seal.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.journal != nil {
		if s.cfg.Fsync != FsyncOff && s.fatal == nil {
			err = s.cfg.SyncFile(s.journal)
		}
		s.journal.Close()
		s.journal = nil
	}
	if s.lockFile != nil {
		s.lockFile.Close()
		s.lockFile = nil
	}
	return err
}
