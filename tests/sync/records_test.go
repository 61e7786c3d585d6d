//go:build linux

package sync_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/promtest"
)

// recSite is one ferry sync site of a record stream: an application
// appends its events to log, and the site applies its peers' events to
// the same log.
type recSite struct {
	id          string
	dir         string
	log, conf   string
	peersLog    string // sync.apply's file; "" when the peers' events go to log
	metricsAddr string
	proc        *ferrytest.Process
}

// newRecordMesh makes one site per id, each listing all the others as
// peers, sharing one directory store (viaStore) or over the direct link
// (viaLink). A site whose id is in separate applies its peers' events to
// a file of their own.
func newRecordMesh(t *testing.T, via transport, separate string, ids ...string) (where streams, sites []*recSite) {
	base := t.TempDir()
	store := filepath.Join(base, "store")
	where = func(string) string { return store }
	var links *linkNet
	if via == viaLink {
		links = newLinkNet(t, base, ids)
		where = links.streams
	}
	for _, id := range ids {
		s := &recSite{id: id, dir: filepath.Join(base, id)}
		s.log = filepath.Join(s.dir, "app", "events.ndjson")
		s.conf = filepath.Join(s.dir, "sync.toml")
		if err := os.MkdirAll(filepath.Dir(s.log), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.log, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		apply := ""
		if strings.Contains(separate, id) {
			s.peersLog = filepath.Join(s.dir, "app", "from-peers.ndjson")
			apply = fmt.Sprintf("apply = \"file:%s\"\n", s.peersLog)
		}
		var peers strings.Builder
		for _, p := range ids {
			if p != id {
				fmt.Fprintf(&peers, "[[sync.peers]]\nid = %q\n", p)
				if links != nil {
					fmt.Fprintf(&peers, "link = \"tcp://%s\"\n", links.addr[p])
				}
			}
		}
		storeLine, tcp := fmt.Sprintf("store = %q\n", store), ""
		if links != nil {
			storeLine, tcp = "", links.tcpTable(t, id)
			apply += fmt.Sprintf("listen = %q\n", links.addr[id])
		}
		conf := fmt.Sprintf(`%s[site]
id = %q
[sync]
data = "tail:%s"
stream = "events"
spool = %q
state = %q
%s%s[ship]
max_age = "100ms"
[receive]
poll_min = "50ms"
poll_max = "200ms"
%s`, storeLine, id, s.log, filepath.Join(s.dir, "spool"), filepath.Join(s.dir, "state"), apply, peers.String(), tcp)
		if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		sites = append(sites, s)
	}
	return where, sites
}

func (s *recSite) start(t *testing.T) {
	t.Helper()
	args := []string{"sync", "--config", s.conf}
	if s.metricsAddr != "" {
		args = append(args, "--metrics-addr", s.metricsAddr)
	}
	s.proc = ferrytest.Cmd{Bin: ferryBin}.Start(t, nil, args...)
}

func (s *recSite) stop(t *testing.T) {
	t.Helper()
	if code := s.proc.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("site %s: ferry sync exited %d:\n%s", s.id, code, s.proc)
	}
}

// appendEvent appends one event as the application does: one line, one
// O_APPEND write.
func appendEvent(t *testing.T, s *recSite, n int) {
	line := fmt.Sprintf(`{"id":"%s-%06d","site":%q,"n":%d,"pad":"%s"}`+"\n", s.id, n, s.id, n, strings.Repeat("x", n%97))
	f, err := os.OpenFile(s.log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		t.Error(err)
	}
}

// logLine is one line of a site's log as the test reads it.
type logLine struct {
	ID     string `json:"id"`
	Site   string `json:"site"`
	Origin *struct {
		Site string `json:"site"`
		Seq  uint64 `json:"seq"`
	} `json:"ferry_origin"`
}

// readLog counts the site's log lines (and those of its peers' file) by
// event id, and checks every line: an event of the site itself carries no
// origin, a peer's carries the peer's; with a peers' file, the log holds
// only the site's own events.
func readLog(t *testing.T, s *recSite) (own, peers map[string]int, bad []string) {
	t.Helper()
	b, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatal(err)
	}
	if s.peersLog != "" {
		if bytes.Contains(b, []byte("ferry_origin")) {
			bad = append(bad, "the log holds a peer's event, which go to "+s.peersLog)
		}
		p, err := os.ReadFile(s.peersLog)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		b = append(b, p...)
	}
	own, peers = map[string]int{}, map[string]int{}
	lines := strings.SplitAfter(string(b), "\n")
	for i, line := range lines {
		if line == "" {
			continue
		}
		var l logLine
		if json.Unmarshal([]byte(line), &l) != nil && strings.HasSuffix(line, "\n") {
			if cut, rest := cutLine(line, lines); rest != "" {
				t.Logf("site %s log line %d: a line ferry wrote was cut after %d bytes by a kill, and the next line appended to it: %q", s.id, i+1, len(cut), ferrytest.Clip(line))
				line = rest
			}
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil || !strings.HasSuffix(line, "\n") {
			bad = append(bad, fmt.Sprintf("line %d: %q (%v)", i+1, ferrytest.Clip(line), err))
			continue
		}
		switch {
		case l.Site == s.id && l.Origin == nil:
			own[l.ID]++
		case l.Site != s.id && l.Origin != nil && l.Origin.Site == l.Site && l.Origin.Seq > 0:
			peers[l.ID]++
		default:
			bad = append(bad, fmt.Sprintf("line %d: %q: wrong origin", i+1, ferrytest.Clip(line)))
		}
	}
	return own, peers, bad
}

// cutLine takes apart a line made of a line ferry was writing when it was
// killed, cut short, and the next line appended after it: rest is the
// whole JSON object that ends line, cut the part before it, which must be
// the start of a marked line the log also holds whole (written again
// after the kill). Otherwise rest is "".
func cutLine(line string, lines []string) (cut, rest string) {
	for p := 1; p < len(line); p++ {
		if line[p] != '{' || !json.Valid([]byte(line[p:])) {
			continue
		}
		for _, whole := range lines {
			if strings.HasPrefix(whole, `{"ferry_origin":`) && len(whole) > p && strings.HasPrefix(whole, line[:p]) && json.Valid([]byte(whole)) {
				return line[:p], line[p:]
			}
		}
	}
	return "", ""
}

// storeRecords counts the records of stream events@id in the store by
// event id: what the site shipped.
func storeRecords(t *testing.T, where streams, id string) map[string]int {
	t.Helper()
	out := map[string]int{}
	eachRecord(t, where, "events@"+id, func(seg string, r batch.Record) {
		var l logLine
		if err := json.Unmarshal(r.Data, &l); err != nil {
			t.Fatalf("segment %s of events@%s, record %d: %q: %v", seg, id, r.Seq, r.Data, err)
		}
		if l.Origin != nil {
			t.Errorf("events@%s record %d carries an origin: a peer's record shipped back: %q", id, r.Seq, r.Data)
		}
		out[l.ID]++
	})
	return out
}

func wantIDs(t *testing.T, what string, got map[string]int, site string, n int) {
	t.Helper()
	var missing, twice, other []string
	for i := range n {
		id := fmt.Sprintf("%s-%06d", site, i)
		switch got[id] {
		case 0:
			missing = append(missing, id)
		case 1:
		default:
			twice = append(twice, fmt.Sprintf("%s x%d", id, got[id]))
		}
	}
	for id := range got {
		if !strings.HasPrefix(id, site+"-") {
			other = append(other, id)
		}
	}
	sort.Strings(other)
	if len(missing)+len(twice)+len(other) > 0 {
		t.Errorf("%s: of %d events of %s, %d missing %v, %d more than once %v; %d of other sites %v",
			what, n, site, len(missing), head(missing), len(twice), head(twice), len(other), head(other))
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// waitApplied waits until every site's log holds every other site's n
// events. It fails the test without stopping it, so that checkRecordMesh
// then names the events that are missing.
func waitApplied(t *testing.T, sites []*recSite, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var lag []string
		for _, s := range sites {
			_, peers, _ := readLog(t, s)
			if len(peers) < n*(len(sites)-1) {
				lag = append(lag, fmt.Sprintf("%s holds %d of %d peers' events", s.id, len(peers), n*(len(sites)-1)))
			}
		}
		if len(lag) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("every event applied at every other site: not reached within %s: %s", timeout, strings.Join(lag, "; "))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // anything still bouncing would show now
}

// checkRecordMesh checks every site's log and stream: its own n events
// once each, unmarked; each peer's n events once each, marked with the
// peer; and in its stream in the store exactly its own n events.
func checkRecordMesh(t *testing.T, where streams, sites []*recSite, n int) {
	t.Helper()
	for _, s := range sites {
		own, peers, bad := readLog(t, s)
		if len(bad) > 0 {
			t.Errorf("site %s log: %d bad lines: %v", s.id, len(bad), head(bad))
		}
		wantIDs(t, "site "+s.id+" log, own events", own, s.id, n)
		for _, p := range sites {
			if p == s {
				continue
			}
			from := map[string]int{}
			for id, c := range peers {
				if strings.HasPrefix(id, p.id+"-") {
					from[id] = c
				}
			}
			wantIDs(t, fmt.Sprintf("site %s log, events of %s", s.id, p.id), from, p.id, n)
		}
		if len(peers) != n*(len(sites)-1) {
			t.Errorf("site %s log: %d peers' events, want %d", s.id, len(peers), n*(len(sites)-1))
		}
		wantIDs(t, "store stream events@"+s.id, storeRecords(t, where, s.id), s.id, n)
	}
}

// runWriters appends n events at every site, paced, calling at(i) after
// the i-th event of the first site.
func runWriters(t *testing.T, sites []*recSite, n int, at func(i int)) {
	var wg sync.WaitGroup
	for k, s := range sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				appendEvent(t, s, i)
				if k == 0 && at != nil {
					at(i)
				}
				if i%10 == 9 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

// TestSyncRecordsKill9 runs two sites, then three in a mesh, of a record
// stream whose application appends events to its log on every site while
// ferry runs; kills the second site with SIGKILL a third of the way and
// the first two thirds of the way (each restarted while the applications
// keep writing); and checks that every event is applied exactly once at
// every other site, marked with its origin, and that each site's stream
// in the store holds exactly its own events: none shipped back. With three
// sites, site c applies its peers' events to a file of their own.
func TestSyncRecordsKill9(t *testing.T) {
	for _, ids := range [][]string{{"a", "b"}, {"a", "b", "c"}} {
		t.Run(fmt.Sprintf("%dsites", len(ids)), func(t *testing.T) { runRecordsKill9(t, viaStore, ids) })
	}
}

// runRecordsKill9 is TestSyncRecordsKill9 over via.
func runRecordsKill9(t *testing.T, via transport, ids []string) {
	const n = 900
	store, sites := newRecordMesh(t, via, "c", ids...)
	for _, s := range sites {
		s.start(t)
	}
	runWriters(t, sites, n, func(i int) {
		var s *recSite
		switch i {
		case n / 3:
			s = sites[1]
		case 2 * n / 3:
			s = sites[0]
		default:
			return
		}
		s.proc.Kill9()
		time.Sleep(300 * time.Millisecond)
		s.start(t)
	})
	waitApplied(t, sites, n, 60*time.Second)
	checkRecordMesh(t, store, sites, n)
	for _, s := range sites {
		s.stop(t)
	}
	if t.Failed() || os.Getenv("FERRY_SYNC_LOGS") != "" {
		for _, s := range sites {
			t.Logf("site %s:\n%s", s.id, s.proc)
		}
	}
}

// TestSyncRecordsMeshMetrics runs three sites in a mesh (each reads the
// two others' streams), with site a serving metrics: a's two receivers
// (which one registry used to refuse) are both exported, each by its
// stream, with the stream label on every ferry_* series; and every event
// reaches every other site once.
func TestSyncRecordsMeshMetrics(t *testing.T) {
	const n = 120
	store, sites := newRecordMesh(t, viaStore, "", "a", "b", "c")
	sites[0].metricsAddr = ferrytest.FreeAddr(t)
	for _, s := range sites {
		s.start(t)
	}
	runWriters(t, sites, n, nil)
	waitApplied(t, sites, n, 60*time.Second)
	checkRecordMesh(t, store, sites, n)

	resp, err := http.Get("http://" + sites[0].metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape site a: %v\n%s", err, sites[0].proc)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`ferry_receive_records_applied_total{stream="events@b"} %d`, n),
		fmt.Sprintf(`ferry_receive_records_applied_total{stream="events@c"} %d`, n),
		`ferry_receive_applied_seq{stream="events@b"} `,
		`ferry_receive_applied_seq{stream="events@c"} `,
		fmt.Sprintf(`ferry_ship_records_in_total{stream="events@a"} %d`, n),
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("site a /metrics lacks %s", want)
		}
	}
	// One process, three streams: every ferry_* series says whose.
	fams, err := promtest.Scrape(sites[0].metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	promtest.CheckFerrySeries(t, "site a", fams, "events@a", "events@b", "events@c")
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
	for _, s := range sites {
		s.stop(t)
	}
}

// TestSyncRecordsCutLine makes, while site a is stopped, the state a
// SIGKILL leaves when it cuts the applier's write of a peer's event in the
// middle (the kernel stops a write between two pages): a's log ends with
// the start of b's next event, marked, and the application's next event
// appended right after it. Restarted, a applies b's event again whole, and
// ships its own event from behind the cut part: nothing lost, nothing
// twice, nothing shipped back.
func TestSyncRecordsCutLine(t *testing.T) {
	const n = 6
	store, sites := newRecordMesh(t, viaStore, "", "a", "b")
	a, b := sites[0], sites[1]
	for _, s := range sites {
		s.start(t)
	}
	for i := range n - 1 {
		appendEvent(t, a, i)
		appendEvent(t, b, i)
	}
	waitApplied(t, sites, n-1, 60*time.Second)
	a.stop(t)
	appendEvent(t, b, n-1)
	var seq uint64
	ferrytest.Eventually(t, 30*time.Second, "b ships its last event", func() (bool, string) {
		eachRecord(t, store, "events@b", func(_ string, r batch.Record) {
			if bytes.Contains(r.Data, fmt.Appendf(nil, `"id":"b-%06d"`, n-1)) {
				seq = r.Seq
			}
		})
		return seq != 0, "not in the store yet"
	})
	f, err := os.OpenFile(a.log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The start of b's event as a's applier writes it, cut inside its data.
	fmt.Fprintf(f, `{"ferry_origin":{"site":"b","seq":%d},"id":"b-0`, seq)
	f.Close()
	appendEvent(t, a, n-1)
	a.start(t)
	waitApplied(t, sites, n, 60*time.Second)
	checkRecordMesh(t, store, sites, n)
	for _, s := range sites {
		s.stop(t)
	}
	if !strings.Contains(a.proc.String(), "cut short by a crash") {
		t.Errorf("site a said nothing of the cut line:\n%s", a.proc)
	}
	if t.Failed() {
		for _, s := range sites {
			t.Logf("site %s:\n%s", s.id, s.proc)
		}
	}
}
