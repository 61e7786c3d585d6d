package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

// bundledStore reads what a bundle-writing ship left in a dir store.
type bundledStore struct {
	t  *testing.T
	st *dir.Store
}

func openBundledStore(t *testing.T, root string) *bundledStore {
	t.Helper()
	st, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return &bundledStore{t: t, st: st}
}

// bundles lists every bundle in the store, opened and its index checked.
func (b *bundledStore) bundles() map[string]*batch.Bundle {
	b.t.Helper()
	ctx := context.Background()
	out := map[string]*batch.Bundle{}
	var writers []string
	if err := b.st.ListDirs(ctx, catalog.BundlesDir, func(name string) error {
		writers = append(writers, strings.TrimSuffix(strings.TrimPrefix(name, catalog.BundlesDir), "/"))
		return nil
	}); err != nil {
		b.t.Fatal(err)
	}
	for _, w := range writers {
		err := b.st.List(ctx, catalog.WriterDir(w), "", func(o store.Object) error {
			if _, _, ok := catalog.ParseBundleKey(o.Name); !ok {
				return fmt.Errorf("%s in %s is not a bundle name", o.Name, catalog.WriterDir(w))
			}
			rc, err := b.st.Get(ctx, o.Name)
			if err != nil {
				return err
			}
			defer rc.Close()
			data, err := io.ReadAll(rc)
			if err != nil {
				return err
			}
			bd, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
			if err != nil {
				return fmt.Errorf("bundle %s: %w", o.Name, err)
			}
			out[o.Name] = bd
			return nil
		})
		if err != nil {
			b.t.Fatal(err)
		}
	}
	return out
}

// streamData is stream's records, from its own segments and from its
// parts in every bundle (OpenPart: hash and metadata checked against the
// index), merged by seq: one chain from seq 1, no gap, no overlap. parts
// counts its parts.
func (b *bundledStore) streamData(stream string, bundles map[string]*batch.Bundle) (data []byte, parts int, err error) {
	ctx := context.Background()
	type seg struct {
		meta batch.Meta
		hash string
		recs []batch.Record
	}
	var segs []seg
	add := func(name string, raw []byte) error {
		s, recs, err := batch.Decode(raw, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		var rs []batch.Record
		for _, r := range recs.All() {
			rs = append(rs, batch.Record{Seq: r.Seq, Data: bytes.Clone(r.Data)})
		}
		segs = append(segs, seg{meta: s.Meta, hash: s.Hash, recs: rs})
		return nil
	}
	var names []string
	if err := b.st.List(ctx, batch.StreamDir(stream), "", func(o store.Object) error {
		names = append(names, o.Name)
		return nil
	}); err != nil {
		return nil, 0, err
	}
	for _, n := range names {
		rc, err := b.st.Get(ctx, n)
		if err != nil {
			return nil, 0, err
		}
		raw, err := batch.ReadAll(rc, 1<<30)
		rc.Close()
		if err != nil {
			return nil, 0, err
		}
		if err := add(n, raw); err != nil {
			return nil, 0, err
		}
	}
	for key, bd := range bundles {
		i, ok := bd.Find(stream)
		if !ok {
			continue
		}
		_, raw, err := bd.OpenPart(i, nil)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", key, err)
		}
		if err := add(key+"#"+stream, raw); err != nil {
			return nil, 0, err
		}
		parts++
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].meta.FirstSeq < segs[j].meta.FirstSeq })
	next, prev := uint64(1), batch.ZeroHash
	for _, s := range segs {
		if s.meta.FirstSeq != next || s.meta.PrevSHA256 != prev {
			return nil, parts, fmt.Errorf("segment %s: starts at seq %d after %d, prev %.12s after %.12s (gap, overlap or broken chain)",
				s.meta.Name(), s.meta.FirstSeq, next-1, s.meta.PrevSHA256, prev)
		}
		for _, r := range s.recs {
			data = append(data, r.Data...)
			if data[len(data)-1] != '\n' {
				data = append(data, '\n')
			}
		}
		next, prev = s.meta.LastSeq+1, s.hash
	}
	return data, parts, nil
}

// bundleRig is a many-stream ship with bundles on, into a dir store.
type bundleRig struct {
	t       *testing.T
	dir     string
	cfg     string
	store   string
	spool   string
	rng     *rand.Rand
	mu      sync.Mutex
	writers map[string]*logWriter
}

func newBundleRig(t *testing.T, streams int, extra string) *bundleRig {
	t.Helper()
	rng := seededRand(t)
	d := t.TempDir()
	logs := filepath.Join(d, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &bundleRig{t: t, dir: d, cfg: filepath.Join(d, "ship.toml"), store: filepath.Join(d, "store"), spool: filepath.Join(d, "spool"),
		writers: map[string]*logWriter{}, rng: rng}
	conf := fmt.Sprintf(`store = %q
[ship]
spool = %q
max_age = "2s"
lease_ttl = "3s"
bundle_interval = "200ms"
%s
[[streams]]
name = "{base}"
source = "tail:%s"
scan_interval = "100ms"
`, r.store, r.spool, extra, filepath.Join(logs, "*.log"))
	if err := os.WriteFile(r.cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range streams {
		name := fmt.Sprintf("s-%03d", i)
		r.writers[name] = newLogWriter(t, filepath.Join(logs, name+".log"), rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
	}
	return r
}

// burst appends a burst of lines to every file.
func (r *bundleRig) burst() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, w := range r.writers {
		if err := w.burst(); err != nil {
			r.t.Fatalf("%s: %v", n, err)
		}
	}
}

// waitStored waits until the store holds every line written to every
// file, each once, in order, and returns the bundles it holds.
func (r *bundleRig) waitStored(alive func()) map[string]*batch.Bundle {
	r.t.Helper()
	bs := openBundledStore(r.t, r.store)
	var bundles map[string]*batch.Bundle
	ferrytest.Eventually(r.t, 90*time.Second, "every line of every stream in the store", func() (bool, string) {
		alive()
		bundles = bs.bundles()
		for n, w := range r.writers {
			want, _ := w.written()
			got, _, err := bs.streamData(n, bundles)
			if err != nil {
				return false, n + ": " + err.Error()
			}
			if !bytes.HasPrefix(want, got) {
				r.t.Fatalf("%s: the store's lines are not a prefix of the file's: %s", n, describeDiff(want, got))
			}
			if len(got) != len(want) {
				return false, fmt.Sprintf("%s: %d of %d bytes", n, len(got), len(want))
			}
		}
		return true, ""
	})
	return bundles
}

// TestShipBundles runs 100 streams through one ship with bundles on into
// a dir store, killed with -9 three times on the way: the store holds bundles
// (each opened, and every part opened against its index) and one bundle
// marker per stream and ship start, and every stream's segments and
// parts together hold exactly its file's lines, once each, in one chain.
func TestShipBundles(t *testing.T) {
	t.Parallel()
	r := newBundleRig(t, 100, "")
	r.burst()
	var procs []*ferrytest.Process
	t.Cleanup(func() {
		if t.Failed() {
			for i, p := range procs {
				t.Logf("shipper #%d stderr:\n%s", i+1, ferrytest.Clip(p.Stderr()))
			}
		}
	})
	start := func() *ferrytest.Process {
		p := startFerry(t, nil, "ship", "--config", r.cfg)
		procs = append(procs, p)
		return p
	}
	p := start()
	alive := func() {
		if p.Exited() {
			t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
	}
	bs := openBundledStore(t, r.store)
	ferrytest.Eventually(t, 60*time.Second, "a bundle in the store", func() (bool, string) {
		alive()
		return len(bs.bundles()) > 0, "none yet"
	})
	for k := range 3 {
		for range 3 + r.rng.IntN(5) {
			r.burst()
			time.Sleep(time.Duration(50+r.rng.IntN(150)) * time.Millisecond)
		}
		p.Kill9()
		t.Logf("kill -9 #%d", k+1)
		r.burst()
		p = start()
	}
	for range 5 {
		r.burst()
		time.Sleep(100 * time.Millisecond)
	}
	bundles := r.waitStored(alive)
	parts := 0
	for _, bd := range bundles {
		parts += len(bd.Parts)
	}
	for n := range r.writers {
		_, np, _ := bs.streamData(n, bundles)
		if np == 0 {
			t.Errorf("stream %s has no part in any bundle", n)
		}
		ms, err := catalog.ListBundleMarkers(context.Background(), bs.st, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) < 1 || len(ms) > 4 {
			t.Errorf("stream %s: %d bundle markers, want one per ship start that bundled it (1 to 4)", n, len(ms))
		}
	}
	t.Logf("%d bundles, %d parts, for 100 streams", len(bundles), parts)
	if len(bundles) >= parts {
		t.Fatalf("%d bundles for %d parts: the streams did not share bundles", len(bundles), parts)
	}
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
	}
}

// TestShipBundlesKilledAtEachStep kills the ship with -9 at each step of
// its first bundle (FERRY_BUNDLE_KILL), restarts it, and checks every
// stream in the store: nothing lost, nothing twice.
func TestShipBundlesKilledAtEachStep(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"written", "renamed", "committed", "marked", "put"} {
		t.Run(step, func(t *testing.T) {
			r := newBundleRig(t, 5, "")
			r.burst()
			killed := ferrytest.Cmd{Bin: ferryBin, Env: append(os.Environ(), "FERRY_BUNDLE_KILL="+step)}.Start(t, nil, "ship", "--config", r.cfg)
			code, ok := killed.Wait(60 * time.Second)
			if !ok || code == 0 {
				t.Fatalf("ship with FERRY_BUNDLE_KILL=%s: exit %d (ended %v), want killed:\n%s", step, code, ok, killed)
			}
			r.burst()
			p := startFerry(t, nil, "ship", "--config", r.cfg)
			r.burst()
			r.waitStored(func() {
				if p.Exited() {
					t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
				}
			})
			if code := p.Terminate(30 * time.Second); code != 0 {
				t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
			}
		})
	}
}

// TestShipBundlesTurnedOff kills a bundle-writing ship right after its
// first bundle is committed (FERRY_BUNDLE_KILL=committed), then restarts
// it with bundle_interval removed: that bundle is still put and its parts
// adopted by their streams, which seal everything after them alone.
func TestShipBundlesTurnedOff(t *testing.T) {
	t.Parallel()
	r := newBundleRig(t, 5, "")
	r.burst()
	killed := ferrytest.Cmd{Bin: ferryBin, Env: append(os.Environ(), "FERRY_BUNDLE_KILL=committed")}.Start(t, nil, "ship", "--config", r.cfg)
	if code, ok := killed.Wait(60 * time.Second); !ok || code == 0 {
		t.Fatalf("ship with FERRY_BUNDLE_KILL=committed: exit %d (ended %v), want killed:\n%s", code, ok, killed)
	}
	conf, err := os.ReadFile(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	off := strings.Replace(string(conf), `bundle_interval = "200ms"`, "", 1)
	if off == string(conf) {
		t.Fatal("no bundle_interval in the config")
	}
	if err := os.WriteFile(r.cfg, []byte(off), 0o644); err != nil {
		t.Fatal(err)
	}
	r.burst()
	p := startFerry(t, nil, "ship", "--config", r.cfg)
	r.burst()
	bundles := r.waitStored(func() {
		if p.Exited() {
			t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
	})
	if len(bundles) != 1 {
		t.Fatalf("%d bundles in the store, want the one committed before the kill", len(bundles))
	}
	if !strings.Contains(p.Stderr(), "bundles off, but the bundle spool holds bundles") {
		t.Fatalf("no word of the leftover bundle:\n%s", p)
	}
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
	}
}

// TestShipBundlesReceived joins the two sides of bundles with the built
// binary: 30 streams shipped with bundles on, a many-stream receiver
// applying them as they come, the shipper and the receiver each killed
// with -9 on the way; every replica ends exact (each line once, in
// order), and so do a one-stream receive --once from scratch and verify.
func TestShipBundlesReceived(t *testing.T) {
	t.Parallel()
	r := newBundleRig(t, 30, "")
	replicas, state := filepath.Join(r.dir, "replicas"), filepath.Join(r.dir, "state")
	if err := os.Mkdir(replicas, 0o755); err != nil {
		t.Fatal(err)
	}
	ship := func() *ferrytest.Process { return startFerry(t, nil, "ship", "--config", r.cfg) }
	recv := func() *ferrytest.Process {
		return startFerry(t, nil, "receive", "--store", r.store, "--stream", "s-*", "--state", state,
			"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--poll-min", "50ms", "--poll-max", "200ms")
	}
	sp := ship()
	ferrytest.Eventually(t, 30*time.Second, "the ship to make the store", func() (bool, string) {
		_, err := os.Stat(r.store)
		return err == nil, fmt.Sprint(err)
	})
	rp := recv()
	var logs []*ferrytest.Process
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append(logs, sp, rp) {
				t.Logf("%s", ferrytest.Clip(p.String()))
			}
		}
	})
	alive := func() {
		for _, p := range []*ferrytest.Process{sp, rp} {
			if p.Exited() {
				t.Fatalf("exited with %d:\n%s", p.Code(), p)
			}
		}
	}
	for round := range 12 {
		r.burst()
		time.Sleep(time.Duration(100+r.rng.IntN(200)) * time.Millisecond)
		switch round {
		case 4:
			sp.Kill9()
			logs = append(logs, sp)
			sp = ship()
		case 7:
			rp.Kill9()
			logs = append(logs, rp)
			rp = recv()
		}
	}
	bundles := r.waitStored(alive)
	parts := 0
	for _, b := range bundles {
		parts += len(b.Parts)
	}
	if len(bundles) == 0 || len(bundles) >= parts {
		t.Fatalf("%d bundles for %d parts: the streams were not bundled", len(bundles), parts)
	}
	ferrytest.Eventually(t, 90*time.Second, "every replica exact", func() (bool, string) {
		alive()
		for n, w := range r.writers {
			want, _ := w.written()
			got, _ := os.ReadFile(filepath.Join(replicas, n+".log"))
			if !bytes.HasPrefix(want, got) {
				t.Fatalf("replica of %s is not a prefix of its file (a line twice, lost or out of order): %s", n, describeDiff(want, got))
			}
			if len(got) != len(want) {
				return false, fmt.Sprintf("%s: %d of %d bytes", n, len(got), len(want))
			}
		}
		return true, ""
	})
	t.Logf("%d bundles, %d parts, 30 streams applied exactly", len(bundles), parts)
	if code := rp.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receive exit %d on SIGTERM:\n%s", code, rp)
	}
	if code := sp.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("ship exit %d on SIGTERM:\n%s", code, sp)
	}
	one := "s-007"
	want, _ := r.writers[one].written()
	out := filepath.Join(r.dir, "one.log")
	mustFerry(t, nil, "receive", "--once", "--store", r.store, "--stream", one, "--state", filepath.Join(r.dir, "state-one"), "--apply", "file:"+out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatalf("receive --once of %s: %s", one, describeDiff(want, got))
	}
	mustFerry(t, nil, "verify", "--store", r.store, "--stream", one)
}
