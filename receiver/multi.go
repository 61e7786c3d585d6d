package receiver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Many streams in one process: a Multi lists the whole store once per
// poll (store.TreeLister), finds the streams that match, runs one
// Receiver per stream it may apply, and offers each the segments the
// listing shows past its checkpoint that it was not offered yet (a segment
// that fills a gap included, however late it comes). An idle stream thus costs
// nothing but its share of that one listing: its Receiver waits on its
// offers and lists the store itself only when offers do not continue it
// (a gap), once when it starts, and at its safety-net poll (MultiPoll).

// MultiPoll is the poll of each stream's Receiver under a Multi, a safety
// net behind the Multi's offers.
const MultiPoll = time.Hour

// startParallel is how many receivers a Multi opens at once: an Open
// makes a state dir durable (fsyncs), which a thousand streams would
// otherwise wait on one by one.
const startParallel = 16

// Claimer decides which streams this process applies (package fleet's
// Member); a Multi without one applies every stream that matches.
type Claimer interface {
	// Claim is told every matching stream the listing shows, and those
	// running, and returns those this process may apply now.
	Claim(ctx context.Context, streams, running []string) []string
	// Fence is the check for the stream's Config.Fence.
	Fence(stream string) func() error
	// Release is called once a stream's receiver has stopped, what it
	// applied checkpointed, after Claim stopped returning it. A receiver
	// that stopped by itself (an error, a fence) is not released: it is
	// opened again while Claim returns it.
	Release(ctx context.Context, stream string)
}

// MultiConfig configures a Multi.
type MultiConfig struct {
	// Store must be a store.TreeLister.
	Store store.Store
	// Match selects the streams to apply.
	Match func(stream string) bool
	// Open opens the Receiver of one stream, its Config.Fence set to
	// fence (nil outside a fleet). The Multi sets its poll to MultiPoll.
	Open func(stream string, fence func() error) (*Receiver, error)
	// PollMin, PollMax bound the wait between listings: PollMin after a
	// listing that showed something new, doubling to PollMax while none
	// does.
	PollMin, PollMax time.Duration
	// Retry is how long a stream whose receiver failed (or would not
	// open) waits before it is opened again. Default PollMax.
	Retry time.Duration
	// Claim, if set, shares the streams with other processes.
	Claim Claimer
	// OnListed, if set, is called after each listing with the streams
	// matched and those running (for status).
	OnListed func(matched, running []string)
	// OnStart, if set, is called once a stream's receiver is open, before
	// it runs (metrics, status).
	OnStart func(stream string, r *Receiver)
	// OnStop, if set, is called once a stream's receiver has stopped and
	// closed: err is what its Run returned (nil when the Multi stopped
	// it), released that the stream was handed over (it is not opened
	// again while another process holds it).
	OnStop func(stream string, r *Receiver, err error, released bool)
	// SyncGroup makes the streams' applied data and checkpoints durable
	// with shared syncs (syncgroup.go). Default: NewSyncGroup(), which is
	// nil (each stream fsyncs its own files) where syncfs(2) does not
	// report write-back errors.
	SyncGroup *SyncGroup
	// OnGone, if set, is called when a stream whose receiver stopped on an
	// error (OnStop with an error, waiting to be opened again) will not be
	// opened again here: Claim stopped returning it (another process
	// holds it now) or the listing no longer matches it. What was shown
	// of it (stopped, unhealthy) should go, as for a stream handed over.
	OnGone func(stream string)
}

// Multi applies many streams of one store.
type Multi struct {
	cfg MultiConfig
	log *slog.Logger
	tl  store.TreeLister

	mu      sync.Mutex
	running map[string]*streamRun
	failed  map[string]time.Time // stream: not reopened before
	stopped map[string]bool      // streams whose receiver stopped on an error, not opened since
	logged  map[string]string    // stream: the last open error logged
	// bundleTop is, per bundle writer, the highest bundle number read
	// (or shown by the first listing): each bundle is read once
	// (multibundle.go); listed is false until the first listing.
	bundleTop map[string]uint64
	listed    bool
	// parts are, per stream, the parts of the bundles read that its
	// checkpoint has not passed yet, in seq order: the status's stored
	// seq and lag count them as listed segments (used by Run only).
	parts map[string][]listedSeg
	// partTop is, per stream, the newest seq of the parts read.
	partTop map[string]uint64
}

// streamRun is one stream's running Receiver.
type streamRun struct {
	r      *Receiver
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's, once done is closed
	// offered holds the names offered past the checkpoint: a listed
	// segment is offered once, whether it is newer than the others or
	// fills a gap behind them; names the checkpoint passed are dropped.
	offered map[string]bool

	mu      sync.Mutex  // guards the fields below, set by each listing
	stored  uint64      // the newest seq the last listing showed
	pending []listedSeg // the segments past the checkpoint it showed
}

// listedSeg is a listed segment not applied when it was listed.
type listedSeg struct {
	lastSeq uint64
	modTime time.Time
}

// StreamState is what a Multi knows of one running stream.
type StreamState struct {
	Stream   string
	Receiver *Receiver
	// StoredSeq is the newest seq the last listing of the store showed.
	StoredSeq uint64
	// OldestUnapplied is when the store wrote the oldest listed segment
	// the receiver has not applied yet (zero when it has applied every
	// listed one, or the store does not say).
	OldestUnapplied time.Time
}

// Streams returns the running streams' states, sorted by stream.
func (m *Multi) Streams() []StreamState {
	runs := m.snapshot()
	out := make([]StreamState, 0, len(runs))
	for s, sr := range runs {
		applied := sr.r.Applied()
		st := StreamState{Stream: s, Receiver: sr.r}
		sr.mu.Lock()
		st.StoredSeq = sr.stored
		for _, p := range sr.pending {
			if p.lastSeq > applied {
				st.OldestUnapplied = p.modTime
				break
			}
		}
		sr.mu.Unlock()
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b StreamState) int { return strings.Compare(a.Stream, b.Stream) })
	return out
}

// NewMulti checks cfg.
func NewMulti(cfg MultiConfig, log *slog.Logger) (*Multi, error) {
	tl, ok := cfg.Store.(store.TreeLister)
	if !ok {
		return nil, fmt.Errorf("receiving many streams needs a store that lists a whole prefix at once (dir or s3), not %s", cfg.Store)
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = 200 * time.Millisecond
	}
	cfg.PollMax = max(cfg.PollMax, cfg.PollMin)
	if cfg.Retry <= 0 {
		cfg.Retry = cfg.PollMax
	}
	if cfg.SyncGroup == nil {
		cfg.SyncGroup = NewSyncGroup()
	}
	return &Multi{cfg: cfg, log: log, tl: tl, running: map[string]*streamRun{}, failed: map[string]time.Time{},
		stopped: map[string]bool{}, logged: map[string]string{}}, nil
}

// StreamSegments is what one listing shows of a stream: its segment
// objects directly under "<stream>/", in name order.
type StreamSegments struct {
	Stream   string
	Segments []store.Object
}

// ListStreams lists the whole store once and returns every stream in it
// (a first "directory" a stream name may be, "_fleet/" and the like
// excluded) with its segments, sorted by stream.
func ListStreams(ctx context.Context, tl store.TreeLister) ([]StreamSegments, error) {
	streams, _, err := listStore(ctx, tl)
	return streams, err
}

// listStore is ListStreams that also returns the bundles the listing shows
// (catalog.BundleKey names), in name order.
func listStore(ctx context.Context, tl store.TreeLister) ([]StreamSegments, []store.Object, error) {
	by := map[string]*StreamSegments{}
	notStream := map[string]bool{} // first elements checked once, not per object
	var bundles []store.Object
	stream := func(name string) *StreamSegments {
		ss := by[name]
		if ss == nil && !notStream[name] {
			if batch.CheckStream(name) != nil {
				notStream[name] = true
				return nil
			}
			ss = &StreamSegments{Stream: name}
			by[name] = ss
		}
		return ss
	}
	// The walk goes only where what it looks for is: the stream
	// directories ("S/": a stream's segments are directly in it) and the
	// bundles' ("_bundles/" and each writer's "_bundles/W/"). A stream's
	// sub-directories (watermarks/, claims/, generations/, bundled/, ...)
	// hold no segment: a directory store walking them stat'ed four
	// directories per stream per poll instead of one, and read again
	// those that changed (a watermark published) for nothing. That a
	// stream has one still says the stream is there, as an object in it
	// would (a stream whose only objects are bundle markers).
	descend := func(sub string) bool {
		first, rest, _ := strings.Cut(sub, "/")
		rest = strings.TrimSuffix(rest, "/")
		switch {
		case first+"/" == catalog.BundlesDir:
			return !strings.Contains(rest, "/")
		case rest == "":
			return batch.CheckStream(first) == nil
		case !strings.Contains(rest, "/"):
			stream(first)
		}
		return false
	}
	err := tl.ListTree(ctx, "", descend, func(o store.Object) error {
		name, rest, ok := strings.Cut(o.Name, "/")
		if ok && name+"/" == catalog.BundlesDir {
			if _, _, isBundle := catalog.ParseBundleKey(o.Name); isBundle {
				bundles = append(bundles, o)
			}
			return nil
		}
		if !ok {
			return nil
		}
		ss := stream(name)
		if ss == nil {
			return nil
		}
		if _, _, _, isSeg := batch.ParseSegmentName(rest); isSeg {
			ss.Segments = append(ss.Segments, o)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list streams: %w", err)
	}
	out := make([]StreamSegments, 0, len(by))
	for _, ss := range by {
		slices.SortFunc(ss.Segments, func(a, b store.Object) int { return strings.Compare(a.Name, b.Name) })
		out = append(out, *ss)
	}
	slices.SortFunc(out, func(a, b StreamSegments) int { return strings.Compare(a.Stream, b.Stream) })
	slices.SortFunc(bundles, func(a, b store.Object) int { return strings.Compare(a.Name, b.Name) })
	return out, bundles, nil
}

// Run applies the streams until ctx ends; then it stops every receiver
// (each ends durable, as a single receiver's Run does) and releases their
// streams. A stream whose receiver fails is logged and opened again after
// Retry; it never stops the others.
func (m *Multi) Run(ctx context.Context) error {
	if g := m.cfg.SyncGroup; g != nil {
		defer g.Close() // after every receiver stopped
	}
	defer m.stopAll()
	poll := m.cfg.PollMin
	var listFailed time.Time
	for {
		streams, bundles, err := listStore(ctx, m.tl)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if time.Since(listFailed) > time.Minute {
				m.log.Warn("listing the store failed; retrying", "err", err)
				listFailed = time.Now()
			}
		} else if m.step(ctx, streams, bundles) {
			poll = m.cfg.PollMin
		} else {
			poll = min(2*poll, m.cfg.PollMax)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// step reconciles the running receivers with one listing and offers them
// what it shows; it reports whether any stream moved.
func (m *Multi) step(ctx context.Context, listed []StreamSegments, bundles []store.Object) bool {
	var matched []string
	segs := map[string][]store.Object{}
	for _, ss := range listed {
		if m.cfg.Match(ss.Stream) {
			matched = append(matched, ss.Stream)
			segs[ss.Stream] = ss.Segments
		}
	}
	mine := matched
	if m.cfg.Claim != nil {
		mine = m.cfg.Claim.Claim(ctx, matched, m.Running())
	}
	m.reap(ctx)
	keep := make(map[string]bool, len(mine))
	for _, s := range mine {
		keep[s] = true
	}
	for s := range m.snapshot() {
		if !keep[s] {
			m.stop(ctx, s)
		}
	}
	m.forget(keep)
	now := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, startParallel)
	for _, s := range mine {
		m.mu.Lock()
		_, on := m.running[s]
		retryAt := m.failed[s]
		m.mu.Unlock()
		if !on && !now.Before(retryAt) {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				m.start(ctx, s)
			}()
		}
	}
	wg.Wait()
	// Every offer of this listing goes to a stream in name order, parts of
	// new bundles and segments alike: a pass that wakes between two
	// offers then has a prefix that continues the stream, not a gap.
	offers := m.bundleOffers(ctx, bundles)
	moved := false
	for s, sr := range m.snapshot() {
		cp := sr.r.Checkpoint()
		var stored uint64
		var pending []listedSeg
		var past []store.Object // listed past the checkpoint
		fresh := false          // one of them not offered yet
		for _, o := range segs[s] {
			name := path.Base(o.Name)
			if _, _, last, ok := batch.ParseSegmentName(name); ok {
				stored = max(stored, last)
				if last > cp.LastSeq {
					pending = append(pending, listedSeg{lastSeq: last, modTime: o.ModTime})
				}
			}
			if name > cp.Segment {
				past = append(past, o)
				fresh = fresh || !sr.offered[name]
			}
		}
		// A receiver waiting on a gap dropped the offers behind it: when
		// the gap may have filled, it is offered all of them again.
		regap := fresh && !sr.r.Health().GapSince.IsZero()
		mine := offers[s]
		stored = max(stored, m.partTop[s])
		parts := m.parts[s][:0]
		for _, p := range m.parts[s] {
			if p.lastSeq > cp.LastSeq {
				parts = append(parts, p)
				stored = max(stored, p.lastSeq)
			}
		}
		if len(parts) > 0 || m.parts[s] != nil {
			m.parts[s] = parts
		}
		if len(parts) > 0 {
			pending = append(pending, parts...)
			slices.SortStableFunc(pending, func(a, b listedSeg) int { return cmp.Compare(a.lastSeq, b.lastSeq) })
		}
		for _, o := range past {
			name := path.Base(o.Name)
			if regap || !sr.offered[name] {
				size := o.Size
				mine = append(mine, bundleOffer{name: name, offer: func(r *Receiver) { r.Offer(name, size) }})
				sr.offered[name] = true
			}
		}
		slices.SortStableFunc(mine, func(a, b bundleOffer) int { return strings.Compare(a.name, b.name) })
		for _, o := range mine {
			o.offer(sr.r)
			moved = true
		}
		for name := range sr.offered {
			if name <= cp.Segment {
				delete(sr.offered, name)
			}
		}
		sr.mu.Lock()
		sr.stored, sr.pending = stored, pending
		sr.mu.Unlock()
	}
	if m.cfg.OnListed != nil {
		m.cfg.OnListed(matched, m.Running())
	}
	return moved
}

// snapshot copies the running set.
func (m *Multi) snapshot() map[string]*streamRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]*streamRun, len(m.running))
	for s, sr := range m.running {
		out[s] = sr
	}
	return out
}

// Running lists the streams being applied, sorted.
func (m *Multi) Running() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.running))
	for s := range m.running {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Receiver returns the running receiver of stream, nil if none.
func (m *Multi) Receiver(stream string) *Receiver {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sr := m.running[stream]; sr != nil {
		return sr.r
	}
	return nil
}

// start opens and runs stream's receiver.
func (m *Multi) start(ctx context.Context, stream string) {
	var fence func() error
	if m.cfg.Claim != nil {
		fence = m.cfg.Claim.Fence(stream)
	}
	r, err := m.cfg.Open(stream, fence)
	if err != nil {
		m.mu.Lock()
		m.failed[stream] = time.Now().Add(min(m.cfg.Retry, m.cfg.PollMax))
		again := m.logged[stream] == err.Error()
		m.logged[stream] = err.Error()
		m.mu.Unlock()
		if !again {
			// A fleet member's state may still be locked by the stream's
			// previous owner, finishing its segment: retried at each poll.
			m.log.Warn("cannot open the stream's receiver yet; retrying", "stream", stream, "err", err)
		}
		return
	}
	// The Multi's listing feeds it; its own poll is only a safety net.
	r.cfg.PollMin, r.cfg.PollMax = MultiPoll, MultiPoll
	r.fedByLister = true
	r.joinGroup(m.cfg.SyncGroup)
	rctx, cancel := context.WithCancel(ctx)
	sr := &streamRun{r: r, cancel: cancel, done: make(chan struct{}), offered: map[string]bool{}}
	m.mu.Lock()
	m.running[stream] = sr
	delete(m.logged, stream)
	delete(m.stopped, stream)
	m.mu.Unlock()
	m.log.Info("applying stream", "stream", stream, "resume_after_seq", r.Checkpoint().LastSeq)
	if m.cfg.OnStart != nil {
		m.cfg.OnStart(stream, r)
	}
	go func() {
		sr.err = r.Run(rctx)
		close(sr.done)
	}()
}

// never is a retry time no process reaches.
var never = time.Unix(1<<62, 0)

// reap closes the receivers whose Run ended by itself (an error).
func (m *Multi) reap(ctx context.Context) {
	for s, sr := range m.snapshot() {
		select {
		case <-sr.done:
		default:
			continue
		}
		m.finish(ctx, s, sr, false) // still this process's: opened again, not handed over
		if sr.err != nil {
			retryAt := time.Now().Add(m.cfg.Retry)
			switch {
			case errors.Is(sr.err, ErrFenced):
				retryAt = time.Time{} // not this stream's fault
			case IsNewerFormat(sr.err):
				// This binary will never read that segment: opening the
				// stream again would stop at it again, each retry.
				retryAt = never
				m.log.Error("stream stopped on a segment of a newer format than this ferry reads; not opened again until ferry is upgraded and restarted",
					"stream", s, "err", sr.err)
			default:
				m.log.Error("stream stopped; opening it again later", "stream", s, "err", sr.err, "retry_in", m.cfg.Retry)
			}
			m.mu.Lock()
			m.failed[s] = retryAt
			m.stopped[s] = true
			m.mu.Unlock()
		}
	}
}

// forget tells OnGone of the streams whose receiver stopped on an error
// and that are no longer this process's to open: not in keep. Their
// retry time stays: one that comes back is opened no sooner than it
// would have been.
func (m *Multi) forget(keep map[string]bool) {
	var gone []string
	m.mu.Lock()
	for s := range m.stopped {
		if !keep[s] {
			delete(m.stopped, s)
			gone = append(gone, s)
		}
	}
	m.mu.Unlock()
	slices.Sort(gone)
	for _, s := range gone {
		m.log.Info("stream stopped on an error here is no longer this process's to open: forgotten", "stream", s)
		if m.cfg.OnGone != nil {
			m.cfg.OnGone(s)
		}
	}
}

// stop ends stream's receiver: the segment in progress finishes and is
// checkpointed, and the stream is released.
func (m *Multi) stop(ctx context.Context, stream string) {
	m.mu.Lock()
	sr := m.running[stream]
	m.mu.Unlock()
	if sr == nil {
		return
	}
	sr.cancel()
	<-sr.done
	m.finish(ctx, stream, sr, true)
}

// finish closes a stopped receiver and, if release, releases its stream.
func (m *Multi) finish(ctx context.Context, stream string, sr *streamRun, release bool) {
	if err := sr.r.Close(); err != nil {
		m.log.Warn("close stream receiver", "stream", stream, "err", err)
	}
	m.mu.Lock()
	delete(m.running, stream)
	m.mu.Unlock()
	if m.cfg.OnStop != nil {
		m.cfg.OnStop(stream, sr.r, sr.err, release && m.cfg.Claim != nil)
	}
	if release && m.cfg.Claim != nil {
		m.cfg.Claim.Release(context.WithoutCancel(ctx), stream)
	}
	m.log.Info("stopped applying stream", "stream", stream, "checkpoint_seq", sr.r.Checkpoint().LastSeq)
}

// stopAll stops every receiver at once.
func (m *Multi) stopAll() {
	var wg sync.WaitGroup
	for s := range m.snapshot() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.stop(context.Background(), s)
		}()
	}
	wg.Wait()
}

// ExpandTemplate puts stream into tmpl's "{stream}" (every one). The
// stream name must be one a stream can have, so it cannot leave the
// directory the template names: no '/', no "..", no control characters.
func ExpandTemplate(tmpl, stream string) (string, error) {
	if err := batch.CheckStream(stream); err != nil || stream == "." || stream == ".." || strings.ContainsAny(stream, "/\\") {
		return "", fmt.Errorf("stream name %q cannot name a path: use 1-128 of A-Z a-z 0-9 . _ - @ starting with a letter or digit", stream)
	}
	if !strings.Contains(tmpl, "{stream}") {
		return "", fmt.Errorf("%q has no {stream}: every stream would share one target", tmpl)
	}
	return strings.ReplaceAll(tmpl, "{stream}", stream), nil
}
