package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Sentinels callers branch on.
var (
	// ErrGap: a segment is missing and did not appear within gap_timeout.
	ErrGap = errors.New("gap in segment sequence")
	// ErrChain: a segment does not continue the applied stream (wrong
	// stream or generation, previous-hash mismatch, bad seq range).
	ErrChain = errors.New("segment does not continue the stream")
	// ErrOverlap: two segments of one generation hold some of the same
	// seqs, which two writers on one stream produce (prefetch.go, plan).
	ErrOverlap = errors.New("overlapping segments")
	// ErrHistory: the stream's generation records do not let the
	// receiver go on: a damaged or missing record, a segment straddling
	// a fork, a fork from another chain than the one applied (history.go).
	ErrHistory = errors.New("cannot follow the stream's history")
	// ErrPlaintext: a segment is not encrypted and the receiver requires
	// encryption (Config.RequireEncryption).
	ErrPlaintext = errors.New("plaintext segment refused")
)

// IsNewerFormat reports whether err says a segment is of a newer format
// than this ferry reads (batch.ErrNewerFormat). Reading the object again
// gives the same answer, so the receiver stops on it at once.
func IsNewerFormat(err error) bool { return errors.Is(err, batch.ErrNewerFormat) }

// Config configures a Receiver.
type Config struct {
	Stream string
	// Generation seeds the checkpoint of a new state (default 1); it must
	// be a generation of the stream's history, and the receiver starts at
	// seq 1 of that history whichever generation owns it. An existing
	// checkpoint keeps its own generation, and from there the receiver
	// follows the generation records (history.go), whatever this says.
	Generation uint32
	StateDir   string
	Store      store.Store
	Applier    Applier
	// GapTimeout: how long a missing seq range may stay missing before it
	// is reported (and, with Once, fails the run). Default 30s.
	GapTimeout time.Duration
	// PollMin/PollMax bound the idle polling interval: it starts at
	// PollMin, doubles while nothing new arrives, resets on new data.
	PollMin, PollMax time.Duration
	// RetryMin/RetryMax bound the backoff of failed applies and reads.
	RetryMin, RetryMax time.Duration
	// Once: apply what is there, then return.
	Once bool
	// MaxSegmentBytes caps a segment's size, as stored and as it claims
	// to decompress to: one over it is refused before anything is
	// allocated for it, and stops the receiver there (it is never
	// retried). Default batch.DefaultMaxSegmentBytes (256 MiB); at most
	// batch.DefaultMaxUncompressed.
	MaxSegmentBytes int64
	// RetryBudget, if positive, is how long one operation (a listing, a
	// read, an apply) may keep failing before Run gives up and returns its
	// last error (wrapping store.ErrGaveUp). Zero retries until ctx ends.
	// ferry receive sets it with --once only: a daemon waits the error out.
	RetryBudget time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// ReceiverID names this receiver in its published watermark
	// ("<stream>/watermarks/<id>/"); empty disables publishing.
	ReceiverID string
	// PublishEvery is the most often the watermark is published while
	// applying (it is always published when a run ends). Default 10s.
	PublishEvery time.Duration
	// Prefetch is how many segments after the one being applied are read
	// and verified ahead of it (the next one is decoded too; see
	// prefetch.go). Default 4 (DefaultPrefetch); negative for none.
	Prefetch int
	// PrefetchBytes caps the bytes the segments in flight hold: read
	// whole and not yet decoded, and decoded and not yet applied. The
	// segment to be applied next is taken even if it alone is larger.
	// A quarter of it caps the copies of segments offered with their
	// bytes (OfferVerified). Default 256 MiB (DefaultPrefetchBytes).
	PrefetchBytes int64
	// CatchUpLog, if set, is how often a pass with a backlog (a receiver
	// catching up after downtime) logs its progress: the seq applied and
	// the segments left. The first line comes after one interval, so a
	// pass that ends sooner logs nothing. 0: never.
	CatchUpLog time.Duration
	// DecodeWorkers is how many goroutines decompress the zstd frames of
	// one segment at once. Default GOMAXPROCS.
	DecodeWorkers int
	// Decrypter decrypts encrypted segments ([encryption] identity_file);
	// nil: an encrypted segment stops the receiver with batch.ErrNoKey.
	Decrypter batch.Decrypter
	// RequireEncryption refuses a plaintext segment with ErrPlaintext.
	RequireEncryption bool
	// Verifier, if set, must accept every segment's signature
	// ([encryption] trusted_keys); one it refuses (batch.ErrSignature)
	// stops the receiver, never retried.
	Verifier batch.Verifier
	// Restore boundary (restore.go): Until is the last seq to apply;
	// UntilTime stops before the first record whose time is after it.
	// Either makes Run apply up to the boundary and return, like Once;
	// a store that ends before the Until seq fails it with ErrNotReached.
	Until     uint64
	UntilTime time.Time
	// OnApplied, if set, is called whenever Applied advances with the seq
	// it reached, so a link can tell the shipper at once (ack "applied").
	// It must not block.
	OnApplied func(lastSeq uint64)
	// CheckpointDelay lets the durable checkpoint trail what is applied by
	// up to this long (and maxGroup segments), so that a steady trickle of
	// segments shares fsyncs and checkpoints instead of paying both for
	// each. Applied reports the segments applied meanwhile; after a crash
	// they are applied again from the store, undone first by the applier
	// (a SyncDeferrer), so they still apply exactly once. The store must
	// keep them until the checkpoint covers them: a link inbox is pruned
	// behind the checkpoint, and retention waits for published watermarks,
	// which are checkpoints. 0 (the default): each pass ends durable, as
	// does every Run.
	CheckpointDelay time.Duration
	// Fence, if set, is asked before each segment is applied and before
	// each checkpoint is saved; an error (wrapping ErrFenced) stops Run
	// with it, and one before a save leaves the applied segments to be
	// undone by the next Open. A fleet member passes its hold on the
	// stream's lease (package fleet, docs/FLEET.md).
	Fence func() error
}

// ErrFenced: Config.Fence refused: this receiver may no longer own the
// stream.
var ErrFenced = errors.New("fenced: no longer owns the stream")

// Stats are counters for summaries and status.
type Stats struct {
	Segments uint64
	Records  uint64
	Bytes    int64 // segment bytes read
	LastSeq  uint64
	LastHash string
	// Divergent counts the segments a listing or an offer showed that
	// are not in the stream's history (an old primary's past a fork):
	// skipped, never applied.
	Divergent uint64
}

// Receiver applies one stream from one store.
type Receiver struct {
	cfg    Config
	log    *slog.Logger
	lock   *os.File
	cpFile *checkpointFile // the checkpoint, saved in place (checkpoint.go)

	mu    sync.Mutex
	cp    Checkpoint
	stats Stats

	// unsaved is set when a segment was applied but its checkpoint was not
	// written: the applier is ahead of the checkpoint, and only Open (which
	// restores it) may continue, or that segment would apply twice.
	unsaved error

	reached bool // the restore boundary is applied (restore.go)

	// held is the checkpoint a group of applied segments reached before
	// the group's last one saves it (applyFetched); nil outside a group.
	// heldSince is when the group began and heldN its size.
	held      *Checkpoint
	heldSince time.Time
	heldN     int
	// applied (under mu) is the last seq applied, held or checkpointed.
	applied uint64

	gapFrom   uint64 // first missing seq of the gap gapSince times
	gapSince  time.Time
	gapLogged time.Time

	// hists reads the stream's history; hist is the last read (histRead:
	// there is one). divergent holds the segments skipped as not in it,
	// each logged once (history.go).
	hists *catalog.Histories
	// segs lists the stream's segments, alone and in bundles (history.go).
	segs      *catalog.SegmentLister
	hist      batch.History
	histRead  bool
	divergent map[string]bool

	offerPass bool // the last pass applied offered segments, without a listing
	// listedAll: the last pass listed the store and found nothing to
	// apply, no gap either (or, fedByLister, applied all it found);
	// offers of what is applied already do not make the next list it
	// again.
	listedAll bool
	// fedByLister: a Multi lists the store for it and offers it every
	// segment and part stored after its own listing, so a listing that
	// applied something is not followed by another at once. On a store
	// slow to list (S3) that second listing often found the next bundle
	// before the Multi did, read its index and part itself, applied it,
	// listed again, and so on: the stream never went back to the
	// Multi's offers.
	fedByLister bool
	listDue     bool // Run's poll came due: the next pass lists even if fed by offers

	// group, if set, makes the applier's deferred writes and the
	// checkpoint durable with syncs shared with other receivers, on the
	// file systems dataFS and cpFS (syncgroup.go).
	group        *SyncGroup
	dataFS, cpFS *groupFS
	// dataSeen and cpSeen are the failed syncs of dataFS and cpFS this
	// receiver had seen at its last sync there (SyncGroup.sync).
	dataSeen, cpSeen uint64

	published   uint64 // seq of the last published watermark
	publishedAt time.Time
	// runFrom is the checkpoint's seq when Run started: what this run
	// applied past it and did not publish yet is published within
	// PublishEvery (wait), what it found applied only when it ends.
	runFrom    uint64
	registered bool
	// publishedKey is the watermark object put last, once every other
	// one under this id is known deleted: the next publish deletes it
	// by name instead of listing (publish.go). "" until then.
	publishedKey string

	wake chan struct{} // Wake: look at the store now (buffered, 1)

	// offered (under mu) are segment names Offer announced and no pass has
	// taken yet; offerLost is set when more came than it keeps.
	offered   []planned
	offerLost bool
	// memHeld (under mu) is the bytes of offered copies not yet released,
	// and memFree buffers released copies left for the next, of
	// memFreeBytes in all (offermem.go).
	memHeld      int64
	memFree      [][]byte
	memFreeBytes int64

	spare spare // buffers one applyPlanned pass leaves the next (prefetch.go)

	// health, under mu: the error being retried (cleared by a success)
	// and since when a gap has been waited on.
	retrying      string
	retryingSince time.Time
	gapOpen       time.Time
	answered      bool // an operation has succeeded since Open
}

// Health is what the receiver is stuck on, if anything.
type Health struct {
	Retrying      string    // the error an operation keeps failing with ("" if none)
	RetryingSince time.Time // since when
	GapSince      time.Time // a gap has been waited on since (zero if none)
	// Waiting: nothing has succeeded since Open and an operation keeps
	// failing (Retrying): the store has not answered yet.
	Waiting bool
}

// Health reports what the receiver is waiting on, for /healthz.
func (r *Receiver) Health() Health {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Health{Retrying: r.retrying, RetryingSince: r.retryingSince, GapSince: r.gapOpen,
		Waiting: !r.answered && r.retrying != ""}
}

// Open locks the state directory, loads (or creates) the checkpoint and
// restores the applier to it.
func Open(cfg Config, log *slog.Logger) (*Receiver, error) {
	if cfg.Generation == 0 {
		cfg.Generation = 1
	}
	if cfg.GapTimeout <= 0 {
		cfg.GapTimeout = 30 * time.Second
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = 200 * time.Millisecond
	}
	if cfg.PollMax < cfg.PollMin {
		cfg.PollMax = max(cfg.PollMin, 5*time.Second)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(cfg.RetryMin, time.Minute)
	}
	cfg.MaxSegmentBytes = segmentLimit(cfg.MaxSegmentBytes)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PublishEvery <= 0 {
		cfg.PublishEvery = 10 * time.Second
	}
	switch {
	case cfg.Prefetch == 0:
		cfg.Prefetch = DefaultPrefetch
	case cfg.Prefetch < 0:
		cfg.Prefetch = 0
	}
	if cfg.PrefetchBytes <= 0 {
		cfg.PrefetchBytes = DefaultPrefetchBytes
	}
	if cfg.DecodeWorkers <= 0 {
		cfg.DecodeWorkers = runtime.GOMAXPROCS(0)
	}
	if err := batch.CheckStream(cfg.Stream); err != nil {
		return nil, err
	}
	if cfg.ReceiverID != "" {
		if err := batch.CheckStream(cfg.ReceiverID); err != nil {
			return nil, fmt.Errorf("receiver id: %w", err)
		}
	}
	if err := fsutil.CheckWritableDir(cfg.StateDir, "state"); err != nil {
		return nil, err
	}
	lock, err := fsutil.Lock(cfg.StateDir, "state")
	if err != nil {
		return nil, err
	}
	r := &Receiver{cfg: cfg, log: log, lock: lock, wake: make(chan struct{}, 1)}
	cp, ok, err := LoadCheckpoint(cfg.StateDir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	if !ok {
		cp = newCheckpoint(cfg.Stream, cfg.Generation)
	}
	if cp.Stream != cfg.Stream {
		lock.Close()
		return nil, fmt.Errorf("state %s belongs to stream %q (generation %d), not %q",
			cfg.StateDir, cp.Stream, cp.Generation, cfg.Stream)
	}
	if st, isStateful := cfg.Applier.(Stateful); isStateful {
		if err := st.Restore(cp.Applier); err != nil {
			lock.Close()
			return nil, err
		}
		if !ok {
			// The new checkpoint records the applier's starting state, so a
			// crash between the first Apply and its checkpoint is undone on
			// restart like any later one, not refused as a foreign replica.
			if cp.Applier, err = st.State(); err != nil {
				cfg.Applier.Close()
				lock.Close()
				return nil, err
			}
		}
	}
	if !ok {
		if err := saveCheckpoint(cfg.StateDir, cp); err != nil {
			cfg.Applier.Close()
			lock.Close()
			return nil, fmt.Errorf("create checkpoint in %s: %w", cfg.StateDir, err)
		}
	}
	if r.cpFile, err = openCheckpointFile(cfg.StateDir); err != nil {
		cfg.Applier.Close()
		lock.Close()
		return nil, err
	}
	if at := r.cpFile.at; at.damaged != nil {
		log.Warn("checkpoint slot damaged: using the other slot, which may be one save older (segments after it are applied again, still exactly once for file: and dir:)",
			"file", r.cpFile.path, "damaged", at.damaged.Error(), "using_slot", at.cur, "counter", at.seq, "seq", cp.LastSeq)
	}
	r.cp, r.applied = cp, cp.LastSeq
	r.stats.LastSeq, r.stats.LastHash = cp.LastSeq, cp.LastHash
	return r, nil
}

// segmentLimit is Config.MaxSegmentBytes with its default and cap.
func segmentLimit(n int64) int64 {
	if n <= 0 {
		n = batch.DefaultMaxSegmentBytes
	}
	return min(n, batch.DefaultMaxUncompressed)
}

// Applied is the last seq applied: the checkpoint's, or, with
// CheckpointDelay, that of a later segment applied and not yet
// checkpointed, which a crash would have applied again from the store.
func (r *Receiver) Applied() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied
}

// setApplied advances Applied and tells OnApplied.
func (r *Receiver) setApplied(seq uint64) {
	r.mu.Lock()
	r.applied = seq
	r.mu.Unlock()
	if r.cfg.OnApplied != nil {
		r.cfg.OnApplied(seq)
	}
}

// position is where applying stands: the held group's checkpoint, still
// to be saved, or the saved one.
func (r *Receiver) position() Checkpoint {
	if r.held != nil {
		return *r.held
	}
	return r.Checkpoint()
}

// Checkpoint returns the current checkpoint.
func (r *Receiver) Checkpoint() Checkpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cp
}

// Stats returns a snapshot of the counters.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Close releases the applier, the checkpoint file and the state lock.
func (r *Receiver) Close() error {
	err := r.cfg.Applier.Close()
	if cerr := r.cpFile.Close(); err == nil {
		err = cerr
	}
	r.lock.Close()
	return err
}

// Run applies segments until ctx ends (nil), or, with Once, until nothing
// new is left. A corrupt or non-continuing segment stops it with an error
// naming the segment, as does anything that keeps it from following the
// stream's history: overlapping segments (ErrOverlap), a segment
// straddling a fork or a fork from another chain (ErrHistory), a
// checkpoint past a fork (batch.ErrDiverged). A gap that outlives
// GapTimeout fails a Once run with ErrGap and is logged (and waited out)
// otherwise.
func (r *Receiver) Run(ctx context.Context) (err error) {
	if r.unsaved != nil {
		return r.unsaved
	}
	defer func() {
		// A group held by CheckpointDelay ends durable with the run.
		if r.held != nil {
			if ferr := r.flushHeld(); err == nil {
				err = ferr
			}
		}
	}()
	// restore: a boundary makes the run a Once run ending at it.
	once := r.cfg.Once || r.bounded()
	if err := r.checkBoundary(); err != nil || r.reached {
		if err == nil {
			err = r.caughtUp()
		}
		return err
	}
	defer r.publish(context.WithoutCancel(ctx))
	r.runFrom = r.Checkpoint().LastSeq
	poll := r.cfg.PollMin
	for {
		n, gap, err := r.pass(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		// Nothing more to apply after a listing (a pass fed by offers
		// has not listed; under a Multi, a listing that applied all it
		// found, the Multi offering what came after), or the boundary
		// reached.
		if r.reached || (!r.offerPass && (n == 0 || (r.fedByLister && gap == nil))) {
			if err := r.caughtUp(); err != nil {
				return err
			}
		}
		if r.reached {
			return nil
		}
		if gap != nil {
			if once && r.cfg.Now().Sub(r.gapSince) >= r.cfg.GapTimeout {
				return gap
			}
		} else if n == 0 && once {
			return r.endOfStore()
		}
		var due <-chan time.Time
		if wait, held := r.heldDue(); held {
			if wait <= 0 {
				if err := r.flushHeld(); err != nil {
					return err
				}
			} else {
				due = time.After(wait)
			}
		}
		if n > 0 {
			r.maybePublish(ctx)
			if !r.offerPass && !r.fedByLister {
				poll = r.cfg.PollMin
				continue // more may be listed at once
			}
			// Fed by offers: the next segment wakes Run; the poll (at
			// its longest) is only a safety net.
			poll = r.cfg.PollMax
		}
		switch r.wait(ctx, poll, due) {
		case waitDone:
			return nil
		case waitWoken:
			poll = r.cfg.PollMin
		case waitPolled:
			r.listDue = true
			poll = min(2*poll, r.cfg.PollMax)
		}
	}
}

// What ended a wait (Receiver.wait).
const (
	waitDone   = iota // ctx ended
	waitWoken         // a wake-up: an offer or a new segment
	waitDue           // a held group to flush
	waitPolled        // the poll: a listing is due
)

// wait waits for the next pass: a wake-up, due or the poll. Meanwhile it
// publishes a watermark that moved but was held back by PublishEvery, at
// the end of that period: otherwise the last segments of a burst would
// stay unpublished until something more was applied, and a shipper
// waiting for ack "applied" through the store would wait for them.
func (r *Receiver) wait(ctx context.Context, poll time.Duration, due <-chan time.Time) int {
	pollT := time.NewTimer(poll)
	defer pollT.Stop()
	for {
		var pubT *time.Timer
		var pub <-chan time.Time
		if seq := r.Checkpoint().LastSeq; r.cfg.ReceiverID != "" && seq != r.published && seq != r.runFrom {
			pubT = time.NewTimer(max(r.cfg.PublishEvery-r.cfg.Now().Sub(r.publishedAt), 0))
			pub = pubT.C
		}
		stop := func() {
			if pubT != nil {
				pubT.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stop()
			return waitDone
		case <-r.wake:
			stop()
			return waitWoken
		case <-due:
			stop()
			return waitDue
		case <-pollT.C:
			stop()
			return waitPolled
		case <-pub:
			r.publish(ctx)
			if r.Checkpoint().LastSeq != r.published {
				// Failed (logged): the next try waits a whole period.
				r.publishedAt = r.cfg.Now()
			}
		}
	}
}

// pass applies what continues the stream from the checkpoint in its
// history: the offered segments when they do, or else what one listing of
// the store after the checkpoint shows. It returns how many segments it
// applied and, if it stopped at a missing range, a gap error. Anything
// that cannot be applied as the store holds it (an overlap, a straddling
// segment, a diverged checkpoint) is an error that stops the receiver.
func (r *Receiver) pass(ctx context.Context) (int, error, error) {
	cp := r.position()
	listDue := r.listDue
	r.listDue = false
	offered, lost := r.takeOffers()
	if lost {
		r.releasePlanned(offered) // the listing reads them from the store
		offered = nil
	}
	fresh := !r.histRead // the history is read in this pass
	c, err := r.cursorAt(ctx, cp, false)
	if err != nil {
		r.releasePlanned(offered)
		return 0, nil, err
	}
	isNew := func(p planned) bool { return c.isNew(p.name) }
	stale := false
	if !lost && len(offered) > 0 && !slices.ContainsFunc(offered, isNew) {
		// Offers of what is applied already (its own listing found it
		// first): they tell nothing, so they do not make the pass list
		// the store, whether it is fed by offers or listed last.
		r.releasePlanned(offered)
		offered, stale = nil, true
	}
	listedAll := r.listedAll
	r.listedAll = false
	none := len(offered) == 0 && !lost
	if none && (stale || r.fedByLister) && listedAll && !listDue {
		r.listedAll = true
		return 0, nil, nil
	}
	if len(offered) > 0 {
		if !fresh && slices.ContainsFunc(offered, isNew) {
			// Something to apply: the history first (see history.go).
			if c, err = r.cursorAt(ctx, cp, true); err != nil {
				r.releasePlanned(offered)
				return 0, nil, err
			}
			fresh = true
		}
		todo, ok, err := r.takeOffered(c, offered)
		if err != nil {
			return 0, nil, err
		}
		if ok {
			applied, err := r.applyPlanned(ctx, c.gen, todo)
			r.offerPass = err == nil
			return applied, nil, err
		}
	}
	if none && r.offerPass && !listDue {
		// Fed by offers, and none came: a wake that raced the last
		// offer, or a held checkpoint coming due. Only the poll, the
		// safety net, lists the store then.
		return 0, nil, nil
	}
	r.offerPass = false
	listed, newer, err := r.listAfter(ctx, c)
	if err != nil {
		return 0, nil, err
	}
	if !fresh && (newer || slices.ContainsFunc(listed, isNew)) {
		gen := c.gen
		if c, err = r.cursorAt(ctx, cp, true); err != nil {
			return 0, nil, err
		}
		if c.gen != gen { // the checkpoint is at a fork the history had not shown
			if listed, _, err = r.listAfter(ctx, c); err != nil {
				return 0, nil, err
			}
		}
	}
	todo, gap, divergent, err := plan(listed, c)
	if err != nil {
		return 0, nil, err
	}
	r.noteDivergent(c, divergent)
	applied, err := r.applyPlanned(ctx, c.gen, todo)
	if err != nil {
		return applied, nil, err
	}
	if gap != nil {
		return applied, r.noteGap(gap), nil
	}
	r.gapSince = time.Time{}
	r.mu.Lock()
	r.gapOpen = time.Time{}
	r.mu.Unlock()
	r.listedAll = applied == 0 || r.fedByLister
	return applied, nil, nil
}

func (r *Receiver) noteGap(gap *gapAt) error {
	from, to := gap.from, gap.first-1
	before, attr := "segment "+gap.next, slog.String("next_segment", gap.next)
	if gap.next == "" {
		before = fmt.Sprintf("generation %d, forked at seq %d", gap.forkGen, to)
		attr = slog.Any("next_generation", gap.forkGen)
	}
	now := r.cfg.Now()
	if r.gapSince.IsZero() || from != r.gapFrom {
		// A new gap (the old one filled, at least in part) gets its own
		// timeout rather than the age of the one before.
		r.gapFrom, r.gapSince = from, now
		r.mu.Lock()
		r.gapOpen = now
		r.mu.Unlock()
	}
	err := fmt.Errorf("stream %q: seq %d..%d missing before %s (waited %s): %w",
		r.cfg.Stream, from, to, before, now.Sub(r.gapSince).Round(time.Millisecond), ErrGap)
	if now.Sub(r.gapSince) >= r.cfg.GapTimeout && now.Sub(r.gapLogged) >= r.cfg.GapTimeout {
		r.gapLogged = now
		r.log.Error("gap in stream: segments missing from the store", "stream", r.cfg.Stream,
			"missing_from", from, "missing_to", to, attr)
	}
	return err
}

// maxGroup bounds how many ready segments share one checkpoint.
const maxGroup = 64

// applyFetched checks that a fetched segment continues the stream,
// applies it and checkpoints it. With a SyncDeferrer applier and more
// (non-nil when another segment of the pass follows), it applies without
// fsync and, if more says the next segment is ready by then, holds the
// checkpoint back: the group's last segment makes them all durable and
// saves it.
func (r *Receiver) applyFetched(ctx context.Context, f *fetched, more func() bool) (err error) {
	seg, name := f.seg, f.name
	cp := r.position()
	if r.held != nil {
		defer func() {
			switch {
			case err == nil || r.held == nil:
			case errors.Is(err, ErrFatal):
				// An fsync may have failed: nothing written since the
				// last good one can be trusted, so no second try.
				r.held = nil
				if r.unsaved == nil {
					r.unsaved = fmt.Errorf("segments through %s were applied but not checkpointed (close and reopen the receiver to undo them): %w", cp.Segment, err)
				}
				err = r.unsaved
			default:
				// This segment failed: the group before it is good.
				if ferr := r.flushHeld(); ferr != nil {
					err = ferr
				}
			}
		}()
	}

	// restore: the chain continues from before a partly applied segment.
	chain := cp
	chain.LastSeq = chainSeq(cp)
	if err := r.checkContinues(name, &seg.Meta, chain, f.gen); err != nil {
		return fmt.Errorf("segment %s: %w", f.key, err)
	}
	if err := checkResume(name, seg.Hash, cp); err != nil {
		return fmt.Errorf("segment %s: %w", f.key, err)
	}
	recs, reached := r.cut(cp, &seg.Meta, f.recs)
	if reached && recs.Len() == 0 {
		r.reached = true // the boundary is right before this segment's records
		return nil
	}
	ds, canHold := r.cfg.Applier.(SyncDeferrer)
	bounded := reached || r.cfg.Until != 0 || !r.cfg.UntilTime.IsZero()
	hold := (more != nil || r.cfg.CheckpointDelay > 0) && canHold && !bounded
	// In a sync group the apply never fsyncs itself: the group's sync
	// does, before the checkpoint is written (commit).
	deferred := hold || (r.group != nil && !bounded)
	if canHold {
		ds.DeferSync(deferred)
	}
	if err := r.fence(); err != nil {
		return fmt.Errorf("segment %s: %w", f.key, err)
	}
	err = r.retry(ctx, "apply "+name, func() error {
		return r.cfg.Applier.Apply(ctx, subMeta(&seg.Meta, recs), recs)
	})
	if err != nil {
		return err
	}
	next := cp
	next.Generation = seg.Meta.Generation // a new one at a fork
	next.LastSeq, next.LastHash, next.Segment, next.AppliedAt = seg.Meta.LastSeq, seg.Hash, name, r.cfg.Now().UTC()
	next.PartialHash = ""
	if p := f.part; p != nil {
		next.Bundle = &catalog.BundlePos{Writer: p.Writer, Number: p.Number}
	}
	if n := recs.Len(); n > 0 && recs.Seq(n-1) < seg.Meta.LastSeq {
		last := recs.Seq(n - 1)
		// restore: stopped inside the segment; the chain stays before it.
		next.LastSeq, next.LastHash, next.PartialHash = last, cp.LastHash, seg.Hash
	}
	r.mu.Lock()
	r.stats.Segments++
	r.stats.Records += uint64(recs.Len())
	r.stats.Bytes += f.size
	r.mu.Unlock()
	if hold && r.keepHolding(more) {
		if r.held == nil {
			r.heldSince = r.cfg.Now()
		}
		r.held = &next
		r.heldN++
		r.setApplied(next.LastSeq)
		r.log.Debug("applied segment", "segment", name, "records", seg.Meta.Records, "seq", seg.Meta.LastSeq, "checkpoint", "held")
		return nil
	}
	// A segment applied without fsync, with nothing ready after it, makes
	// itself and the group before it durable now.
	if err := r.commit(next, deferred); err != nil {
		return err
	}
	r.reached = reached
	r.log.Debug("applied segment", "segment", name, "records", seg.Meta.Records, "seq", seg.Meta.LastSeq)
	return nil
}

// caughtUp tells a CatchUpChecker applier that everything after the
// checkpoint the store holds is applied.
func (r *Receiver) caughtUp() error {
	c, ok := r.cfg.Applier.(CatchUpChecker)
	if !ok {
		return nil
	}
	return c.CaughtUp()
}

// keepHolding reports whether the segment just applied without fsync may
// leave its checkpoint to a later one: with CheckpointDelay, while the
// group is younger than that and smaller than maxGroup; otherwise while
// more says the next segment is ready.
func (r *Receiver) keepHolding(more func() bool) bool {
	if d := r.cfg.CheckpointDelay; d > 0 {
		return r.heldN+1 < maxGroup && (r.held == nil || r.cfg.Now().Sub(r.heldSince) < d)
	}
	return more()
}

// heldDue is how long until a held group must be made durable (<= 0: now);
// ok is false when nothing is held.
func (r *Receiver) heldDue() (time.Duration, bool) {
	if r.held == nil {
		return 0, false
	}
	return r.cfg.CheckpointDelay - r.cfg.Now().Sub(r.heldSince), true
}

// flushHeld makes a held group durable and saves its checkpoint, when the
// segment after it fails, the pass ends, or (CheckpointDelay) the group is
// due or Run ends.
func (r *Receiver) flushHeld() error {
	return r.commit(*r.held, true)
}

// commit saves next as the checkpoint: after making the applier's writes
// durable (sync: it applied without fsync) and taking its state. If that
// fails, the applier is ahead of the checkpoint and only Open may go on.
func (r *Receiver) commit(next Checkpoint, sync bool) error {
	r.held, r.heldN, r.heldSince = nil, 0, time.Time{}
	var err error
	if sync {
		err = r.syncApplied()
	}
	if st, ok := r.cfg.Applier.(Stateful); ok && err == nil {
		next.Applier, err = st.State()
	}
	if err == nil {
		err = r.fence()
	}
	if err == nil {
		err = r.saveCheckpoint(next)
	}
	if err != nil {
		r.unsaved = fmt.Errorf("segments through %s were applied but not checkpointed (close and reopen the receiver to undo them): %w", next.Segment, err)
		return r.unsaved
	}
	r.mu.Lock()
	r.cp = next
	r.stats.LastSeq, r.stats.LastHash = next.LastSeq, next.LastHash
	r.mu.Unlock()
	r.setApplied(next.LastSeq)
	return nil
}

// fence asks Config.Fence, if set.
func (r *Receiver) fence() error {
	if r.cfg.Fence == nil {
		return nil
	}
	if err := r.cfg.Fence(); err != nil {
		return fmt.Errorf("stream %q: %w: %w", r.cfg.Stream, err, ErrFenced)
	}
	return nil
}

// checkContinues checks that segment name, planned in generation gen (the
// checkpoint's, or the one after a fork), continues the chain from cp.
func (r *Receiver) checkContinues(name string, m *batch.Meta, cp Checkpoint, gen uint32) error {
	switch {
	case m.Stream != r.cfg.Stream:
		return fmt.Errorf("belongs to stream %q, not %q: %w", m.Stream, r.cfg.Stream, ErrChain)
	case m.Generation != gen:
		return fmt.Errorf("generation %d, expected %d: %w", m.Generation, gen, ErrChain)
	case m.Name() != name:
		return fmt.Errorf("metadata says %s (seq %d..%d), name disagrees: %w", m.Name(), m.FirstSeq, m.LastSeq, ErrChain)
	case m.FirstSeq != cp.LastSeq+1:
		return fmt.Errorf("starts at seq %d, expected %d: %w", m.FirstSeq, cp.LastSeq+1, ErrChain)
	case m.PrevSHA256 != cp.LastHash && cp.LastSeq == 0:
		return fmt.Errorf("first segment of the stream, but its previous-segment hash is %.16s, not zero: %w", m.PrevSHA256, ErrChain)
	case m.PrevSHA256 != cp.LastHash:
		return fmt.Errorf("previous-segment hash %.16s does not match the last applied segment %s (%.16s): %w",
			m.PrevSHA256, cp.Segment, cp.LastHash, ErrChain)
	}
	return nil
}

// retry runs fn under store.Retry with the receiver's backoff. Besides
// the store errors retrying cannot fix (permanent, missing, conflicting),
// a corrupt segment, one of a newer format and a fatal applier error end
// it at once.
func (r *Receiver) retry(ctx context.Context, op string, fn func() error) error {
	p := store.RetryPolicy{Min: r.cfg.RetryMin, Max: r.cfg.RetryMax, Jitter: 0.2, GiveUpAfter: r.cfg.RetryBudget, Stop: func(err error) bool {
		return errors.Is(err, ErrFatal) || batch.IsUnreadable(err) || IsNewerFormat(err) || errors.Is(err, ErrHistory) || errors.Is(err, ErrPlaintext)
	}, OnRetry: func(err error) {
		r.mu.Lock()
		if r.retrying == "" {
			r.retryingSince = r.cfg.Now()
		}
		r.retrying = op + ": " + err.Error()
		r.mu.Unlock()
	}}
	err := store.Retry(ctx, p, r.log, op, func(context.Context) error { return fn() })
	if err == nil {
		r.mu.Lock()
		r.retrying, r.answered = "", true
		r.mu.Unlock()
	}
	return err
}
