//go:build linux

package main

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// tree is the workload's model of SRC: what every path must hold. The
// workload is planned on the model first (every byte generated, every hash
// known) and then played on SRC as a list of steps, so the timed part is
// only the file system calls, and the comparison knows the final state from
// the first moment.
type tree struct {
	root  string
	files map[string]*modelFile
	dirs  map[string]bool
	bytes int64 // to be written to SRC by the planned steps
}

type modelFile struct {
	kind  int
	data  []byte
	sum   [32]byte
	dirty bool // sum is stale
}

// step is one change to SRC, planned on the model.
type step func() error

func (t *tree) abs(rel string) string { return filepath.Join(t.root, filepath.FromSlash(rel)) }

// mkdirs adds rel and its missing parents to the model, and returns the
// steps that create them, parents first.
func (t *tree) mkdirs(rel string) []step {
	if rel == "." || t.dirs[rel] {
		return nil
	}
	steps := t.mkdirs(path.Dir(rel))
	t.dirs[rel] = true
	return append(steps, func() error { return os.Mkdir(t.abs(rel), 0o755) })
}

func (t *tree) create(rel string, kind int, data []byte) []step {
	steps := t.mkdirs(path.Dir(rel))
	t.files[rel] = &modelFile{kind: kind, data: data, dirty: true}
	t.bytes += int64(len(data))
	return append(steps, func() error { return os.WriteFile(t.abs(rel), data, 0o644) })
}

func (t *tree) appendTo(rel string, extra []byte) []step {
	m := t.files[rel]
	m.data = append(m.data[:len(m.data):len(m.data)], extra...)
	m.dirty = true
	t.bytes += int64(len(extra))
	return []step{func() error {
		f, err := os.OpenFile(t.abs(rel), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		if _, err := f.Write(extra); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}}
}

// patch overwrites part of a file in place, as a mail client or an index
// updates a region; the size stays.
func (t *tree) patch(rel string, off int, b []byte) []step {
	m := t.files[rel]
	m.data = slices.Clone(m.data)
	copy(m.data[off:], b)
	m.dirty = true
	t.bytes += int64(len(b))
	return []step{func() error {
		f, err := os.OpenFile(t.abs(rel), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}}
}

func (t *tree) remove(rel string) []step {
	delete(t.files, rel)
	return []step{func() error { return os.Remove(t.abs(rel)) }}
}

func (t *tree) rename(from, to string) []step {
	steps := t.mkdirs(path.Dir(to))
	t.files[to] = t.files[from]
	delete(t.files, from)
	return append(steps, func() error { return os.Rename(t.abs(from), t.abs(to)) })
}

// renameDir moves a directory and everything under it.
func (t *tree) renameDir(from, to string) []step {
	move := func(p string) (string, bool) {
		if p == from {
			return to, true
		}
		if rest, ok := strings.CutPrefix(p, from+"/"); ok {
			return to + "/" + rest, true
		}
		return "", false
	}
	for _, p := range sortedKeys(t.files) {
		if q, ok := move(p); ok {
			t.files[q] = t.files[p]
			delete(t.files, p)
		}
	}
	for _, p := range sortedKeys(t.dirs) {
		if q, ok := move(p); ok {
			t.dirs[q] = true
			delete(t.dirs, p)
		}
	}
	return []step{func() error { return os.Rename(t.abs(from), t.abs(to)) }}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expected lists the model's paths in order, with what each must be.
func (t *tree) expected() []entry {
	out := make([]entry, 0, len(t.files)+len(t.dirs))
	for _, p := range sortedKeys(t.dirs) {
		out = append(out, entry{path: p, dir: true})
	}
	for _, p := range sortedKeys(t.files) {
		m := t.files[p]
		if m.dirty {
			m.sum, m.dirty = sha256.Sum256(m.data), false
		}
		out = append(out, entry{path: p, size: int64(len(m.data)), sum: m.sum})
	}
	return out
}

// workload holds the seeded generator and the naming scheme of the tree:
// users uNN (one per 500 files), each with a Maildir (folders with
// cur/new/tmp), logs/YYYY-MM/ and files/.
type workload struct {
	t     *tree
	g     *contentGen
	users int
	seq   int // makes every new name unique
}

var mailFolders = []struct {
	dir    string
	weight int
}{
	{"Maildir/cur", 40}, {"Maildir/new", 10}, {"Maildir/.Sent/cur", 20},
	{"Maildir/.Archive.2024/cur", 15}, {"Maildir/.Archive.2025/cur", 15},
}

func (w *workload) user() string { return fmt.Sprintf("u%02d", w.g.r.IntN(w.users)) }

func (w *workload) mailName(folder string, size int) string {
	w.seq++
	name := fmt.Sprintf("%d.M%dP%dQ%d.mx1,S=%d", w.g.t+int64(w.seq), w.g.r.IntN(1000000), 1000+w.g.r.IntN(30000), w.seq, size)
	if strings.HasSuffix(folder, "/cur") {
		name += ":2,"
		if w.g.r.IntN(2) == 0 {
			name += "S"
		}
	}
	return folder + "/" + name
}

// newFile picks a kind, a place and a size for one phase-1 file:
// 70% messages, 20% logs, 10% binary attachments.
func (w *workload) newFile() (rel string, kind, size int) {
	u, size := w.user(), w.g.size()
	switch p := w.g.r.IntN(100); {
	case p < 70:
		x, folder := w.g.r.IntN(100), ""
		for _, f := range mailFolders {
			if x < f.weight {
				folder = f.dir
				break
			}
			x -= f.weight
		}
		return u + "/" + w.mailName(folder, size), kindMail, size
	case p < 90:
		w.seq++
		return fmt.Sprintf("%s/logs/2025-%02d/%s-%d.log", u, 1+w.g.r.IntN(3), services[w.g.r.IntN(len(services))], w.seq), kindLog, size
	default:
		w.seq++
		exts := []string{"jpg", "pdf", "gz", "zip"}
		return fmt.Sprintf("%s/files/att-%06d-%s.%s", u, w.seq, w.g.hex(8), exts[w.g.r.IntN(len(exts))]), kindBlob, size
	}
}

// phase1 plans n new files in a random order across users and folders,
// and an empty Maildir/tmp per user. Then, per user, an mbox of
// mboxMessages messages and an index file with one record per message the
// user got in Maildir: files that phase 2 changes in place, as a mail
// server does with mbox folders and its index and cache files.
func (w *workload) phase1(n int) (ops int, steps []step) {
	for u := range w.users {
		steps = append(steps, w.t.mkdirs(fmt.Sprintf("u%02d/Maildir/tmp", u))...)
	}
	perUser := make([]int, w.users)
	for range n {
		rel, kind, size := w.newFile()
		if kind == kindMail {
			perUser[userOf(rel)]++
		}
		steps = append(steps, w.t.create(rel, kind, w.g.content(kind, size))...)
	}
	for u := range w.users {
		var mbox []byte
		for range mboxMessages {
			mbox = w.mboxMessage(mbox)
		}
		steps = append(steps, w.t.create(mboxPath(u), kindMbox, mbox)...)
		index := make([]byte, indexHeader, indexHeader+perUser[u]*indexRecord)
		for i := range perUser[u] {
			index = w.indexRecord(index, i+1)
		}
		steps = append(steps, w.t.create(indexPath(u), kindIndex, index)...)
	}
	return n + 2*w.users, steps
}

// The mbox and index files of phase 1, changed in place by phase 2.
const (
	mboxMessages = 20
	indexHeader  = 64 // bytes; a counter of changes at offset 8
	indexRecord  = 96 // bytes per message: uid, flags, a GUID, sizes, dates
)

func mboxPath(u int) string  { return fmt.Sprintf("u%02d/mail/mbox/INBOX", u) }
func indexPath(u int) string { return fmt.Sprintf("u%02d/Maildir/mail.index", u) }

func userOf(rel string) int {
	var u int
	fmt.Sscanf(rel, "u%d/", &u)
	return u
}

// mboxMessage appends one message, with its "From " separator line, to b.
func (w *workload) mboxMessage(b []byte) []byte {
	_, addr := w.g.person()
	b = fmt.Appendf(b, "From %s %s\n", addr, w.g.date())
	b = append(b, w.g.mail(1024+w.g.r.IntN(15<<10))...)
	return append(b, '\n')
}

// indexRecord appends the record of message uid to b: little-endian uid
// and flags, 16 random bytes of GUID, then sizes and times that compress.
func (w *workload) indexRecord(b []byte, uid int) []byte {
	rec := make([]byte, indexRecord)
	binary.LittleEndian.PutUint32(rec[0:], uint32(uid))
	binary.LittleEndian.PutUint32(rec[4:], uint32(w.g.r.IntN(16)))
	copy(rec[8:24], w.g.random(nil, 16))
	binary.LittleEndian.PutUint32(rec[24:], uint32(1024+w.g.r.IntN(64<<10)))
	binary.LittleEndian.PutUint64(rec[32:], uint64(w.g.t))
	return append(b, rec...)
}

// phase2 plans changes to the tree made by phase 1, in a shuffled order:
// for n files, 15% appends to logs, 5% whole rewrites and 5% in-place
// patches, 10% deletes, 5% renames of messages (new/ to cur/, a flag added,
// moved to an archive), 5% new messages, and one directory rename per
// 10,000 files (an archive folder). No file takes part in two of these.
// Besides, each user's mbox and index change many times in place: 3% of n
// messages appended to an mbox, and 5% of n index updates (a record's
// flags and the header's counter rewritten in place, a third of them also
// appending a record).
func (w *workload) phase2(n int) (ops int, steps []step) {
	used := map[string]bool{}
	var logs, mails, others []string
	for _, p := range sortedKeys(w.t.files) {
		switch w.t.files[p].kind {
		case kindLog:
			logs = append(logs, p)
		case kindMail:
			mails = append(mails, p)
		case kindMbox, kindIndex:
		default:
			others = append(others, p)
		}
	}
	shuffle := func(s []string) { w.g.r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] }) }
	shuffle(logs)
	shuffle(mails)
	shuffle(others)
	// take returns up to k unused paths, from each list in turn.
	take := func(k int, lists ...*[]string) []string {
		var out []string
		for len(out) < k {
			progress := false
			for _, l := range lists {
				for len(*l) > 0 && len(out) < k {
					p := (*l)[0]
					*l = (*l)[1:]
					if !used[p] {
						used[p] = true
						out = append(out, p)
						progress = true
						break
					}
				}
			}
			if !progress {
				break
			}
		}
		return out
	}

	// Each op is planned on the model when it is played, after the
	// shuffle, so the model ends in the state SRC ends in.
	var plan []func() []step
	for u := range min(max(1, n/10000), w.users) {
		from := fmt.Sprintf("u%02d/Maildir/.Archive.2024", u)
		if !w.t.dirs[from] {
			continue
		}
		for _, p := range sortedKeys(w.t.files) {
			if strings.HasPrefix(p, from+"/") {
				used[p] = true
			}
		}
		plan = append(plan, func() []step { return w.t.renameDir(from, from+".old") })
	}
	for _, p := range take(n*15/100, &logs) {
		extra := w.g.logLines(nil, 1024+w.g.r.IntN(7<<10))
		plan = append(plan, func() []step { return w.t.appendTo(p, extra) })
	}
	for _, p := range take(n*5/100, &mails, &others) {
		kind := w.t.files[p].kind
		data := w.g.content(kind, w.g.size())
		plan = append(plan, func() []step { return w.t.create(p, kind, data) })
	}
	for _, p := range take(n*5/100, &mails, &others, &logs) {
		m := w.t.files[p]
		k := min(len(m.data), 1024+w.g.r.IntN(3<<10))
		off := w.g.r.IntN(len(m.data) - k + 1)
		b := w.g.content(m.kind, k)
		plan = append(plan, func() []step { return w.t.patch(p, off, b) })
	}
	for _, p := range take(n*10/100, &mails, &logs, &others, &mails) {
		plan = append(plan, func() []step { return w.t.remove(p) })
	}
	for _, p := range take(n*5/100, &mails) {
		dir, name := path.Split(p)
		name, _, _ = strings.Cut(name, ":2,")
		var to string
		switch {
		case strings.HasSuffix(dir, "/new/"):
			to = strings.TrimSuffix(dir, "new/") + "cur/" + name + ":2,S"
		case w.g.r.IntN(2) == 0:
			to = dir + name + ":2,RS"
		default:
			to = strings.SplitN(dir, "/", 2)[0] + "/Maildir/.Archive.2025/cur/" + name + ":2,S"
		}
		if w.t.files[to] != nil || used[to] {
			continue
		}
		used[to] = true
		plan = append(plan, func() []step { return w.t.rename(p, to) })
	}
	for range n * 5 / 100 {
		size := w.g.size()
		rel := fmt.Sprintf("u%02d/", w.g.r.IntN(w.users)) + w.mailName("Maildir/new", size)
		data := w.g.mail(size)
		plan = append(plan, func() []step { return w.t.create(rel, kindMail, data) })
	}
	for range n * 3 / 100 {
		rel := mboxPath(w.g.r.IntN(w.users))
		msg := w.mboxMessage(nil)
		plan = append(plan, func() []step { return w.t.appendTo(rel, msg) })
	}
	for range n * 5 / 100 {
		rel, grow, pick := indexPath(w.g.r.IntN(w.users)), w.g.r.IntN(3) == 0, w.g.r.Uint32()
		flags := binary.LittleEndian.AppendUint32(nil, uint32(w.g.r.IntN(16)))
		plan = append(plan, func() []step {
			data := w.t.files[rel].data
			records := (len(data) - indexHeader) / indexRecord
			counter := binary.LittleEndian.AppendUint64(nil, binary.LittleEndian.Uint64(data[8:])+1)
			var steps []step
			if records > 0 {
				steps = w.t.patch(rel, indexHeader+int(pick%uint32(records))*indexRecord+4, flags)
			}
			steps = append(steps, w.t.patch(rel, 8, counter)...)
			if grow {
				steps = append(steps, w.t.appendTo(rel, w.indexRecord(nil, records+1))...)
			}
			return steps
		})
	}
	w.g.r.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	for _, op := range plan {
		steps = append(steps, op()...)
	}
	return len(plan), steps
}

func runWorkload(args []string) error {
	fl := flag.NewFlagSet("run", flag.ContinueOnError)
	src := fl.String("src", "", "source tree (created empty or must be empty)")
	dst := fl.String("dst", "", "replica tree to wait for")
	seed := fl.Uint64("seed", 1, "workload seed")
	files := fl.Int("files", 10000, "files created in phase 1")
	timeout := fl.Duration("timeout", 10*time.Minute, "give up when a phase's replica does not match after this long")
	interval := fl.Duration("interval", 100*time.Millisecond, "time between comparisons")
	bytesFile := fl.String("bytes", "", "a treegen proxy -live file: report the wire bytes of each phase")
	afterWrites := fl.String("after-writes", "", "a shell command run once each phase's writes are done, inside the timed phase (TREEGEN_PHASE names the phase): a tool that copies the tree once, such as rsync")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *src == "" || *dst == "" || *files < 1 {
		return errors.New("want -src, -dst and -files >= 1")
	}
	if err := os.MkdirAll(*src, 0o755); err != nil {
		return err
	}
	if ents, err := os.ReadDir(*src); err != nil || len(ents) > 0 {
		return fmt.Errorf("%s must be an empty directory (%v)", *src, err)
	}
	w := &workload{
		t:     &tree{root: *src, files: map[string]*modelFile{}, dirs: map[string]bool{}},
		g:     newContentGen(*seed),
		users: max(1, *files/500),
	}
	m := &matcher{root: *dst, cache: map[string]cacheEntry{}}
	phases := []struct {
		name string
		plan func(int) (int, []step)
	}{{"phase1", w.phase1}, {"phase2", w.phase2}}
	for _, ph := range phases {
		before := w.t.bytes
		ops, steps := ph.plan(*files)
		exp := w.t.expected()
		var treeBytes int64
		for _, e := range exp {
			treeBytes += e.size
		}

		// The clock starts with the first write. The comparison runs from
		// then on, so replica files are hashed as they arrive, but it can
		// only succeed once every write is done.
		up0, down0 := readCounts(*bytesFile)
		cpu0 := selfCPU()
		t0 := time.Now()
		done := make(chan error, 1)
		var wrote time.Duration
		go func() {
			for _, s := range steps {
				if err := s(); err != nil {
					done <- err
					return
				}
			}
			wrote = time.Since(t0)
			if *afterWrites != "" {
				cmd := exec.Command("sh", "-c", *afterWrites)
				cmd.Env = append(os.Environ(), "TREEGEN_PHASE="+ph.name)
				cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
				if err := cmd.Run(); err != nil {
					done <- fmt.Errorf("-after-writes command: %w", err)
					return
				}
			}
			done <- nil
		}()
		matched, polls, diff := m.wait(exp, done, t0.Add(*timeout), *interval)
		if matched.IsZero() {
			return fmt.Errorf("%s: %s", ph.name, diff)
		}
		fmt.Fprintf(os.Stderr, "treegen: %s: %d operations, %d bytes written in %.2fs; replica matched after %.2fs\n",
			ph.name, ops, w.t.bytes-before, wrote.Seconds(), matched.Sub(t0).Seconds())
		cpu := selfCPU() - cpu0
		var wire string
		if *bytesFile != "" {
			time.Sleep(100 * time.Millisecond) // the proxy writes its counts every 50 ms
			up1, down1 := readCounts(*bytesFile)
			wire = fmt.Sprintf(" up_bytes=%d down_bytes=%d", up1-up0, down1-down0)
		}
		fmt.Printf("%s ops=%d written_bytes=%d files=%d dirs=%d tree_bytes=%d write_s=%.3f match_s=%.3f polls=%d cpu_s=%.3f%s\n",
			ph.name, ops, w.t.bytes-before, len(w.t.files), len(w.t.dirs), treeBytes,
			wrote.Seconds(), matched.Sub(t0).Seconds(), polls, cpu, wire)
	}
	return nil
}

// readCounts reads "up N" and "down N" from a treegen proxy -live file
// (zeros when there is none yet).
func readCounts(name string) (up, down int64) {
	if name == "" {
		return 0, 0
	}
	b, _ := os.ReadFile(name)
	for _, line := range strings.Split(string(b), "\n") {
		var k string
		var v int64
		if n, _ := fmt.Sscan(line, &k, &v); n == 2 {
			switch k {
			case "up":
				up = v
			case "down":
				down = v
			}
		}
	}
	return up, down
}

// selfCPU is this process's user + system CPU time so far, in seconds: the
// writes and the comparisons, which compete with the tools for the CPUs.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}
