// Package bundle seals the small batches of many streams of one ship into
// bundles (docs/FORMAT.md "Bundles"; docs/STREAMS.md "The wiring plan"):
// every bundle_interval, each registered stream whose open batch holds
// records and at most bundle_max framed bytes seals it into a part
// (spool.SealPart), the parts go into one bundle file, durable under its
// name in the Bundler's spool directory, and then one put per target
// stores them all, where a stream's own segments would have cost a file,
// a put and two listings each.
//
// # Files
//
// The Bundler's directory is <ship.spool>/_bundles/ (a stream name never
// starts with "_"):
//
//	_bundles/LOCK                      flock of the owning process
//	_bundles/writer                    the writer id: 16 random hex digits, made once
//	_bundles/state.json                {"next": N}: the next bundle number, saved before the newest bundle file is removed
//	_bundles/sealed/<n>.bundle         a sealed bundle (batch.BundleName), until it is retired
//	_bundles/sealed/.<n>.bundle.tmp    a bundle being written
//
// A bundle is written to its temp file, fsynced, renamed to its name and
// sealed/ fsynced: that rename is the commit point of every part in it.
// Only then does each spool record its part as its newest sealed segment
// (spool.Part.Commit) and drop the journal entries it covers.
//
// At Open, before the streams' spools open: temp files are removed; every
// bundle in sealed/ is opened and each of its parts checked (hash and
// metadata against the index); the newest, if it does not open (a torn
// write no fsync covered: nothing was committed from it), is removed and
// its streams seal their records again from their journals (or, for a
// replayable source, from the source); an older one that does not open
// stops the ship, naming it. The parts found are handed to the streams'
// spools (Parts, spool.Config.Parts), which adopt them, and the bundles
// are put again (the same bytes: a store takes an identical copy).
//
// # Upload
//
// Uploads run apart from the seals (Run): each seal kicks the upload
// loop, which also wakes every Interval, so a target that is down holds
// back neither the ticks (their bundles wait in sealed/, their parts
// counted in their spools' limits) nor a stream's end (Unregister stops
// an upload in progress; the next one resumes it). A bundle is stored as _bundles/<writer>/<n>.bundle (catalog.BundleKey)
// in every target, with one put. Before the first bundle carrying a
// stream's part is put after a start, the Bundler checks that the target
// holds no segment of the stream's generation starting inside the part's
// seqs (one listing: another writer's) and writes the stream's bundle
// marker (catalog.WriteBundleMarker); once per stream per start, not per
// bundle. A bundle is put only when every stream in it may send
// (shipper.Shipper.Sendable: not fenced, writer lease held). Then each
// stream's sender confirms the part, in order after its own segments
// (shipper.Shipper.PartPut). A bundle file is removed once every target
// holds it and every spool with a part in it saved a state.json past it.
package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// DirName is the Bundler's directory under the ship's spool root.
const DirName = "_bundles"

// DefaultMaxBundleBytes is Config.MaxBundleBytes's default: a quarter of
// the readers' default limit on a bundle.
const DefaultMaxBundleBytes = batch.DefaultMaxBundleBytes / 4

// DefaultMaxBytes is bundle_max's default: a stream's batch of at most
// this many framed bytes goes into a bundle.
const DefaultMaxBytes = 1 << 20

// Stream is what the Bundler needs of a registered stream (a
// *shipper.Shipper).
type Stream interface {
	Spool() *spool.Spool
	// Halted is non-nil once the stream may send no more (fenced, lease
	// lost): it is left out of bundles.
	Halted() error
	// Sendable returns nil once the stream may be put to target now.
	Sendable(ctx context.Context, target string) error
	// PartPut tells the stream that target holds its parts through
	// lastSeq.
	PartPut(target string, lastSeq uint64)
}

// Target is one store every bundle goes to (the ship's targets).
type Target struct {
	Name  string
	Store store.Store
}

// Config configures a Bundler.
type Config struct {
	// Dir is the Bundler's directory, <ship.spool>/_bundles.
	Dir string
	// Interval is the tick: how often the streams' batches are sealed
	// into a bundle.
	Interval time.Duration
	// MaxBytes: a batch larger than this seals alone. Default
	// DefaultMaxBytes.
	MaxBytes int64
	// MaxBundleBytes caps a bundle's parts: more go into another bundle
	// of the same tick, so that readers, which refuse a bundle over
	// batch.DefaultMaxBundleBytes by default, read every one. Default
	// DefaultMaxBundleBytes.
	MaxBundleBytes int64
	Targets        []Target
	Retry          store.RetryPolicy
	// SyncFile fsyncs a file; tests inject failures. Default (*os.File).Sync.
	SyncFile func(*os.File) error
	// WriteFile writes to a bundle file; tests inject a full disk.
	// Default (*os.File).Write.
	WriteFile func(*os.File, []byte) (int, error)
	// Drain puts and retires the bundles Open found but seals no new
	// ones: the ship's bundles were turned off while some were not yet in
	// every target (see Leftover).
	Drain bool
	// Step, if set, is called at each step of a bundle's life (tests and
	// FERRY_BUNDLE_KILL): "written" (temp file fsynced), "renamed" (the
	// commit point), "committed" (the spools recorded their parts),
	// "marked" (markers written), "put" (every target holds it).
	Step func(step string)
	Log  *slog.Logger
}

// Bundler seals and puts the bundles of one ship's streams.
type Bundler struct {
	cfg    Config
	lock   *os.File
	writer string

	// sealing serialises the seals of a tick with Register and
	// Unregister: a stream's spool is never closed while a seal uses it.
	// uploading serialises uploads; Unregister cancels the one in
	// progress (upCancel) and waits for it to stop, so a target that is
	// down holds back neither the seals nor a stream's end.
	sealing   sync.Mutex
	uploading sync.Mutex
	upCancel  context.CancelFunc // under mu

	// due is when Run's next tick seals (UnixNano; 0 while Run does not
	// run, or with Config.Drain): NextTick.
	due atomic.Int64

	mu      sync.Mutex
	streams map[string]Stream
	gone    map[string]*spool.Spool // unregistered streams' spools, for retirement
	parts   map[string][]spool.PartRef
	marked  map[string]bool // streams whose marker this start wrote
	next    uint64
	saved   uint64 // state.json's next
	pending []*sealed
	stats   Stats
}

// Stats are counters for summaries.
type Stats struct {
	Bundles uint64 // bundles sealed by this process
	Parts   uint64 // parts in them
	Bytes   int64
	Put     uint64 // bundles every target holds
}

// sealed is a committed bundle file not retired yet.
type sealed struct {
	n     uint64
	path  string
	size  int64
	parts []batch.BundlePart
	put   map[string]bool // targets holding it
}

type stateFile struct {
	Next uint64 `json:"next"`
}

// Open locks dir, reads or makes the writer id and recovers the bundles
// in sealed/ (see the package comment). Parts then gives each stream's
// parts, for its spool's Config.Parts.
func Open(cfg Config) (*Bundler, error) {
	if cfg.Interval <= 0 {
		return nil, errors.New("bundle: interval must be positive")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxBundleBytes <= 0 {
		cfg.MaxBundleBytes = DefaultMaxBundleBytes
	}
	if cfg.SyncFile == nil {
		cfg.SyncFile = (*os.File).Sync
	}
	if cfg.WriteFile == nil {
		cfg.WriteFile = (*os.File).Write
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Step == nil {
		cfg.Step = func(string) {}
	}
	if len(cfg.Targets) == 0 {
		return nil, errors.New("bundle: no targets")
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "sealed"), 0o755); err != nil {
		return nil, fmt.Errorf("bundle spool: %w", err)
	}
	lock, err := fsutil.Lock(cfg.Dir, "bundle spool")
	if err != nil {
		return nil, err
	}
	b := &Bundler{cfg: cfg, lock: lock, streams: map[string]Stream{}, gone: map[string]*spool.Spool{},
		parts: map[string][]spool.PartRef{}, marked: map[string]bool{}}
	if err := b.recover(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("bundle spool %s: %w", cfg.Dir, err)
	}
	return b, nil
}

// Leftover reports whether dir, a Bundler's directory, holds bundle
// files: a ship with bundles off must still put them and let its spools
// adopt their parts (Config.Drain), or those streams would seal the
// parts' records again.
func Leftover(dir string) (bool, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "sealed"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if _, ok := batch.ParseBundleName(e.Name()); ok {
			return true, nil
		}
	}
	return false, nil
}

// Writer is the Bundler's writer id.
func (b *Bundler) Writer() string { return b.writer }

// Streams names the streams with parts in recovered bundles: their
// spools must be opened (with Parts) even if no table starts them.
func (b *Bundler) Streams() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for name := range b.parts {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Parts are stream's parts in the recovered bundles, for its spool's
// Config.Parts.
func (b *Bundler) Parts(stream string) []spool.PartRef {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.parts[stream])
}

// Stats returns a snapshot of the counters.
func (b *Bundler) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

func (b *Bundler) path(p ...string) string {
	return filepath.Join(append([]string{b.cfg.Dir}, p...)...)
}

// recover reads the writer id and state.json and adopts sealed/.
func (b *Bundler) recover() error {
	if err := b.loadWriter(); err != nil {
		return err
	}
	raw, err := os.ReadFile(b.path("state.json"))
	switch {
	case err == nil:
		var st stateFile
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("state.json is damaged (%v); restore it or move the bundle spool away", err)
		}
		b.saved = st.Next
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	b.next = max(b.saved, 1)
	ents, err := os.ReadDir(b.path("sealed"))
	if err != nil {
		return err
	}
	var nums []uint64
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			// A bundle being written when the process stopped: nothing
			// was committed from it.
			if err := os.Remove(b.path("sealed", name)); err != nil {
				return err
			}
			continue
		}
		n, ok := batch.ParseBundleName(name)
		if !ok {
			return fmt.Errorf("unexpected file sealed/%s; move it away", name)
		}
		nums = append(nums, n)
	}
	slices.Sort(nums)
	for i, n := range nums {
		path := b.path("sealed", batch.BundleName(n))
		sb, err := openSealed(path)
		if err != nil && i == len(nums)-1 {
			b.cfg.Log.Warn("removing a bundle whose seal a crash interrupted; its streams seal their records again",
				"bundle", path, "err", err)
			if err := os.Remove(path); err != nil {
				return err
			}
			if err := fsutil.SyncDir(b.path("sealed")); err != nil {
				return err
			}
			// Its number is not used again: a store may hold another
			// put of it (it was never committed, but a crash between
			// rename and a failed fsync could have let it out).
			b.next = max(b.next, n+1)
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w; the bundle spool is damaged", path, err)
		}
		sb.n = n
		b.pending = append(b.pending, sb)
		b.next = max(b.next, n+1)
		for _, p := range sb.parts {
			b.parts[p.Stream] = append(b.parts[p.Stream], spool.PartRef{Bundle: path, Offset: p.Offset, Length: p.Length,
				Name: p.Name(), FirstSeq: p.FirstSeq, LastSeq: p.LastSeq})
		}
	}
	if len(b.pending) > 0 {
		b.cfg.Log.Info("bundles found in the bundle spool; they are put again", "bundles", len(b.pending),
			"streams", len(b.parts))
	}
	return nil
}

// openSealed opens the bundle file path and checks every part in it.
func openSealed(path string) (*sealed, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	bd, err := batch.OpenBundle(f, fi.Size(), 1<<62)
	if err != nil {
		return nil, err
	}
	var buf []byte
	for i := range bd.Parts {
		if _, buf, err = bd.OpenPart(i, buf); err != nil {
			return nil, err
		}
	}
	return &sealed{path: path, size: fi.Size(), parts: bd.Parts, put: map[string]bool{}}, nil
}

// loadWriter reads the writer id, making it the first time.
func (b *Bundler) loadWriter() error {
	raw, err := os.ReadFile(b.path("writer"))
	if err == nil {
		id := strings.TrimSpace(string(raw))
		if !catalog.ValidWriter(id) {
			return fmt.Errorf("writer holds %q, not 16 lower-case hex digits; restore it or move the bundle spool away", id)
		}
		b.writer = id
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return err
	}
	id := hex.EncodeToString(r[:])
	if err := fsutil.WriteFileAtomic(b.path("writer"), []byte(id+"\n"), 0o644); err != nil {
		return err
	}
	b.writer = id
	b.cfg.Log.Info("bundle writer id made", "writer", id)
	return nil
}

// Register adds a stream to the ticks. Its spool must have been opened
// with Parts(name).
func (b *Bundler) Register(name string, s Stream) {
	b.sealing.Lock()
	defer b.sealing.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.streams[name] = s
	delete(b.gone, name)
}

// Unregister takes a stream out of the ticks, waiting for a seal in
// progress and stopping an upload in progress (the next one resumes
// it); its shipper and spool may be closed once it returns.
func (b *Bundler) Unregister(name string) {
	b.sealing.Lock()
	defer b.sealing.Unlock()
	b.mu.Lock()
	if s, ok := b.streams[name]; ok {
		b.gone[name] = s.Spool()
		delete(b.streams, name)
	}
	cancel := b.upCancel
	b.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	b.uploading.Lock()
	b.uploading.Unlock() //nolint:staticcheck // waits for the upload to stop
}

// Close releases the lock. Run must have returned.
func (b *Bundler) Close() error {
	b.sealing.Lock()
	defer b.sealing.Unlock()
	if b.lock == nil {
		return nil
	}
	err := b.lock.Close()
	b.lock = nil
	return err
}

// Run seals every Interval and puts what it sealed (and, every Interval,
// what is left to put) until ctx ends, or returns the first fatal error:
// a bundle that could not be made durable (every stream with a part in
// it has failed too), a conflict in a store (another writer with this
// writer id, or another writer's segments where a stream's part goes), a
// halted stream in a bundle that waits to be put. Seals go on while a
// target is down; the bundles wait in sealed/, their parts counted in
// their spools' limits.
func (b *Bundler) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kick := make(chan struct{}, 1)
	errc := make(chan error, 2)
	go func() {
		defer b.due.Store(0)
		next := time.Now()
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			if err := b.Seal(); err != nil {
				errc <- err
				return
			}
			select {
			case kick <- struct{}{}:
			default:
			}
			// Every Interval from the start; a seal that took longer
			// than that is followed by the next at once.
			next = next.Add(b.cfg.Interval)
			wait := time.Until(next)
			if wait < 0 {
				next, wait = time.Now(), 0
			}
			if !b.cfg.Drain {
				b.due.Store(next.UnixNano())
			}
			t.Reset(wait)
			select {
			case <-ctx.Done():
				errc <- nil
				return
			case <-t.C:
			}
		}
	}()
	go func() {
		t := time.NewTicker(b.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				errc <- nil
				return
			case <-kick:
			case <-t.C:
			}
			if err := b.Upload(ctx); err != nil {
				errc <- err
				return
			}
		}
	}()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil && ctx.Err() == nil {
			first = err
			cancel()
		}
	}
	return first
}

// NextTick is when Run's next tick seals the registered streams' open
// batches into parts: every Interval from Run's start. It is zero while
// Run is not running and with Config.Drain (no tick seals). A source that
// spaces its reads of a stream's input reads once before it (the tail's
// Coalesce, through shipper.Config.SealTick): what it reads later waits
// for the tick after.
func (b *Bundler) NextTick() time.Time {
	if n := b.due.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Tick seals, then puts and retires (Seal, then Upload): one tick, for
// tests.
func (b *Bundler) Tick(ctx context.Context) error {
	if err := b.Seal(); err != nil {
		return err
	}
	return b.Upload(ctx)
}

// Seal seals the registered streams' small batches into bundles (none
// with Config.Drain).
func (b *Bundler) Seal() error {
	b.sealing.Lock()
	defer b.sealing.Unlock()
	if b.cfg.Drain {
		return nil
	}
	return b.seal()
}

// Upload puts every bundle not put yet whose streams are all registered,
// oldest first, and retires what it can. An Unregister stops it early
// without an error.
func (b *Bundler) Upload(ctx context.Context) error {
	b.uploading.Lock()
	defer b.uploading.Unlock()
	uctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.mu.Lock()
	b.upCancel = cancel
	b.mu.Unlock()
	err := b.upload(uctx)
	b.mu.Lock()
	b.upCancel = nil
	b.mu.Unlock()
	if err != nil && uctx.Err() != nil && ctx.Err() == nil {
		err = nil // an Unregister stopped it: the next one goes on
	}
	if err != nil {
		return err
	}
	return b.retire()
}

// seal asks every registered stream, in name order, for a part and
// writes them into bundles of at most batch.MaxBundleParts parts and
// MaxBundleBytes (a larger part goes alone). sealing held.
func (b *Bundler) seal() error {
	b.mu.Lock()
	names := make([]string, 0, len(b.streams))
	for name := range b.streams {
		names = append(names, name)
	}
	streams := maps(b.streams)
	b.mu.Unlock()
	sort.Strings(names)
	var parts []*spool.Part
	for _, name := range names {
		s := streams[name]
		if s.Halted() != nil {
			continue // its Run stops the ship
		}
		p, err := s.Spool().SealPart(b.cfg.MaxBytes)
		if errors.Is(err, spool.ErrPartTooLarge) {
			// A big batch gains nothing from sharing an object and must
			// not wait for max_bytes: it seals alone now.
			err = s.Spool().SealOpen("bundle_max")
		}
		if err != nil {
			b.failAll(parts, err)
			return fmt.Errorf("stream %s: seal its part: %w", name, err)
		}
		if p != nil {
			parts = append(parts, p)
		}
	}
	for len(parts) > 0 {
		n, size := 1, int64(len(parts[0].Data))
		for n < len(parts) && n < batch.MaxBundleParts && size+int64(len(parts[n].Data)) <= b.cfg.MaxBundleBytes {
			size += int64(len(parts[n].Data))
			n++
		}
		if err := b.write(parts[:n]); err != nil {
			b.failAll(parts[n:], err)
			return err
		}
		parts = parts[n:]
	}
	return nil
}

func maps(m map[string]Stream) map[string]Stream {
	out := make(map[string]Stream, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// failAll fails parts: their spools fail, and the next start seals their
// records again.
func (b *Bundler) failAll(parts []*spool.Part, err error) {
	for _, p := range parts {
		p.Fail(fmt.Errorf("bundle not written: %w", err))
	}
}

// write makes parts one durable bundle file and commits them to their
// spools. On failure every part has failed.
func (b *Bundler) write(parts []*spool.Part) error {
	var buf bytes.Buffer
	w := batch.NewBundleWriter(&buf)
	for _, p := range parts {
		if err := w.Add(p.Data, p.Hash); err != nil {
			b.failAll(parts, err)
			return err
		}
	}
	if _, err := w.Close(); err != nil {
		b.failAll(parts, err)
		return err
	}
	b.mu.Lock()
	n := b.next
	b.mu.Unlock()
	name := batch.BundleName(n)
	path := b.path("sealed", name)
	if err := b.writeFile(path, buf.Bytes()); err != nil {
		if spool.IsNoSpace(err) {
			// No room for the bundle: each part seals alone instead,
			// waiting out the full disk as any seal does.
			b.cfg.Log.Warn("spool disk full: the streams' parts seal alone until there is room for bundles", "bundle", path, "err", err)
			for _, p := range parts {
				p.Alone()
			}
			return nil
		}
		b.failAll(parts, err)
		return err
	}
	bp := w.Parts()
	for i, p := range parts {
		p.Commit(path, bp[i].Offset)
	}
	b.cfg.Step("committed")
	b.mu.Lock()
	b.next = n + 1
	b.pending = append(b.pending, &sealed{n: n, path: path, size: int64(buf.Len()), parts: bp, put: map[string]bool{}})
	b.stats.Bundles++
	b.stats.Parts += uint64(len(bp))
	b.stats.Bytes += int64(buf.Len())
	b.mu.Unlock()
	b.cfg.Log.Debug("sealed bundle", "bundle", name, "parts", len(bp), "bytes", buf.Len())
	return nil
}

// writeFile writes data as the bundle file path: temp file, fsync,
// rename, directory fsync (the commit point). A bundle name is never
// reused.
func (b *Bundler) writeFile(path string, data []byte) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("write bundle: %s exists already; a bundle name is never reused (is another process using this bundle spool?)", path)
	}
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	if _, err := b.cfg.WriteFile(f, data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := b.cfg.SyncFile(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	b.cfg.Step("written")
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		// The rename may or may not survive a crash: the parts are not
		// committed, so their spools fail and replay; the file stays for
		// the next start to adopt or not, as a crash would leave it.
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	b.cfg.Step("renamed")
	return nil
}
