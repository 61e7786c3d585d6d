//go:build linux

// Package sync_test runs two ferry sync sites as separate processes of the
// built binary over a shared directory store, changes both trees at once,
// kills one site with SIGKILL in the middle, and checks that the trees end
// identical, that each conflict left exactly one conflict copy, and that
// neither site shipped the other's changes back.
package sync_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

var ferryBin string

func TestMain(m *testing.M) { os.Exit(ferrytest.Main(m, &ferryBin)) }

// site is one ferry sync site of a test.
type site struct {
	id         string
	dir        string // everything of the site
	tree, conf string
	proc       *ferrytest.Process
}

func newPair(t *testing.T) (where streams, a, b *site) {
	where, s := newMesh(t, viaStore, "a", "b")
	return where, s[0], s[1]
}

// newMesh makes one site per id, each reading every other's stream from
// one shared directory store (viaStore), or each shipping its own to
// every other's listener and taking theirs on its own (viaLink).
func newMesh(t *testing.T, via transport, ids ...string) (where streams, sites []*site) {
	base := t.TempDir()
	store := filepath.Join(base, "store")
	where = func(string) string { return store }
	var links *linkNet
	if via == viaLink {
		links = newLinkNet(t, base, ids)
		where = links.streams
	}
	mk := func(id string) *site {
		s := &site{id: id, dir: filepath.Join(base, id)}
		s.tree = filepath.Join(s.dir, "tree")
		s.conf = filepath.Join(s.dir, "sync.toml")
		if err := os.MkdirAll(s.tree, 0o755); err != nil {
			t.Fatal(err)
		}
		peers, storeLine, listen, tcp := "", fmt.Sprintf("store = %q\n", store), "", ""
		for _, p := range ids {
			if p != id {
				peers += fmt.Sprintf("[[sync.peers]]\nid = %q\n", p)
				if links != nil {
					peers += fmt.Sprintf("link = \"tcp://%s\"\n", links.addr[p])
				}
			}
		}
		if links != nil {
			storeLine, listen, tcp = "", fmt.Sprintf("listen = %q\n", links.addr[id]), links.tcpTable(t, id)
		}
		conf := fmt.Sprintf(`%s[site]
id = %q
[sync]
data = "dir:%s"
stream = "mail"
spool = %q
state = %q
%s%s[ship]
max_age = "100ms"
[receive]
poll_min = "50ms"
poll_max = "200ms"
%s`, storeLine, id, s.tree, filepath.Join(s.dir, "spool"), filepath.Join(s.dir, "state"), listen, peers, tcp)
		if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, id := range ids {
		sites = append(sites, mk(id))
	}
	return where, sites
}

func (s *site) start(t *testing.T) {
	t.Helper()
	s.proc = ferrytest.Cmd{Bin: ferryBin}.Start(t, nil, "sync", "--config", s.conf)
}

func (s *site) stop(t *testing.T) {
	t.Helper()
	if code := s.proc.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("site %s: ferry sync exited %d:\n%s", s.id, code, s.proc)
	}
}

// snapshot is a tree as the test compares it: files by content, mode and
// mtime, symlinks by target, directories by presence.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." || strings.HasPrefix(filepath.Base(rel), ".ferry-") {
			if d.IsDir() && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		switch {
		case d.IsDir():
			out[rel] = "dir"
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "link:" + l
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			out[rel] = fmt.Sprintf("file %o %d %s", fi.Mode().Perm(), fi.ModTime().UnixNano(), sig(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sig names content in a snapshot: size, hash, and the first line (the
// test's writes start with who wrote them).
func sig(b []byte) string {
	first, _, _ := bytes.Cut(b, []byte("\n"))
	return fmt.Sprintf("%d:%x:%q", len(b), sha256.Sum256(b), first[:min(len(first), 40)])
}

func diff(a, b map[string]string) string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "only in a: "+k)
		} else if v != w {
			d = append(d, "differs: "+k+": "+ferrytest.Clip(v)+" vs "+ferrytest.Clip(w))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "only in b: "+k)
		}
	}
	sort.Strings(d)
	if len(d) > 20 {
		d = append(d[:20], fmt.Sprintf("... %d more", len(d)-20))
	}
	return strings.Join(d, "\n")
}

func waitIdentical(t *testing.T, a, b *site, timeout time.Duration) map[string]string {
	t.Helper()
	return waitAllIdentical(t, []*site{a, b}, timeout)
}

// waitAllIdentical waits for every site's tree to be the first's, and
// checks that they stay so (nothing still bouncing).
func waitAllIdentical(t *testing.T, sites []*site, timeout time.Duration) map[string]string {
	t.Helper()
	differ := func() (map[string]string, string) {
		first := snapshot(t, sites[0].tree)
		for _, s := range sites[1:] {
			if d := diff(first, snapshot(t, s.tree)); d != "" {
				return first, fmt.Sprintf("%s vs %s:\n%s", sites[0].id, s.id, d)
			}
		}
		return first, ""
	}
	var last map[string]string
	ferrytest.Eventually(t, timeout, "all trees identical", func() (bool, string) {
		snap, d := differ()
		last = snap
		return d == "", d
	})
	time.Sleep(1500 * time.Millisecond)
	snap, d := differ()
	if d != "" {
		t.Fatalf("trees identical, then not: %s", d)
	}
	if d := diff(last, snap); d != "" {
		t.Fatalf("trees changed after they were identical (ping-pong?):\n%s", d)
	}
	return snap
}

func write(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// shippedBytes is what a site's stream holds in the store (or a peer's
// inbox): the bytes it shipped.
func shippedBytes(t *testing.T, where streams, id string) int64 {
	t.Helper()
	var n int64
	ents, err := os.ReadDir(filepath.Join(where(id), "mail@"+id))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg.zst") {
			fi, _ := e.Info()
			n += fi.Size()
		}
	}
	return n
}

// foreignPuts counts, per top directory, the file records a site's stream
// carries for another site's directories (the churn's ID-dirN).
func foreignPuts(t *testing.T, where streams, id string) map[string]int {
	t.Helper()
	out := map[string]int{}
	eachRecord(t, where, "mail@"+id, func(_ string, r batch.Record) {
		top, _, _ := strings.Cut(string(r.Key), "/")
		if r.Op != dirtree.OpPut && r.Op != dirtree.OpChunk || !strings.Contains(top, "-dir") || strings.HasPrefix(top, id+"-") {
			return
		}
		out[top]++
	})
	return out
}

// eachRecord calls fn with every record of every segment of stream
// (NAME@SITE) where it is kept, naming the segment it came from.
func eachRecord(t *testing.T, where streams, stream string, fn func(seg string, r batch.Record)) {
	t.Helper()
	_, id, _ := strings.Cut(stream, "@")
	dir := filepath.Join(where(id), stream)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".seg.zst") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, recs, err := batch.Decode(raw, 1<<30)
		if err != nil {
			t.Fatalf("segment %s of %s: %v", e.Name(), stream, err)
		}
		for i := range recs.Len() {
			fn(e.Name(), recs.At(i))
		}
	}
}

func conflictCopies(snap map[string]string) []string {
	var out []string
	for k := range snap {
		if strings.Contains(filepath.Base(k), ".ferry-conflict-") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// TestSyncConflictWinnerAndCopy changes one file on both sites while they
// cannot see each other: a ships its change first, b later, so b's is the
// later version and wins on both sites; a's is kept as
// f.ferry-conflict-a-TIME beside it, once, on both.
func TestSyncConflictWinnerAndCopy(t *testing.T) {
	where, a, b := newPair(t)
	write(t, filepath.Join(a.tree, "box/f"), []byte("base\n"))
	a.start(t)
	b.start(t)
	waitIdentical(t, a, b, 30*time.Second)
	a.stop(t)
	b.stop(t)

	write(t, filepath.Join(a.tree, "box/f"), []byte("from a\n"))
	write(t, filepath.Join(b.tree, "box/f"), []byte("from b, later\n"))
	before := shippedBytes(t, where, "a")
	a.start(t)
	ferrytest.Eventually(t, 20*time.Second, "a shipped its change", func() (bool, string) {
		return shippedBytes(t, where, "a") > before, ""
	})
	time.Sleep(100 * time.Millisecond) // b's stamp is later than a's
	b.start(t)
	snap := waitIdentical(t, a, b, 30*time.Second)
	if got := snap["box/f"]; !strings.Contains(got, sig([]byte("from b, later\n"))) {
		t.Fatalf("box/f on both sites: %s; want b's (later) version", got)
	}
	copies := conflictCopies(snap)
	if len(copies) != 1 || !strings.HasPrefix(copies[0], "box/f.ferry-conflict-a-") || !strings.Contains(snap[copies[0]], sig([]byte("from a\n"))) {
		t.Fatalf("conflict copies %q (%v); want one box/f.ferry-conflict-a-TIME holding a's version", copies, snap)
	}
	n := 0
	for _, s := range []*site{a, b} {
		cs, err := dirsync.ReadConflicts(filepath.Join(s.dir, "state"))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Path != "box/f" || c.Winner != "b" || c.Loser != "a" {
				t.Fatalf("site %s recorded conflict %+v; want box/f won by b over a", s.id, c)
			}
		}
		n += len(cs)
	}
	if n == 0 {
		t.Fatal("no site recorded the conflict in conflicts.ndjson")
	}
	r := ferrytest.Cmd{Bin: ferryBin}.Run(t, nil, "status", "--state", filepath.Join(b.dir, "state"))
	if r.Code != 0 || !strings.Contains(r.Output(), "box/f") {
		t.Fatalf("ferry status --state on b does not list the conflict:\n%s", r)
	}
	a.stop(t)
	b.stop(t)
}

// TestSyncChurnKill9 changes both trees at random for a while (creates,
// rewrites, appends, deletes, renames, directory moves, and rewrites of
// shared files that make true conflicts), kills site b with SIGKILL in the
// middle and restarts it, then checks that both trees are identical, that
// every change of a file only one site touches is there, that every
// conflict copy on disk is one a site recorded making (and each recorded
// copy is there, made once), and that each site shipped about the bytes of
// its own changes.
func TestSyncChurnKill9(t *testing.T) { runChurn(t, viaStore, []string{"a", "b"}, "b") }

// TestSyncThreeSitesChurnKill9 is the same with three sites in a mesh
// (each reads the other two's streams from the shared store), site c
// killed with SIGKILL in the middle: the shared files see three-way
// conflicts, which every site must resolve alike (docs/SYNC.md).
func TestSyncThreeSitesChurnKill9(t *testing.T) { runChurn(t, viaStore, []string{"a", "b", "c"}, "c") }

// runChurn runs the churn over via with the sites in ids, killing each
// site of kill (in turn, a few seconds apart) with SIGKILL and restarting it.
func runChurn(t *testing.T, via transport, ids []string, kill ...string) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FERRY_E2E_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (replay with FERRY_E2E_SEED)", seed)
	where, sites := newMesh(t, via, ids...)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, s := range sites {
			if s.proc == nil {
				continue
			}
			for _, l := range strings.Split(s.proc.Stderr(), "\n") {
				if strings.Contains(l, "directory below which") || strings.Contains(l, "level=ERROR") {
					t.Logf("site %s: %s", s.id, l)
				}
			}
		}
	})
	for i := range 10 {
		write(t, filepath.Join(sites[0].tree, "shared", fmt.Sprintf("s%d", i)), []byte("initial\n"))
	}
	for _, s := range sites {
		s.start(t)
	}
	waitAllIdentical(t, sites, 30*time.Second)
	type churn struct {
		s     *site
		rng   *rand.Rand
		own   map[string][]byte // files only this site touches: their last content
		dirs  []string          // this site's directories (moved as a whole)
		bytes int64             // content bytes written
		ops   int
		n     int
	}
	mkChurn := func(s *site, k uint64) *churn {
		c := &churn{s: s, rng: rand.New(rand.NewPCG(seed, k)), own: map[string][]byte{}}
		for i := range 3 {
			c.dirs = append(c.dirs, fmt.Sprintf("%s-dir%d", s.id, i))
		}
		return c
	}
	var churns []*churn
	var victims []*site
	// What a failure needs to be explained: when each site was killed and
	// started, each directory move, and each site's last process's log.
	var events []string
	began := time.Now()
	event := func(format string, args ...any) {
		events = append(events, fmt.Sprintf("%6.2fs ", time.Since(began).Seconds())+fmt.Sprintf(format, args...))
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("churn events:\n%s", strings.Join(events, "\n"))
		for _, s := range sites {
			if s.proc != nil {
				t.Logf("site %s, last process: %s", s.id, s.proc)
			}
			// An echo (a site shipping another's files as its own) is
			// what a divergence after a kill -9 came from before.
			if n := foreignPuts(t, where, s.id); len(n) > 0 {
				t.Logf("site %s shipped files of other sites' directories: %v", s.id, n)
			}
		}
		keepSites(t, sites)
	})
	for _, id := range kill {
		for _, s := range sites {
			if s.id == id {
				victims = append(victims, s)
			}
		}
	}
	for k, s := range sites {
		churns = append(churns, mkChurn(s, uint64(k+1)))
	}
	base := map[string]int64{}
	for _, s := range sites {
		base[s.id] = shippedBytes(t, where, s.id)
	}
	content := func(c *churn, what string) []byte {
		c.n++
		head := fmt.Sprintf("%s %s %d\n", c.s.id, what, c.n)
		body := make([]byte, 512+c.rng.IntN(4096))
		for i := range body {
			body[i] = byte(c.rng.Uint32())
		}
		return append([]byte(head), body...)
	}
	step := func(c *churn) {
		c.ops++
		keys := make([]string, 0, len(c.own))
		for k := range c.own {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		pick := func() string { return keys[c.rng.IntN(len(keys))] }
		switch op := c.rng.IntN(10); {
		case op < 3 || len(keys) < 3: // create
			p := filepath.Join(c.dirs[c.rng.IntN(len(c.dirs))], fmt.Sprintf("m%d", c.n))
			data := content(c, p)
			write(t, filepath.Join(c.s.tree, p), data)
			c.own[p], c.bytes = data, c.bytes+int64(len(data))
		case op < 5: // rewrite
			p := pick()
			data := content(c, p)
			write(t, filepath.Join(c.s.tree, p), data)
			c.own[p], c.bytes = data, c.bytes+int64(len(data))
		case op == 5: // append
			p := pick()
			more := content(c, "append")
			f, err := os.OpenFile(filepath.Join(c.s.tree, p), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(more)
			f.Close()
			c.own[p] = append(append([]byte(nil), c.own[p]...), more...)
			c.bytes += int64(len(c.own[p]))
		case op == 6: // delete
			p := pick()
			os.Remove(filepath.Join(c.s.tree, p))
			delete(c.own, p)
		case op == 7: // rename (del + put)
			p := pick()
			q := filepath.Join(filepath.Dir(p), fmt.Sprintf("r%d", c.n))
			c.n++
			if err := os.Rename(filepath.Join(c.s.tree, p), filepath.Join(c.s.tree, q)); err != nil {
				t.Fatal(err)
			}
			c.own[q], c.bytes = c.own[p], c.bytes+int64(len(c.own[p]))
			delete(c.own, p)
		case op == 8: // directory move
			i := c.rng.IntN(len(c.dirs))
			from := c.dirs[i]
			to := fmt.Sprintf("%s-dir%d", c.s.id, 100+c.n)
			c.n++
			if _, err := os.Stat(filepath.Join(c.s.tree, from)); err != nil {
				return
			}
			if err := os.Rename(filepath.Join(c.s.tree, from), filepath.Join(c.s.tree, to)); err != nil {
				t.Fatal(err)
			}
			c.dirs[i] = to
			event("%s: moved %s to %s", c.s.id, from, to)
			for _, k := range keys {
				if strings.HasPrefix(k, from+"/") {
					nk := to + strings.TrimPrefix(k, from)
					c.own[nk], c.bytes = c.own[k], c.bytes+int64(len(c.own[k]))
					delete(c.own, k)
				}
			}
		default: // rewrite a shared file: concurrent with the other site's
			p := filepath.Join("shared", fmt.Sprintf("s%d", c.rng.IntN(10)))
			data := content(c, p)
			write(t, filepath.Join(c.s.tree, p), data)
			c.bytes += int64(len(data))
		}
	}
	// The kills come from 3 s into the churn on, 2.5 s apart.
	end := time.Now().Add(time.Duration(max(8000, 3000+2500*len(victims))) * time.Millisecond)
	nextKill := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		for _, c := range churns {
			step(c)
		}
		if len(victims) > 0 && time.Now().After(nextKill) {
			victim := victims[0]
			victims = victims[1:]
			nextKill = nextKill.Add(2500 * time.Millisecond)
			victim.proc.Kill9()
			event("%s: killed (SIGKILL)", victim.id)
			for range 20 { // the victim's tree changes while it is down
				for _, c := range churns {
					step(c)
				}
			}
			time.Sleep(500 * time.Millisecond)
			victim.start(t)
			event("%s: started", victim.id)
		}
		time.Sleep(time.Duration(10+churns[0].rng.IntN(40)) * time.Millisecond)
	}
	snap := waitAllIdentical(t, sites, 120*time.Second)

	for _, c := range churns {
		for p, data := range c.own {
			if got := snap[p]; !strings.Contains(got, sig(data)) {
				t.Errorf("site %s's last change of %s is not on both sites: %s", c.s.id, p, ferrytest.Clip(got))
			}
		}
	}
	// Every conflict copy is one a site made by the rule (the loser's own
	// site, once), and each such copy is there.
	recorded := map[string]bool{}
	madeBy := map[string]string{}
	total := 0
	for _, s := range sites {
		cs, err := dirsync.ReadConflicts(filepath.Join(s.dir, "state"))
		if err != nil {
			t.Fatal(err)
		}
		total += len(cs)
		for _, c := range cs {
			if c.Made {
				if recorded[c.Copy] {
					t.Errorf("conflict copy %s made twice", c.Copy)
				}
				if c.Loser != s.id {
					t.Errorf("conflict copy %s made by site %s, not by the loser's site %s", c.Copy, s.id, c.Loser)
				}
				recorded[c.Copy], madeBy[c.Copy] = true, s.id
			}
		}
	}
	copies := conflictCopies(snap)
	for _, p := range copies {
		if !recorded[p] {
			t.Errorf("conflict copy %s on both sites, but no site recorded making it", p)
		}
		if !strings.HasPrefix(p, "shared/") {
			t.Errorf("conflict copy %s of a path only one site changes", p)
		}
	}
	for p := range recorded {
		if _, ok := snap[p]; !ok {
			t.Errorf("recorded conflict copy %s is not in the trees", p)
		}
	}
	t.Logf("conflicts recorded %d, conflict copies %d", total, len(copies))

	// No echo: no site ships a file in another site's directories (only
	// their owner changes them), and each site shipped about its own
	// changes.
	for _, s := range sites {
		if n := foreignPuts(t, where, s.id); len(n) > 0 {
			t.Errorf("site %s shipped files of other sites' directories (echo): %v", s.id, n)
		}
	}
	// Without own-change recognition each would also ship the others', at
	// least doubling this.
	for _, c := range churns {
		shipped := shippedBytes(t, where, c.s.id) - base[c.s.id]
		var copyBytes int64 // a site ships the copies it makes (of its own losing changes)
		for _, p := range copies {
			if madeBy[p] != c.s.id {
				continue
			}
			n, _, _ := strings.Cut(strings.Fields(snap[p])[3], ":")
			size, _ := strconv.ParseInt(n, 10, 64)
			copyBytes += size
		}
		limit := c.bytes + c.bytes/4 + int64(c.ops)*400 + copyBytes + 64<<10
		t.Logf("site %s: wrote %d bytes in %d ops, made copies of %d bytes, shipped %d bytes (limit %d, ratio shipped/(written+copies) %.2f)",
			c.s.id, c.bytes, c.ops, copyBytes, shipped, limit, float64(shipped)/float64(c.bytes+copyBytes))
		if shipped > limit {
			t.Errorf("site %s shipped %d bytes for %d bytes of its own changes: echo?", c.s.id, shipped, c.bytes)
		}
	}
	for _, s := range sites {
		s.stop(t)
	}
}

// keepSites copies every site's directory (tree, spool, state, and a
// link site's inbox) to a new directory under $FERRY_E2E_KEEP, with each
// site's last process's output, so a failure can be examined after the
// test's temporary directory is gone.
func keepSites(t *testing.T, sites []*site) {
	keep := os.Getenv("FERRY_E2E_KEEP")
	if keep == "" {
		return
	}
	for _, s := range sites {
		if s.proc != nil && !s.proc.Exited() {
			s.proc.Signal(syscall.SIGTERM)
			s.proc.Wait(10 * time.Second)
		}
	}
	dst, err := os.MkdirTemp(keep, t.Name()+"-")
	if err != nil {
		t.Logf("FERRY_E2E_KEEP: %v", err)
		return
	}
	for _, s := range sites {
		if err := os.CopyFS(filepath.Join(dst, s.id), os.DirFS(s.dir)); err != nil {
			t.Logf("FERRY_E2E_KEEP: site %s: %v", s.id, err)
		}
		if s.proc != nil {
			os.WriteFile(filepath.Join(dst, s.id+".log"), []byte(s.proc.Stderr()), 0o644)
		}
	}
	t.Logf("the sites are kept in %s", dst)
}
