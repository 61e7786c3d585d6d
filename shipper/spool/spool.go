package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
	Dir    string
	Stream string
	// Generation pins the spool to one generation of the stream. Zero
	// means the generation state.json names, or 1 for a new spool; any
	// other value must match state.json's. Continue moves a fresh spool to
	// another generation.
	Generation    uint32
	Fsync         FsyncMode
	Policy        batch.FlushPolicy
	MaxRecordSize int   // framed bytes, default 16 MiB
	Limit         int64 // spool size that triggers backpressure, default 1 GiB
	Level         batch.Level
	// Format is the segment format sealed (batch.Builder.SetFormat): 0
	// for batch.FormatVersion, or 1 for readers older than format 2.
	Format int
	// Encrypter, if set, encrypts every segment the spool seals
	// ([encryption] recipients), and Open refuses a spool still holding a
	// segment sealed in plaintext: no target may be sent one.
	Encrypter batch.Encrypter
	// Signer, if set, signs every segment the spool seals
	// ([encryption] signing_key_file), and Open refuses a spool still
	// holding a segment sealed unsigned.
	Signer batch.Signer
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
	// Committer, if set (fsync "batch"), commits the journal together
	// with the other spools given it (commit.go) instead of on the spool's
	// own; its Interval replaces CommitInterval.
	Committer *Committer
	// StateEvery bounds how often Confirm rewrites state.json (two journal
	// commits) to let confirmed segments go: a seal costs one. Default 1s.
	StateEvery time.Duration
	// Parts are the stream's parts in its Bundler's committed bundle
	// files (part.go), adopted at Open as sealed segments.
	Parts []PartRef
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
	// Unplaced: the spool was Held and has not been placed by Continue;
	// its records wait in DIR/provisional (provisional.go).
	Unplaced bool `json:"unplaced,omitempty"`
}

// SealedSegment is a segment waiting in the spool for its targets.
type SealedSegment struct {
	Name     string
	FirstSeq uint64
	LastSeq  uint64
	Size     int64
	// Bundle, for a part (part.go), is the bundle file holding it, at
	// Offset; "" for a file in sealed/.
	Bundle string
	Offset int64
}

// Spool is the shipper's durable local buffer: the journal of the open
// batch, the sealed segments not yet confirmed by every target (and the
// confirmed ones state.json does not cover yet), and state.json. One
// process owns a spool at a time (flock on LOCK). The package
// documentation defines the files.
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
	// commitFS is the Committer's descriptor on the spool's file system;
	// commitQueued: the spool is in the Committer's queue.
	commitFS     *os.File
	commitQueued bool

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
	confirmed   map[string]uint64
	// stateSealed is the SealedSeq of state.json on disk: seals do not
	// rewrite it, so confirmed segments after it stay in sealed/ (the
	// newest of them is what recovery continues from) until SaveState
	// covers them. stateAt is when it was last written.
	stateSealed uint64
	stateAt     time.Time
	stateMu     sync.Mutex     // one SaveState at a time
	retiring    sync.WaitGroup // removeRetired's deletions, Confirm's SaveState in the background
	stateSaving bool           // Confirm's SaveState runs in the background
	sealers     sync.WaitGroup // sealer goroutines, until their journal removals end
	retireMu    sync.Mutex     // one background batch at a time
	// provisional: Held, not placed yet (state.Unplaced): appends go to
	// DIR/provisional, numbered from 1, and nothing is sealed. provBytes
	// is their framed size, counted against the limit.
	provisional bool
	provBytes   int64
	// replayable: the source can give again every record after the
	// cursor of the newest sealed segment, so appends skip the journal
	// (SetReplayable). Under in and mu.
	replayable bool
	fatal      error
	closed     bool
	closing    bool // Close has begun: a seal waiting for disk space gives up
	stats      Stats
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
	// Held is how many records wait, unnumbered, for Continue (Hold).
	Held uint64
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
	if cfg.Format != 0 {
		if err := b1.SetFormat(cfg.Format); err != nil {
			lf.Close()
			return nil, err
		}
		b2.SetFormat(cfg.Format)
	}
	b1.SetEncrypter(cfg.Encrypter)
	b2.SetEncrypter(cfg.Encrypter)
	b1.SetSigner(cfg.Signer)
	b2.SetSigner(cfg.Signer)
	s := &Spool{cfg: cfg, log: log, lockFile: lf, builder: b1, spare: b2, changed: make(chan struct{}),
		confirmed: map[string]uint64{}}
	if cfg.Committer != nil && cfg.Fsync == FsyncBatch {
		// Before the spool writes: the Committer's descriptor must see
		// every write-back error of what it commits.
		if s.commitFS, err = cfg.Committer.register(cfg.Dir); err != nil {
			lf.Close()
			return nil, fmt.Errorf("spool %s: %w", cfg.Dir, err)
		}
	}
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
	if cfg.Encrypter != nil || cfg.Signer != nil {
		if err := s.refuseUnprotected(); err != nil {
			s.Close()
			return nil, fmt.Errorf("spool %s: %w", cfg.Dir, err)
		}
	}
	return s, nil
}

// refuseUnprotected fails if a sealed segment waiting in the spool is not
// encrypted while encryption is on, or not signed while signing is:
// sealed before [encryption] recipients or signing_key_file was
// configured, it would go to the targets in the clear, or unsigned (and a
// receiver with trusted_keys would stop at it).
func (s *Spool) refuseUnprotected() error {
	for _, seg := range s.sealed {
		sr, err := s.readSealedMeta(seg)
		if err != nil {
			return fmt.Errorf("sealed/%s: %w", seg.Name, err)
		}
		if s.cfg.Encrypter != nil && !sr.Encrypted() {
			return fmt.Errorf("sealed/%s was sealed in plaintext before [encryption] was configured, and the targets have not all "+
				"confirmed it: encryption is on, so it is not sent. Ship it first with the previous configuration (without "+
				"[encryption] recipients) until ferry status shows no segment waiting, then turn encryption on", seg.Name)
		}
		if s.cfg.Signer != nil && !sr.Signed() {
			return fmt.Errorf("sealed/%s was sealed unsigned before [encryption] signing_key_file was configured, and the targets have not all "+
				"confirmed it: signing is on, so it is not sent (a receiver with trusted_keys would stop at it). Ship it first with the "+
				"previous configuration (without signing_key_file) until ferry status shows no segment waiting, then turn signing on", seg.Name)
		}
	}
	return nil
}

// Fresh reports whether the spool has never sealed or journaled anything
// numbered (it may hold records, Hold), so the shipper may continue a
// stream found in the store.
func (s *Spool) Fresh() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.provisional || (s.lastSeq == 0 && len(s.sealed) == 0)
}

// Continue makes a fresh spool continue an existing stream in generation
// gen (>= 1) after lastSeq, whose segment ending there has hash lastHash:
// the stream's newest segment of gen in a target, or, for a generation
// without segments yet, its record's fork seq and hash (0 and
// batch.ZeroHash to start the stream). It rewrites state.json, generation
// included, so the spool stays in gen from then on. Call it before
// anything else uses the spool: it changes the generation Config reports.
// A held spool (Hold) may have taken records meanwhile: Continue numbers
// them after lastSeq and seals them by the flush policy.
func (s *Spool) Continue(gen uint32, lastSeq uint64, lastHash string) error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if gen == 0 {
		return fmt.Errorf("continue in generation 0: generations start at 1")
	}
	if s.provisional {
		return s.place(gen, lastSeq, lastHash)
	}
	if s.lastSeq != 0 || len(s.sealed) != 0 {
		return fmt.Errorf("spool is not fresh")
	}
	st := s.state
	st.Generation, st.SealedSeq, st.LastHash = gen, lastSeq, lastHash
	if err := s.writeState(st); err != nil {
		return s.fail(err)
	}
	s.state, s.stateSealed, s.stateAt = st, st.SealedSeq, time.Now()
	s.cfg.Generation = gen
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

// Config returns the spool's configuration with the defaults applied;
// its Generation is the spool's (state.json's).
func (s *Spool) Config() Config { return s.cfg }

func (s *Spool) path(p ...string) string { return filepath.Join(append([]string{s.cfg.Dir}, p...)...) }

func (s *Spool) recover() error {
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
		if st.Generation == 0 {
			return fmt.Errorf("state.json is damaged (generation 0); restore it or start a new spool")
		}
		if s.cfg.Generation != 0 && st.Generation != s.cfg.Generation {
			return fmt.Errorf("spool belongs to generation %d, not %d", st.Generation, s.cfg.Generation)
		}
		s.cfg.Generation = st.Generation
		s.state = st
	case errors.Is(err, os.ErrNotExist):
		s.cfg.Generation = max(s.cfg.Generation, 1)
		s.state = spoolState{Format: 1, Stream: s.cfg.Stream, Generation: s.cfg.Generation, LastHash: batch.ZeroHash}
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
	if s.state.Unplaced {
		return s.recoverProvisional()
	}
	if err := os.Remove(s.path(provisionalName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the provisional journal of a placed spool: %w", err)
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
	// segment; the replayed files go once that segment is durable.
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

// Changed returns a channel closed at the next change of the spool
// (append, seal, confirm, failure).
func (s *Spool) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// SeedCursor sets the source position of a spool that has accepted no
// record since Open or Continue, so its source starts there: ferry promote
// seeds a tail of the promoted replica with the replica's size at the fork.
// It rewrites state.json.
func (s *Spool) SeedCursor(cursor []byte) error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if s.lastSeq != s.state.SealedSeq || len(s.sealed) != 0 {
		return fmt.Errorf("spool %s has accepted records: its source position is theirs", s.cfg.Dir)
	}
	st := s.state
	st.Cursor = append([]byte(nil), cursor...)
	if err := s.writeState(st); err != nil {
		return s.fail(err)
	}
	s.state, s.cursor = st, st.Cursor
	return nil
}

// SetReplayable tells the spool that its source can give again every
// record after the cursor of the newest sealed segment (a file it tails,
// which keeps its bytes where they are): from now on appends are not
// written to the journal but only into the open batch, and a crash loses
// from the spool only records the source reads again on restart, from the
// cursor recovery finds in the newest segment. Records are written once,
// into the segment, instead of twice. A segment then ends only where an
// Append does (the source's cursor is per Append), so it may exceed
// max_bytes by one Append; WaitDurable seals the open batch and waits for
// it. A held spool (Hold) journals its records all the same until
// Continue. Records journaled before the call stay in the journal until
// they are sealed; recovery skips them by seq afterwards.
func (s *Spool) SetReplayable() {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replayable = true
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
	n := s.sealedBytes + s.builder.Size() + s.provBytes
	if s.sealing != nil {
		n += s.sealing.size
	}
	return n
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
	if s.provisional {
		st.Held = s.lastSeq
	}
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
	s.sealers.Wait() // a seal marked done may still be removing journal files
	s.mu.Lock()
	s.closed = true
	s.notify()
	if s.lockFile != nil {
		s.lockFile.Close()
		s.lockFile = nil
	}
	return err
}
