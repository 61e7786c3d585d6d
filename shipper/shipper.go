// Package shipper is the primary side: sources feed records into a durable
// Spool, the flush policy seals them into segments, and one sender per
// target puts each sealed segment into that target's store. A segment
// leaves the spool only when every target has confirmed it.
package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
)

// Target is one destination of the stream.
type Target struct {
	Name  string // unique per shipper, used in logs and status
	Store store.Store
	// Async leaves the target out of ack modes: appenders never wait for
	// it (e.g. an archive bucket beside the DR link). It still gets every
	// segment, and a segment leaves the spool only once it has it.
	Async bool
	// StartNow lets a target that holds nothing of the stream, when no
	// other target can backfill it, begin at the seq the spool continues
	// from, recording a start marker in it (backfill.go). Otherwise such
	// a target is refused.
	StartNow bool
}

// Config configures a Shipper.
type Config struct {
	Spool   spool.Config
	Targets []Target
	// Retry governs retries of transient store errors. The sender retries
	// for as long as the spool holds the data.
	Retry store.RetryPolicy
	// Ack is when Append and AppendBatch count records as accepted.
	// Default AckLocal.
	Ack AckMode
	// Applied reads store targets' applied watermarks for AckApplied
	// (targets that are Watermarkers report their own). Default: from the
	// receivers' watermark objects in the target (package catalog).
	Applied AppliedReader
	// Schedules are the flush_at and sending-window rules.
	Schedules Schedules
	// Clock drives the schedules. Default: the real clock.
	Clock Clock
	// OnSent, if set, is called after each segment a target confirmed,
	// with its size and how long the put took, retries included (metrics).
	OnSent func(target string, bytes int, took time.Duration)
	// Lease configures the writer lease taken in every target that can
	// hold one (lease.go).
	Lease LeaseConfig
	// SealTick, if set, is when something outside the spool next seals
	// the open batch, whatever its age: a Bundler's next tick
	// (bundle.Bundler.NextTick), zero when unknown. SealDeadline tells it
	// to a source that spaces its reads.
	SealTick func() time.Time
}

// TargetStatus is what the shipper knows about one target.
type TargetStatus struct {
	Name      string
	Store     string
	Async     bool
	SentSeq   uint64 // highest seq the target confirmed it stored durably (received)
	Segments  uint64 // segments confirmed by this process
	BytesSent int64
	LastError string
	Failures  uint64 // failed put attempts, each retried
	LastSent  time.Time
	// ReceivedSeq is the receiving side's own report of its newest durable
	// seq (direct links); AppliedSeq the newest seq its receiver applied,
	// known from the link or, under ack "applied", from the receivers'
	// watermark objects. 0 when unknown.
	ReceivedSeq  uint64
	AppliedSeq   uint64
	AppliedKnown bool
	// OldestUnapplied is when the oldest record this process sent that the
	// target has not applied was written (zero if none or unknown).
	OldestUnapplied time.Time
}

// Shipper owns the spool and the senders. Sources call Append or
// AppendBatch; Run drives sealing and sending; Drain ships what is left.
type Shipper struct {
	cfg   Config
	log   *slog.Logger
	spool *spool.Spool
	retry store.RetryPolicy // cfg.Retry, stopping on a halt (isHalt)

	// Set by prepare, in New or (deferred) in Run before ready is
	// closed; read-only afterwards. history is under mu: the zero
	// History while no target holds one (or it is not loaded yet).
	history  batch.History
	hist     []*histTarget // the targets that hold it (history.go)
	leases   []*lease      // writer leases held (lease.go)
	deferred bool          // New could not reach the targets: Run prepares (start.go)
	ready    chan struct{} // closed once prepared: senders wait for it
	// starts says, by target name, what a target needs before it gets
	// the spool's segments (backfill.go): set before ready is closed,
	// then each entry is its sender's. base and baseHash are where the
	// spool continues the stream (spool.Base) when it was set.
	starts   map[string]*targetStart
	base     uint64
	baseHash string

	mu        sync.Mutex
	targets   map[string]*TargetStatus
	startErr  string        // the start-up's last store failure (Unreachable), under mu
	runErr    error         // Run's fatal error, under mu
	runFail   chan struct{} // closed when runErr is set, so Drain stops waiting
	halted    error         // why nothing may be sent any more (fence.go), under mu
	runCancel context.CancelFunc
	runDone   chan struct{} // closed when Run returns

	clock    Clock
	sched    schedState     // the schedules in force (schedule.go)
	ackCh    chan struct{}  // closed and replaced when a watermark moves
	waitCh   chan struct{}  // closed and replaced when an appender starts waiting
	waiters  int            // appenders waiting for acks
	waitSeqs map[uint64]int // how many appenders wait for each seq (ack.go)
	segTimes []segTime      // sent segments not yet applied everywhere
	// partsPut is, by target, the seq through which the Bundler put the
	// stream's parts (bundled.go); partCh is closed when it moves.
	partsPut map[string]uint64
	partCh   chan struct{}
}

// New opens the spool and readies it to ship (start.go): it loads the
// stream's history from the targets and picks the generation to write
// (history.go), refusing one that is fenced; takes the writer lease in
// every target that can hold one (lease.go); and on a fresh spool,
// continues the stream where it stands in the targets. Nothing is sent
// before Run.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Shipper, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("shipper needs at least one target")
	}
	switch cfg.Ack {
	case "":
		cfg.Ack = AckLocal
	case AckLocal, AckReceived, AckApplied:
	default:
		return nil, fmt.Errorf("ack mode %q: want local, received or applied", cfg.Ack)
	}
	if cfg.Applied == nil {
		cfg.Applied = readApplied
	}
	names := make([]string, 0, len(cfg.Targets))
	status := map[string]*TargetStatus{}
	for _, t := range cfg.Targets {
		if _, dup := status[t.Name]; dup {
			return nil, fmt.Errorf("target %q configured twice", t.Name)
		}
		names = append(names, t.Name)
		status[t.Name] = &TargetStatus{Name: t.Name, Store: t.Store.String(), Async: t.Async}
	}
	s := &Shipper{cfg: cfg, log: log, targets: status, runFail: make(chan struct{}), ackCh: make(chan struct{}), waitCh: make(chan struct{}),
		clock: cfg.Clock, waitSeqs: map[uint64]int{}, ready: make(chan struct{}), partCh: make(chan struct{})}
	s.retry = cfg.Retry
	// A segment read back from a store (the newest at start, a backfill)
	// that is corrupt or over the read limit reads the same way again.
	s.retry.Stop = func(err error) bool {
		return isHalt(err) || batch.IsUnreadable(err) || (cfg.Retry.Stop != nil && cfg.Retry.Stop(err))
	}
	if s.acksWait() && s.cfg.Spool.JournalRotate == 0 {
		// Nothing commits the journal (Run): one file for many seals.
		s.cfg.Spool.JournalRotate = journalRotateAcks
	}
	if s.acksWait() {
		s.cfg.Spool.Committer = nil // nor a shared commit
	}
	sp, err := spool.Open(s.cfg.Spool, names, log)
	if err != nil {
		return nil, err
	}
	s.spool = sp
	if s.clock == nil {
		s.clock = realClock{}
	}
	if err := s.start(ctx); err != nil {
		s.releaseLeases()
		sp.Close()
		return nil, err
	}
	// The spool keeps a segment until every target confirmed it, so every
	// target has what precedes the oldest segment still here.
	base := sp.Stats().LastSeq
	if p := sp.Pending(0); len(p) > 0 {
		base = p[0].FirstSeq - 1
	}
	for _, st := range status {
		if ts := s.starts[st.Name]; ts == nil || ts.plan == nil {
			st.SentSeq = base
		}
	}
	return s, nil
}

// History returns the stream's history as the shipper loaded it from the
// targets that hold one; ok is false when none does (tcp:// links only;
// the generation is then the spool's), or while New could not reach them
// and Run has not yet. Link clients built after New take the generation
// from it, or from Generation.
func (s *Shipper) History() (h batch.History, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.history, hasHistory(s.history)
}

// Generation is the generation the shipper writes: its spool's.
func (s *Shipper) Generation() uint32 { return s.spool.Config().Generation }

// Spool exposes the spool (status, tests).
func (s *Shipper) Spool() *spool.Spool { return s.spool }

// Append accepts one record and returns its sequence number once it is
// accepted under the ack mode: durable in the spool under the fsync mode
// ("local"), then also stored by every target taking part in acks
// ("received") or applied behind them ("applied"). Run must be running for
// the last two. Concurrent Appends share fsyncs, segments and round trips.
func (s *Shipper) Append(ctx context.Context, rec batch.Record) (uint64, error) {
	recs := []batch.Record{rec}
	if err := s.AppendDurable(ctx, recs, nil); err != nil {
		return 0, err
	}
	return recs[0].Seq, nil
}

// AppendDurable is AppendBatch that also returns only once the records
// are accepted the way Append accepts them: durable in the spool under the
// fsync mode, or acknowledged under "received"/"applied". The dir: source
// needs it for its index, which may record a state only once the records
// carrying it cannot be lost.
func (s *Shipper) AppendDurable(ctx context.Context, recs []batch.Record, cursor []byte) error {
	if err := s.waitPlaced(ctx); err != nil {
		return err
	}
	pos, err := s.spoolAppend(ctx, recs, cursor)
	if err != nil {
		return err
	}
	if s.acksWait() && len(recs) > 0 {
		// A target confirms only sealed segments, and a sealed segment is
		// durable in the spool: no separate journal fsync needed.
		return s.waitAck(ctx, recs[len(recs)-1].Seq)
	}
	return s.spool.WaitDurable(ctx, pos)
}

// SourceReplayable tells the shipper that its source can give again every
// record after the spool's cursor (a tailed file keeps its bytes where
// they are): the spool then writes records once, into the segment, and
// keeps no journal copy (spool.SetReplayable). Call it before the
// source's first append. Sources nobody can replay (stdin, the Go API)
// never call it.
func (s *Shipper) SourceReplayable() { s.spool.SetReplayable() }

// SealRoom is how many more framed bytes and records the open segment
// takes before max_bytes or max_records seals it (spool.Room): a
// replayable source ends its batches there, since without a journal a
// segment can end only where a batch does.
func (s *Shipper) SealRoom() (bytes int64, records int) { return s.spool.Room() }

// SealDeadline is when what is read now is sealed at the latest: when
// the open segment seals by age, or Config.SealTick's tick if that comes
// first. Zero when neither says: nothing is open and the next record
// starts an age (the tick aside), or max_age is off and there is no
// tick. A tail that spaces its reads (source.Tail's Coalesce) reads once
// more before it.
func (s *Shipper) SealDeadline() time.Time {
	due := s.spool.Deadline()
	if s.cfg.SealTick == nil {
		return due
	}
	tick := s.cfg.SealTick()
	switch {
	case tick.IsZero():
		return due
	case due.IsZero() && s.cfg.Spool.Policy.MaxAge > 0:
		// The next record opens a batch whose age seal may come before
		// the tick: it is read at once, as without a tick.
		return due
	case due.IsZero() || tick.Before(due):
		return tick
	}
	return due
}

// spoolAppend is Spool.Append that waits out a full disk: the caller (a
// source) stops reading, which is the backpressure, and the records are
// appended once there is room. Nothing is accepted or lost meanwhile.
func (s *Shipper) spoolAppend(ctx context.Context, recs []batch.Record, cursor []byte) (uint64, error) {
	wait := 100 * time.Millisecond
	var logged time.Time
	for {
		pos, err := s.spool.Append(ctx, recs, cursor)
		if !errors.Is(err, spool.ErrNoSpace) {
			if !logged.IsZero() && err == nil {
				s.log.Info("spool has room again; input resumes", "spool", s.cfg.Spool.Dir)
			}
			return pos, err
		}
		if time.Since(logged) > 30*time.Second {
			s.log.Warn("spool disk full: input paused until there is room", "spool", s.cfg.Spool.Dir, "err", err)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w (gave up waiting: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// journalRotateAcks is the spool's JournalRotate when appends wait for
// acks. In the link benchmark's ack=received run (64 appenders), a
// journal file per seal gave 12.9k records/s and one file 13.6k, the means
// of 13 alternating pairs of runs on one machine.
const journalRotateAcks = 64 << 20

// acksWait reports whether appends wait for targets' acks: an ack mode
// other than "local" and a target that takes part in acks.
func (s *Shipper) acksWait() bool {
	return s.cfg.Ack != AckLocal && s.hasAckTarget()
}

// hasAckTarget reports whether some target takes part in acks (is not
// Async); with none, ack modes wait for nothing beyond the spool.
func (s *Shipper) hasAckTarget() bool {
	for _, t := range s.cfg.Targets {
		if !t.Async {
			return true
		}
	}
	return false
}

// AppendBatch is the source path: recs and the source cursor reached after
// them become one journal entry. Under ack "local" it does not wait for
// fsync; the group committer (Run) makes it durable. Under "received" and
// "applied" it returns once the targets acknowledged the last record.
// recs are copied; the caller may reuse them once it returns.
func (s *Shipper) AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error {
	if s.acksWait() {
		// An ack is for a seq: a held spool has none to give yet.
		if err := s.waitPlaced(ctx); err != nil {
			return err
		}
	}
	if _, err := s.spoolAppend(ctx, recs, cursor); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	return s.waitAck(ctx, recs[len(recs)-1].Seq)
}

// Run seals by age, commits the journal, sends to every target and renews
// the writer leases until ctx ends (returning nil) or something fatal
// happens: an fsync failure, a permanent store error, a conflict (another
// writer owns the stream), a newer generation (the *batch.FencedError,
// fence.go) or a lost lease (ErrLeaseLost). Close ends it too.
func (s *Shipper) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	s.mu.Lock()
	s.runCancel, s.runDone = cancel, done
	s.mu.Unlock()
	n := 2*len(s.cfg.Targets) + 5
	errc := make(chan error, n)
	if s.acksWait() {
		// Every append waits for the targets' ack, which only sealed
		// (fsynced) segments get: journal commits would protect nothing
		// anyone was promised. A crash loses only unacknowledged records,
		// which their appenders never saw accepted.
		go func() { errc <- s.spool.StateLoop(ctx) }()
	} else {
		go func() { errc <- s.spool.SyncLoop(ctx) }()
	}
	go func() { errc <- s.ageLoop(ctx) }()
	go func() { errc <- s.flushLoop(ctx) }()
	go func() { errc <- s.ackSealer(ctx) }()
	for _, t := range s.cfg.Targets {
		go func() { errc <- s.send(ctx, t) }()
		go func() { errc <- s.watermarkLoop(ctx, t) }()
	}
	go func() { errc <- s.guard(ctx) }()
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil && ctx.Err() == nil {
			first = err
			cancel()
			s.mu.Lock()
			if s.runErr == nil {
				s.runErr = err
				close(s.runFail)
			}
			s.mu.Unlock()
		}
	}
	return first
}

func (s *Shipper) ageLoop(ctx context.Context) error {
	for {
		ch := s.spool.Changed()
		deadline := s.spool.Deadline()
		var timer <-chan time.Time
		var t *time.Timer
		if !deadline.IsZero() {
			if s.cfg.Clock != nil {
				timer = s.clock.After(deadline.Sub(s.clock.Now()))
			} else {
				t = time.NewTimer(time.Until(deadline))
				timer = t.C
			}
		}
		select {
		case <-ctx.Done():
		case <-ch:
		case <-timer:
			if err := s.spool.SealIfDue(s.spool.Config().Now()); err != nil {
				return err
			}
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := s.spool.Err(); err != nil {
			return err
		}
	}
}

// OldestUnsent is when the oldest record still in the spool's sealed
// segments was written (zero when none wait): how far behind the slowest
// target is.
func (s *Shipper) OldestUnsent() time.Time {
	return s.oldestIn(s.spool.Unconfirmed())
}

// OldestPending is when the oldest record after seq in the spool's sealed
// segments was written (zero when none wait): how far behind a target
// that holds the stream through seq is.
func (s *Shipper) OldestPending(seq uint64) time.Time {
	return s.oldestIn(s.spool.Pending(seq))
}

// oldestIn is the time of the first record of p's first segment.
func (s *Shipper) oldestIn(p []spool.SealedSegment) time.Time {
	if len(p) == 0 {
		return time.Time{}
	}
	m, err := s.spool.SealedMeta(p[0])
	if err != nil {
		return time.Time{} // sent and deleted meanwhile
	}
	return m.MinTime
}

// Failed reports Run's fatal error, if Run has failed.
func (s *Shipper) Failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runErr
}

// Targets returns the status of every target, sorted by name.
func (s *Shipper) Targets() []TargetStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TargetStatus, 0, len(s.targets))
	for _, t := range s.targets {
		c := *t
		if at, ok := s.oldestUnappliedLocked(c.AppliedSeq); ok && c.AppliedKnown {
			c.OldestUnapplied = at
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Drain seals the open batch and waits until every sealed segment has been
// confirmed by every target, Run has failed, or ctx ends. Run must be
// running. It returns an error saying how much is left in the spool if it
// could not finish; nothing is lost either way.
func (s *Shipper) Drain(ctx context.Context) error {
	if err := s.spool.Seal("shutdown"); err != nil {
		return err
	}
	held := s.spool.Held()
	for {
		ch := s.spool.Changed()
		if err := s.spool.Err(); err != nil {
			return err
		}
		if held && !s.spool.Held() {
			// Placed meanwhile: its records are in the open batch.
			held = false
			if err := s.spool.Seal("shutdown"); err != nil {
				return err
			}
			continue
		}
		st := s.spool.Stats()
		if st.SealedPending == 0 && !held {
			s.spool.SaveState() // the confirmed segments leave the spool now
			return s.spool.Err()
		}
		select {
		case <-ctx.Done():
			if held {
				why := "no target has said where the stream stands"
				if err := s.Unreachable(); err != nil {
					why = err.Error()
				}
				return fmt.Errorf("shutdown timeout: %d record(s), %d bytes still in spool %s (%s); they will be sent on the next start",
					st.Held, st.SpoolBytes, s.cfg.Spool.Dir, why)
			}
			return fmt.Errorf("shutdown timeout: %d segment(s), %d bytes still in spool %s; they will be sent on the next start",
				st.SealedPending, st.SpoolBytes, s.cfg.Spool.Dir)
		case <-s.runFail:
			s.mu.Lock()
			err := s.runErr
			s.mu.Unlock()
			return fmt.Errorf("%d segment(s), %d bytes left in spool %s: %w",
				st.SealedPending, st.SpoolBytes, s.cfg.Spool.Dir, err)
		case <-ch:
		}
	}
}

// Close ends Run if it is running and waits for it, gives up the writer
// leases (so a successor need not wait for them to expire), and closes
// the spool (fsyncing the journal unless fsync is off).
func (s *Shipper) Close() error {
	s.mu.Lock()
	cancel, done := s.runCancel, s.runDone
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	s.releaseLeases()
	return s.spool.Close()
}

// Source produces records into a shipper until its input ends (io.EOF is
// returned as nil) or ctx ends.
type Source interface {
	Run(ctx context.Context, sink Sink) error
}

// Sink is where a source puts records: one call per batch, with the
// source's cursor after them. recs, their Data and cursor are the
// source's again once AppendBatch returns (source.Tail reuses them): a
// sink copies what it keeps.
type Sink interface {
	AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error
}

var _ Sink = (*Shipper)(nil)

// DurableSink is a Sink that can also wait until the records it accepted
// can no longer be lost. The dir source needs it for its index: a state may
// be recorded there only once the records carrying it are durable.
type DurableSink interface {
	Sink
	AppendDurable(ctx context.Context, recs []batch.Record, cursor []byte) error
}

var _ DurableSink = (*Shipper)(nil)
