package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Catch-up pipeline. A pass lists the store once and plans the segments
// that continue the stream. Each planned segment is read and verified
// (batch.Open) on a goroutine of its own, up to Prefetch segments ahead of
// the one being applied, and decoded (decompressed on DecodeWorkers
// goroutines, records parsed) once it is next but one in line, while the
// receiver's goroutine applies the segments strictly in order and
// checkpoints each one. Everything that decides what is applied (the
// chain check, the apply, the checkpoint) stays on the receiver's
// goroutine; a fetcher only produces a decoded segment or the error that
// stops the pass at that segment.
//
// Decoding only one segment ahead is deliberate: a segment's frames are
// already decompressed on every core, and each further decoded segment
// in flight costs tens of MiB of memory that is slower to fill than to
// reuse. Measured on 2 cores, decoding 2 or 4 ahead took more CPU and
// more wall time than 1; reading further ahead (a few MiB each) is what
// hides the store's latency.

// Defaults of Config.Prefetch and Config.PrefetchBytes.
const (
	DefaultPrefetch      = 4
	DefaultPrefetchBytes = 256 << 20
)

// decodeAhead is how many segments past the one being applied may be
// decoded (see above).
const decodeAhead = 1

// planned is a segment a pass applies if every one before it applies.
type planned struct {
	name   string
	listed int64         // size the store listed; a hint for the read buffer
	mem    *memSeg       // an offered copy to apply from, not the store (offermem.go)
	part   *catalog.Part // where it lies in a bundle; nil for a segment stored alone
}

// gapAt is where a pass's plan stops: segment next begins at seq first,
// after the missing seqs from..first-1. When next is "", the missing seqs
// run to the end of the generation, where generation forkGen forked.
type gapAt struct {
	from, first uint64
	next        string
	forkGen     uint32
}

// plan picks, from segments of c.gen listed (or offered) in order after
// c.after, those that continue the stream after c.from and that its
// history holds, up to the first missing range. Divergent segments are
// returned to be logged; none is applied. Applying a segment moves the
// checkpoint to its name's last seq (the chain check holds metadata and
// name to the same range), so the plan is exactly what applying one
// listed segment at a time would apply.
//
// Nothing is skipped silently: a segment that overlaps another listed one
// or the one applied last (c.applied, the only one that may be listed
// again) is an error naming both, as is one straddling a fork; then
// nothing is planned, since which of two writers the history holds is for
// a person to find out.
func plan(listed []planned, c cursor) (todo []planned, gap *gapAt, divergent []string, err error) {
	next := c.from // the last seq todo reaches
	// The InHistory segment reaching furthest so far, which the next one
	// must start after: the one applied last, then each listed.
	hiName, hiFirst, hiLast, hiApplied := c.applied, c.appliedFirst, c.from, c.applied != ""
	for _, p := range listed {
		if p.name == c.applied {
			continue
		}
		g, first, last, _ := batch.ParseSegmentName(p.name)
		where, err := c.hist.Place(g, first, last)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("stream %q: %w; the receiver stops at seq %d (remove the segment after checking it with ferry verify): %w",
				c.stream, err, c.from, ErrHistory)
		}
		if where == batch.Divergent {
			divergent = append(divergent, p.name)
			continue
		}
		if first <= hiLast {
			return nil, nil, nil, overlapError(c.stream, p.name, first, last, hiName, hiFirst, hiLast, hiApplied)
		}
		hiName, hiFirst, hiLast, hiApplied = p.name, first, last, false
		if gap != nil {
			continue // looking for overlaps only
		}
		if first != next+1 {
			gap = &gapAt{from: next + 1, first: first, next: p.name}
			continue
		}
		todo = append(todo, p)
		next = last
	}
	if gap == nil && c.bounded && next < c.end {
		// The generation ends at a fork, and a site applied through it:
		// its last seqs are missing here, not still to come.
		gen, _ := c.hist.Owner(c.end + 1)
		gap = &gapAt{from: next + 1, first: c.end + 1, forkGen: gen}
	}
	return todo, gap, divergent, nil
}

// segmentKey names p in errors and logs: its store name, or its bundle's
// and its own.
func segmentKey(stream string, p planned) string {
	if p.part != nil {
		return p.part.Bundle + " part " + batch.SegmentKey(stream, p.name)
	}
	return batch.SegmentKey(stream, p.name)
}

// decodeBufs is the memory a segment is decoded into. A pass hands it on
// to a later segment once its segment is applied: filling fresh pages
// costs more than decoding into warm ones.
type decodeBufs struct {
	raw  []byte        // the decompressed record stream
	recs batch.Records // the records, aliasing raw
}

func (b *decodeBufs) bytes() int64 {
	return int64(cap(b.raw)) + b.recs.IndexCap()
}

// fetched is a planned segment on its way to being applied.
type fetched struct {
	planned
	gen  uint32 // the generation the pass planned
	key  string
	done chan struct{} // closed once the fields below are set

	seg  *batch.Segment // Payload cleared: its buffer is reused
	recs batch.Records
	size int64 // bytes read
	held int64 // budget held for the decoded segment
	bufs *decodeBufs
	err  error // the segment cannot be applied; the pass stops there
}

// pipeline is the state one pass shares with its fetchers.
type pipeline struct {
	r      *Receiver
	ctx    context.Context
	wg     sync.WaitGroup
	budget *budget
	// How far past the head segments are decoded: decodeAhead, or fewer
	// with Prefetch.
	decodeAhead int

	mu       sync.Mutex
	freeData [][]byte
	freeBufs []*decodeBufs
	// Buffers larger than these are left to the GC rather than kept for
	// the pass: at most Prefetch+1 read buffers and 1+decodeAhead decode
	// buffers are in use at once, so what a pass keeps stays within
	// PrefetchBytes for each kind.
	keepData, keepBufs int64
}

// spare is what a pass leaves for the next: one read buffer and one set of
// decode buffers. A live link applies one segment per pass, and fresh
// 16 MiB buffers for each cost more CPU (zeroing, growing) than decoding.
type spare struct {
	mu   sync.Mutex
	data []byte
	bufs *decodeBufs
}

// takeSpare gives p what the previous pass left.
func (p *pipeline) takeSpare() {
	sp := &p.r.spare
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.data != nil && int64(cap(sp.data)) <= p.keepData {
		p.freeData = append(p.freeData, sp.data)
	}
	if sp.bufs != nil && sp.bufs.bytes() <= p.keepBufs {
		p.freeBufs = append(p.freeBufs, sp.bufs)
	}
	sp.data, sp.bufs = nil, nil
}

// leaveSpare keeps the largest free buffers of p for the next pass. Every
// fetcher has ended.
func (p *pipeline) leaveSpare() {
	var data []byte
	for _, b := range p.freeData {
		if cap(b) > cap(data) {
			data = b
		}
	}
	var bufs *decodeBufs
	for _, b := range p.freeBufs {
		if bufs == nil || b.bytes() > bufs.bytes() {
			bufs = b
		}
	}
	sp := &p.r.spare
	sp.mu.Lock()
	sp.data, sp.bufs = data, bufs
	sp.mu.Unlock()
}

// applyPlanned applies todo, segments of generation gen, in order,
// fetching ahead. It returns how many it applied and the error that
// stopped it, if any. Every fetcher it started has ended when it returns.
func (r *Receiver) applyPlanned(ctx context.Context, gen uint32, todo []planned) (int, error) {
	if len(todo) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &pipeline{
		r: r, ctx: ctx,
		budget:      newBudget(r.cfg.PrefetchBytes),
		decodeAhead: max(min(r.cfg.Prefetch, decodeAhead), 0),
		keepData:    r.cfg.PrefetchBytes / int64(r.cfg.Prefetch+1),
		keepBufs:    r.cfg.PrefetchBytes / (decodeAhead + 1),
	}
	p.takeSpare()
	defer func() {
		cancel()
		p.wg.Wait()
		p.leaveSpare()
		if r.held != nil && r.cfg.CheckpointDelay <= 0 {
			r.flushHeld() // the pass ended inside a group; a failure sets unsaved
		}
	}()
	inflight := make([]*fetched, len(todo))
	next := 0
	defer func() { r.releasePlanned(todo[next:]) }() // never fetched
	start := func(upTo int) {
		for ; next < len(todo) && next <= upTo; next++ {
			f := &fetched{planned: todo[next], gen: gen, key: segmentKey(r.cfg.Stream, todo[next]), done: make(chan struct{})}
			inflight[next] = f
			idx := next
			p.wg.Go(func() { p.fetch(idx, f) })
		}
	}
	// The first segment of a pass is fetched alone: a store that refuses
	// it (missing bucket, bad credentials) is not asked for more.
	ahead := 0
	progress := r.catchUpLog(todo)
	for i := range todo {
		progress(i)
		start(i + ahead)
		f := inflight[i]
		select {
		case <-f.done:
		case <-ctx.Done():
			return i, ctx.Err()
		}
		if f.err != nil {
			return i, f.err
		}
		ahead = r.cfg.Prefetch
		start(i + ahead)
		// While the next segment is ready by the time this one is
		// applied (or within groupWait: it is on its way), they share one
		// fsync and one checkpoint.
		var more func() bool
		if r.heldN+1 < maxGroup && i+1 < len(todo) && inflight[i+1] != nil {
			more = func() bool { return readyWithin(inflight[i+1], groupWait) }
		}
		err := r.applyFetched(ctx, f, more)
		inflight[i] = nil
		p.release(i, f)
		if err != nil {
			return i, err
		}
		if r.reached { // restore: the boundary is applied
			return i + 1, nil
		}
	}
	progress(-1)
	return len(todo), nil
}

// catchUpLog returns the progress report of a pass over todo
// (Config.CatchUpLog): called with the index of the segment about to be
// applied, it logs "catching up" once an interval has passed since the
// pass started or its last line; called with -1 at the end, it logs
// "caught up" if it logged before.
func (r *Receiver) catchUpLog(todo []planned) func(i int) {
	every := r.cfg.CatchUpLog
	if every <= 0 || len(todo) < 2 {
		return func(int) {}
	}
	_, _, toSeq, _ := batch.ParseSegmentName(todo[len(todo)-1].name)
	start := time.Now()
	last, logged := start, false
	return func(i int) {
		applied := r.Applied()
		switch {
		case i < 0 && logged:
			r.log.Info("caught up", "stream", r.cfg.Stream, "seq", applied, "seconds", int(time.Since(start).Seconds()))
		case i >= 0 && time.Since(last) >= every:
			last, logged = time.Now(), true
			r.log.Info("catching up", "stream", r.cfg.Stream, "seq", applied, "to_seq", toSeq, "segments_left", len(todo)-i)
		}
	}
}

// groupWait is how long a segment's checkpoint waits for the next one of
// the pass to be decoded, to share it. The wait is bounded because the
// next may need the memory the current one holds.
const groupWait = 5 * time.Millisecond

// readyWithin reports whether f is fetched and decoded without error
// within d.
func readyWithin(f *fetched, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.done:
		return f.err == nil
	case <-t.C:
		return false
	}
}

// streamAbove is the stored size above which a segment is verified and
// decompressed as it is read (batch.SegmentReader.Decompress), single
// threaded, instead of read whole first and its frames decompressed on
// DecodeWorkers goroutines: one segment then costs its record stream and
// no more, never its stored bytes as well. Below it the stored bytes cost
// at most this much beside the record stream, within max_segment_bytes +
// 64 MiB with the process's own; the parallel decode keeps ordinary
// segments (a few MiB stored) fast.
const streamAbove = 32 << 20

// fetch reads, verifies and decodes segment idx of the pass into f. An
// offered copy is verified already and is decoded as it is. What f holds
// is counted in the budget (f.held) before it is allocated: a segment
// read whole from the store its stored bytes, as far ahead as Prefetch,
// until it is decoded; a decoded one its record stream and offsets, as
// far ahead as decodeAhead, until it is applied.
func (p *pipeline) fetch(idx int, f *fetched) {
	defer close(f.done)
	r := p.r
	if m := f.mem; m != nil {
		defer r.releaseMem(m) // decoded into buffers of its own
		f.size = int64(len(m.data))
		if f.err = p.reserve(idx, f, decodeNeed(&m.seg.Meta, r.cfg.MaxSegmentBytes), p.decodeAhead); f.err == nil {
			f.err = p.decode(f, &m.seg)
		}
		return
	}
	if f.part != nil {
		// A bundle part: read whole by one ranged read, checked against
		// the bundle's index (catalog.ReadPart), then opened as any
		// segment read whole.
		f.listed = f.part.Length
	}
	if f.listed > 0 && (f.listed <= streamAbove || f.part != nil) {
		// Read ahead whole (fetchStore): held from before it is read, by
		// the size listed; the metadata corrects it.
		f.err = p.reserve(idx, f, f.listed+1, r.cfg.Prefetch)
	} else if f.listed > streamAbove {
		// Decoded as it is read: not opened before it may be.
		f.err = p.budget.acquire(p.ctx, idx, 0, p.decodeAhead)
	}
	if f.err != nil {
		return
	}
	var data []byte // a segment read whole
	defer func() { p.putData(data) }()
	err := r.retry(p.ctx, "get "+f.key, func() error {
		var err error
		if f.part != nil {
			if data == nil {
				data = p.takeData()
			}
			seg := catalog.Segment{Name: f.name, Key: f.part.Bundle, Size: f.part.Length, Part: f.part}
			got, err := catalog.ReadPart(p.ctx, r.cfg.Store, seg, data, r.cfg.MaxSegmentBytes)
			if err == nil {
				data = got
			}
			return err
		}
		data, err = p.fetchStore(idx, f, data)
		return err
	})
	if err != nil {
		f.err = refused(f.key, err)
		return
	}
	if f.seg != nil {
		return // streamed
	}
	f.size = int64(len(data))
	seg, err := batch.Open(data)
	if err != nil {
		f.err = damaged(f.key, err)
		return
	}
	read := f.held
	if f.err = p.reserve(idx, f, read+decodeNeed(&seg.Meta, r.cfg.MaxSegmentBytes), p.decodeAhead); f.err != nil {
		return
	}
	f.err = p.decode(f, seg)
	p.budget.add(-read) // data goes back to the pass below, not to be held
	f.held -= read
}

// fetchStore opens segment f in the store and reads its metadata. A
// segment stored in at most streamAbove bytes it reads whole into data's
// memory and returns, for fetch to verify and decode; a larger one it
// verifies and decodes as it reads it, once its record stream is within
// the budget, setting f.seg and f.recs.
func (p *pipeline) fetchStore(idx int, f *fetched, data []byte) ([]byte, error) {
	r := p.r
	rc, sr, err := p.open(f)
	if err != nil {
		return data, err
	}
	defer func() { rc.Close() }()
	if size := sr.Size(); size <= streamAbove {
		p.budget.add(size + 1 - f.held) // what it holds, listed or not
		f.held = size + 1
		if data == nil {
			data = p.takeData()
		}
		return sr.ReadAll(data)
	}
	need := decodeNeed(&sr.Meta, r.cfg.MaxSegmentBytes)
	if ok := p.budget.tryAcquire(idx, need-f.held, p.decodeAhead); ok {
		f.held = need
	} else {
		// Not while the store waits with the object open: an idle body
		// times out, and holds a connection.
		rc.Close()
		if err := p.reserve(idx, f, need, p.decodeAhead); err != nil {
			return data, err
		}
		if rc, sr, err = p.open(f); err != nil {
			return data, err
		}
	}
	if err := r.admit(f.key, &sr.Meta); err != nil {
		return data, err
	}
	sr.Decrypter = r.cfg.Decrypter
	if f.bufs == nil {
		f.bufs = p.takeBufs()
	}
	seg, raw, err := sr.Decompress(f.bufs.raw, r.cfg.DecodeWorkers)
	if err != nil {
		return data, err
	}
	f.bufs.raw = raw
	f.size = sr.Size()
	return data, p.parse(f, seg, raw)
}

// open opens segment f in the store and reads its metadata.
func (p *pipeline) open(f *fetched) (io.ReadCloser, *batch.SegmentReader, error) {
	rc, err := p.r.cfg.Store.Get(p.ctx, f.key)
	if err != nil {
		return nil, nil, err
	}
	sr, err := batch.NewSegmentReader(rc, f.listed, p.r.cfg.MaxSegmentBytes)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	return rc, sr, nil
}

// decodeNeed is what decoding a segment of metadata m holds: what it
// claims to decompress to (never more than DecompressInto accepts) and the
// index of the records parsed from it (batch.IndexNeed).
func decodeNeed(m *batch.Meta, limit int64) int64 {
	claimed := min(max(m.UncompressedSize, 0), limit)
	return claimed + batch.IndexNeed(m, claimed)
}

// reserve makes f hold n bytes of the budget, waiting as budget.acquire
// does for what it holds beyond its f.held.
func (p *pipeline) reserve(idx int, f *fetched, n int64, ahead int) error {
	if n <= f.held {
		p.budget.add(n - f.held)
	} else if err := p.budget.acquire(p.ctx, idx, n-f.held, ahead); err != nil {
		return err
	}
	f.held = n
	return nil
}

// decode decompresses seg, verified, into f's buffers on DecodeWorkers
// goroutines and parses its records.
func (p *pipeline) decode(f *fetched, seg *batch.Segment) error {
	if err := p.r.admit(f.key, &seg.Meta); err != nil {
		return err
	}
	// The stored bytes are the pass's to reuse (an offered copy's or
	// read from the store): decrypted over themselves, in parallel.
	if err := seg.DecryptInPlace(p.r.cfg.Decrypter, p.r.cfg.DecodeWorkers); err != nil {
		return refused(f.key, err)
	}
	if f.bufs == nil {
		f.bufs = p.takeBufs()
	}
	raw, err := seg.DecompressInto(f.bufs.raw, p.r.cfg.MaxSegmentBytes, p.r.cfg.DecodeWorkers)
	if err != nil {
		return refused(f.key, err)
	}
	f.bufs.raw = raw
	return p.parse(f, seg, raw)
}

// parse parses the records of seg from raw, its record stream in f's
// buffers, and makes f ready to apply.
func (p *pipeline) parse(f *fetched, seg *batch.Segment, raw []byte) error {
	recs, err := seg.ParseRecords(raw, f.bufs.recs)
	if err != nil {
		return damaged(f.key, err)
	}
	f.bufs.recs = recs
	seg.Payload = nil
	f.seg, f.recs = seg, recs
	return nil
}

// admit refuses segment key, of metadata m, if it is plaintext and the
// receiver requires encryption, or if its signature is not one the
// receiver's Verifier accepts.
func (r *Receiver) admit(key string, m *batch.Meta) error {
	return admit(&r.cfg, key, m)
}

func admit(cfg *Config, key string, m *batch.Meta) error {
	if cfg.RequireEncryption && !m.Encrypted() {
		return fmt.Errorf("segment %s is not encrypted and require_encryption is set: %w; nothing past it is applied "+
			"(a shipper without [encryption] recipients wrote it, or someone replaced it)", key, ErrPlaintext)
	}
	if cfg.Verifier != nil {
		if err := cfg.Verifier.Verify(m); err != nil {
			return fmt.Errorf("%w; nothing past it is applied (a shipper without [encryption] signing_key_file, or with another key, "+
				"wrote it, or someone replaced it)", err)
		}
	}
	return nil
}

func damaged(key string, err error) error {
	if IsNewerFormat(err) {
		return refused(key, err)
	}
	return fmt.Errorf("segment %s is damaged: %w; nothing past it is applied (restore it from another copy)", key, err)
}

// refused is the error of segment key that could not be read or
// decompressed: damaged, over max_segment_bytes, or of a newer format.
func refused(key string, err error) error {
	switch {
	case errors.Is(err, batch.ErrSegmentTooLarge) || IsNewerFormat(err):
		return fmt.Errorf("segment %s: %w; nothing past it is applied", key, err)
	case errors.Is(err, batch.ErrCorrupt):
		return damaged(key, err)
	}
	return fmt.Errorf("segment %s: %w", key, err)
}

// takeData and takeBufs take buffers for a segment, reusing those of one
// done with them; putData and release give them back.
func (p *pipeline) takeData() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.freeData)
	if n == 0 {
		return nil
	}
	b := p.freeData[n-1]
	p.freeData = p.freeData[:n-1]
	return b
}

func (p *pipeline) putData(b []byte) {
	if b == nil || int64(cap(b)) > p.keepData {
		return
	}
	p.mu.Lock()
	p.freeData = append(p.freeData, b[:0])
	p.mu.Unlock()
}

func (p *pipeline) takeBufs() *decodeBufs {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.freeBufs)
	if n == 0 {
		return &decodeBufs{}
	}
	b := p.freeBufs[n-1]
	p.freeBufs = p.freeBufs[:n-1]
	return b
}

// release returns what segment idx held once it is applied, and makes the
// next one the head of the budget.
func (p *pipeline) release(idx int, f *fetched) {
	p.budget.release(f.held, idx+1)
	if b := f.bufs; b != nil && b.bytes() <= p.keepBufs {
		p.mu.Lock()
		p.freeBufs = append(p.freeBufs, b)
		p.mu.Unlock()
	}
}

// budget admits segments of a pass to holding memory: each as far ahead
// of the one to be applied next (the head) as its caller allows, all of
// them together at most limit bytes. The head is always admitted, even
// past the limit or while later segments hold it all, so the pipeline
// cannot stall on segments it cannot apply yet.
type budget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	head    int
	changed chan struct{} // closed and replaced when used or head change
}

func newBudget(limit int64) *budget {
	return &budget{limit: limit, changed: make(chan struct{})}
}

// acquire waits until segment idx, at most ahead segments past the head,
// may hold n more bytes, or ctx ends.
func (b *budget) acquire(ctx context.Context, idx int, n int64, ahead int) error {
	for {
		b.mu.Lock()
		if b.admits(idx, n, ahead) {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// tryAcquire is acquire without the wait: whether segment idx got n more
// bytes.
func (b *budget) tryAcquire(idx int, n int64, ahead int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.admits(idx, n, ahead) {
		b.used += n
		return true
	}
	return false
}

func (b *budget) admits(idx int, n int64, ahead int) bool {
	return idx <= b.head || (idx <= b.head+ahead && b.used+n <= b.limit)
}

// add counts n more bytes held (fewer if negative) without waiting: what
// a segment found it holds beyond what it acquired, or gave back early.
func (b *budget) add(n int64) { b.release(-n, 0) }

// release gives back n bytes and makes head the segment applied next.
func (b *budget) release(n int64, head int) {
	b.mu.Lock()
	b.used -= n
	b.head = max(b.head, head)
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}
