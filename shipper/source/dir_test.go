//go:build linux

package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/treetest"
	"github.com/ferry-dr/ferry/shipper"
)

// dirSink records what a Dir appends. fail, when set, is returned by
// AppendDurable after the records were taken: the spool has them but they
// may not be durable.
type dirSink struct {
	mu      sync.Mutex
	recs    []batch.Record
	cursor  []byte
	batches int
	durable int
	fail    error
	seq     uint64
}

// The source looks for AppendDurable by a type assertion: were the
// signatures to drift apart, the tests would lose it without a word.
var _ shipper.DurableSink = (*dirSink)(nil)

func (s *dirSink) AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range recs {
		s.seq++
		recs[i].Seq = s.seq // as the spool numbers them
		s.recs = append(s.recs, batch.Record{Seq: s.seq, Op: r.Op, Key: slices.Clone(r.Key), Data: slices.Clone(r.Data)})
	}
	s.cursor = slices.Clone(cursor)
	s.batches++
	return nil
}

func (s *dirSink) AppendDurable(ctx context.Context, recs []batch.Record, cursor []byte) error {
	if err := s.AppendBatch(ctx, recs, cursor); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.durable++
	return nil
}

func (s *dirSink) records() []batch.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recs)
}

func (s *dirSink) lastCursor() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cursor)
}

func parseDirHdr(t *testing.T, r batch.Record) (dirtree.Header, []byte) {
	t.Helper()
	h, rest, err := dirtree.ParseHeader(r.Data)
	if err != nil {
		t.Fatalf("record %s %q: %v", r.Op, r.Key, err)
	}
	return h, rest
}

// dirModel is a replica in memory: it applies dirtree records the way the
// dir applier does, and checks the stream's rules as it goes.
type dirModel struct {
	t       *testing.T
	nodes   treetest.Tree
	partial map[string][]byte
	seen    int
}

func newDirModel(t *testing.T) *dirModel {
	return &dirModel{t: t, nodes: treetest.Tree{".": {Kind: "dir"}}, partial: map[string][]byte{}}
}

func (m *dirModel) removeTree(p string) {
	for k := range m.nodes {
		if k == p || strings.HasPrefix(k, p+"/") {
			delete(m.nodes, k)
		}
	}
}

// apply applies the records not applied yet.
func (m *dirModel) apply(recs []batch.Record) {
	t := m.t
	for _, r := range recs[m.seen:] {
		key := string(r.Key)
		if key != "." {
			if par := dirParent(key); m.nodes[par].Kind != "dir" {
				t.Fatalf("%s %q comes before its directory %q exists as one", r.Op, key, par)
			}
		}
		switch r.Op {
		case dirtree.OpDel, dirtree.OpRmdir:
			m.removeTree(key)
		case dirtree.OpMkdir:
			h, _ := parseDirHdr(t, r)
			if m.nodes[key].Kind != "dir" {
				m.removeTree(key)
			}
			m.nodes[key] = treetest.Node{Kind: "dir", Mode: h.Mode, Mtime: h.Mtime}
		case dirtree.OpPut:
			h, b := parseDirHdr(t, r)
			if int64(len(b)) != h.Size || sha256.Sum256(b) != h.SHA256 {
				t.Fatalf("put %q: header does not match content", key)
			}
			m.removeTree(key)
			m.nodes[key] = treetest.Node{Kind: "file", Mode: h.Mode, Mtime: h.Mtime, Content: string(b)}
		case dirtree.OpAttr:
			h, _ := parseDirHdr(t, r)
			n := m.nodes[key]
			if n.Kind != "file" || int64(len(n.Content)) != h.Size || sha256.Sum256([]byte(n.Content)) != h.SHA256 {
				t.Fatalf("attr %q for content the replica does not have", key)
			}
			n.Mode, n.Mtime = h.Mode, h.Mtime
			m.nodes[key] = n
		case dirtree.OpSymlink:
			h, b := parseDirHdr(t, r)
			m.removeTree(key)
			m.nodes[key] = treetest.Node{Kind: "symlink", Mtime: h.Mtime, Target: string(b)}
		case dirtree.OpChunk:
			h, b := parseDirHdr(t, r)
			if h.Offset == 0 {
				m.partial = map[string][]byte{}
			}
			buf, ok := m.partial[key]
			if !ok && h.Offset != 0 || int64(len(buf)) != h.Offset {
				t.Fatalf("chunk %q at offset %d does not continue %d bytes", key, h.Offset, len(buf))
			}
			buf = append(buf, b...)
			m.partial = map[string][]byte{key: buf}
			if int64(len(buf)) == h.Size {
				if sha256.Sum256(buf) != h.SHA256 {
					t.Fatalf("chunked %q: assembled content does not match the last chunk's hash", key)
				}
				m.removeTree(key)
				m.nodes[key] = treetest.Node{Kind: "file", Mode: h.Mode, Mtime: h.Mtime, Content: string(buf)}
				delete(m.partial, key)
			}
		case dirtree.OpBaselineBegin, dirtree.OpBaselineEnd:
		case dirtree.OpAppend, dirtree.OpDelta:
			m.applyDelta(r)
		case dirtree.OpRename:
			m.rename(key, r)
		default:
			t.Fatalf("unknown op %q", r.Op)
		}
		if r.Op != dirtree.OpChunk {
			m.partial = map[string][]byte{}
		}
	}
	m.seen = len(recs)
}

// walkDirTree describes the tree at root the way dirModel does, skipping
// the names in skip.
func walkDirTree(t *testing.T, root string, skip ...string) treetest.Tree {
	t.Helper()
	return treetest.Read(t, root, treetest.Options{
		Mode:  0o7777,
		Mtime: time.Nanosecond,
		Skip: func(rel string, d fs.DirEntry) bool {
			return slices.Contains(skip, d.Name()) || slices.Contains(skip, rel)
		},
	})
}

func diffDirNodes(tree, model treetest.Tree) string {
	return treetest.Diff("tree", tree, "model", model)
}

// dirRunning is a Dir running in the background.
type dirRunning struct {
	*Dir
	sink   *dirSink
	cancel context.CancelFunc
	done   chan error
}

// startConverged starts src with a new sink and model, and waits for
// what its first scan ships.
func startConverged(t *testing.T, src *Dir) (*dirSink, *dirRunning, *dirModel) {
	t.Helper()
	sink := &dirSink{}
	r := startDirSource(t, src, sink)
	m := newDirModel(t)
	r.converge(t, m)
	return sink, r, m
}

func startDirSource(t *testing.T, src *Dir, sink *dirSink) *dirRunning {
	t.Helper()
	if src.Debounce == 0 {
		src.Debounce = 30 * time.Millisecond
	}
	if src.Log == nil {
		src.Log = quiet
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &dirRunning{Dir: src, sink: sink, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, sink) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *dirRunning) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Dir.Run did not return")
		return nil
	}
}

// converge waits until the records shipped so far, applied to the model,
// describe the tree at root.
func (r *dirRunning) converge(t *testing.T, m *dirModel, skip ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var d string
	for time.Now().Before(deadline) {
		select {
		case err := <-r.done:
			t.Fatalf("Dir.Run returned early: %v", err)
		default:
		}
		m.apply(r.sink.records())
		if d = diffDirNodes(walkDirTree(t, r.Root, skip...), m.nodes); d == "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the shipped records do not describe the tree:\n%s", d)
}

func dirWrite(t *testing.T, p string, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func dirTestTree(t *testing.T) (root, outside string) {
	base := t.TempDir()
	root, outside = filepath.Join(base, "tree"), filepath.Join(base, "outside")
	dirWrite(t, filepath.Join(outside, "secret"), "never shipped\n", 0o600)
	dirWrite(t, filepath.Join(root, "a/b/c.txt"), "c\n", 0o644)
	dirWrite(t, filepath.Join(root, "a/x.bin"), "\x00\xff\x01binary", 0o600)
	dirWrite(t, filepath.Join(root, "empty"), "", 0o444)
	dirWrite(t, filepath.Join(root, "skip.tmp"), "excluded\n", 0o644)
	dirWrite(t, filepath.Join(root, "locks/mbox.lock"), "excluded dir\n", 0o644)
	for name, target := range map[string]string{"out-file": filepath.Join(outside, "secret"), "out-dir": outside, "rel": "a/b/c.txt", "dangling": "no/such"} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	return root, outside
}

func dirSourceFor(t *testing.T, root string) *Dir {
	return &Dir{Root: root, SpoolDir: t.TempDir(), Exclude: []string{"*.tmp", "locks"}}
}

// The first scan ships the whole tree, parents before children, symlinks
// as links (never followed, also not into a linked directory), excluded
// names not at all.
func TestDirSourceBaseline(t *testing.T) {
	root, _ := dirTestTree(t)
	sink := &dirSink{}
	src := startDirSource(t, dirSourceFor(t, root), sink)
	m := newDirModel(t)
	src.converge(t, m, "skip.tmp", "locks")
	for _, r := range sink.records() {
		if strings.HasPrefix(string(r.Key), "out-dir/") || bytes.Contains(r.Data, []byte("never shipped")) {
			t.Fatalf("shipped something from outside the tree: %s %q", r.Op, r.Key)
		}
	}
	if n := m.nodes["out-dir"]; n.Kind != "symlink" || !strings.HasSuffix(n.Target, "outside") {
		t.Fatalf("out-dir shipped as %+v", n)
	}
	if st := src.Status(); !st.Baseline || st.Scans != 1 || st.Watched != 3 {
		t.Fatalf("status %+v: want baseline done, 1 scan, 3 directories watched (root, a, a/b)", st)
	}
}

// A burst of rewrites of one file ships its last state, once.
func TestDirSourceCoalesces(t *testing.T) {
	root, _ := dirTestTree(t)
	sink := &dirSink{}
	cfg := dirSourceFor(t, root)
	cfg.Debounce = 300 * time.Millisecond
	src := startDirSource(t, cfg, sink)
	m := newDirModel(t)
	src.converge(t, m, "skip.tmp", "locks")
	before := len(sink.records())
	p := filepath.Join(root, "a/b/c.txt")
	// On a loaded machine the writer itself can stall for longer than the
	// debounce; each such stall legitimately ends a burst. Count them so the
	// assertion stays exact instead of flaky.
	stalls, last := 0, time.Now()
	for i := range 200 {
		if err := os.WriteFile(p, fmt.Appendf(nil, "version %d\n", i), 0o644); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if now.Sub(last) >= cfg.Debounce/2 {
			stalls++
		}
		last = now
	}
	src.converge(t, m, "skip.tmp", "locks")
	puts := 0
	for _, r := range sink.records()[before:] {
		if string(r.Key) == "a/b/c.txt" {
			puts++
		}
	}
	if puts < 1 || puts > 1+stalls {
		t.Fatalf("200 rewrites shipped %d records for the file; want 1 (writer stalled %d times)", puts, stalls)
	}
}

// A large file goes as chunks under the record size limit; a chmod of it
// goes as an attr, without its content.
func TestDirSourceChunksLargeFile(t *testing.T) {
	root, _ := dirTestTree(t)
	content := strings.Repeat("0123456789abcdef", 200<<10/16) + "tail"
	dirWrite(t, filepath.Join(root, "big"), content, 0o640)
	sink := &dirSink{}
	cfg := dirSourceFor(t, root)
	cfg.ChunkSize = 64 << 10
	src := startDirSource(t, cfg, sink)
	m := newDirModel(t)
	src.converge(t, m, "skip.tmp", "locks")
	var offsets []int64
	for _, r := range sink.records() {
		if string(r.Key) == "big" {
			if r.Op != dirtree.OpChunk || r.FramedSize() > 65<<10 {
				t.Fatalf("big went as %s of %d bytes", r.Op, r.FramedSize())
			}
			h, _ := parseDirHdr(t, r)
			offsets = append(offsets, h.Offset)
		}
	}
	if want := []int64{0, 64 << 10, 128 << 10, 192 << 10}; !slices.Equal(offsets, want) {
		t.Fatalf("chunk offsets %v, want %v", offsets, want)
	}
	before := len(sink.records())
	if err := os.Chmod(filepath.Join(root, "big"), 0o600); err != nil {
		t.Fatal(err)
	}
	src.converge(t, m, "skip.tmp", "locks")
	rs := sink.records()[before:]
	if len(rs) != 1 || rs[0].Op != dirtree.OpAttr || len(rs[0].Data) != dirtree.HeaderLen {
		t.Fatalf("chmod shipped %d records (%v); want one attr without content", len(rs), rs)
	}
}

// A file rewritten in place while it is read is never shipped torn. The
// writer rewrites it page by page, front to back, each pass with a higher
// version number, so every state the file really holds reads as
// non-increasing versions from start to end (newer pages first). A read
// that a pass overtook shows a lower version before a higher one.
func TestDirSourceNeverShipsTorn(t *testing.T) {
	for _, pages := range []int{12, 75} { // a put, and a chunked file
		t.Run(fmt.Sprint(pages), func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, "busy")
			size := pages * 4096
			dirWrite(t, p, strings.Repeat("\x00", size), 0o644)
			sink := &dirSink{}
			cfg := &Dir{Root: root, SpoolDir: t.TempDir(), ChunkSize: 64 << 10, Debounce: 2 * time.Millisecond, MaxDelay: 10 * time.Millisecond}
			src := startDirSource(t, cfg, sink)
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			page := make([]byte, 4096)
			v := uint16(0)
			for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
				v++
				for i := 0; i < len(page); i += 2 {
					binary.BigEndian.PutUint16(page[i:], v)
				}
				for pg := range pages {
					if _, err := f.WriteAt(page, int64(pg*4096)); err != nil {
						t.Fatal(err)
					}
					if pg%8 == 0 {
						time.Sleep(50 * time.Microsecond) // let reads interleave
					}
				}
				// A pause past Settle now and then lets the source start a
				// read that the next pass then runs into.
				time.Sleep(time.Duration(v%4) * 12 * time.Millisecond)
			}
			f.Close()
			m := newDirModel(t)
			src.converge(t, m)
			versions := 0
			replay := newDirModel(t)
			all := sink.records()
			for i, r := range all {
				replay.apply(all[:i+1])
				if string(r.Key) != "busy" {
					continue
				}
				if h, b := parseDirHdr(t, r); r.Op == dirtree.OpChunk && h.Offset+int64(len(b)) != h.Size {
					continue // not the last chunk: nothing published yet
				}
				versions++
				c := []byte(replay.nodes["busy"].Content)
				if len(c) != size {
					t.Fatalf("shipped %d bytes, the file always holds %d", len(c), size)
				}
				for k := 2; k < len(c); k += 2 {
					if binary.BigEndian.Uint16(c[k:]) > binary.BigEndian.Uint16(c[k-2:]) {
						t.Fatalf("shipped a torn version: version %d at byte %d follows version %d",
							binary.BigEndian.Uint16(c[k:]), k, binary.BigEndian.Uint16(c[k-2:]))
					}
				}
			}
			if got := []byte(m.nodes["busy"].Content); binary.BigEndian.Uint16(got) != v || binary.BigEndian.Uint16(got[size-2:]) != v {
				t.Fatalf("final version shipped is %d..%d, the file holds %d", binary.BigEndian.Uint16(got), binary.BigEndian.Uint16(got[size-2:]), v)
			}
			t.Logf("%d passes written, %d consistent versions shipped", v, versions)
		})
	}
}

// A file that grows while it is read arrives whole; every version shipped
// on the way is a prefix of it.
func TestDirSourceGrowingFile(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "grow.log")
	sink := &dirSink{}
	cfg := &Dir{Root: root, SpoolDir: t.TempDir(), ChunkSize: 64 << 10, Debounce: 2 * time.Millisecond, MaxDelay: 10 * time.Millisecond}
	src := startDirSource(t, cfg, sink)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := 0; len(all) < 400<<10; i++ {
		line := fmt.Appendf(nil, "line %06d %s\n", i, strings.Repeat("x", i%200))
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
		all = append(all, line...)
		if i%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	f.Close()
	m := newDirModel(t)
	src.converge(t, m)
	replay := newDirModel(t)
	rs := sink.records()
	for i := range rs {
		replay.apply(rs[:i+1])
		if n, ok := replay.nodes["grow.log"]; ok && !bytes.HasPrefix(all, []byte(n.Content)) {
			t.Fatalf("shipped %d bytes that are not a prefix of what was written", len(n.Content))
		}
	}
}

// A restart ships only what changed while the source was stopped.
func TestDirSourceRestartShipsDifferences(t *testing.T) {
	root, _ := dirTestTree(t)
	cfg := dirSourceFor(t, root)
	sink := &dirSink{}
	src := startDirSource(t, cfg, sink)
	m := newDirModel(t)
	src.converge(t, m, "skip.tmp", "locks")
	if err := src.stop(t); err != nil {
		t.Fatal(err)
	}

	dirWrite(t, filepath.Join(root, "a/x.bin"), "changed", 0o600)
	dirWrite(t, filepath.Join(root, "new.txt"), "new", 0o644)
	if err := os.Chmod(filepath.Join(root, "empty"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "a/b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "rel")); err != nil {
		t.Fatal(err)
	}

	again := &Dir{Root: root, SpoolDir: cfg.SpoolDir, Exclude: cfg.Exclude, Cursor: sink.lastCursor()}
	src2 := startDirSource(t, again, sink)
	before := len(sink.records())
	src2.converge(t, m, "skip.tmp", "locks")
	var got []string
	for _, r := range sink.records()[before:] {
		if r.Op != dirtree.OpMkdir {
			got = append(got, r.Op+" "+string(r.Key))
		}
	}
	slices.Sort(got)
	want := []string{"attr empty", "del rel", "put a/x.bin", "put new.txt", "rmdir a/b"}
	if !slices.Equal(got, want) {
		t.Fatalf("after a restart shipped %q; want %q (plus directory times)", got, want)
	}
}

// After lost events (an inotify queue overflow) a rescan ships the
// differences.
func TestDirSourceOverflowRescans(t *testing.T) {
	root, _ := dirTestTree(t)
	sink := &dirSink{}
	src := startDirSource(t, dirSourceFor(t, root), sink)
	m := newDirModel(t)
	src.converge(t, m, "skip.tmp", "locks")
	src.mu.Lock()
	r := src.run
	src.mu.Unlock()
	// Deaf: no watch left, so the changes below raise no event.
	r.mu.Lock()
	for p := range r.watched {
		r.w.Remove(r.abs(p))
	}
	r.mu.Unlock()
	before := len(sink.records())
	dirWrite(t, filepath.Join(root, "a/b/c.txt"), "unseen change\n", 0o644)
	dirWrite(t, filepath.Join(root, "a/new/deep/file"), "unseen new file\n", 0o644)
	time.Sleep(100 * time.Millisecond)
	if n := len(sink.records()); n != before {
		t.Fatalf("%d records shipped while deaf", n-before)
	}
	r.rescan <- struct{}{}
	src.converge(t, m, "skip.tmp", "locks")
	if st := src.Status(); st.Scans != 2 {
		t.Fatalf("status %+v: want 2 scans", st)
	}
	// And the new watcher hears the tree again.
	dirWrite(t, filepath.Join(root, "a/new/deep/file"), "heard\n", 0o644)
	src.converge(t, m, "skip.tmp", "locks")
}

// A record is never shipped for a path below a directory that has become
// a symlink: the source opens paths without following symlinks.
func TestDirSourceDoesNotFollowReplacedDirectory(t *testing.T) {
	root, outside := dirTestTree(t)
	dirWrite(t, filepath.Join(outside, "b/c.txt"), "outside content\n", 0o644)
	sink := &dirSink{}
	src := startDirSource(t, dirSourceFor(t, root), sink)
	m := newDirModel(t)
	src.converge(t, m, "skip.tmp", "locks")
	src.stop(t)
	// Replace a with a symlink to outside (which holds b/c.txt too), and
	// ship a/b/c.txt alone, as if its event came first.
	os.RemoveAll(filepath.Join(root, "a"))
	if err := os.Symlink(outside, filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	r, err := (&Dir{Root: root, SpoolDir: src.SpoolDir, Log: quiet, Cursor: sink.lastCursor()}).start()
	if err != nil {
		t.Fatal(err)
	}
	defer r.rootDir.Close()
	defer r.idx.close()
	before := len(sink.records())
	if err := r.flush(context.Background(), sink, []string{"a/b/c.txt"}); err != nil {
		t.Fatal(err)
	}
	rs := sink.records()[before:]
	if len(rs) != 1 || rs[0].Op != dirtree.OpDel || string(rs[0].Key) != "a/b/c.txt" {
		t.Fatalf("shipped %v; want only del a/b/c.txt", rs)
	}
}

// The index may claim a state only once its records are durable: when
// AppendDurable fails, a restart ships the change again.
func TestDirSourceIndexWaitsForDurability(t *testing.T) {
	root, _ := dirTestTree(t)
	cfg := dirSourceFor(t, root)
	sink := &dirSink{}
	src := startDirSource(t, cfg, sink)
	src.converge(t, newDirModel(t), "skip.tmp", "locks")
	src.stop(t)

	failing := &dirSink{fail: errors.New("spool failed")}
	again := &Dir{Root: root, SpoolDir: cfg.SpoolDir, Exclude: cfg.Exclude, Cursor: sink.lastCursor()}
	dirWrite(t, filepath.Join(root, "a/x.bin"), "lost in a crash", 0o600)
	run2 := startDirSource(t, again, failing)
	select {
	case err := <-run2.done:
		run2.done <- err
		if err == nil || !strings.Contains(err.Error(), "spool failed") {
			t.Fatalf("Run with a failing sink: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not fail")
	}
	if len(failing.records()) == 0 {
		t.Fatal("nothing was offered to the failing sink")
	}

	third := &Dir{Root: root, SpoolDir: cfg.SpoolDir, Exclude: cfg.Exclude, Cursor: sink.lastCursor()}
	sink3 := &dirSink{}
	m := newDirModel(t)
	m.apply(sink.records()) // the replica as the first run left it
	m.seen = 0              // and now the third run's records
	startDirSource(t, third, sink3).converge(t, m, "skip.tmp", "locks")
	found := false
	for _, r := range sink3.records() {
		found = found || (r.Op == dirtree.OpPut && string(r.Key) == "a/x.bin")
	}
	if !found {
		t.Fatal("the change whose records were not durable was not shipped again")
	}
}

// An index ahead of the spool's cursor (records lost with fsync off) makes
// the source ship the whole tree again.
func TestDirSourceIndexAheadOfSpool(t *testing.T) {
	root, _ := dirTestTree(t)
	cfg := dirSourceFor(t, root)
	sink := &dirSink{}
	src := startDirSource(t, cfg, sink)
	src.converge(t, newDirModel(t), "skip.tmp", "locks")
	src.stop(t)
	n := len(sink.records())
	again := &Dir{Root: root, SpoolDir: cfg.SpoolDir, Exclude: cfg.Exclude, Cursor: nil}
	sink2 := &dirSink{}
	startDirSource(t, again, sink2).converge(t, newDirModel(t), "skip.tmp", "locks")
	if got := len(sink2.records()); got < n-1 {
		t.Fatalf("with the spool behind the index the source shipped %d records; the tree takes %d", got, n)
	}
}

func TestDirIndexRoundTripAndDamage(t *testing.T) {
	dir := t.TempDir()
	x := newDirIndex(dir)
	if _, err := x.open(); err != nil {
		t.Fatal(err)
	}
	x.set(".", &dirEntry{Kind: dirKindDir, Mode: 0o755, Mtime: 5})
	x.set("a", &dirEntry{Kind: dirKindDir, Mode: 0o700})
	x.set("a/f", &dirEntry{Kind: dirKindFile, Mode: 0o644, Size: 3, Ino: 9, Ctime: 7, Hash: sha256.Sum256([]byte("abc"))})
	x.set("l", &dirEntry{Kind: dirKindLink, Target: "/etc", Pending: true})
	x.batches = 42
	if err := x.persist(); err != nil {
		t.Fatal(err)
	}
	if err := x.logPending(43, []string{"a", "new\nline"}); err != nil {
		t.Fatal(err)
	}
	x.close()
	// A torn frame after the good one is ignored.
	f, _ := os.OpenFile(filepath.Join(dir, dirPendingFile), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0, 0, 1, 0, 1, 2})
	f.Close()

	y := newDirIndex(dir)
	exists, err := y.open()
	if err != nil || !exists {
		t.Fatalf("open: %v, exists %v", err, exists)
	}
	defer y.close()
	if y.batches != 42 || len(y.entries) != 5 {
		t.Fatalf("batches %d, %d entries", y.batches, len(y.entries))
	}
	if e := y.get("a/f"); !e.Pending || e.Hash != sha256.Sum256([]byte("abc")) || e.Ino != 9 {
		t.Fatalf("a/f after reload: %+v (pending: a was logged, so everything under it is)", e)
	}
	if e := y.get("new\nline"); e == nil || !e.Pending || e.Kind != dirKindUnknown {
		t.Fatalf("a path only in the pending log: %+v", e)
	}
	if e := y.get("."); e.Pending || e.Mtime != 5 {
		t.Fatalf("root: %+v", e)
	}
	if fi, _ := os.Stat(filepath.Join(dir, dirPendingFile)); fi.Size() == 0 {
		t.Fatalf("pending log lost its good frame")
	}

	raw, _ := os.ReadFile(filepath.Join(dir, dirIndexFile))
	raw[40] ^= 0xff
	os.WriteFile(filepath.Join(dir, dirIndexFile), raw, 0o644)
	_, err = newDirIndex(dir).open()
	if err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("open of a damaged index: %v", err)
	}
}

func TestDirSourceRefusesBadConfig(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct {
		src  *Dir
		want string
	}{
		{&Dir{Root: root, SpoolDir: filepath.Join(root, "spool")}, "must not be inside the tree"},
		{&Dir{Root: root, SpoolDir: t.TempDir(), Exclude: []string{"[x"}}, "exclude pattern"},
		{&Dir{Root: filepath.Join(root, "missing"), SpoolDir: t.TempDir()}, "missing"},
		{&Dir{Root: root}, "no spool directory"},
	} {
		err := c.src.Run(context.Background(), &dirSink{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: Run returned %v, want an error about %q", c.src, err, c.want)
		}
	}
}

// Through a real Shipper: the source's records land in sealed segments and
// the cursor it stores comes back from the spool after a restart.
func TestDirSourceIntoShipper(t *testing.T) {
	root, _ := dirTestTree(t)
	cfg, st := shipperConfig(t)
	cfg.Spool.Policy = batch.FlushPolicy{MaxAge: 20 * time.Millisecond}
	sh := startShipper(t, cfg)
	src := &Dir{Root: root, SpoolDir: cfg.Spool.Dir, Exclude: []string{"*.tmp", "locks"}, Debounce: 20 * time.Millisecond, Log: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sh) }()
	deadline := time.Now().Add(10 * time.Second)
	for !src.Status().Baseline && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	drain(t, sh)
	var recs []batch.Record
	for _, s := range batchtest.ReadStore(t, st, "app") {
		recs = append(recs, s.Records...)
	}
	m := newDirModel(t)
	m.apply(recs)
	if d := diffDirNodes(walkDirTree(t, root, "skip.tmp", "locks"), m.nodes); d != "" {
		t.Fatalf("segments do not describe the tree:\n%s", d)
	}
	var c dirCursor
	if cur := sh.Spool().Cursor(); !bytes.Contains(cur, []byte(`"dir_batches"`)) {
		t.Fatalf("spool cursor %q", cur)
	} else if _, err := fmt.Sscanf(string(cur), `{"dir_batches":%d}`, &c.Batches); err != nil || c.Batches == 0 {
		t.Fatalf("spool cursor %q", cur)
	}
}

// A directory renamed inside the tree keeps being followed under its new
// name (inotify would report it under the old one if its watches stayed).
func TestDirSourceFollowsRenamedDirectory(t *testing.T) {
	root, _ := dirTestTree(t)
	sink := &dirSink{}
	src := startDirSource(t, dirSourceFor(t, root), sink)
	m := newDirModel(t)
	src.converge(t, m, "skip.tmp", "locks")
	if err := os.Rename(filepath.Join(root, "a"), filepath.Join(root, "moved")); err != nil {
		t.Fatal(err)
	}
	src.converge(t, m, "skip.tmp", "locks")
	dirWrite(t, filepath.Join(root, "moved/b/c.txt"), "changed after the move\n", 0o644)
	dirWrite(t, filepath.Join(root, "moved/b/new.txt"), "new after the move\n", 0o644)
	src.converge(t, m, "skip.tmp", "locks")
	if err := os.Rename(filepath.Join(root, "moved/b"), filepath.Join(root, "b-again")); err != nil {
		t.Fatal(err)
	}
	dirWrite(t, filepath.Join(root, "b-again/c.txt"), "and after the second move\n", 0o644)
	src.converge(t, m, "skip.tmp", "locks")
	for _, r := range sink.records() {
		if strings.HasPrefix(string(r.Key), "a/") && r.Op != dirtree.OpDel && r.Op != dirtree.OpRmdir && r.Op != dirtree.OpMkdir && bytes.Contains(r.Data, []byte("after")) {
			t.Fatalf("a change after the move was shipped under the old name: %s %q", r.Op, r.Key)
		}
	}
}

// A pushed file is encoded exactly as the dir: source ships the same file:
// a put up to one chunk, 1 MiB chunks beyond.
func TestFileRecordsMatchDirSource(t *testing.T) {
	root := t.TempDir()
	sizes := map[string]int{"empty": 0, "small": 100, "one-chunk": 1<<20 - 200, "chunks": 3<<20 + 5}
	for name, n := range sizes {
		data := bytes.Repeat([]byte(name[:1]), n)
		if err := os.WriteFile(filepath.Join(root, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sink, _, _ := startConverged(t, &Dir{Root: root, SpoolDir: t.TempDir()})
	shipped := map[string][]batch.Record{}
	for _, r := range sink.records() {
		shipped[string(r.Key)] = append(shipped[string(r.Key)], r)
	}
	for name, n := range sizes {
		fi, err := os.Stat(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		recs, _, err := dirtree.FileRecords(name, bytes.Repeat([]byte(name[:1]), n), 0o600, fi.ModTime().UnixNano(), 16<<20)
		if err != nil {
			t.Fatal(err)
		}
		want := shipped[name]
		if len(recs) != len(want) {
			t.Fatalf("%s: %d records, the dir source shipped %d", name, len(recs), len(want))
		}
		for i := range recs {
			if recs[i].Op != want[i].Op || !bytes.Equal(recs[i].Key, want[i].Key) || !bytes.Equal(recs[i].Data, want[i].Data) {
				t.Fatalf("%s record %d: %s of %d bytes, the dir source shipped %s of %d bytes", name, i,
					recs[i].Op, len(recs[i].Data), want[i].Op, len(want[i].Data))
			}
		}
	}
}
