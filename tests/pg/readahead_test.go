//go:build linux

package pg

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// aheadEnv is a primary whose archive_command is empty at first, so its
// .ready files wait for the read-ahead, and a ferry config (a push-only
// shipper, ack "received", a directory store) for ship, push and fetch.
type aheadEnv struct {
	*env
	primary *cluster
	store   string
	spool   string
	config  string
	base    string // a base backup taken at the start (WAL streamed)
	rows    int    // rows inserted so far (ids 1..rows)
}

func newAheadEnv(t *testing.T) *aheadEnv {
	e := newEnv(t)
	a := &aheadEnv{env: e, store: e.mkdir("store"), spool: e.mkdir("spool")}
	a.config = filepath.Join(e.dir, "ferry.toml")
	conf := fmt.Sprintf("stream = \"pg\"\nstore = %q\n[ship]\nspool = %q\nsource = \"none\"\nack = \"received\"\nmax_age = \"200ms\"\n", a.store, a.spool)
	if err := os.WriteFile(a.config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	a.primary = e.cluster("primary")
	e.run("initdb", "-D", a.primary.data, "-A", "trust", "-U", "postgres", "--no-sync")
	// An empty archive_command (PostgreSQL 15 and older) archives
	// nothing: .ready files pile up until archive() sets one.
	a.primary.conf("wal_level = replica", "archive_mode = on", "archive_command = ''", "max_wal_size = 256MB")
	a.primary.start()
	a.primary.sql("create table t (id int primary key, v text)")
	a.base = filepath.Join(e.dir, "base")
	e.run("pg_basebackup", "-h", a.primary.sock, "-p", strconv.Itoa(a.primary.port), "-U", "postgres", "-D", a.base, "-X", "stream", "-c", "fast")
	return a
}

// archive sets the primary's archive_command to ferry push (printing its
// one line into the server log) and reloads.
func (a *aheadEnv) archive() {
	a.primary.sql(fmt.Sprintf("alter system set archive_command = '%s push --config %s %%p %%f'", a.ferry, a.config))
	a.primary.sql("select pg_reload_conf()")
}

// fill writes n WAL segments' worth of rows, switching after each, and
// returns the names of the segments it completed.
func (a *aheadEnv) fill(n int) []string {
	var names []string
	for i := 0; i < n; i++ {
		a.primary.sql(fmt.Sprintf("insert into t select g, md5(g::text) from generate_series(%d, %d) g", a.rows+1, a.rows+30000))
		a.rows += 30000
		names = append(names, a.primary.sql("select pg_walfile_name(pg_current_wal_lsn())"))
		a.primary.sql("select pg_switch_wal()")
	}
	return names
}

// ready lists the primary's .ready files (the names, sorted).
func (a *aheadEnv) ready() []string {
	m, _ := filepath.Glob(filepath.Join(a.primary.data, "pg_wal", "archive_status", "*.ready"))
	var names []string
	for _, p := range m {
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".ready"))
	}
	sort.Strings(names)
	return names
}

// ship starts ferry ship on the config with --pg-data on the primary.
func (a *aheadEnv) ship(t *testing.T) *ferrytest.Process {
	args := []string{"ship", "--config", a.config, "--pg-data", a.primary.data}
	var p *ferrytest.Process
	if a.runAs != "" {
		p = ferrytest.Cmd{Bin: "runuser"}.Start(t, nil, append([]string{"-u", a.runAs, "--", a.ferry}, args...)...)
	} else {
		p = ferrytest.Cmd{Bin: a.ferry}.Start(t, nil, args...)
	}
	// SIGTERM (runuser passes it on) before ferrytest's cleanup waits for
	// the output, which a ferry left running would hold open.
	t.Cleanup(func() {
		if !p.Exited() {
			p.Terminate(30 * time.Second)
		}
	})
	ferrytest.Eventually(t, 30*time.Second, "the shipper serves push.sock", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("ferry ship exited:\n%s", p)
		}
		_, err := os.Stat(filepath.Join(a.spool, "push.sock"))
		return err == nil, fmt.Sprint(err)
	})
	return p
}

// readAhead is the log line of a file the read-ahead shipped.
func readAhead(name string) string { return `msg="pushed file" via="pg read-ahead" name=` + name + " " }

// standbyMatches starts a standby from the base backup, restoring with
// ferry fetch, and checks it replays to the primary's last switch and
// holds the same table.
func (a *aheadEnv) standbyMatches(t *testing.T) {
	t.Helper()
	want := a.primary.sql("select count(*) || ' ' || sum(id::bigint) || ' ' || md5(string_agg(v, ',' order by id)) from t")
	last := a.primary.sql("select pg_walfile_name(pg_current_wal_lsn())")
	lsn := a.primary.sql("select pg_switch_wal()")
	a.primary.waitArchived(last)
	sb := a.cluster("standby")
	sb.data = a.base
	sb.conf("archive_mode = off", "hot_standby = on", "wal_retrieve_retry_interval = 200ms",
		fmt.Sprintf("restore_command = '%s fetch --config %s %%f %%p'", a.ferry, a.config))
	if err := os.WriteFile(filepath.Join(a.base, "standby.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(a.base, "standby.signal"), a.uid, a.gid)
	sb.start()
	ferrytest.Eventually(t, 90*time.Second, "the standby replays to "+lsn, func() (bool, string) {
		out, err := a.try("psql", "-X", "-At", "-h", sb.sock, "-p", strconv.Itoa(sb.port), "-d", "postgres",
			"-c", fmt.Sprintf("select pg_last_wal_replay_lsn() >= '%s'::pg_lsn", lsn))
		return err == nil && strings.TrimSpace(out) == "t", out
	})
	if got := sb.sql("select count(*) || ' ' || sum(id::bigint) || ' ' || md5(string_agg(v, ',' order by id)) from t"); got != want {
		t.Fatalf("standby table %q, want %q\n--- standby log ---\n%s", got, want, sb.log())
	}
}

// A shipper with --pg-data ships every .ready file before archive_command
// asks: once archive_command is set, each ferry push finds its file
// shipped (identical content) and ships nothing. Files that become ready
// while both run are archived too, and a standby restoring through ferry
// fetch ends identical to the primary.
func TestReadAheadShipsBeforeArchiveCommand(t *testing.T) {
	a := newAheadEnv(t)
	names := a.fill(4)
	ship := a.ship(t)
	for _, n := range names {
		ferrytest.Eventually(t, 60*time.Second, "the read-ahead ships "+n, func() (bool, string) {
			return strings.Contains(ship.Stderr(), readAhead(n)), ship.Stderr()
		})
	}
	start := time.Now()
	a.archive()
	a.primary.waitArchived(names[len(names)-1])
	took := time.Since(start)
	logText := a.primary.rawLog()
	for _, n := range names {
		if !strings.Contains(logText, "ferry push: "+n+": already pushed with identical content") {
			t.Errorf("archive_command did not find %s shipped already:\n%s", n, ferrytest.Clip(logText))
		}
		if strings.Contains(ship.Stderr(), `msg="pushed file" via=push.sock name=`+n+" ") {
			t.Errorf("%s was shipped again by archive_command:\n%s\n%s", n, logText, ship)
		}
	}
	t.Logf("archive_command archived %d files shipped ahead in %s", len(names), took.Round(time.Millisecond))

	// Both running: every file is archived, by whichever comes first.
	more := a.fill(3)
	a.primary.waitArchived(more[len(more)-1])
	a.standbyMatches(t)
	ahead := strings.Count(ship.Stderr(), `via="pg read-ahead"`)
	t.Logf("%d files shipped by the read-ahead, %d through push.sock", ahead, strings.Count(ship.Stderr(), "via=push.sock name="))
}

// kill -9 of the shipper while it reads ahead loses nothing: a file it
// had not finished has no marker, so archive_command's push (here with no
// shipper running: push's own) ships it; every archived file is in the
// store once with the content PostgreSQL wrote, and the standby ends
// identical.
func TestReadAheadKill9(t *testing.T) {
	a := newAheadEnv(t)
	names := a.fill(8)
	ship := a.ship(t)
	ferrytest.Eventually(t, 60*time.Second, "the read-ahead ships "+names[0], func() (bool, string) {
		return strings.Contains(ship.Stderr(), readAhead(names[0])), ship.Stderr()
	})
	// The ferry process itself (under runuser the child): its pid is in
	// the spool's LOCK.
	pidText, err := os.ReadFile(filepath.Join(a.spool, "LOCK"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatalf("spool LOCK holds %q: %v", pidText, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ship.Wait(10 * time.Second)
	shipped := 0
	for _, n := range names {
		if strings.Contains(ship.Stderr(), readAhead(n)) {
			shipped++
		}
	}
	t.Logf("killed the shipper after the read-ahead shipped %d of %d files", shipped, len(names))
	if shipped == len(names) {
		t.Logf("the kill came after the read-ahead had finished; the test still checks the pushes that follow")
	}

	// What PostgreSQL wrote (the .ready files are kept until archived).
	want := map[string][]byte{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(a.primary.data, "pg_wal", n))
		if err != nil {
			t.Fatal(err)
		}
		want[n] = data
	}

	a.archive()
	a.primary.waitArchived(names[len(names)-1])
	logText := a.primary.rawLog()
	for _, n := range names {
		if !strings.Contains(logText, "ferry push: "+n+": ") {
			t.Errorf("no ferry push line for %s in the server log:\n%s", n, ferrytest.Clip(logText))
		}
	}
	// Every archived file, fetched back, is what PostgreSQL wrote, and
	// has its marker.
	out := a.mkdir("out")
	for _, n := range names {
		got := filepath.Join(out, n)
		a.run(a.ferry, "fetch", "--config", a.config, n, got)
		if data, err := os.ReadFile(got); err != nil || !bytes.Equal(data, want[n]) {
			t.Errorf("%s fetched back differs from what PostgreSQL wrote (%d bytes, %v)", n, len(data), err)
		}
		if _, err := os.Stat(filepath.Join(a.store, "pg", "pushed", n)); err != nil {
			t.Errorf("marker of %s: %v", n, err)
		}
	}
	a.run(a.ferry, "verify", "--config", a.config)
	a.standbyMatches(t)
}

// A .ready file whose WAL file is replaced after the read-ahead shipped it
// is not taken as shipped: archive_command's push compares the hash of the
// file it is given with the marker, fails (conflict), and PostgreSQL keeps
// the file .ready and reports the failure.
func TestReadAheadReplacedFileIsNotShipped(t *testing.T) {
	a := newAheadEnv(t)
	names := a.fill(2)
	ship := a.ship(t)
	for _, n := range names {
		ferrytest.Eventually(t, 60*time.Second, "the read-ahead ships "+n, func() (bool, string) {
			return strings.Contains(ship.Stderr(), readAhead(n)), ship.Stderr()
		})
	}
	victim := filepath.Join(a.primary.data, "pg_wal", names[0])
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	shipped := sha256.Sum256(data)
	data[len(data)/2] ^= 0xff // same size, other content, a new inode
	tmp := victim + ".hostile"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(tmp, a.uid, a.gid)
	if err := os.Rename(tmp, victim); err != nil {
		t.Fatal(err)
	}
	a.archive()
	ferrytest.Eventually(t, 60*time.Second, "archive_command fails for "+names[0], func() (bool, string) {
		st := a.primary.sql("select failed_count || ' ' || coalesce(last_failed_wal, '') from pg_stat_archiver")
		return strings.HasSuffix(st, " "+names[0]) && !strings.HasPrefix(st, "0 "), st
	})
	if _, err := os.Stat(filepath.Join(a.primary.data, "pg_wal", "archive_status", names[0]+".done")); err == nil {
		t.Fatalf("%s was archived (.done) although its content differs from what was shipped", names[0])
	}
	if !strings.Contains(a.primary.rawLog(), "pushed before with different content") {
		t.Errorf("archive_command's failure does not say the content differs:\n%s", a.primary.log())
	}
	m, err := os.ReadFile(filepath.Join(a.store, "pg", "pushed", names[0]))
	if err != nil || !bytes.Contains(m, []byte(hex.EncodeToString(shipped[:]))) {
		t.Errorf("the marker of %s is not the content shipped ahead (%v): %s", names[0], err, m)
	}
}

// rawLog is the whole server log (log() clips it for messages).
func (c *cluster) rawLog() string {
	data, _ := os.ReadFile(c.data + ".log")
	return string(data)
}
