package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// kill -9 at each point of a tail: source's path with no journal (the
// default: the file holds the lines, the newest sealed segment's cursor
// says where to read again): after lines are read and before they are
// sealed, while a seal is in flight, after a seal before state.json
// catches up, while rotated files are read as a backlog, and after a
// copytruncate. After each, a restarted shipper ships every line exactly
// once: the replica the store gives is the file's lines, in order.

// tailRig is one tailed file and its stream.
type tailRig struct {
	*stream
	log  string
	want []byte // every line written, in order, across rotations
}

func newTailRig(t *testing.T, name string) *tailRig {
	s := newStream(t, name)
	r := &tailRig{stream: s, log: filepath.Join(s.dir, "logs", "app.log")}
	if err := os.Mkdir(filepath.Dir(r.log), 0o755); err != nil {
		t.Fatal(err)
	}
	return r
}

// write appends data to the live file.
func (r *tailRig) write(data []byte) {
	r.t.Helper()
	f, err := os.OpenFile(r.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		r.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.want = append(r.want, data...)
}

// ship starts ferry ship tailing the file.
func (r *tailRig) ship(extra ...string) *ferrytest.Process {
	return startFerry(r.t, nil, r.shipArgs(append([]string{"--source", "tail:" + r.log}, extra...)...)...)
}

// waitRead waits until the shipper p has accepted records through seq
// (SPOOL/status.json, rewritten every second; for a stream of a ship with
// [[streams]], its entry in the spool root's streams-status.json).
func (r *tailRig) waitRead(p *ferrytest.Process, seq uint64) {
	r.t.Helper()
	ferrytest.Eventually(r.t, 60*time.Second, fmt.Sprintf("shipper read through seq %d", seq), func() (bool, string) {
		if p.Exited() {
			r.t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
		got := r.statusSeq()
		return got >= seq, fmt.Sprintf("status.json says seq %d", got)
	})
}

func (r *tailRig) statusSeq() uint64 {
	type status struct {
		LastSeq uint64 `json:"last_seq"`
	}
	var own status
	if data, err := os.ReadFile(filepath.Join(r.spool, "status.json")); err == nil {
		json.Unmarshal(data, &own)
	}
	var shared struct {
		Streams map[string]status `json:"streams"`
	}
	if data, err := os.ReadFile(filepath.Join(filepath.Dir(r.spool), "streams-status.json")); err == nil {
		json.Unmarshal(data, &shared)
	}
	return max(own.LastSeq, shared.Streams[filepath.Base(r.spool)].LastSeq)
}

// sealedThrough is the last seq of the newest segment in the spool or the
// store (0: none), and how many the spool holds.
func (r *tailRig) sealedThrough() (last uint64, inSpool int) {
	r.t.Helper()
	for _, name := range r.segments() {
		_, l := segmentSeqs(r.t, name)
		last = max(last, l)
	}
	ents, err := os.ReadDir(filepath.Join(r.spool, "sealed"))
	if err != nil && !os.IsNotExist(err) {
		r.t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg.zst") && !strings.HasPrefix(e.Name(), ".") {
			_, l := segmentSeqs(r.t, e.Name())
			last = max(last, l)
			inSpool++
		}
	}
	return last, inSpool
}

// journalBytes is the size of the spool's journal files.
func (r *tailRig) journalBytes() int64 {
	r.t.Helper()
	ents, err := os.ReadDir(r.spool)
	if err != nil {
		r.t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "journal") {
			fi, err := e.Info()
			if err != nil {
				r.t.Fatal(err)
			}
			n += fi.Size()
		}
	}
	return n
}

// finish ships what is left with a fresh shipper, stops it and checks the
// store holds every line written exactly once, in order.
func (r *tailRig) finish(p *ferrytest.Process, what string) {
	r.t.Helper()
	if p == nil {
		p = r.ship("--max-age", "50ms")
	}
	ferrytest.Eventually(r.t, 60*time.Second, "replica holds every line written", func() (bool, string) {
		if p.Exited() {
			r.t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
		r.pollReceiveOnce()
		got := r.readReplica()
		if !bytes.HasPrefix(r.want, got) {
			r.t.Fatalf("replica %s is not a prefix of the lines written: %s", what, describeDiff(r.want, got))
		}
		return len(got) == len(r.want), fmt.Sprintf("replica has %d of %d bytes", len(got), len(r.want))
	})
	if code := p.Terminate(30 * time.Second); code != 0 {
		r.t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
	}
	r.receiveOnce()
	r.wantReplica(r.want, what)
	if v := r.verify(); v.Code != 0 {
		r.t.Fatalf("verify %s: want exit 0:\n%s", what, v)
	}
}

// Killed after it read lines and before it sealed them: they were only in
// memory (the journal stays empty); the restart reads them again from the
// cursor of the last seal.
func TestTailJournallessKillBeforeSeal(t *testing.T) {
	t.Parallel()
	r := newTailRig(t, "noseal")
	r.write(numbered("A", 1, 2000))
	p := r.ship("--max-age", "100ms")
	r.waitRead(p, 2000)
	ferrytest.Eventually(t, 30*time.Second, "lines 1-2000 sealed", func() (bool, string) {
		last, _ := r.sealedThrough()
		return last == 2000, fmt.Sprintf("sealed through %d", last)
	})
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d:\n%s", code, p)
	}
	// Nothing seals by age or size now: the next lines stay in memory.
	p = r.ship("--max-age", "1h", "--max-bytes", "64MiB")
	r.write(numbered("B", 2001, 3000))
	r.waitRead(p, 5000)
	if n := r.journalBytes(); n != 0 {
		t.Fatalf("the spool's journal holds %d bytes: a tail: source writes its lines once, into the segment", n)
	}
	p.Kill9()
	if last, _ := r.sealedThrough(); last != 2000 {
		t.Fatalf("killed with lines sealed through seq %d; the test needs 2001-5000 read and not sealed", last)
	}
	r.write(numbered("C", 5001, 500))
	r.finish(nil, "after a kill -9 between read and seal")
}

// Killed while seals are in flight, three times over: the moment the
// shipper has read the lines (the 4 MiB batch handed off, being
// compressed: nothing of its segment on disk yet), the moment the
// segment's file appears in SPOOL/sealed (being written or fsynced), and
// at a random moment up to 2.5 s later. A seal the kill cut short leaves
// no segment, or a torn one recovery removes; the lines come back from
// the file.
func TestTailJournallessKillMidSeal(t *testing.T) {
	t.Parallel()
	rng := seededRand(t)
	r := newTailRig(t, "midseal")
	args := []string{"--max-age", "1h", "--max-bytes", "4MiB", "--compression", "better"}
	sealedDir := filepath.Join(r.spool, "sealed")
	first := 1
	for k, moment := range []string{"lines read", "segment file appeared", "random"} {
		data := logLines(uint64(k), first, 60_000) // about 5.3 MiB: one hand-off at 4 MiB
		first += 60_000
		r.write(data)
		seen := map[string]bool{}
		if ents, err := os.ReadDir(sealedDir); err == nil {
			for _, e := range ents {
				seen[e.Name()] = true
			}
		}
		p := r.ship(args...)
		// rchar: what the process read, from the file and its spool; it
		// reads at least what was added.
		ferrytest.Eventually(t, 60*time.Second, "shipper read the new lines", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
			}
			n := rchar(p.Pid())
			return n >= int64(len(data)), fmt.Sprintf("read %d of %d bytes", n, len(data))
		})
		switch moment {
		case "segment file appeared":
			deadline := time.Now().Add(60 * time.Second)
			for appeared := false; !appeared; {
				ents, _ := os.ReadDir(sealedDir)
				for _, e := range ents {
					appeared = appeared || !seen[e.Name()]
				}
				if time.Now().After(deadline) {
					t.Fatalf("no segment file appeared in %s within 60s:\n%s", sealedDir, p)
				}
				time.Sleep(100 * time.Microsecond)
			}
		case "random":
			time.Sleep(time.Duration(rng.Int64N(int64(2500 * time.Millisecond))))
		}
		p.Kill9()
		last, inSpool := r.sealedThrough()
		t.Logf("kill -9 #%d (%s): sealed through seq %d (%d segments in the spool), %d lines written",
			k+1, moment, last, inSpool, len(lines(r.want)))
	}
	r.finish(nil, "after kills -9 during seals")
}

// rchar is the bytes process pid has read (/proc/PID/io), 0 if unknown.
func rchar(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rchar: "); ok {
			var n int64
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

// Killed after a seal and before state.json names it: the segment alone
// (its source_cursor) says where the file stands.
func TestTailJournallessKillBeforeState(t *testing.T) {
	t.Parallel()
	r := newTailRig(t, "nostate")
	next := 1
	hit := 0
	var newest uint64
	for k := 0; k < 10 && hit < 3; k++ {
		p := r.ship("--max-age", "1h", "--max-records", "500")
		r.write(numbered("L", next, 1700)) // sealed from 500 records on, where a read ends
		next += 1700
		before := newest
		var stateSeq uint64
		ferrytest.Eventually(t, 60*time.Second, "a new segment sealed past state.json", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
			}
			stateSeq = spoolStateSeq(t, r.spool)
			newest, _ = r.sealedThrough()
			if newest > before && newest > stateSeq {
				return true, ""
			}
			// state.json caught up (it is rewritten about every second):
			// more lines, another seal.
			r.write(numbered("L", next, 600))
			next += 600
			return false, fmt.Sprintf("state.json at %d, newest segment through %d", stateSeq, newest)
		})
		p.Kill9()
		stateSeq = spoolStateSeq(t, r.spool)
		newest, _ = r.sealedThrough()
		t.Logf("kill -9 #%d: state.json at seq %d, newest segment through %d, %d lines written", k+1, stateSeq, newest, next-1)
		if newest > stateSeq {
			hit++
		}
	}
	if hit < 3 {
		t.Fatalf("only %d of the kills came after a seal that state.json did not name yet", hit)
	}
	r.finish(nil, "after kills -9 between a seal and state.json")
}

// spoolStateSeq is sealed_seq in SPOOL/state.json (0 if none yet).
func spoolStateSeq(t *testing.T, spool string) uint64 {
	data, err := os.ReadFile(filepath.Join(spool, "state.json"))
	if err != nil {
		return 0
	}
	var st struct {
		SealedSeq uint64 `json:"sealed_seq"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("spool state.json: %v", err)
	}
	return st.SealedSeq
}

// Killed while reading files rotated away while it was stopped: the rest
// of the file the cursor names, then two more rotated files in order, then
// the live file. Each rotated file's lines are sealed before the cursor
// leaves it; a kill at any moment resumes in the right file.
func TestTailJournallessKillInRotationBacklog(t *testing.T) {
	t.Parallel()
	rng := seededRand(t)
	r := newTailRig(t, "backlog")
	r.write(numbered("A", 1, 1000))
	p := r.ship("--max-age", "50ms")
	r.waitRead(p, 1000)
	ferrytest.Eventually(t, 30*time.Second, "lines 1-1000 sealed", func() (bool, string) {
		last, _ := r.sealedThrough()
		return last == 1000, fmt.Sprintf("sealed through %d", last)
	})
	p.Kill9()
	// While it is down: more lines in app.log, rotated to app.log.1; a
	// full app.log.2; then the live file.
	next := 1001
	for i, n := range []int{30_000, 60_000, 20_000} {
		r.write(numbered(string(rune('B'+i)), next, n))
		next += n
		if i < 2 {
			if err := os.Rename(r.log, fmt.Sprintf("%s.%d", r.log, i+1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	args := []string{"--max-age", "1h", "--max-bytes", "64MiB"} // only leaving a rotated file seals
	for k := range 3 {
		// Killed once it read a random part of the first half of what is
		// not sealed yet (rchar: what the process read), which it reads
		// again from the newest segment's cursor.
		last, _ := r.sealedThrough()
		left := int64(len(r.want)) - int64(lineEnd(r.want, last))
		p = r.ship(args...)
		at := rng.Int64N(left/2 + 1)
		ferrytest.Eventually(t, 60*time.Second, "shipper read into the backlog", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
			}
			n := rchar(p.Pid())
			return n >= at, fmt.Sprintf("read %d of %d bytes", n, at)
		})
		p.Kill9()
		last, _ = r.sealedThrough()
		t.Logf("kill -9 #%d in the backlog: sealed through seq %d of %d", k+1, last, next-1)
	}
	// One more run reads it all, and is killed with the live file's lines
	// read but not sealed: the rotated files' lines are, to their end.
	p = r.ship(args...)
	r.waitRead(p, uint64(next-1))
	p.Kill9()
	if last, _ := r.sealedThrough(); last != 1000+30_000+60_000 {
		t.Fatalf("killed after reading everything with seqs through %d sealed, want %d: a rotated file's lines are sealed before the tail moves on, the live file's are not",
			last, 1000+30_000+60_000)
	}
	// So the rotated files may go (logrotate removes old ones): the
	// cursor has left them.
	for i := 1; i <= 2; i++ {
		if err := os.Remove(fmt.Sprintf("%s.%d", r.log, i)); err != nil {
			t.Fatal(err)
		}
	}
	r.finish(nil, "after kills -9 in a rotation backlog")
}

// Killed after a copytruncate that it noticed: the lines read from the
// file before it was truncated are sealed before the tail reads it again
// from offset 0 (nothing else has them: the journal is not written).
func TestTailJournallessKillAfterTruncation(t *testing.T) {
	t.Parallel()
	r := newTailRig(t, "trunc")
	r.write(numbered("A", 1, 800))
	p := r.ship("--max-age", "1h", "--max-bytes", "64MiB")
	r.waitRead(p, 800)
	if last, _ := r.sealedThrough(); last != 0 {
		t.Fatalf("sealed through %d before the truncation; the test needs the lines open", last)
	}
	// logrotate copytruncate: copy, then truncate in place.
	if err := os.WriteFile(r.log+".1", r.want, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(r.log, 0); err != nil {
		t.Fatal(err)
	}
	r.write(numbered("B", 801, 20))
	r.waitRead(p, 820)
	p.Kill9()
	if last, _ := r.sealedThrough(); last < 800 {
		t.Fatalf("killed after the truncation with seqs through %d sealed, want the 800 lines read before it", last)
	}
	r.finish(nil, "after a kill -9 following a copytruncate")
}

// Killed with lines read and not sealed, then the file is copytruncated
// while the shipper is down: the truncation took those lines from the
// file, so the restart finds the copy by the cursor (the sum of the bytes
// before its offset) and reads them from it, then the file from 0.
func TestTailJournallessKillThenCopyTruncate(t *testing.T) {
	t.Parallel()
	r := newTailRig(t, "trunc-down")
	r.write(numbered("A", 1, 100))
	p := r.ship("--max-age", "50ms")
	r.waitRead(p, 100)
	ferrytest.Eventually(t, 30*time.Second, "lines 1-100 sealed", func() (bool, string) {
		last, _ := r.sealedThrough()
		return last == 100, fmt.Sprintf("sealed through %d", last)
	})
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d:\n%s", code, p)
	}
	p = r.ship("--max-age", "1h", "--max-bytes", "64MiB")
	r.write(numbered("B", 101, 700))
	r.waitRead(p, 800)
	p.Kill9()
	r.write(numbered("C", 801, 50)) // never read: in the copy only, too
	if err := os.WriteFile(r.log+".1", r.want, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(r.log, 0); err != nil {
		t.Fatal(err)
	}
	r.write(numbered("D", 851, 20))
	r.finish(nil, "after a kill -9 and a copytruncate while the shipper was down")
}

// An old primary whose tail: source had read lines it never sealed (so
// never shipped) when it was fenced: nothing of it is past the fork in the
// stream, but the lines are in its file past the fork. rejoin cuts them
// (they are in the report's cut bytes), so the file the receiver then
// applies to is the history's.
func TestRejoinCutsLinesReadNotSealed(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	store := filepath.Join(base, "store")
	a, b := newSite(t, base, "a"), newSite(t, base, "b")
	common := []string{"--store", store, "--stream", "app"}
	shipped := numberedLines("a", 1, 300)
	if err := os.WriteFile(a.log, shipped, 0o644); err != nil {
		t.Fatal(err)
	}
	shipA := startFerry(t, nil, append([]string{"ship", "--spool", a.spool, "--source", "tail:" + a.log,
		"--max-records", "300", "--max-age", "1h", "--lease-ttl", "5s"}, common...)...)
	ferrytest.Eventually(t, 30*time.Second, "lines 1-300 stored", func() (bool, string) {
		if shipA.Exited() {
			t.Fatalf("shipper exited with %d:\n%s", shipA.Code(), shipA)
		}
		names, _ := filepath.Glob(filepath.Join(store, "app", "*.seg.zst"))
		return len(names) > 0, "no segment yet"
	})
	waitStored(t, store, "app", 1, 300, 30*time.Second)
	unsealed := numberedLines("a", 301, 340)
	f, err := os.OpenFile(a.log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(unsealed); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ferrytest.Eventually(t, 30*time.Second, "old primary read its last lines", func() (bool, string) {
		var st struct {
			LastSeq uint64 `json:"last_seq"`
		}
		data, _ := os.ReadFile(filepath.Join(a.spool, "status.json"))
		json.Unmarshal(data, &st)
		return st.LastSeq == 340, fmt.Sprintf("status.json at seq %d", st.LastSeq)
	})
	shipA.Kill9()

	mustFerry(t, nil, append([]string{"receive", "--once", "--id", "b", "--state", b.state, "--apply", "file:" + b.log}, common...)...)
	mustFerry(t, nil, append([]string{"promote", "--id", "b", "--state", b.state, "--site", "b"}, common...)...)

	report := filepath.Join(a.dir, "divergence.ndjson")
	r := mustFerry(t, nil, append([]string{"rejoin", "--spool", a.spool, "--state", a.state, "--apply", "file:" + a.log, "--report", report}, common...)...)
	sum := ferrytest.ReadDivergenceReport(t, report)
	if sum.ForkSeq != 300 || sum.Records != 0 || len(sum.Lines) != 0 {
		t.Fatalf("report %+v: want fork 300 and no record past it (the lines after it were never sealed)\n%s", sum, r)
	}
	if got := readFile(t, a.log); !bytes.Equal(got, shipped) {
		t.Fatalf("old primary's file after rejoin: %s\n%s", describeDiff(shipped, got), r)
	}
	if cut := reportCut(t, report); cut != string(unsealed) {
		t.Fatalf("report's cut bytes %q, want the lines read but never sealed %q", cut, unsealed)
	}
	// It now follows the new primary from the fork.
	mustFerry(t, nil, append([]string{"receive", "--once", "--id", "a", "--state", a.state, "--apply", "file:" + a.log}, common...)...)
	if got := readFile(t, a.log); !bytes.Equal(got, shipped) {
		t.Fatalf("old primary's file after receive: %s", describeDiff(shipped, got))
	}
}

// reportCut is the data of a rejoin report's cut line ("" if none).
func reportCut(t *testing.T, path string) string {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(string(readFile(t, path))), "\n") {
		var c struct {
			Cut  string  `json:"cut"`
			Data *string `json:"data"`
		}
		if json.Unmarshal([]byte(line), &c) == nil && c.Cut != "" && c.Data != nil {
			return *c.Data
		}
	}
	return ""
}

// [ship] tail_journal = true keeps the old way: the lines read are in the
// journal before any seal, and a kill -9 loses none of them either.
func TestTailJournalKey(t *testing.T) {
	t.Parallel()
	r := newTailRig(t, "journal")
	conf := filepath.Join(r.dir, "ferry.toml")
	if err := os.WriteFile(conf, []byte("[ship]\ntail_journal = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	failFerry(t, strings.NewReader("x\n"), []string{"ship.tail_journal (--tail-journal) is for a tail: source", `"stdin"`}, r.shipArgs("--config", conf)...)
	r.write(numbered("A", 1, 1000))
	p := r.ship("--config", conf, "--max-age", "1h", "--max-bytes", "64MiB")
	r.waitRead(p, 1000)
	if n := r.journalBytes(); n < int64(len(r.want)) {
		t.Fatalf("the journal holds %d bytes, fewer than the %d read: tail_journal = true journals every line", n, len(r.want))
	}
	p.Kill9()
	if last, _ := r.sealedThrough(); last != 0 {
		t.Fatalf("sealed through %d before the kill; the test needs the lines only in the journal", last)
	}
	r.write(numbered("B", 1001, 100))
	r.finish(r.ship("--config", conf, "--max-age", "50ms"), "after a kill -9 with tail_journal = true")
}

// A ship of [[streams]] tails every file with no journal too, and
// [ship] tail_journal = true journals every stream's lines.
func TestStreamsTailJournal(t *testing.T) {
	t.Parallel()
	for _, journal := range []bool{false, true} {
		dir := t.TempDir()
		logPath := filepath.Join(dir, "orders.log")
		data := numbered("O", 1, 500)
		if err := os.WriteFile(logPath, data, 0o644); err != nil {
			t.Fatal(err)
		}
		spool := filepath.Join(dir, "spool")
		cfg := filepath.Join(dir, "ship.toml")
		conf := fmt.Sprintf("store = %q\n[ship]\nspool = %q\nmax_age = \"1h\"\nmax_bytes = \"64MiB\"\ntail_journal = %v\n[[streams]]\nname = \"orders\"\nsource = \"tail:%s\"\n",
			filepath.Join(dir, "store"), spool, journal, logPath)
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		p := startFerry(t, nil, "ship", "--config", cfg)
		r := &tailRig{stream: &stream{t: t, spool: filepath.Join(spool, "orders")}}
		r.waitRead(p, 500)
		n := r.journalBytes()
		p.Kill9()
		if journal && n < int64(len(data)) || !journal && n != 0 {
			t.Fatalf("tail_journal = %v: the stream's journal holds %d bytes of the %d read", journal, n, len(data))
		}
	}
}

// lineEnd is the offset just after the n-th line of b (0 for n = 0).
func lineEnd(b []byte, n uint64) int {
	off := 0
	for range n {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return len(b)
		}
		off += i + 1
	}
	return off
}
