//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

func (s *stream) pushArgs(extra ...string) []string {
	return append([]string{"push", "--store", s.store, "--stream", s.name, "--spool", s.spool}, extra...)
}

func (s *stream) fetchArgs(extra ...string) []string {
	return append([]string{"fetch", "--store", s.store, "--stream", s.name}, extra...)
}

// writeFile writes n random bytes (from seed) to dir/name and returns them.
func writeRandomFile(t *testing.T, dir, name string, n int, seed uint64) []byte {
	t.Helper()
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

// wantFile fails the test unless path holds exactly want.
func wantFileContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %s", path, describeDiff(want, got))
	}
}

// pushMarker is what the tests read of a marker.
type pushMarker struct {
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

func (s *stream) marker(name string) pushMarker {
	s.t.Helper()
	raw, err := os.ReadFile(filepath.Join(s.streamDir(), "pushed", name))
	if err != nil {
		s.t.Fatal(err)
	}
	var m pushMarker
	if err := json.Unmarshal(raw, &m); err != nil {
		s.t.Fatalf("marker %s: %v", raw, err)
	}
	return m
}

// With no shipper running, push ships the file itself; fetch gives it
// back byte for byte. The archive_command contract: the same content again
// succeeds without shipping anything, other content under the name fails
// and names it; a name never pushed fails fetch at once.
func TestPushFetchWithoutShipper(t *testing.T) {
	t.Parallel()
	s := newStream(t, "pg")
	wal := filepath.Join(s.dir, "pg_wal")
	seg := "000000010000000000000001"
	data := writeRandomFile(t, wal, seg, 200<<10, 1)
	r := mustFerry(t, nil, s.pushArgs(filepath.Join(wal, seg))...)
	if !strings.Contains(r.Stderr, "push's own shipper (none was running)") {
		t.Errorf("push does not say it ran its own shipper:\n%s", r)
	}
	m := s.marker(seg)
	if m.FirstSeq != 1 || m.LastSeq != 1 || m.Size != int64(len(data)) {
		t.Errorf("marker %+v, want seq 1-1 and %d bytes", m, len(data))
	}
	out := filepath.Join(s.dir, "restore", "RECOVERYXLOG")
	os.MkdirAll(filepath.Dir(out), 0o755)
	mustFerry(t, nil, s.fetchArgs(seg, out)...)
	wantFileContent(t, out, data)

	segsBefore := len(s.segments())
	r = mustFerry(t, nil, s.pushArgs(filepath.Join(wal, seg))...)
	if !strings.Contains(r.Stderr, "already pushed with identical content") {
		t.Errorf("second push of identical content does not say so:\n%s", r)
	}
	if n := len(s.segments()); n != segsBefore {
		t.Errorf("identical push shipped again: %d segments, had %d", n, segsBefore)
	}

	// Same name, other content: refused with both hashes, nothing shipped.
	writeRandomFile(t, filepath.Join(s.dir, "other"), seg, 1000, 2)
	r = failFerry(t, nil, []string{seg, "different content", m.SHA256}, s.pushArgs(filepath.Join(s.dir, "other", seg))...)
	if r.Code != 1 {
		t.Errorf("conflicting push exit %d, want 1", r.Code)
	}
	if n := len(s.segments()); n != segsBefore {
		t.Errorf("conflicting push shipped: %d segments, had %d", n, segsBefore)
	}
	// Also when only the store knows the name (a new spool).
	r = failFerry(t, nil, []string{seg, "different content", "target store"},
		"push", "--store", s.store, "--stream", s.name, "--spool", filepath.Join(s.dir, "spool2"), filepath.Join(s.dir, "other", seg))
	mustFerry(t, nil, s.fetchArgs(seg, out)...)
	wantFileContent(t, out, data)

	// A missing name fails at once, whatever the timeout.
	r = failFerry(t, nil, []string{"000000010000000000000002", "not found"}, s.fetchArgs("--timeout", "1h", "000000010000000000000002", out)...)
	if r.Code != 1 || r.Elapsed > 5*time.Second {
		t.Errorf("fetch of a missing name: exit %d after %s, want 1 at once", r.Code, r.Elapsed)
	}
	wantFileContent(t, out, data) // untouched

	// Names that are not plain file names are usage errors.
	for _, bad := range []string{"../x", "/abs", "a/b", ".hidden", ""} {
		r := failFerry(t, nil, nil, s.pushArgs(filepath.Join(wal, seg), bad)...)
		if r.Code != 2 {
			t.Errorf("push as %q: exit %d, want 2:\n%s", bad, r.Code, r)
		}
		r = failFerry(t, nil, nil, s.fetchArgs(bad, out)...)
		if r.Code != 2 {
			t.Errorf("fetch of %q: exit %d, want 2:\n%s", bad, r.Code, r)
		}
	}
	mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
}

// A 16 MiB WAL segment goes as 1 MiB chunks over several segments; the
// other names PostgreSQL archives (.history, .backup, .partial) go as
// puts. Each comes back byte for byte, also when fetch has to scan the
// stream because the records the marker names are not there.
func TestPushWALFiles(t *testing.T) {
	t.Parallel()
	s := newStream(t, "wal")
	wal := filepath.Join(s.dir, "pg_wal")
	files := map[string][]byte{
		"000000010000000000000003":                  writeRandomFile(t, wal, "000000010000000000000003", 16<<20, 3),
		"00000002.history":                          []byte("1\t0/3000090\tno recovery target specified\n"),
		"000000010000000000000002.00000028.backup":  []byte("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"),
		"000000010000000000000004.partial":          writeRandomFile(t, wal, "000000010000000000000004.partial", 5<<20+7, 4),
		"000000010000000000000005":                  {},
		"000000020000000000000005":                  writeRandomFile(t, wal, "000000020000000000000005", 1<<20, 5),
		"000000010000000000000006.with-spaces & $x": []byte("odd but legal\n"),
	}
	names := []string{"000000010000000000000003", "00000002.history", "000000010000000000000002.00000028.backup",
		"000000010000000000000004.partial", "000000010000000000000005", "000000020000000000000005",
		"000000010000000000000006.with-spaces & $x"}
	for _, n := range names {
		os.WriteFile(filepath.Join(wal, n), files[n], 0o600)
		r := mustFerry(t, nil, s.pushArgs(filepath.Join(wal, n))...)
		if n == names[0] {
			t.Logf("push of a 16 MiB file, no shipper running: %s", r.Elapsed.Round(time.Millisecond))
		}
	}
	if m := s.marker(names[0]); m.LastSeq-m.FirstSeq+1 != 16 {
		t.Errorf("16 MiB file in records %d-%d, want 16 chunks", m.FirstSeq, m.LastSeq)
	}
	if segs := s.lsJSON(); len(segs) < 4 {
		t.Errorf("want the 16 MiB file over several segments, have %d", len(segs))
	}
	restore := filepath.Join(s.dir, "restore")
	os.MkdirAll(restore, 0o755)
	for i, n := range names {
		out := filepath.Join(restore, fmt.Sprintf("f%d", i))
		r := mustFerry(t, nil, s.fetchArgs(n, out)...)
		if n == names[0] {
			t.Logf("fetch of the 16 MiB file from the store: %s", r.Elapsed.Round(time.Millisecond))
		}
		wantFileContent(t, out, files[n])
	}

	// Markers written by another ferry may lack the seq range, and a
	// stream restarted in another generation does not hold it: fetch then
	// scans the stream newest first.
	for _, n := range []string{names[0], names[3], names[1]} {
		p := filepath.Join(s.streamDir(), "pushed", n)
		m := s.marker(n)
		raw, _ := json.Marshal(map[string]any{"name": n, "sha256": m.SHA256, "size": m.Size})
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(restore, "scanned")
		r := mustFerry(t, nil, s.fetchArgs(n, out)...)
		wantFileContent(t, out, files[n])
		if n == names[0] {
			t.Logf("fetch of the 16 MiB file by scanning the stream: %s", r.Elapsed.Round(time.Millisecond))
		}
		raw, _ = json.Marshal(map[string]any{"name": n, "sha256": m.SHA256, "size": m.Size, "generation": 7, "first_seq": 1, "last_seq": 3})
		os.WriteFile(p, raw, 0o644)
		r = mustFerry(t, nil, s.fetchArgs(n, out)...)
		wantFileContent(t, out, files[n])
		if !strings.Contains(r.Stderr, "scanning the stream") {
			t.Errorf("fetch with a wrong seq range does not say it scanned:\n%s", r)
		}
	}
	// A marker whose content no segment holds: an error naming the file.
	p := filepath.Join(s.streamDir(), "pushed", names[1])
	raw, _ := json.Marshal(map[string]any{"name": names[1], "sha256": strings.Repeat("ab", 32), "size": 5})
	os.WriteFile(p, raw, 0o644)
	failFerry(t, nil, []string{names[1], "no segment"}, s.fetchArgs(names[1], filepath.Join(restore, "x"))...)
}

// While ferry ship runs on the spool, push hands the file to it through
// SPOOL/push.sock; the shipper reads and ships it and answers once it is
// accepted. Pushes of different names may run at once. A spool held by a
// process that does not answer on the socket fails with its pid.
func TestPushThroughRunningShipper(t *testing.T) {
	t.Parallel()
	s := newStream(t, "sock")
	// An *os.File, so the shipper gets the descriptor itself (with an
	// io.Reader, waiting for the process would wait for the copy too).
	stdin, keepOpen, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer keepOpen.Close()
	defer stdin.Close()
	ship := startFerry(t, stdin, s.shipArgs("--max-age", "200ms")...)
	sock := filepath.Join(s.spool, "push.sock")
	ferrytest.Eventually(t, 20*time.Second, "the shipper serves push.sock", func() (bool, string) {
		if ship.Exited() {
			t.Fatalf("ship exited:\n%s", ship)
		}
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err)
	})
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("push.sock mode %v, want a socket with 0600", fi.Mode())
	}
	wal := filepath.Join(s.dir, "pg_wal")
	big := writeRandomFile(t, wal, "000000010000000000000001", 16<<20, 11)
	r := mustFerry(t, nil, s.pushArgs(filepath.Join(wal, "000000010000000000000001"))...)
	t.Logf("push of a 16 MiB file through the running shipper: %s", r.Elapsed.Round(time.Millisecond))
	pid, _ := os.ReadFile(filepath.Join(s.spool, "LOCK"))
	if !strings.Contains(r.Stderr, "shipped by the running shipper (pid "+strings.TrimSpace(string(pid))+")") {
		t.Errorf("push does not say it went through the running shipper:\n%s", r)
	}
	if !strings.Contains(ship.Stderr(), `msg="pushed file" via=push.sock name=000000010000000000000001`) {
		t.Errorf("the shipper did not log the push:\n%s", ship)
	}

	// Eight small files at once, plus one pushed twice at once.
	var wg sync.WaitGroup
	results := make([]ferrytest.Result, 10)
	small := map[string][]byte{}
	for i := range 8 {
		n := fmt.Sprintf("0000000100000000000000%02X", i+2)
		small[n] = writeRandomFile(t, wal, n, 1000+i*5000, uint64(20+i))
	}
	i := 0
	for n := range small {
		wg.Add(1)
		go func(i int, n string) {
			defer wg.Done()
			results[i] = ferry(t, nil, s.pushArgs(filepath.Join(wal, n))...)
		}(i, n)
		i++
	}
	for j := 8; j < 10; j++ {
		wg.Add(1)
		go func(j int) {
			defer wg.Done()
			results[j] = ferry(t, nil, s.pushArgs(filepath.Join(wal, "000000010000000000000002"), "dup.history")...)
		}(j)
	}
	wg.Wait()
	for _, r := range results {
		if r.Code != 0 || !strings.Contains(r.Stderr, "by the running shipper (pid") {
			t.Errorf("concurrent push:\n%s", r)
		}
	}
	shipped := `msg="pushed file" via=push.sock name=dup.history`
	if n := strings.Count(ship.Stderr(), shipped); n != 1 || !strings.Contains(ship.Stderr(), `msg="pushed file was already stored" via=push.sock name=dup.history`) {
		t.Errorf("dup.history shipped %d times, want once and then found stored:\n%s", n, ship)
	}
	failFerry(t, nil, []string{"000000010000000000000001", "different content"}, s.pushArgs(filepath.Join(wal, "000000010000000000000002"), "000000010000000000000001")...)

	out := filepath.Join(s.dir, "out")
	ferrytest.Eventually(t, 20*time.Second, "the pushed file reaches the store", func() (bool, string) {
		r := ferry(t, nil, s.fetchArgs("000000010000000000000001", out)...)
		return r.Code == 0, r.Output()
	})
	wantFileContent(t, out, big)
	for n, data := range small {
		mustFerry(t, nil, s.fetchArgs(n, out)...)
		wantFileContent(t, out, data)
	}
	// A file that is not what ferry push hashed (it changed in between) is
	// refused by the shipper, which reads it itself: other content of the
	// same size, and another size. Nothing is shipped, no marker written.
	changed := writeRandomFile(t, wal, "000000010000000000000011", 3<<20, 40)
	for _, c := range []struct {
		sum  [32]byte
		size int
	}{{sha256.Sum256(append([]byte{1}, changed[1:]...)), len(changed)}, {sha256.Sum256(changed), len(changed) - 1}} {
		reply := pushSocketRequest(t, sock, map[string]any{"name": "000000010000000000000011", "path": filepath.Join(wal, "000000010000000000000011"),
			"sha256": hex.EncodeToString(c.sum[:]), "size": c.size})
		if reply["ok"] == true || !strings.Contains(fmt.Sprint(reply["error"]), "changed while it was pushed") {
			t.Errorf("a file other than the one hashed: reply %v, want a refusal saying it changed", reply)
		}
	}
	if _, err := os.Stat(filepath.Join(s.streamDir(), "pushed", "000000010000000000000011")); !os.IsNotExist(err) {
		t.Errorf("a refused push left a marker (%v)", err)
	}

	// Its stdin never ended: stopped before EOF, it exits 143.
	if code := ship.Terminate(30 * time.Second); code != 143 {
		t.Fatalf("ship exit %d on SIGTERM before the end of its stdin, want 143:\n%s", code, ship)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("push.sock left behind after the shipper stopped")
	}

	// Nothing serves the socket but the spool is locked: fail naming the pid.
	lock, err := os.OpenFile(filepath.Join(s.spool, "LOCK"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	lock.Truncate(0)
	fmt.Fprintf(lock, "%d\n", os.Getpid())
	writeRandomFile(t, wal, "000000010000000000000010", 100, 30)
	failFerry(t, nil, []string{"held by pid " + strconv.Itoa(os.Getpid()), "push.sock"},
		s.pushArgs("--wait", "500ms", filepath.Join(wal, "000000010000000000000010"))...)
	syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	mustFerry(t, nil, s.pushArgs(filepath.Join(wal, "000000010000000000000010"))...)
	mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
}

// pushSocketRequest sends one request to a shipper's push.sock and
// returns its reply.
func pushSocketRequest(t *testing.T, sock string, req map[string]any) map[string]any {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		t.Fatalf("no reply on %s: %v", sock, err)
	}
	var reply map[string]any
	if err := json.Unmarshal(line, &reply); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return reply
}

// A receiver applying the stream with --apply dir: keeps pushed files as a
// directory, and fetch --tree reads them there. A file shipped twice (the
// crash between records and marker, simulated by removing the markers)
// is applied twice harmlessly.
func TestPushAppliedTree(t *testing.T) {
	t.Parallel()
	s := newStream(t, "tree")
	wal := filepath.Join(s.dir, "pg_wal")
	tree := filepath.Join(s.dir, "archive")
	files := map[string][]byte{}
	for i, n := range []string{"000000010000000000000001", "000000010000000000000002", "00000002.history", "000000010000000000000003.partial"} {
		files[n] = writeRandomFile(t, wal, n, []int{3<<20 + 5, 16 << 10, 41, 1 << 20}[i], uint64(40+i))
		mustFerry(t, nil, s.pushArgs(filepath.Join(wal, n))...)
	}
	// The crash: records accepted, no marker. The retry ships them again.
	os.Remove(filepath.Join(s.streamDir(), "pushed", "000000010000000000000001"))
	os.Remove(filepath.Join(s.spool, "pushed", "000000010000000000000001"))
	first := s.marker("000000010000000000000002").LastSeq
	r := mustFerry(t, nil, s.pushArgs(filepath.Join(wal, "000000010000000000000001"))...)
	if strings.Contains(r.Stderr, "already pushed") || s.marker("000000010000000000000001").FirstSeq <= first {
		t.Errorf("push without markers did not ship again:\n%s", r)
	}
	mustFerry(t, nil, "receive", "--store", s.store, "--stream", s.name, "--state", s.state, "--apply", "dir:"+tree, "--once")
	out := filepath.Join(s.dir, "out")
	for n, data := range files {
		wantFileContent(t, filepath.Join(tree, n), data)
		fi, _ := os.Stat(filepath.Join(tree, n))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s applied with mode %v, want the pushed file's 0600", n, fi.Mode())
		}
		mustFerry(t, nil, "fetch", "--tree", tree, n, out)
		wantFileContent(t, out, data)
	}
	failFerry(t, nil, []string{"000000010000000000000009", "not found"}, "fetch", "--tree", tree, "000000010000000000000009", out)
	os.Symlink("/etc/passwd", filepath.Join(tree, "000000010000000000000008"))
	failFerry(t, nil, []string{"000000010000000000000008"}, "fetch", "--tree", tree, "000000010000000000000008", out)
	failFerry(t, nil, nil, "fetch", "--tree", tree, "../archive/00000002.history", out)
}

// fetch --wait D: a WAL segment name not pushed yet is waited for and
// fetched as soon as its push is through; a never-pushed segment fails
// after D; a .history name (which a standby asks for on every retry and
// which usually never comes) fails at once, not after D. The same for
// --tree.
func TestFetchWait(t *testing.T) {
	t.Parallel()
	s := newStream(t, "wait")
	wal := filepath.Join(s.dir, "pg_wal")
	seg := "000000010000000000000003"
	data := writeRandomFile(t, wal, seg, 300<<10, 50)
	writeRandomFile(t, wal, "000000010000000000000002", 1000, 51)
	mustFerry(t, nil, s.pushArgs(filepath.Join(wal, "000000010000000000000002"))...) // the store exists
	out := filepath.Join(s.dir, "out")
	fetch := startFerry(t, nil, s.fetchArgs("--wait", "60s", seg, out)...)
	time.Sleep(time.Second)
	if fetch.Exited() {
		t.Fatalf("fetch --wait 60s of a segment not pushed yet exited at once:\n%s", fetch)
	}
	pushed := time.Now()
	mustFerry(t, nil, s.pushArgs(filepath.Join(wal, seg))...)
	code, ok := fetch.Wait(30 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("fetch --wait after the push: exit %d (exited: %v):\n%s", code, ok, fetch)
	}
	t.Logf("fetch --wait returned %s after the push returned", time.Since(pushed).Round(time.Millisecond))
	wantFileContent(t, out, data)

	start := time.Now()
	failFerry(t, nil, []string{"000000010000000000000004 not found"}, s.fetchArgs("--wait", "1500ms", "000000010000000000000004", out)...)
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("fetch --wait 1500ms of a segment never pushed gave up after %s", d)
	}
	start = time.Now()
	failFerry(t, nil, []string{"00000002.history not found"}, s.fetchArgs("--wait", "60s", "00000002.history", out)...)
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("fetch --wait 60s of a .history name waited %s; only WAL segment names are waited for", d)
	}
	failFerry(t, nil, []string{"--wait", "must not be negative"}, s.fetchArgs("--wait", "-1s", seg, out)...)

	// The process that ran fetch --wait exits (PostgreSQL stopped while
	// restore_command ran): fetch stops waiting and writes nothing.
	logPath := filepath.Join(s.dir, "orphan.log")
	orphanOut := filepath.Join(s.dir, "orphan-out")
	script := fmt.Sprintf("%s %s >%s 2>&1 & sleep 1", ferryBin,
		strings.Join(s.fetchArgs("--wait", "60s", "000000010000000000000005", orphanOut), " "), logPath)
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("sh -c %s: %v\n%s", script, err, out)
	}
	ferrytest.Eventually(t, 20*time.Second, "an orphaned fetch --wait gives up", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "exited while fetch --wait waited"), string(b)
	})
	writeRandomFile(t, wal, "000000010000000000000005", 1000, 52)
	mustFerry(t, nil, s.pushArgs(filepath.Join(wal, "000000010000000000000005"))...)
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(orphanOut); !os.IsNotExist(err) {
		t.Errorf("an orphaned fetch --wait wrote DEST (%v)", err)
	}

	// --tree: the file appears in the tree.
	tree := filepath.Join(s.dir, "tree")
	os.MkdirAll(tree, 0o755)
	fetch = startFerry(t, nil, "fetch", "--tree", tree, "--wait", "60s", seg, out+"2")
	time.Sleep(500 * time.Millisecond)
	if fetch.Exited() {
		t.Fatalf("fetch --tree --wait 60s of a file not there yet exited at once:\n%s", fetch)
	}
	// Published as a receiver's dir: applier does: complete, then renamed.
	if err := os.WriteFile(filepath.Join(tree, ".tmp"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(tree, ".tmp"), filepath.Join(tree, seg)); err != nil {
		t.Fatal(err)
	}
	if code, ok := fetch.Wait(30 * time.Second); !ok || code != 0 {
		t.Fatalf("fetch --tree --wait after the file appeared: exit %d (exited: %v):\n%s", code, ok, fetch)
	}
	wantFileContent(t, out+"2", data)
}
