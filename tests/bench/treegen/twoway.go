//go:build linux

package main

// The two-way sync benchmark's parts (tests/bench/sync.sh):
//
//	treegen mailtree -dir D -seed 1 -files 10000   write a Maildir-like tree of FILES messages
//	treegen twoway -a A -b B -seed 1 [...]         churn both copies at once, wait until they converge
//
// twoway plans a deterministic set of changes on the tree A holds (B must
// start as a copy of it), plays one half on A and the other on B during the
// same window, then compares the two trees until they are identical, and
// counts the updates that did not survive. See sync.sh and README.md.

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Folders of each user's Maildir, with the share of the messages each holds.
var syncFolders = []struct {
	dir    string
	weight int
}{
	{"Maildir/cur", 45}, {"Maildir/new", 5}, {"Maildir/.Sent/cur", 20},
	{"Maildir/.Archive.2024/cur", 15}, {"Maildir/.Archive.2025/cur", 15},
}

// mailbox names and fills messages the way an MTA and an IMAP server do.
type mailbox struct {
	g   *contentGen
	seq int
}

// size draws a message size log-uniformly between 1 KiB and 16 KiB (mean
// about 5.4 KiB): mostly short messages, a few with attachments.
func (m *mailbox) size() int { return int(1024 * math.Pow(16, m.g.r.Float64())) }

// name returns a unique Maildir file name for a new message delivered by
// host into folder (a cur folder gets an info suffix with flags).
func (m *mailbox) name(folder, host string, size int, flags string) string {
	m.seq++
	n := fmt.Sprintf("%d.M%dP%dQ%d.%s,S=%d", m.g.t+int64(m.seq), m.g.r.IntN(1000000), 1000+m.g.r.IntN(30000), m.seq, host, size)
	if strings.HasSuffix(folder, "/cur") {
		n += ":2," + flags
	}
	return folder + "/" + n
}

// withFlag returns the message name with flag added to its info suffix
// (flags sorted, as Maildir wants), and whether it changed.
func withFlag(name string, flag byte) (string, bool) {
	base, flags, ok := strings.Cut(name, ":2,")
	if !ok {
		return base + ":2," + string(flag), true
	}
	if strings.IndexByte(flags, flag) >= 0 {
		return name, false
	}
	b := []byte(flags + string(flag))
	slices.Sort(b)
	return base + ":2," + string(b), true
}

// runMailtree writes the base tree: one user per 500 messages, each with a
// Maildir of five folders (cur/new/tmp each), messages spread over them.
func runMailtree(args []string) error {
	fl := flag.NewFlagSet("mailtree", flag.ContinueOnError)
	dir := fl.String("dir", "", "tree to create (must not exist or be empty)")
	seed := fl.Uint64("seed", 1, "seed")
	files := fl.Int("files", 10000, "messages")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *files < 1 {
		return errors.New("want -dir and -files >= 1")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	if ents, err := os.ReadDir(*dir); err != nil || len(ents) > 0 {
		return fmt.Errorf("%s must be an empty directory (%v)", *dir, err)
	}
	m := &mailbox{g: newContentGen(*seed)}
	users := max(1, *files/500)
	dirs := 0
	for u := range users {
		for _, f := range syncFolders {
			if !strings.HasSuffix(f.dir, "/cur") {
				continue
			}
			top := strings.TrimSuffix(f.dir, "/cur")
			for _, sub := range []string{"cur", "new", "tmp"} {
				if err := os.MkdirAll(filepath.Join(*dir, fmt.Sprintf("u%02d", u), top, sub), 0o755); err != nil {
					return err
				}
				dirs++
			}
		}
	}
	var bytes int64
	for range *files {
		x, folder := m.g.r.IntN(100), ""
		for _, f := range syncFolders {
			if x < f.weight {
				folder = f.dir
				break
			}
			x -= f.weight
		}
		flags := ""
		if m.g.r.IntN(4) != 0 {
			flags = "S"
		}
		size := m.size()
		rel := fmt.Sprintf("u%02d/", m.g.r.IntN(users)) + m.name(folder, "mx1", size, flags)
		if err := os.WriteFile(filepath.Join(*dir, rel), m.g.mail(size), 0o644); err != nil {
			return err
		}
		bytes += int64(size)
	}
	fmt.Printf("mailtree files=%d dirs=%d bytes=%d\n", *files, dirs, bytes)
	return nil
}

// syncIgnored reports the names sync tools keep for themselves inside a
// tree: syncthing's folder marker, versions, ignore file and temporary
// files, unison's temporary files, ferry's .ferry-* names. They are left
// out of every comparison. Conflict copies are not: they must be on both
// sides like any file.
func syncIgnored(name string) bool {
	switch name {
	case ".stfolder", ".stversions", ".stignore":
		return true
	}
	return strings.HasPrefix(name, ".ferry-") || strings.HasPrefix(name, ".unison.") ||
		strings.HasPrefix(name, ".syncthing.") || strings.HasPrefix(name, "~syncthing~")
}

// manifester lists a tree as path -> "dir" or "SIZE SHA256", hashing each
// file once per identity (inode, size, mtime, ctime).
type manifester struct {
	root  string
	cache map[string]cacheEntry
}

func (m *manifester) manifest() (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(m.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != m.root && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if p == m.root {
			return nil
		}
		if syncIgnored(d.Name()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		rel := filepath.ToSlash(p[len(m.root)+1:])
		if d.IsDir() {
			out[rel] = "dir"
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !fi.Mode().IsRegular() {
			out[rel] = fi.Mode().Type().String()
			return nil
		}
		key := identity(fi)
		c, ok := m.cache[rel]
		if !ok || c.ino != key.ino || c.dev != key.dev || c.size != key.size || c.mtime != key.mtime || c.ctime != key.ctime {
			if key.sum, err = hashFile(p); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			m.cache[rel] = key
			c = key
		}
		out[rel] = fmt.Sprintf("%d %x", c.size, c.sum)
		return nil
	})
	return out, err
}

// update is one side's change, with what must hold afterwards in both
// trees for it to count as not lost.
type update struct {
	side, kind string
	has        map[string]string // path -> "SIZE SHA" it must hold
	gone       []string          // paths that must not exist
	keeps      string            // content "SIZE SHA" that must be somewhere in the tree
	anyOf      []string          // one of these paths must hold keeps (with keeps set)
}

// lost reports whether u is not in the tree man (and why); byContent is the
// set of file contents in the tree.
func (u *update) lost(man map[string]string, byContent map[string]bool) string {
	for p, want := range u.has {
		if man[p] != want {
			if man[p] == "" {
				return p + " missing"
			}
			return p + " holds other content"
		}
	}
	for _, p := range u.gone {
		if man[p] != "" {
			return p + " still there"
		}
	}
	if u.keeps != "" {
		if len(u.anyOf) > 0 {
			for _, p := range u.anyOf {
				if man[p] == u.keeps {
					return ""
				}
			}
			return "under none of " + strings.Join(u.anyOf, ", ")
		}
		if !byContent[u.keeps] {
			return "content nowhere in the tree"
		}
	}
	return ""
}

// timed is a change to one tree, played at its offset into the window.
type timed struct {
	at time.Duration
	do step
}

func sumOf(data []byte) string { return fmt.Sprintf("%d %x", len(data), sha256.Sum256(data)) }

// plan is the churn: steps for A and B, and the updates to check.
type plan struct {
	a, b        []timed
	updates     []*update
	kinds       map[string]int // "side kind" -> count
	conflicts   int
	written     int64
	final       map[string]bool // the paths the tree should hold (conflict copies aside)
	conflictSet map[string]bool // paths a conflict may leave (either name of a rename/rename)
}

// planChurn plans the two-sided churn on the base tree base (path ->
// content), whose root on each side is rootA and rootB. Per side, as
// fractions of the messages: 2% new deliveries (a third of the inbox ones
// read later in the window: moved from new/ to cur/ with the S flag), 4%
// flag changes (renames of the info suffix, new/ -> cur/ for unread ones),
// 1% moves to an archive folder, 1% deletes and 0.5% rewrites. Every base
// message takes part in at most one change, so no change supersedes
// another, except in the true conflicts, one per 5,000 messages of each
// kind, played at the same moment on both sides: modify/modify (twice as
// many), modify/delete and rename/rename (different flags).
func planChurn(base map[string]string, rootA, rootB string, seed uint64, window time.Duration) *plan {
	m := &mailbox{g: newContentGen(seed ^ 0x74776f776179)}
	r := m.g.r
	p := &plan{kinds: map[string]int{}, final: map[string]bool{}, conflictSet: map[string]bool{}}
	var msgs []string
	users := map[string]bool{}
	for _, rel := range sortedKeys(base) {
		if base[rel] == "dir" {
			if strings.Count(rel, "/") == 0 {
				users[rel] = true
			}
			continue
		}
		msgs = append(msgs, rel)
		p.final[rel] = true
	}
	userList := sortedKeys(users)
	r.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	n := len(msgs)
	next := 0
	take := func(ok func(string) bool) string {
		for i := next; i < len(msgs); i++ {
			if ok(msgs[i]) {
				msgs[next], msgs[i] = msgs[i], msgs[next]
				next++
				return msgs[next-1]
			}
		}
		return ""
	}
	anyMsg := func(string) bool { return true }
	inCur := func(s string) bool { return strings.Contains(s, "/cur/") }
	inboxOrSent := func(s string) bool {
		return strings.Contains(s, "/Maildir/cur/") || strings.Contains(s, "/Maildir/.Sent/cur/")
	}
	abs := func(root, rel string) string { return filepath.Join(root, filepath.FromSlash(rel)) }
	write := func(root, rel string, data []byte) step {
		return func() error {
			// As an MTA delivers: write in tmp/, then rename into place.
			tmp := abs(root, path.Dir(path.Dir(rel))+"/tmp/"+path.Base(rel)+".part")
			if err := os.WriteFile(tmp, data, 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, abs(root, rel))
		}
	}
	rewrite := func(root, rel string, data []byte) step {
		return func() error { return os.WriteFile(abs(root, rel), data, 0o644) }
	}
	rename := func(root, from, to string) step {
		return func() error { return os.Rename(abs(root, from), abs(root, to)) }
	}
	remove := func(root, rel string) step {
		return func() error { return os.Remove(abs(root, rel)) }
	}
	at := func() time.Duration { return time.Duration(r.Int64N(int64(window))) }
	add := func(side string, t timed) {
		if side == "a" {
			p.a = append(p.a, t)
		} else {
			p.b = append(p.b, t)
		}
	}
	root := func(side string) string {
		if side == "a" {
			return rootA
		}
		return rootB
	}
	count := func(side, kind string, u *update) {
		u.side, u.kind = side, kind
		p.updates = append(p.updates, u)
		p.kinds[side+" "+kind]++
	}

	for _, side := range []string{"a", "b"} {
		host := "mx-" + side
		for range n * 2 / 100 { // deliveries
			size := m.size()
			u := userList[r.IntN(len(userList))]
			folder, flags := "Maildir/new", ""
			if r.IntN(10) == 0 {
				folder, flags = "Maildir/.Sent/cur", "S"
			}
			rel := u + "/" + m.name(folder, host, size, flags)
			data := m.g.mail(size)
			p.written += int64(size)
			t := at()
			add(side, timed{t, write(root(side), rel, data)})
			if folder == "Maildir/new" && r.IntN(3) == 0 {
				read := strings.Replace(rel, "/new/", "/cur/", 1) + ":2,S"
				add(side, timed{t + time.Duration(r.Int64N(int64(window-t))+1), rename(root(side), rel, read)})
				count(side, "deliver+read", &update{has: map[string]string{read: sumOf(data)}, gone: []string{rel}})
				p.final[read] = true
				continue
			}
			count(side, "deliver", &update{has: map[string]string{rel: sumOf(data)}})
			p.final[rel] = true
		}
		for range n * 4 / 100 { // flag changes
			rel := take(anyMsg)
			var to string
			if strings.Contains(rel, "/new/") {
				to = strings.Replace(rel, "/new/", "/cur/", 1) + ":2,S"
			} else {
				var changed bool
				if to, changed = withFlag(rel, 'S'); !changed {
					to, _ = withFlag(rel, 'R')
				}
			}
			add(side, timed{at(), rename(root(side), rel, to)})
			count(side, "flag", &update{has: map[string]string{to: base[rel]}, gone: []string{rel}})
			delete(p.final, rel)
			p.final[to] = true
		}
		for range n / 100 { // moves to the archive
			rel := take(inboxOrSent)
			if rel == "" {
				break
			}
			parts := strings.SplitN(rel, "/", 2)
			to := parts[0] + "/Maildir/.Archive.2025/cur/" + path.Base(rel)
			add(side, timed{at(), rename(root(side), rel, to)})
			count(side, "move", &update{has: map[string]string{to: base[rel]}, gone: []string{rel}})
			delete(p.final, rel)
			p.final[to] = true
		}
		for range n / 100 { // deletes
			rel := take(anyMsg)
			add(side, timed{at(), remove(root(side), rel)})
			count(side, "delete", &update{gone: []string{rel}})
			delete(p.final, rel)
		}
		for range n / 200 { // rewrites
			rel := take(anyMsg)
			data := m.g.mail(m.size())
			p.written += int64(len(data))
			add(side, timed{at(), rewrite(root(side), rel, data)})
			count(side, "rewrite", &update{has: map[string]string{rel: sumOf(data)}})
		}
	}

	// True conflicts, at the same offset on both sides.
	k := max(1, n/5000)
	kinds := make([]string, 0, 4*k)
	for range k {
		kinds = append(kinds, "modify/modify", "modify/modify", "modify/delete", "rename/rename")
	}
	for i, kind := range kinds {
		t := time.Duration((float64(i) + 0.5) / float64(len(kinds)) * float64(window))
		p.conflicts++
		switch kind {
		case "modify/modify":
			rel := take(anyMsg)
			da, db := m.g.mail(m.size()), m.g.mail(m.size())
			p.written += int64(len(da) + len(db))
			p.a = append(p.a, timed{t, rewrite(rootA, rel, da)})
			p.b = append(p.b, timed{t, rewrite(rootB, rel, db)})
			count("a", "conflict "+kind, &update{keeps: sumOf(da)})
			count("b", "conflict "+kind, &update{keeps: sumOf(db)})
		case "modify/delete":
			rel := take(anyMsg)
			data := m.g.mail(m.size())
			p.written += int64(len(data))
			p.a = append(p.a, timed{t, rewrite(rootA, rel, data)})
			p.b = append(p.b, timed{t, remove(rootB, rel)})
			// Modify beats delete: the delete is superseded, not lost.
			count("a", "conflict "+kind, &update{keeps: sumOf(data)})
		case "rename/rename":
			rel := take(inCur)
			ta, _ := withFlag(rel, 'F')
			tb, _ := withFlag(rel, 'T')
			p.a = append(p.a, timed{t, rename(rootA, rel, ta)})
			p.b = append(p.b, timed{t, rename(rootB, rel, tb)})
			// One rename wins, the other is superseded; the message must
			// be under one of the new names.
			count("a", "conflict "+kind, &update{keeps: base[rel], anyOf: []string{ta, tb}})
			delete(p.final, rel)
			p.conflictSet[ta], p.conflictSet[tb] = true, true
		}
	}
	for _, s := range [][]timed{p.a, p.b} {
		sort.SliceStable(s, func(i, j int) bool { return s[i].at < s[j].at })
	}
	return p
}

// cpuTicks sums utime+stime+cutime+cstime (clock ticks) over pid and its
// descendants: the CPU time of a process tree so far, including children
// that exited and were waited for by a process of the tree.
func cpuTicks(pids []int) int64 {
	var total int64
	seen := map[int]bool{}
	for _, pid := range pids {
		for _, q := range descendants(pid) {
			if seen[q] {
				continue
			}
			seen[q] = true
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", q))
			if err != nil {
				continue
			}
			i := strings.LastIndexByte(string(b), ')')
			if i < 0 {
				continue
			}
			f := strings.Fields(string(b[i+1:]))
			if len(f) < 15 {
				continue
			}
			for _, x := range f[11:15] {
				v, _ := strconv.ParseInt(x, 10, 64)
				total += v
			}
		}
	}
	return total
}

// dirBytes sums the sizes of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

type multiFlag []string

func (f *multiFlag) String() string     { return strings.Join(*f, ",") }
func (f *multiFlag) Set(s string) error { *f = append(*f, s); return nil }

func runTwoway(args []string) error {
	fl := flag.NewFlagSet("twoway", flag.ContinueOnError)
	a := fl.String("a", "", "site A's tree")
	b := fl.String("b", "", "site B's tree (a copy of A's at the start)")
	seed := fl.Uint64("seed", 1, "churn seed")
	window := fl.Duration("window", 10*time.Second, "the churn is spread over this long on both trees")
	timeout := fl.Duration("timeout", 5*time.Minute, "give up when the trees are not identical this long after the churn")
	settle := fl.Duration("settle", 15*time.Second, "identical trees that lack updates count as converged once unchanged this long")
	interval := fl.Duration("interval", 250*time.Millisecond, "time between comparisons")
	report := fl.String("report", "", "file for the lost updates and the last differences")
	var lives, stores, pidArgs multiFlag
	fl.Var(&lives, "live", "a treegen proxy -live file whose up+down bytes count (repeatable)")
	fl.Var(&stores, "storedir", "a directory whose growth in file bytes counts as bytes moved (repeatable)")
	fl.Var(&pidArgs, "pid", "a process whose tree's CPU time counts (repeatable)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *a == "" || *b == "" || *window <= 0 {
		return errors.New("want -a, -b and -window > 0")
	}
	var pids []int
	for _, s := range pidArgs {
		pid, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("-pid %q: %v", s, err)
		}
		pids = append(pids, pid)
	}
	ma := &manifester{root: filepath.Clean(*a), cache: map[string]cacheEntry{}}
	mb := &manifester{root: filepath.Clean(*b), cache: map[string]cacheEntry{}}
	baseA, err := ma.manifest()
	if err != nil {
		return err
	}
	baseB, err := mb.manifest()
	if err != nil {
		return err
	}
	if d := diffManifests(baseA, baseB); d != "" {
		return fmt.Errorf("%s and %s differ before the churn: %s", *a, *b, d)
	}
	p := planChurn(baseA, ma.root, mb.root, *seed, *window)

	bytesNow := func() int64 {
		var n int64
		for _, f := range lives {
			up, down := readCounts(f)
			n += up + down
		}
		for _, d := range stores {
			n += dirBytes(d)
		}
		return n
	}
	bytes0, cpu0, self0 := bytesNow(), cpuTicks(pids), selfCPU()

	// Play both halves at once, each step at its offset.
	t0 := time.Now()
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, steps := range [][]timed{p.a, p.b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, s := range steps {
				time.Sleep(time.Until(t0.Add(s.at)))
				if err := s.do(); err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("churn: %w", err)
	}
	tEnd := time.Now()
	bytesEnd := bytesNow()

	// Compare until identical and complete, or identical and unchanged for
	// -settle, or -timeout.
	deadline := tEnd.Add(*timeout)
	var (
		polls                int
		firstEqual           time.Time
		equalSig             string
		atBytes, atCPU       int64
		lostN, lostConflicts int
		lostWhy              []string
		diff                 string
		converged            bool
	)
	for {
		start := time.Now()
		polls++
		manA, errA := ma.manifest()
		manB, errB := mb.manifest()
		if err := errors.Join(errA, errB); err != nil {
			return err
		}
		sampleBytes, sampleCPU := bytesNow(), cpuTicks(pids)
		diff = diffManifests(manA, manB)
		lostN, lostConflicts, lostWhy = 0, 0, lostWhy[:0]
		contA, contB := contents(manA), contents(manB)
		for _, u := range p.updates {
			why := u.lost(manA, contA)
			if why == "" {
				if w := u.lost(manB, contB); w != "" {
					why = "in B: " + w
				}
			} else {
				why = "in A: " + why
			}
			if why != "" {
				lostN++
				if strings.HasPrefix(u.kind, "conflict") {
					lostConflicts++
				}
				lostWhy = append(lostWhy, fmt.Sprintf("%s %s: %s", u.side, u.kind, why))
			}
		}
		done := time.Now()
		if diff == "" {
			sig := manifestSig(manA)
			if firstEqual.IsZero() || sig != equalSig {
				firstEqual, equalSig, atBytes, atCPU = done, sig, sampleBytes, sampleCPU
			}
			if lostN == 0 || done.Sub(firstEqual) >= *settle {
				converged = true
				break
			}
		} else {
			firstEqual = time.Time{}
		}
		if done.After(deadline) {
			atBytes, atCPU = sampleBytes, sampleCPU
			break
		}
		time.Sleep(time.Until(start.Add(*interval)))
	}
	self := selfCPU() - self0
	manA, _ := ma.manifest()
	extra := 0
	for rel, v := range manA {
		if v != "dir" && !p.final[rel] && !p.conflictSet[rel] {
			extra++
		}
	}
	convS := time.Since(tEnd).Seconds()
	if converged {
		convS = firstEqual.Sub(tEnd).Seconds()
	}
	if *report != "" {
		var sb strings.Builder
		fmt.Fprintf(&sb, "converged %v after %.3fs; %d updates lost\n", converged, convS, lostN)
		if diff != "" {
			fmt.Fprintf(&sb, "trees differ: %s\n", diff)
		}
		for _, w := range lostWhy {
			sb.WriteString("lost: " + w + "\n")
		}
		for rel, v := range manA {
			if v != "dir" && !p.final[rel] && !p.conflictSet[rel] {
				sb.WriteString("extra in A: " + rel + "\n")
			}
		}
		if err := os.WriteFile(*report, []byte(sb.String()), 0o644); err != nil {
			return err
		}
	}
	conv := 0
	if converged {
		conv = 1
	}
	fmt.Fprintf(os.Stderr, "treegen: twoway: %d+%d changes (%d conflicts) over %.2fs; %s after %.2fs, %d updates lost, %d extra files\n",
		len(p.a), len(p.b), p.conflicts, tEnd.Sub(t0).Seconds(),
		map[bool]string{true: "identical", false: "NOT identical"}[converged], convS, lostN, extra)
	var kinds []string
	for _, k := range sortedKeys(p.kinds) {
		kinds = append(kinds, fmt.Sprintf("%s=%d", strings.NewReplacer(" ", ":", "/", "-", "+", "-").Replace(k), p.kinds[k]))
	}
	fmt.Printf("twoway files=%d changes_a=%d changes_b=%d updates=%d conflicts=%d written_bytes=%d window_s=%.3f converged=%d converge_s=%.3f bytes=%d bytes_churn=%d cpu_s=%.2f lost=%d lost_conflicts=%d extra=%d polls=%d self_cpu_s=%.2f %s\n",
		len(p.final), len(p.a), len(p.b), len(p.updates), p.conflicts, p.written, tEnd.Sub(t0).Seconds(), conv, convS,
		atBytes-bytes0, bytesEnd-bytes0, float64(atCPU-cpu0)/100, lostN, lostConflicts, extra, polls, self, strings.Join(kinds, " "))
	return nil
}

func contents(man map[string]string) map[string]bool {
	out := make(map[string]bool, len(man))
	for _, v := range man {
		if v != "dir" {
			out[v] = true
		}
	}
	return out
}

// manifestSig is a digest of a whole manifest, to tell whether a tree
// changed between two comparisons.
func manifestSig(man map[string]string) string {
	h := sha256.New()
	for _, k := range sortedKeys(man) {
		fmt.Fprintf(h, "%s\x00%s\x00", k, man[k])
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// diffManifests returns "" when both manifests are equal, or the number of
// differing paths and the first of them.
func diffManifests(a, b map[string]string) string {
	var diffs []string
	for _, k := range sortedKeys(a) {
		switch bv, ok := b[k]; {
		case !ok:
			diffs = append(diffs, k+": only in A")
		case bv != a[k]:
			diffs = append(diffs, k+": differs")
		}
	}
	for _, k := range sortedKeys(b) {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, k+": only in B")
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprintf("%d paths differ, first: %s", len(diffs), diffs[0])
}
