package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/sign"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/internal/hugepage"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/fsnotify/fsnotify"
)

const fetchExamples = `  # PostgreSQL (restore_command, for a standby or point-in-time recovery)
  restore_command = 'ferry fetch --store s3://dr-bucket/ferry --stream pg-wal %f %p'

  # from the tree a receiver keeps (ferry receive --apply dir:/srv/pg-archive)
  restore_command = 'ferry fetch --tree /srv/pg-archive %f %p'

  # a standby that gets each WAL segment as soon as it is stored (a
  # promotion waits for a fetch in progress: up to 2s here); with
  # recovery_prefetch = off, see below
  restore_command = 'ferry fetch --wait 2s --config /etc/ferry/ferry-pg.toml %f %p'

From a store, fetch reads the marker <stream>/pushed/NAME: no marker means
NAME was never pushed, and fetch exits 1 at once (PostgreSQL asks for files
that do not exist, e.g. the next timeline's .history). The marker names the
records that carried the file, so fetch lists and reads just the segments
holding them; if those are gone it scans the stream newest first, which
reads every segment once. The content is checked against the marker's sha256 and
written to DEST atomically (temp file beside it, fsync, rename). A tcp://
link's receiver keeps no markers: fetch --tree from its dir: tree instead.

--wait D: a WAL segment name (24 hex digits) not pushed yet is looked for
for up to D (a directory store: when inotify reports a change in
<stream>/pushed, and every 500ms; else every 20ms; S3: every 200ms), and
fetched as soon as its marker is there, instead of at PostgreSQL's next
retry (wal_retrieve_retry_interval, 5s by default). Other names are answered at once: a standby asks for the
next timeline's .history file on every retry. PostgreSQL notices a
promotion only once restore_command returns, so a promotion can wait up
to D; keep D short (1-5s). Set recovery_prefetch = off on such a
standby (PostgreSQL 15+): with prefetch, PostgreSQL asks for the next
segment before it replays the records it has read, and they wait for D.
If the process that ran fetch exits while it waits (PostgreSQL stopped),
fetch exits 1 without writing DEST.
`

func runFetch(args []string, stdout, stderr io.Writer) error {
	c := newFlags("fetch", "ferry fetch [--config FILE | --store URL --stream NAME | --tree DIR] NAME DEST", fetchExamples, stderr)
	from := c.fs.String("tree", "", "copy from this `dir`: a receiver's applied tree (--apply dir:DIR) instead of a store")
	c.alias("from", "tree") // --from is a seq everywhere else (cat)
	timeout := c.duration("timeout", 5*time.Minute, "give up (exit 1) after this long")
	wait := c.duration("wait", 0, "if NAME is a WAL segment name not pushed yet, wait up to this long for it before exiting 1 (a standby gets it as soon as it is stored; other names are answered at once)")
	c.accept("max-segment-bytes")
	if err := c.parse(args, ""); err != nil {
		return err
	}
	if c.fs.NArg() != 2 {
		return usageError{errors.New("want NAME DEST")}
	}
	name, dest := c.fs.Arg(0), c.fs.Arg(1)
	if err := shipper.CheckPushName(name); err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	log := c.logger(stderr)
	ctx, stopSig := signalContext(ctx, log)
	defer stopSig()
	if *from != "" {
		if *wait > 0 && isWALSegmentName(name) {
			if err := waitFor(ctx, *wait, fetchPollDir, nil, func() bool {
				_, err := os.Lstat(filepath.Join(*from, name))
				return err == nil
			}); err != nil {
				return err
			}
		}
		return fetchFromTree(*from, name, dest)
	}
	cfg := c.cfg
	switch {
	case cfg.Stream == "":
		return usageError{errors.New("--stream is required (or --tree DIR)")}
	case cfg.Store == "":
		return usageError{errors.New("--store is required (or --tree DIR)")}
	case strings.HasPrefix(cfg.Store, "tcp://"):
		return usageError{errors.New("fetch reads a directory or S3 store; on a direct link's receiving side use --tree with the receiver's dir: tree")}
	}
	st, err := openExistingStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	dec, err := decrypterFor(cfg)
	if err != nil {
		return err
	}
	trusted, err := verifierFor(cfg)
	if err != nil {
		return err
	}
	if *wait > 0 && isWALSegmentName(name) {
		poll := fetchPollDir
		if strings.HasPrefix(cfg.Store, "s3://") {
			poll = fetchPollS3
		}
		key := shipper.PushMarkerKey(cfg.Stream, name)
		wake, stopWatch := watchMarkerDir(st, key)
		defer stopWatch()
		if wake != nil {
			poll = fetchPollWatched
		}
		if err := waitFor(ctx, *wait, poll, wake, func() bool {
			_, err := shipper.ReadPushMarker(ctx, st, key)
			return !errors.Is(err, store.ErrNotFound) // found, or an error fetch reports
		}); err != nil {
			return err
		}
	}
	return fetchFromStore(ctx, st, cfg.Stream, name, dest, fetchKeys{limit: c.segmentLimit(), dec: withKeyEpochs(ctx, dec, st, cfg.Stream), trusted: trusted}, log)
}

// How often fetch --wait looks for the file: a directory store's marker
// is a local file (a look costs microseconds), an S3 store's a GET request.
// On a directory store whose pushed/ directory can be watched (inotify),
// fetch looks when something is created there, and every
// fetchPollWatched besides (a missed event costs that much delay): 20 ms
// polls cost a waiting fetch about 18 ms of CPU a second (load 10-15).
const (
	fetchPollDir     = 20 * time.Millisecond
	fetchPollS3      = 200 * time.Millisecond
	fetchPollWatched = 500 * time.Millisecond
)

// watchMarkerDir watches the directory of marker key when st is a
// directory store and that directory exists: wake gets a value after
// anything is created or renamed there. Otherwise wake is nil (poll).
func watchMarkerDir(st store.Store, key string) (wake <-chan struct{}, stop func()) {
	ds, ok := st.(*dir.Store)
	if !ok {
		return nil, func() {}
	}
	p, err := ds.Path(key)
	if err != nil {
		return nil, func() {}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, func() {}
	}
	if err := w.Add(filepath.Dir(p)); err != nil {
		w.Close()
		return nil, func() {}
	}
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case _, ok := <-w.Events:
				if !ok {
					return
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
				// an overflow: look now, as for an event
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch, func() { w.Close(); <-done }
}

// isWALSegmentName reports whether name is a PostgreSQL WAL segment's
// (24 hex digits: timeline, log, segment). These are the names fetch
// --wait waits for: a standby asks for the next segment before it
// exists, and gets it as soon as it is stored. It also asks, on every
// retry, for the next timeline's .history file, which usually never
// comes: waiting for that would only delay the next try.
func isWALSegmentName(name string) bool {
	if len(name) != 24 {
		return false
	}
	for _, c := range []byte(name) {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// waitFor calls found every poll, and whenever wake (nil: never) gets a
// value, until it reports true, d has passed or ctx ends (a signal: the
// caller's next step fails on ctx). It fails if the process that started
// fetch exits meanwhile: a PostgreSQL stopped
// during a restore_command leaves it running, and it must not write DEST
// (pg_wal/RECOVERYXLOG) after a restarted server has asked for another
// file there.
func waitFor(ctx context.Context, d, poll time.Duration, wake <-chan struct{}, found func() bool) error {
	parent := os.Getppid()
	orphaned := func() error {
		if os.Getppid() != parent {
			return fmt.Errorf("the process that started fetch (pid %d) exited while fetch --wait waited; not fetching", parent)
		}
		return nil
	}
	deadline := time.Now().Add(d)
	waited := false
	for !found() {
		if err := orphaned(); err != nil {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		t := time.NewTimer(min(poll, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-wake:
			t.Stop()
		}
		waited = true
	}
	if waited {
		return orphaned() // it may have exited since the last look
	}
	return nil
}

// fetchFromTree copies DIR/NAME, a regular file (never through a symlink
// at NAME; NAME is one file name, so it cannot leave DIR).
func fetchFromTree(dir, name, dest string) error {
	src, err := os.OpenFile(filepath.Join(dir, name), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s not found in %s", name, dir)
	}
	if err != nil {
		return fmt.Errorf("%s in %s: %w", name, dir, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s in %s is not a regular file", name, dir)
	}
	w, err := newAtomicFile(dest)
	if err != nil {
		return err
	}
	defer w.abort()
	if _, err := io.Copy(w.f, src); err != nil {
		return fmt.Errorf("copy %s to %s: %w", filepath.Join(dir, name), dest, err)
	}
	return w.commit()
}

// fetchFromStore finds NAME's marker, then its records, and writes the
// verified content to dest.
// fetchKeys is how fetch reads segments: their size limit
// (max_segment_bytes), the identity that decrypts them and the keys that
// must have signed them (nil: not checked).
type fetchKeys struct {
	limit   int64
	dec     batch.Decrypter
	trusted *sign.Trusted
}

func fetchFromStore(ctx context.Context, st store.Store, stream, name, dest string, keys fetchKeys, log *slog.Logger) error {
	key := shipper.PushMarkerKey(stream, name)
	// The store's errors are retried (until --timeout); a damaged marker
	// fails at once (ReadPushMarker: reading it again gives the same bytes).
	var m shipper.PushMarker
	retry := store.RetryPolicy{Min: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
	err := store.Retry(ctx, retry, log, "get "+key, func(ctx context.Context) error {
		var err error
		m, err = shipper.ReadPushMarker(ctx, st, key)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s not found: no marker %s in %s (never pushed to stream %s)", name, key, st, stream)
	}
	if errors.Is(err, shipper.ErrPushMarkerDamaged) {
		return fmt.Errorf("%w (in %s); push %s again", err, st, name)
	}
	if err != nil {
		return err
	}
	if m.Name != "" && m.Name != name {
		// A marker copied or linked from another name: its hash and
		// records are that file's.
		return fmt.Errorf("marker %s in %s is for %q, not %s: damaged or replaced; push %s again", key, st, m.Name, name, name)
	}
	want, err := hex.DecodeString(m.SHA256)
	if err != nil || len(want) != 32 {
		return fmt.Errorf("marker %s is damaged: sha256 %q", key, m.SHA256)
	}
	w, err := newAtomicFile(dest)
	if err != nil {
		return err
	}
	defer w.abort()
	f := fetcher{ctx: ctx, st: st, stream: stream, name: name, size: m.Size, sum: [32]byte(want), limit: keys.limit, dec: keys.dec, trusted: keys.trusted}
	var ferr error
	if m.FirstSeq > 0 {
		if f.names, f.sizes, ferr = listHolding(ctx, st, stream, m.Generation, m.FirstSeq, m.LastSeq); ferr != nil {
			return ferr
		}
		ferr = f.assemble(w, m.Generation, m.FirstSeq, m.LastSeq)
		if ferr == nil {
			return w.commit()
		}
		if errors.Is(ferr, batch.ErrSignature) || errors.Is(ferr, batch.ErrNoKey) {
			return ferr // refused, not missing: a scan would meet it again
		}
		log.Warn("the records the marker names do not give the file; scanning the stream", "name", name,
			"first_seq", m.FirstSeq, "last_seq", m.LastSeq, "err", ferr)
	}
	segs, err := listSegments(ctx, st, stream)
	if err != nil {
		return err
	}
	f.names, f.sizes, f.parts = segNames(segs), nil, map[string]catalog.Segment{}
	for _, s := range segs {
		f.sizes = append(f.sizes, s.Size)
		if s.Part != nil {
			f.parts[s.Name] = s
		}
	}
	gen, first, last, found, err := f.scan()
	if err != nil {
		return err
	}
	if !found {
		if ferr != nil {
			return fmt.Errorf("%s: pushed (marker %s, seq %d-%d), but %s does not hold its records: %v (not sent yet, or pruned?)",
				name, key, m.FirstSeq, m.LastSeq, st, ferr)
		}
		return fmt.Errorf("%s: pushed (marker %s), but no segment of %s holds a file with its sha256 %s (not sent yet, or pruned?)",
			name, key, st, m.SHA256)
	}
	if err := w.reset(); err != nil {
		return err
	}
	if err := f.assemble(w, gen, first, last); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return w.commit()
}

// errListed ends a listing early.
var errListed = errors.New("listed enough")

// listHolding lists the segments of generation gen from the one holding
// seq first to the last one starting at or before seq last, with their
// sizes, without listing the whole stream (on S3 that takes a request per
// thousand segments, every fetch). A store lists names in order, and a
// segment's name begins with its generation and first seq, so a listing
// that starts after "<gen>-<first-back>" and meets a segment starting at
// or before first holds the one holding first; back grows until it does,
// up to a listing of all of gen. A segment missing from the range leaves
// the records short, which assemble reports.
func listHolding(ctx context.Context, st store.Store, stream string, gen uint32, first, last uint64) ([]string, []int64, error) {
	dir := batch.StreamDir(stream)
	back := uint64(64)
	for {
		from := first - min(back, first)
		var names []string
		var sizes []int64
		err := st.List(ctx, dir, fmt.Sprintf("%s%08x-%016x", dir, gen, from), func(o store.Object) error {
			name := strings.TrimPrefix(o.Name, dir)
			g, lo, _, ok := batch.ParseSegmentName(name)
			switch {
			case !ok:
				return nil
			case g != gen || lo > last:
				return errListed
			}
			names = append(names, name)
			sizes = append(sizes, o.Size)
			return nil
		})
		if err != nil && !errors.Is(err, errListed) {
			return nil, nil, fmt.Errorf("list %s in %s: %w", dir, st, err)
		}
		if from == 0 {
			return names, sizes, nil
		}
		if len(names) > 0 {
			if _, lo, _, _ := batch.ParseSegmentName(names[0]); lo <= first {
				return names, sizes, nil
			}
		}
		// back*4 must not wrap round (a forged marker's first may be
		// near 2^64): past first/4, the next listing starts at seq 0.
		if back > first/4 {
			back = first
		} else {
			back *= 4
		}
	}
}

type fetcher struct {
	ctx    context.Context
	st     store.Store
	stream string
	name   string
	size   int64
	sum    [32]byte
	names  []string                   // the stream's segments, in order
	sizes  []int64                    // their sizes as listed
	parts  map[string]catalog.Segment // those of names that are bundle parts
	limit  int64                      // max_segment_bytes
	dec    batch.Decrypter
	// trusted, if set, must have signed every segment read.
	trusted *sign.Trusted
	// The buffers of the segment last read: its stored bytes, record
	// stream and records. What records returns is valid until it is
	// called again.
	stored, raw []byte
	recs        batch.Records
}

// read reads segment seg, stored under key (size bytes as listed), into
// f.stored: a bundle part by one ranged read checked against its
// bundle's index (catalog.ReadPart), a segment alone as it streams in.
// Its signature is checked before its payload is used.
func (f *fetcher) read(seg, key string, size int64) error {
	if p, ok := f.parts[seg]; ok {
		data, err := catalog.ReadPart(f.ctx, f.st, p, f.stored, f.limit)
		if err != nil {
			return fmt.Errorf("segment %s: %w", segWhere(f.stream, p), err)
		}
		f.stored = data
		m, _, err := batch.ParseMeta(data)
		if err != nil {
			return fmt.Errorf("segment %s: %w", segWhere(f.stream, p), err)
		}
		return checkSignature(f.trusted, &m)
	}
	rc, err := f.st.Get(f.ctx, key)
	if err != nil {
		return fmt.Errorf("segment %s: %w", key, err)
	}
	defer rc.Close()
	sr, err := batch.NewSegmentReader(rc, size, f.limit)
	if err != nil {
		return fmt.Errorf("segment %s: %w", key, err)
	}
	if err := checkSignature(f.trusted, &sr.Meta); err != nil {
		return err
	}
	if f.stored, err = sr.ReadAll(f.stored); err != nil {
		return fmt.Errorf("segment %s: %w", key, err)
	}
	return nil
}

// records reads segment seg and returns its records, verified: the
// whole segment's checksum and its payload's before anything is
// decompressed, then exactly the claimed size decompressed. The stored
// bytes, the record stream and the records are held in f's buffers,
// reused for the next segment (a WAL file spans a few segments; fresh
// memory for each costs more page faults than the decoding itself).
func (f *fetcher) records(seg string) (batch.Records, error) {
	key := batch.SegmentKey(f.stream, seg)
	var size int64
	if i, ok := slices.BinarySearch(f.names, seg); ok {
		size = f.sizes[i]
	}
	if err := f.read(seg, key, size); err != nil {
		return batch.Records{}, err
	}
	s, err := batch.OpenPayload(f.stored) // fetch follows no hash chain: one hash pass, not two
	if err != nil {
		return batch.Records{}, fmt.Errorf("segment %s: %w", key, err)
	}
	if s.Meta.Name() != seg {
		return batch.Records{}, fmt.Errorf("segment %s holds %s", key, s.Meta.Name())
	}
	workers := runtime.GOMAXPROCS(0)
	if err := s.DecryptInPlace(f.dec, workers); err != nil {
		return batch.Records{}, fmt.Errorf("segment %s: %w", key, err)
	}
	// A fresh process decodes into fresh memory: in 4 KiB pages, faulting
	// in a 16 MiB WAL segment cost about as much CPU as decoding it.
	if claimed := s.Meta.UncompressedSize; claimed > int64(cap(f.raw)) && claimed <= f.limit {
		f.raw = hugepage.Make(int(claimed + claimed/8))[:0] // room for the next segment too
	}
	if f.raw, err = s.DecompressInto(f.raw, f.limit, workers); err != nil {
		return batch.Records{}, fmt.Errorf("segment %s: %w", key, err)
	}
	if f.recs, err = s.ParseRecords(f.raw, f.recs); err != nil {
		return batch.Records{}, fmt.Errorf("segment %s: %w", key, err)
	}
	return f.recs, nil
}

// assemble writes the file carried by records first..last of generation
// gen to w, checking every record and the whole content.
func (f *fetcher) assemble(w *atomicFile, gen uint32, first, last uint64) error {
	next := first
	var off int64
	h := sha256.New()
	for _, seg := range f.names {
		g, lo, hi, _ := batch.ParseSegmentName(seg)
		if g != gen || hi < next || lo > last {
			continue
		}
		recs, err := f.records(seg)
		if err != nil {
			return err
		}
		for _, r := range recs.All() {
			if r.Seq < next || r.Seq > last {
				continue
			}
			if string(r.Key) != f.name || (r.Op != dirtree.OpPut && r.Op != dirtree.OpChunk) {
				return fmt.Errorf("record %d is %s %q, not part of %s", r.Seq, r.Op, r.Key, f.name)
			}
			hdr, payload, err := dirtree.ParseHeader(r.Data)
			if err != nil {
				return fmt.Errorf("record %d: %v", r.Seq, err)
			}
			if hdr.Size != f.size || hdr.Offset != off || (r.Op == dirtree.OpPut && (first != last || int64(len(payload)) != f.size)) {
				return fmt.Errorf("record %d: %s of %d bytes at offset %d (file size %d) does not continue the file at %d of %d",
					r.Seq, r.Op, len(payload), hdr.Offset, hdr.Size, off, f.size)
			}
			if _, err := w.Write(payload); err != nil {
				return err
			}
			h.Write(payload)
			off += int64(len(payload))
			next = r.Seq + 1
		}
		if next > last {
			break
		}
	}
	if next <= last {
		return fmt.Errorf("records %d-%d of generation %d are not in %s", next, last, gen, f.st)
	}
	if off != f.size || !bytes.Equal(h.Sum(nil), f.sum[:]) {
		return fmt.Errorf("records %d-%d give %d bytes with sha256 %x, the marker says %d bytes with sha256 %x",
			first, last, off, h.Sum(nil), f.size, f.sum)
	}
	return nil
}

// scan looks for the newest complete copy of the file with the marker's
// hash, newest segment first, and returns the records that carry it. Only
// sequence numbers and headers are kept: the content is read afterwards
// by assemble.
func (f *fetcher) scan() (gen uint32, first, last uint64, found bool, err error) {
	// A chunked file found from its last chunk backwards: the next record
	// down must be the chunk ending where this one started.
	var collecting bool
	var wantSeq uint64
	var wantEnd int64
	for i := len(f.names) - 1; i >= 0; i-- {
		g, _, _, _ := batch.ParseSegmentName(f.names[i])
		if collecting && g != gen {
			collecting = false
		}
		recs, err := f.records(f.names[i])
		if err != nil {
			return 0, 0, 0, false, err
		}
		for j := recs.Len() - 1; j >= 0; j-- {
			r := recs.At(j)
			var hdr dirtree.Header
			var payload []byte
			ok := string(r.Key) == f.name && (r.Op == dirtree.OpPut || r.Op == dirtree.OpChunk)
			if ok {
				hdr, payload, err = dirtree.ParseHeader(r.Data)
				ok = err == nil && hdr.Size == f.size
			}
			end := hdr.Offset + int64(len(payload))
			if collecting {
				if ok && r.Seq == wantSeq && r.Op == dirtree.OpChunk && end == wantEnd {
					if hdr.Offset == 0 {
						return gen, r.Seq, last, true, nil
					}
					wantSeq, wantEnd = r.Seq-1, hdr.Offset
					continue
				}
				collecting = false // broken chain: look on for another copy
			}
			if !ok || end != f.size || hdr.SHA256 != f.sum {
				continue
			}
			if hdr.Offset == 0 {
				return g, r.Seq, r.Seq, true, nil // a put, or a lone chunk
			}
			if r.Op == dirtree.OpPut {
				continue
			}
			collecting, gen, last, wantSeq, wantEnd = true, g, r.Seq, r.Seq-1, hdr.Offset
		}
	}
	return 0, 0, 0, false, nil
}

// atomicFile is DEST being written: a temp file beside it, renamed over it
// once complete and fsynced.
type atomicFile struct {
	dest string
	f    *os.File
	done bool
}

func newAtomicFile(dest string) (*atomicFile, error) {
	f, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".ferry-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create a temp file for %s: %w", dest, err)
	}
	return &atomicFile{dest: dest, f: f}, nil
}

func (a *atomicFile) Write(p []byte) (int, error) {
	n, err := a.f.Write(p)
	if err != nil {
		err = fmt.Errorf("write %s: %w", a.f.Name(), err)
	}
	return n, err
}

// reset empties the file for another attempt.
func (a *atomicFile) reset() error {
	if err := a.f.Truncate(0); err != nil {
		return err
	}
	_, err := a.f.Seek(0, io.SeekStart)
	return err
}

func (a *atomicFile) commit() error {
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", a.f.Name(), err)
	}
	if err := a.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", a.f.Name(), err)
	}
	if err := os.Rename(a.f.Name(), a.dest); err != nil {
		return fmt.Errorf("rename to %s: %w", a.dest, err)
	}
	a.done = true
	return fsutil.SyncDir(filepath.Dir(a.dest))
}

// abort removes the temp file unless commit renamed it.
func (a *atomicFile) abort() {
	if !a.done {
		a.f.Close()
		os.Remove(a.f.Name())
	}
}
