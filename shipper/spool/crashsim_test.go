package spool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

// crashSim is a SyncFile that remembers, for every journal file and for
// state.json's temp file, the bytes its last fsync made durable, and calls
// snap before every fsync and after a temp file's: the moments a crash
// image is interesting. Fsyncs run on the sealer goroutine too, so the test
// keeps the spool quiet while one snaps (it waits for seals in flight, or
// parks the sealer), and nothing here may call t.Fatal.
type crashSim struct {
	t       *testing.T
	root    string // parent of the images
	mu      sync.Mutex
	durable map[string][]byte // file name in the spool dir -> durable content
	images  []crashImage
	// acked is the seq through which the test was told records are
	// accepted (WaitDurable, Seal returned); an image must keep them.
	acked atomic.Uint64
	// snap, when set, is called at each fsync point.
	snap func(point string)
}

// crashImage is a copy of the spool as a crash could leave it.
type crashImage struct {
	point string
	dir   string
	acked uint64
}

// imageKind says what a crash keeps.
type imageKind int

const (
	powerLoss   imageKind = iota // only what was fsynced survives
	resurrected                  // and journal files removed since their fsync come back
	published                    // power loss after state.json's fsynced temp and the segment it names were renamed
	killed                       // kill -9: the page cache survives, everything written is there
)

var imageKinds = map[imageKind]string{powerLoss: "power loss", resurrected: "power loss, removed journals back", published: "published", killed: "kill -9"}

func newCrashSim(t *testing.T) *crashSim {
	return &crashSim{t: t, root: t.TempDir(), durable: map[string][]byte{}}
}

func isJournalFile(name string) bool {
	_, ok := parseJournalName(name)
	return ok || name == legacyJournal
}

func (c *crashSim) sync(f *os.File) error {
	base := filepath.Base(f.Name())
	if c.snap != nil {
		c.snap("before fsync of " + base)
	}
	if err := c.durableNow(f); err != nil {
		return err
	}
	if strings.HasSuffix(base, ".tmp") && c.snap != nil {
		c.snap("after fsync of " + base)
	}
	return nil
}

// durableNow fsyncs f and records what it made durable.
func (c *crashSim) durableNow(f *os.File) error {
	base := filepath.Base(f.Name())
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	key := base
	if filepath.Base(filepath.Dir(f.Name())) == "sealed" {
		key = "sealed/" + base
	}
	if isJournalFile(base) || base == ".state.json.tmp" || strings.HasPrefix(key, "sealed/") {
		// What was written before the fsync began is durable now.
		b, err := os.ReadFile(f.Name())
		if err != nil {
			c.t.Errorf("crash sim: %v", err)
			return err
		}
		c.mu.Lock()
		c.durable[key] = b[:min(len(b), int(fi.Size()))]
		c.mu.Unlock()
	}
	return nil
}

// take adds images of dir of the given kinds, labelled point.
func (c *crashSim) take(dir, point string, kinds ...imageKind) {
	for _, k := range kinds {
		img, err := c.image(dir, k)
		if err != nil {
			c.t.Errorf("crash image at %s: %v", point, err)
			continue
		}
		c.mu.Lock()
		c.images = append(c.images, crashImage{point: point + " (" + imageKinds[k] + ")", dir: img, acked: c.acked.Load()})
		c.mu.Unlock()
	}
}

func (c *crashSim) image(dir string, kind imageKind) (string, error) {
	img, err := os.MkdirTemp(c.root, "img")
	if err != nil {
		return "", err
	}
	if err := copyTree(dir, img); err != nil {
		return "", err
	}
	if kind == killed {
		return img, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ents, err := os.ReadDir(img)
	if err != nil {
		return "", err
	}
	present := map[string]bool{}
	for _, e := range ents {
		name, p := e.Name(), filepath.Join(img, e.Name())
		switch {
		case isJournalFile(name):
			present[name] = true
			if err := os.WriteFile(p, c.durable[name], 0o644); err != nil { // never fsynced: empty
				return "", err
			}
		case name == ".state.json.tmp":
			if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, c.durable[name]) {
				os.Remove(p) // not durable as it is
			}
		}
	}
	// A segment file is written once, under its final name, then fsynced:
	// one that was not is torn by the crash (half of it survives).
	segs, err := os.ReadDir(filepath.Join(img, "sealed"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	for _, e := range segs {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if _, ok := c.durable["sealed/"+name]; ok {
			continue
		}
		p := filepath.Join(img, "sealed", name)
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(p, b[:len(b)/2], 0o644); err != nil {
			return "", err
		}
	}
	if kind == resurrected {
		for name, b := range c.durable {
			if isJournalFile(name) && !present[name] {
				if err := os.WriteFile(filepath.Join(img, name), b, 0o644); err != nil {
					return "", err
				}
			}
		}
	}
	if kind == published {
		// After its fsync the state temp file is renamed, and only then
		// the segment temp file it names.
		tmp := filepath.Join(img, ".state.json.tmp")
		if _, err := os.Stat(tmp); err == nil {
			if err := os.Rename(tmp, filepath.Join(img, "state.json")); err != nil {
				return "", err
			}
		}
		var st spoolState
		if raw, err := os.ReadFile(filepath.Join(img, "state.json")); err == nil {
			json.Unmarshal(raw, &st)
		}
		segTmp := filepath.Join(img, "sealed", "."+st.Segment+".tmp")
		if _, err := os.Stat(segTmp); err == nil && st.Segment != "" {
			if err := os.Rename(segTmp, filepath.Join(img, "sealed", st.Segment)); err != nil {
				return "", err
			}
		}
	}
	return img, nil
}

// copyTree copies the regular files under src to dst, skipping LOCK and
// files that vanish meanwhile (removed: a state a crash can leave too).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if d.Name() == "LOCK" {
			return nil
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// cursorLog maps each cursor the test passed to the seqs a restart from it
// may find recovered: the cursor's own entry's last seq, up to the last seq
// appended without a cursor after it.
type cursorLog struct {
	want   []string // all data in order
	ranges map[string][2]uint64
	last   string
}

func newCursorLog() *cursorLog { return &cursorLog{ranges: map[string][2]uint64{"": {0, 0}}} }

func (l *cursorLog) add(prefix string, n int, cursor string) {
	l.want = append(l.want, batchtest.Lines(prefix, 1, n)...)
	seq := uint64(len(l.want))
	if cursor == "" {
		r := l.ranges[l.last]
		l.ranges[l.last] = [2]uint64{r[0], seq}
		return
	}
	l.ranges[cursor] = [2]uint64{seq, seq}
	l.last = cursor
}

// durableHole returns the first seq missing from what dir holds for
// recovery (sealed segments, the temp file state.json names, journal
// records) below a seq it does hold, or 0: a durable record must never
// follow one a crash lost.
func durableHole(t *testing.T, dir string) uint64 {
	t.Helper()
	have := map[uint64]bool{}
	var top uint64
	note := func(seq uint64) {
		have[seq] = true
		top = max(top, seq)
	}
	var st spoolState
	if raw, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
		json.Unmarshal(raw, &st)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "sealed"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") && name != "."+st.Segment+".tmp" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "sealed", name))
		if err != nil {
			t.Fatal(err)
		}
		_, recs, err := batch.Decode(data, 0)
		if err != nil {
			continue // torn by the crash before its fsync: recovery removes it
		}
		for _, r := range recs.All() {
			note(r.Seq)
		}
	}
	for s := uint64(1); s <= st.SealedSeq; s++ {
		note(s) // sealed, and maybe confirmed and gone
	}
	for _, name := range journalFiles(t, dir) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for len(data) > 0 {
			recs, _, n, err := parseEntry(data)
			if err != nil {
				break
			}
			for _, r := range recs {
				note(r.Seq)
			}
			data = data[n:]
		}
	}
	for s := uint64(1); s < top; s++ {
		if !have[s] {
			return s
		}
	}
	return 0
}

// checkImages opens every image and checks it recovers consistently: the
// cursor names exactly the records in the spool, no more (a restarted
// source would repeat them) and no fewer (it would skip them); every
// acknowledged record is there; the records are exactly the first ones
// appended, each once and in order, in chained segments; one empty journal
// file is left. Before that it checks that no durable record follows a
// lost one.
func checkImages(t *testing.T, cfg Config, images []crashImage, l *cursorLog) {
	t.Helper()
	for _, img := range images {
		if hole := durableHole(t, img.dir); hole != 0 {
			t.Errorf("%s: seq %d is lost but later records are durable", img.point, hole)
		}
		rc := cfg
		rc.Dir, rc.SyncFile = img.dir, nil
		sp, err := Open(rc, nil, quiet)
		if err != nil {
			t.Errorf("%s: Open: %v", img.point, err)
			continue
		}
		cursor := string(sp.Cursor())
		r, ok := l.ranges[cursor]
		got := sp.Stats().LastSeq
		switch {
		case !ok:
			t.Errorf("%s: cursor %q unknown", img.point, cursor)
		case got < r[0] || got > r[1]:
			t.Errorf("%s: recovered through seq %d but cursor %q is after seq %d: a restarted source would %s",
				img.point, got, cursor, r[0], map[bool]string{true: "repeat records", false: "skip records"}[got > r[1]])
		}
		if got < img.acked {
			t.Errorf("%s: recovered through seq %d, but seq %d was acknowledged", img.point, got, img.acked)
		}
		all := batchtest.CheckChain(t, sealedFiles(t, img.dir), 0, batch.ZeroHash)
		if d := batchtest.Datas(all); uint64(len(d)) != got || !slices.Equal(d, l.want[:min(len(d), len(l.want))]) {
			t.Errorf("%s: spool holds %q, want the first %d records", img.point, d, got)
		}
		if names := journalFiles(t, img.dir); len(names) != 1 || names[0] != journalName(got+1) || len(readJournal(t, img.dir)) != 0 {
			t.Errorf("%s: journal files after recovery %q, want only an empty %s", img.point, names, journalName(got+1))
		}
		next := batchtest.Records("next", 1)
		if _, err := sp.Append(context.Background(), next, nil); err != nil || next[0].Seq != got+1 {
			t.Errorf("%s: next append got seq %d (err %v), want %d", img.point, next[0].Seq, err, got+1)
		}
		sp.Close()
	}
	var points []string
	for _, img := range images {
		points = append(points, img.point)
	}
	t.Logf("%d crash images checked: %s", len(images), strings.Join(points, "; "))
}
