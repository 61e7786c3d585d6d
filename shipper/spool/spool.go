package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
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

// Config configures a Spool. Zero values get defaults where noted.
type Config struct {
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
	// WriteFile writes to a journal or segment file; tests inject a full
	// disk. Default (*os.File).Write.
	WriteFile func(*os.File, []byte) (int, error)
	// CommitInterval bounds how long records appended by a source that
	// does not wait stay unsynced under fsync "batch". Default 100ms.
	CommitInterval time.Duration
	// JournalRotate, if positive, lets a hand-off keep writing the
	// current journal file until it holds this many bytes, instead of
	// starting a file per seal. For spools whose journal is not committed
	// (appends wait for targets' acks): there a file per seal cost a
	// create and an unlink per round trip, which the next fsync of a
	// segment paid for. Zero: a file per seal, whose journal positions
	// the seal then counts as durable (no commit needs them).
	JournalRotate int64
	// StateEvery bounds how often Confirm rewrites state.json (two journal
	// commits) to let confirmed segments go: a seal costs one. Default 1s.
	StateEvery time.Duration
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
// batch, the sealed segments not yet confirmed by every target (and the
// confirmed ones state.json does not cover yet), and state.json. One
// process owns a spool at a time (flock on LOCK).
//
//	DIR/LOCK  DIR/state.json  DIR/journal-<seq>  DIR/sealed/<segment name>
//
// A batch that is due is handed to a sealer goroutine, which finishes its
// compression and writes the segment (one fsync; its metadata carries the
// source cursor) while Append fills the next batch in a second Builder.
// At most one seal is in flight: an Append whose batch is due before the
// previous seal is done waits for it. state.json is rewritten in the
// background (SaveState) so confirmed segments can go; recovery brings it
// up to the segments sealed since.
type Spool struct {
	cfg Config
	log *slog.Logger

	lockFile *os.File

	// in serialises the ingest side (Append, Seal, SealIfDue, Continue,
	// Close), which owns the open batch. It is taken before mu. While the
	// ingest side waits for the seal in flight it keeps in and releases
	// mu, so waiters, senders and the sealer carry on.
	in   sync.Mutex
	jbuf []byte // under in

	mu       sync.Mutex
	changed  chan struct{}  // closed and replaced on every change
	journals []*journalFile // live journal files, oldest first; appends go to the last
	written  uint64         // logical journal bytes ever written
	synced   uint64         // logical journal position known durable or sealed
	syncing  bool

	// The open batch: changed with in and mu held, so either lock reads it.
	builder *batch.Builder
	firstAt time.Time // arrival of the open batch's first record
	lastSeq uint64
	cursor  []byte

	spare   *batch.Builder // the other Builder; nil while a seal holds it
	sealing *sealJob       // the seal in flight, nil if none

	state       spoolState
	sealed      []SealedSegment
	sealedBytes int64
	// newest is the last segment sealed, kept in memory for the senders,
	// which read it right away, until every target confirmed it.
	newest     SealedSegment
	newestData []byte
	confirmed  map[string]uint64
	// stateSealed is the SealedSeq of state.json on disk: seals do not
	// rewrite it, so confirmed segments after it stay in sealed/ (the
	// newest of them is what recovery continues from) until SaveState
	// covers them. stateAt is when it was last written.
	stateSealed uint64
	stateAt     time.Time
	stateMu     sync.Mutex     // one SaveState at a time
	retiring    sync.WaitGroup // removeRetired's deletions in the background
	retireMu    sync.Mutex     // one background batch at a time
	fatal       error
	closed      bool
	closing     bool // Close has begun: a seal waiting for disk space gives up
	stats       Stats
}

// Stats are counters for summaries and status.
type Stats struct {
	RecordsIn     uint64
	BytesIn       int64 // framed, uncompressed
	SegmentsOut   uint64
	BytesSealed   int64 // segment bytes
	UncompSealed  int64 // uncompressed bytes in sealed segments
	LastSeq       uint64
	SealedPending int
	SpoolBytes    int64
}

// ErrFailed wraps the fatal error (an fsync failure) after which the
// spool refuses all work; the process must exit and recover on restart.
var ErrFailed = errors.New("spool failed")

var errClosed = errors.New("spool closed")

// Open locks dir, recovers it (adopting segments sealed just before a
// crash, replaying the journal) and reseals a partial batch left by a
// previous run. targets names every target that must confirm a segment
// before it leaves the spool.
func Open(cfg Config, targets []string, log *slog.Logger) (*Spool, error) {
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
	if cfg.StateEvery <= 0 {
		cfg.StateEvery = time.Second
	}
	if cfg.SyncFile == nil {
		cfg.SyncFile = (*os.File).Sync
	}
	if cfg.WriteFile == nil {
		cfg.WriteFile = (*os.File).Write
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
	b1, err := batch.NewBuilder(cfg.Level)
	if err != nil {
		lf.Close()
		return nil, err
	}
	b2, _ := batch.NewBuilder(cfg.Level)
	s := &Spool{cfg: cfg, log: log, lockFile: lf, builder: b1, spare: b2, changed: make(chan struct{}),
		confirmed: map[string]uint64{}}
	for _, t := range targets {
		s.confirmed[t] = 0
	}
	if err := s.recover(); err != nil {
		lf.Close()
		for _, j := range s.journals {
			j.f.Close()
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
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if s.lastSeq != 0 || len(s.sealed) != 0 {
		return fmt.Errorf("spool is not fresh")
	}
	st := s.state
	st.SealedSeq, st.LastHash = lastSeq, lastHash
	if err := s.writeState(st); err != nil {
		return s.fail(err)
	}
	s.state, s.stateSealed, s.stateAt = st, st.SealedSeq, time.Now()
	// The journal is empty: name it after the seq its first record gets.
	// Its first fsync makes the rename durable before any record in it.
	j := s.journals[0]
	name := journalName(lastSeq + 1)
	if err := os.Rename(s.path(j.name), s.path(name)); err != nil {
		return s.fail(fmt.Errorf("rename journal: %w", err))
	}
	j.name, j.dirSynced = name, false
	s.lastSeq = lastSeq
	s.stats.LastSeq = lastSeq
	s.builder.Reset(s.cfg.Stream, s.cfg.Generation, lastHash)
	return nil
}

// Config returns the spool's configuration with the defaults applied.
func (s *Spool) Config() Config { return s.cfg }

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
	s.stateSealed = s.state.SealedSeq // scanSealed wrote what it adopted
	s.lastSeq = s.state.SealedSeq
	s.cursor = s.state.Cursor
	s.builder.Reset(s.cfg.Stream, s.cfg.Generation, s.state.LastHash)

	names, err := listJournals(s.cfg.Dir)
	if err != nil {
		return err
	}
	replayed, err := s.replayJournals(names)
	if err != nil {
		return err
	}
	s.stats.LastSeq = s.lastSeq
	// This run's journal. A file of that name can only be one whose
	// records were all dropped (a record in it would have been replayed,
	// and the name would be taken by the next seq), so it is truncated.
	j, err := s.createJournal(s.lastSeq+1, os.O_TRUNC)
	if err != nil {
		return err
	}
	s.journals = []*journalFile{j}
	var obsolete []string
	for _, n := range names {
		if n != j.name {
			obsolete = append(obsolete, n)
		}
	}
	if replayed == 0 {
		// They hold only sealed records and dropped tails.
		return s.removeJournals(obsolete)
	}
	// What the journal held may be only in the page cache (the last run
	// was killed, not the machine). The reseal makes it durable in a
	// segment; the replayed files go once state.json records it.
	s.log.Info("resealing partial batch from journal", "records", replayed, "seq", s.lastSeq)
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startSeal(&sealJob{reason: "restart", cursor: s.cursor, obsolete: obsolete})
	return s.waitSealLocked()
}

// fail records a fatal error: after an fsync failure nothing written since
// the last good fsync can be trusted, so the spool stops. mu held.
func (s *Spool) fail(err error) error {
	if s.fatal == nil {
		s.fatal = fmt.Errorf("%w: %w", ErrFailed, err)
		s.notify()
	}
	return s.fatal
}

// usable is the error that stops any work: fatal, or closed. mu held.
func (s *Spool) usable() error {
	if s.fatal != nil {
		return s.fatal
	}
	if s.closed {
		return errClosed
	}
	return nil
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
		return s.StateLoop(ctx)
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
				if ctx.Err() != nil || errors.Is(err, errClosed) {
					return nil
				}
				return err
			}
			continue
		}
		if !s.waitIdle(ctx, ch) {
			return nil
		}
	}
}

// StateLoop is SyncLoop without the journal commits (fsync "always" and
// "off", or appends that wait for targets' acks): it only lets confirmed
// segments go. It returns when ctx ends or the spool fails.
func (s *Spool) StateLoop(ctx context.Context) error {
	for {
		s.mu.Lock()
		ch, fatal := s.changed, s.fatal
		s.mu.Unlock()
		if fatal != nil {
			return fatal
		}
		if !s.waitIdle(ctx, ch) {
			return nil
		}
	}
}

// waitIdle waits for ch (the next change) or ctx; meanwhile confirmed
// segments waiting for state.json go within StateEvery even if no further
// Confirm comes. It returns false when ctx ended.
func (s *Spool) waitIdle(ctx context.Context, ch <-chan struct{}) bool {
	var save <-chan time.Time
	s.mu.Lock()
	if s.retiringLocked() {
		save = time.After(max(s.cfg.StateEvery-time.Since(s.stateAt), 0))
	}
	s.mu.Unlock()
	select {
	case <-ctx.Done():
		return false
	case <-ch:
	case <-save:
		s.SaveState()
	}
	return true
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

// size counts the sealed segments, the batch being sealed and the open
// batch (uncompressed). mu held.
func (s *Spool) size() int64 {
	n := s.sealedBytes + s.builder.Size()
	if s.sealing != nil {
		n += s.sealing.size
	}
	return n
}

// Append assigns the next sequence numbers to recs (setting Seq, and Time
// when zero), writes them with cursor (nil: keep the previous cursor) as one
// journal entry, and hands the batch to the sealer whenever the flush
// policy says so (waiting for the seal before it, if that is still in
// flight). It blocks while the spool is over its limit (backpressure). It
// returns the journal position to pass to WaitDurable; under fsync
// "always" the records are already durable.
func (s *Spool) Append(ctx context.Context, recs []batch.Record, cursor []byte) (uint64, error) {
	for i := range recs {
		if err := recs[i].CheckSize(s.cfg.MaxRecordSize); err != nil {
			return 0, err
		}
		if err := batch.CheckTime(recs[i].Time); err != nil {
			return 0, err
		}
	}
	if err := s.waitRoom(ctx); err != nil {
		return 0, err
	}
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return 0, err
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
		cursor = append([]byte(nil), cursor...)
	} else {
		cursor = s.cursor
	}
	s.jbuf = appendEntry(s.jbuf[:0], recs, cursor)
	if err := s.writeJournal(s.jbuf); err != nil {
		return 0, err // ErrNoSpace: nothing accepted, the cursor unchanged
	}
	s.cursor = cursor
	if s.cfg.Fsync == FsyncAlways {
		if err := s.syncLocked(); err != nil {
			return 0, err
		}
	}
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
			// which also covers the records after the seal point: they are
			// written to the new journal file, and the sealer makes them
			// durable before state.json, or a crash would skip them.
			if err := s.handOff(why, cursor, recs[i+1:], callerCursor); err != nil {
				return 0, err
			}
		}
	}
	if cap(s.jbuf) > 8<<20 {
		s.jbuf = nil // don't pin one huge entry's buffer
	}
	s.stats.LastSeq = s.lastSeq
	if s.cfg.Fsync == FsyncAlways && s.synced < s.written {
		if err := s.syncLocked(); err != nil { // a leftover a seal rewrote
			return 0, err
		}
	}
	s.notify()
	// The entry's end, or the leftover's new place: a waiter must cover it.
	return s.written, nil
}

// waitRoom blocks while the spool is over its limit.
func (s *Spool) waitRoom(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.usable() == nil && s.size() >= s.cfg.Limit {
		if s.retiringLocked() {
			// Confirmed segments wait for state.json: write it now.
			s.mu.Unlock()
			s.SaveState()
			s.mu.Lock()
			continue
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			return ctx.Err()
		case <-ch:
		}
		s.mu.Lock()
	}
	return nil
}

// WaitDurable blocks until the journal is durable up to pos (as returned by
// Append) under the configured fsync mode. With fsync "off" it returns at
// once. With "batch" one fsync serves every waiter (group commit).
func (s *Spool) WaitDurable(ctx context.Context, pos uint64) error {
	return s.waitDurable(ctx, pos, true)
}

// waitDurable is WaitDurable. With preferSeal, a position that needs the
// journal file of the batch being sealed waits for the seal rather than
// fsync that file: the seal makes those records durable in far fewer bytes.
// The sealer itself must not wait for its own seal.
func (s *Spool) waitDurable(ctx context.Context, pos uint64, preferSeal bool) error {
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
		if s.closed {
			s.mu.Unlock()
			return errClosed
		}
		sealFirst := preferSeal && s.sealing != nil && s.sealing.old != nil && s.sealing.old.synced < s.sealing.old.end
		if !s.syncing && !sealFirst {
			s.syncing = true
			target, todo := s.written, s.pendingSyncsLocked()
			s.mu.Unlock()
			n, err := s.syncJournals(todo)
			s.mu.Lock()
			s.syncing = false
			s.finishSyncsLocked(todo, n, err, target)
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

// SealIfDue hands the open batch to the sealer if the flush policy says so
// at now. It does not wait for the seal, only for one still in flight
// before it.
func (s *Spool) SealIfDue(now time.Time) error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if due, why := s.cfg.Policy.Due(s.builder.Size(), s.builder.Records(), s.firstAt, now); due {
		return s.handOff(why, s.cursor, nil, false)
	}
	return nil
}

// Seal seals whatever is open (shutdown, EOF, schedules) and returns once
// every record appended before it is in a sealed segment listed by
// Pending, including a seal already in flight.
func (s *Spool) Seal(reason string) error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if s.builder.Records() > 0 {
		if err := s.handOff(reason, s.cursor, nil, false); err != nil {
			return err
		}
	}
	return s.waitSealLocked()
}

// Pending lists the sealed segments with LastSeq > after, oldest first.
func (s *Spool) Pending(after uint64) []SealedSegment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pendingLocked(after)
}

// pendingLocked is Pending with mu held.
func (s *Spool) pendingLocked(after uint64) []SealedSegment {
	return append([]SealedSegment(nil), s.sealed[s.afterLocked(after):]...)
}

// afterLocked is the index of the first sealed segment with records after
// seq. mu held.
func (s *Spool) afterLocked(seq uint64) int {
	return sort.Search(len(s.sealed), func(i int) bool { return s.sealed[i].LastSeq > seq })
}

// Unconfirmed returns the sealed segments some target has not confirmed
// (Pending lists the confirmed ones state.json does not cover yet too).
func (s *Spool) Unconfirmed() []SealedSegment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pendingLocked(s.confirmedLocked())
}

// ReadSealed returns the bytes of a sealed segment. They may be shared
// with other callers: do not modify them.
func (s *Spool) ReadSealed(name string) ([]byte, error) {
	s.mu.Lock()
	if s.newestData != nil && s.newest.Name == name {
		data := s.newestData
		s.mu.Unlock()
		return data, nil
	}
	s.mu.Unlock()
	return os.ReadFile(s.path("sealed", name))
}

// Confirm records that target holds every segment up to lastSeq. Segments
// every target holds leave the spool once state.json covers them; it is
// rewritten for that at most every StateEvery (and by Close).
func (s *Spool) Confirm(target string, lastSeq uint64) {
	s.mu.Lock()
	if lastSeq > s.confirmed[target] {
		s.confirmed[target] = lastSeq
		s.notify() // Drain counts what is confirmed
	}
	gone := s.retireLocked()
	due := s.retiringLocked() && time.Since(s.stateAt) >= s.cfg.StateEvery
	s.mu.Unlock()
	s.removeRetired(gone)
	if due {
		s.SaveState()
	}
}

// confirmedLocked is the seq through which every target holds the
// stream: the spool may let go of segments up to it. mu held.
func (s *Spool) confirmedLocked() uint64 {
	if len(s.confirmed) == 0 {
		return 0 // no target: nothing may go
	}
	low := uint64(1<<64 - 1)
	for _, c := range s.confirmed {
		low = min(low, c)
	}
	return low
}

// retiringLocked reports whether confirmed segments wait for state.json
// to cover them. mu held.
func (s *Spool) retiringLocked() bool {
	return len(s.sealed) > 0 && s.sealed[0].LastSeq <= s.confirmedLocked() && s.sealed[0].LastSeq > s.stateSealed
}

// retireLocked takes the segments every target confirmed and state.json
// covers out of the spool and returns their files, which the caller
// removes with removeRetired once mu is released: a second's worth of
// unlinks under mu stalled appends and seals by tens of milliseconds.
// mu held.
func (s *Spool) retireLocked() []string {
	low := min(s.confirmedLocked(), s.stateSealed)
	n := 0
	var gone []string
	for n < len(s.sealed) && s.sealed[n].LastSeq <= low {
		gone = append(gone, s.path("sealed", s.sealed[n].Name))
		s.sealedBytes -= s.sealed[n].Size
		if s.sealed[n].Name == s.newest.Name {
			s.newestData = nil
		}
		n++
	}
	if n > 0 {
		s.sealed = append(s.sealed[:0], s.sealed[n:]...)
		s.notify()
	}
	return gone
}

// removeRetired deletes the files of retired segments in the background,
// one every retirePace, and Close waits for them. A state.json save retires
// a second's worth of segments at once, and deleting them back to back on
// the sender's goroutine stalled sending by 30-80 ms a second (measured at
// 140 segments/s: 0.2 ms per unlink, more where the file system discards
// freed blocks at each journal commit, which then also delays every fsync
// behind it). Spread out, each commit frees a few files.
//
// One that cannot be deleted is only logged, as before: every target has
// it, so the next start, which finds it in sealed/, sends it again (an
// identical copy each target accepts) and retires it then.
func (s *Spool) removeRetired(paths []string) {
	if len(paths) <= retireInline {
		s.remove(paths) // beside a background batch, if any: never wait for it
		return
	}
	s.retiring.Go(func() {
		s.retireMu.Lock()
		defer s.retireMu.Unlock()
		for i := range paths {
			if i > 0 {
				time.Sleep(retirePace)
			}
			s.remove(paths[i : i+1])
		}
	})
}

// remove deletes retired segment files, logging the ones it cannot.
func (s *Spool) remove(paths []string) {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot remove confirmed segment from spool", "segment", filepath.Base(p), "err", err)
		}
	}
}

// retirePace spaces the deletions of retired segments (removeRetired);
// up to retireInline of them are deleted at once by the caller (one
// Confirm after state.json covers its segment).
const retirePace = time.Millisecond

const retireInline = 4

// SaveState writes state.json for the newest sealed segment, then lets
// the confirmed segments it covers go. An fsync failure fails the spool
// (Err). Confirm and the loops call it at most every StateEvery; a caller
// that wants the confirmed segments gone now (a drained shutdown) calls it.
func (s *Spool) SaveState() {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	if s.fatal != nil || s.state.SealedSeq <= s.stateSealed {
		s.mu.Unlock()
		return
	}
	st := s.state // of a durable segment: commitLocked sets it
	s.mu.Unlock()
	err := s.writeState(st)
	s.mu.Lock()
	s.stateAt = time.Now()
	if err != nil {
		s.fail(fmt.Errorf("write state.json: %w", err))
		s.mu.Unlock()
		return
	}
	s.stateSealed = max(s.stateSealed, st.SealedSeq)
	gone := s.retireLocked()
	s.mu.Unlock()
	s.removeRetired(gone)
}

// LastSeq is the seq of the last record appended (Stats().LastSeq, without
// the rest of the snapshot).
func (s *Spool) LastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.LastSeq
}

// Stats returns a snapshot of the counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.SealedPending = len(s.sealed) - s.afterLocked(s.confirmedLocked()) // not every target has them
	st.SpoolBytes = s.size()
	return st
}

// Close waits for the seal in flight, fsyncs the journal (unless fsync is
// off or the spool failed) and releases it and the lock. It does not seal
// the open batch.
func (s *Spool) Close() error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closing = true // a seal waiting for disk space gives up
	s.waitSealLocked()
	if s.fatal == nil && s.state.SealedSeq > s.stateSealed {
		// state.json catches up (recovery then has nothing to adopt) and
		// confirmed segments leave the spool.
		s.mu.Unlock()
		s.SaveState()
		s.mu.Lock()
	}
	var err error
	if s.cfg.Fsync != FsyncOff && s.fatal == nil {
		err = s.syncLocked()
	}
	for _, j := range s.journals {
		j.f.Close()
	}
	s.journals = nil
	s.mu.Unlock()
	s.retiring.Wait()
	s.mu.Lock()
	s.closed = true
	s.notify()
	if s.lockFile != nil {
		s.lockFile.Close()
		s.lockFile = nil
	}
	return err
}
