//go:build linux

// Package pg archives a real PostgreSQL through ferry push
// (archive_command) and restores it through ferry fetch (restore_command).
//
// It needs PostgreSQL's server binaries (Debian's postgresql package). When
// they are missing and the test runs as root it installs them with
// apt-get; a PostgreSQL that cannot be installed or started fails the test,
// never skips it. As root, PostgreSQL runs as the postgres user (runuser),
// since it refuses to run as root.
package pg

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

var ferryBin string

func TestMain(m *testing.M) { os.Exit(ferrytest.Main(m, &ferryBin)) }

// env is one test's PostgreSQL installation, user and work directory.
type env struct {
	t     *testing.T
	bin   string // PostgreSQL's bin directory
	dir   string // owned by the user PostgreSQL runs as
	ferry string // a copy of the binary that user can run
	uid   int
	gid   int
	runAs string // "" when PostgreSQL runs as the current user
}

// pgBinDir finds the newest /usr/lib/postgresql/*/bin with pg_ctl.
func pgBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return vi < vj
	})
	if len(dirs) == 0 {
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			return filepath.Dir(p)
		}
		return ""
	}
	return filepath.Dir(dirs[len(dirs)-1])
}

func newEnv(t *testing.T) *env {
	bin := pgBinDir()
	if bin == "" {
		if os.Geteuid() != 0 {
			t.Fatal("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl) and this test is not root: apt-get install postgresql")
		}
		t.Log("installing PostgreSQL (apt-get install postgresql)")
		for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "postgresql"}} {
			cmd := exec.Command("apt-get", args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		if bin = pgBinDir(); bin == "" {
			t.Fatal("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/pg_ctl is there")
		}
	}
	e := &env{t: t, bin: bin, uid: os.Getuid(), gid: os.Getgid()}
	dir, err := os.MkdirTemp("", "ferry-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user (Debian's postgresql package makes it): %v", err)
		}
		e.runAs = "postgres"
		e.uid, _ = strconv.Atoi(u.Uid)
		e.gid, _ = strconv.Atoi(u.Gid)
		if err := os.Chown(dir, e.uid, e.gid); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary's build directory is private to root: copy ferry.
	data, err := os.ReadFile(ferryBin)
	if err != nil {
		t.Fatal(err)
	}
	e.ferry = filepath.Join(dir, "ferry")
	if err := os.WriteFile(e.ferry, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// mkdir makes a directory under the work dir owned by PostgreSQL's user.
func (e *env) mkdir(name string) string {
	p := filepath.Join(e.dir, name)
	if err := os.MkdirAll(p, 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chown(p, e.uid, e.gid); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// run runs a command as PostgreSQL's user and returns its output, failing
// the test if it fails.
func (e *env) run(name string, args ...string) string {
	e.t.Helper()
	out, err := e.try(name, args...)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) try(name string, args ...string) (string, error) {
	if !strings.Contains(name, "/") && name != "cp" {
		name = filepath.Join(e.bin, name)
	}
	if e.runAs != "" {
		args = append([]string{"-u", e.runAs, "--", name}, args...)
		name = "runuser"
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = e.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		return out.String(), fmt.Errorf("still running after 2m")
	}
}

// cluster is one PostgreSQL data directory and the server on it.
type cluster struct {
	e    *env
	data string
	port int
	sock string
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (e *env) cluster(name string) *cluster {
	return &cluster{e: e, data: filepath.Join(e.dir, name), port: freePort(e.t), sock: e.mkdir(name + "-sock")}
}

// conf appends settings to postgresql.conf.
func (c *cluster) conf(lines ...string) {
	f, err := os.OpenFile(filepath.Join(c.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer f.Close()
	base := []string{fmt.Sprintf("port = %d", c.port), "listen_addresses = ''",
		fmt.Sprintf("unix_socket_directories = '%s'", c.sock), "fsync = on", "max_wal_size = 64MB"}
	for _, l := range append(base, lines...) {
		fmt.Fprintln(f, l)
	}
}

func (c *cluster) start() {
	c.e.t.Helper()
	out, err := c.e.try("pg_ctl", "-D", c.data, "-l", c.data+".log", "-w", "-t", "60", "start")
	if err != nil {
		logData, _ := os.ReadFile(c.data + ".log")
		c.e.t.Fatalf("pg_ctl start %s: %v\n%s\n--- server log ---\n%s", c.data, err, out, ferrytest.Clip(string(logData)))
	}
	c.e.t.Cleanup(func() { c.e.try("pg_ctl", "-D", c.data, "-m", "immediate", "stop") })
}

func (c *cluster) stop() {
	c.e.run("pg_ctl", "-D", c.data, "-m", "fast", "-w", "stop")
}

func (c *cluster) sql(q string) string {
	c.e.t.Helper()
	return strings.TrimSpace(c.e.run("psql", "-X", "-q", "-At", "-h", c.sock, "-p", strconv.Itoa(c.port), "-d", "postgres",
		"-v", "ON_ERROR_STOP=1", "-c", q))
}

func (c *cluster) log() string {
	data, _ := os.ReadFile(c.data + ".log")
	return ferrytest.Clip(string(data))
}

// waitArchived waits until the archiver has archived wal (pg_stat_archiver).
func (c *cluster) waitArchived(wal string) {
	c.e.t.Helper()
	ferrytest.Eventually(c.e.t, 60*time.Second, "PostgreSQL archives "+wal, func() (bool, string) {
		st := c.sql("select coalesce(last_archived_wal,'') || ' failed ' || failed_count || ' ' || coalesce(last_failed_wal,'') from pg_stat_archiver")
		done, _ := os.Stat(filepath.Join(c.data, "pg_wal", "archive_status", wal+".done"))
		return done != nil, st
	})
}

// A PostgreSQL primary archives through ferry push: first with no shipper
// running (push ships each file itself), then with a ferry ship serving the
// spool (push hands the files over through push.sock). A base backup taken
// without WAL is restored with restore_command = ferry fetch, replays the
// archive to the end, and holds every row. The promoted copy archives its
// timeline's .history (and the old timeline's .partial) through the same
// stream; a receiver with --apply dir: holds every archived file, equal to
// what fetch returns.
func TestArchiveAndRestore(t *testing.T) {
	start := time.Now()
	e := newEnv(t)
	store, spool := e.mkdir("store"), e.mkdir("spool")
	push := fmt.Sprintf("%s push --quiet --store %s --stream pg --spool %s %%p %%f", e.ferry, store, spool)
	fetch := fmt.Sprintf("%s fetch --store %s --stream pg %%f %%p", e.ferry, store)

	primary := e.cluster("primary")
	e.run("initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync")
	primary.conf("wal_level = replica", "archive_mode = on", "archive_timeout = 0",
		fmt.Sprintf("archive_command = '%s'", push))
	primary.start()
	primary.sql("create table t (id int primary key, v text)")
	primary.sql("insert into t select g, md5(g::text) from generate_series(1, 20000) g")
	wal := primary.sql("select pg_walfile_name(pg_current_wal_lsn())")
	primary.sql("select pg_switch_wal()")
	primary.waitArchived(wal)
	t.Logf("%s: archived %s with no shipper running", time.Since(start).Round(time.Millisecond), wal)

	base := filepath.Join(e.dir, "base")
	e.run("pg_basebackup", "-h", primary.sock, "-p", strconv.Itoa(primary.port), "-U", "postgres", "-D", base, "-X", "none", "-c", "fast")

	// A push-only shipper on the spool from now on (etc/ferry-pg.toml's
	// source = "none": no stdin): pushes go through push.sock.
	shipArgs := []string{"ship", "--store", store, "--stream", "pg", "--spool", spool, "--max-age", "200ms", "--source", "none"}
	if e.runAs != "" {
		shipArgs = append([]string{"-u", e.runAs, "--", e.ferry}, shipArgs...)
	}
	var ship *ferrytest.Process
	if e.runAs != "" {
		ship = ferrytest.Cmd{Bin: "runuser"}.Start(t, nil, shipArgs...)
	} else {
		ship = ferrytest.Cmd{Bin: e.ferry}.Start(t, nil, shipArgs...)
	}
	ferrytest.Eventually(t, 20*time.Second, "the shipper serves push.sock", func() (bool, string) {
		if ship.Exited() {
			t.Fatalf("ferry ship exited:\n%s", ship)
		}
		_, err := os.Stat(filepath.Join(spool, "push.sock"))
		return err == nil, fmt.Sprint(err)
	})
	primary.sql("insert into t select g, md5(g::text) from generate_series(20001, 120000) g")
	primary.sql("update t set v = 'x' || v where id % 7 = 0")
	want := primary.sql("select count(*) || ' ' || sum(id) || ' ' || md5(string_agg(v, ',' order by id)) from t")
	last := primary.sql("select pg_walfile_name(pg_current_wal_lsn())")
	primary.sql("select pg_switch_wal()")
	primary.waitArchived(last)
	if !strings.Contains(ship.Stderr(), `msg="pushed file" via=push.sock name=`+last) {
		t.Errorf("%s was not pushed through the running shipper:\n%s", last, ship)
	}
	t.Logf("%s: archived up to %s, %s through the running shipper", time.Since(start).Round(time.Millisecond),
		last, strconv.Itoa(strings.Count(ship.Stderr(), `msg="pushed file"`))+" files")
	primary.stop()
	// The segment the shutdown checkpoint went to was never archived (it
	// is not full): carry it over as a failover would, so recovery ends
	// in the middle of it and the promoted copy archives it as .partial.
	var current string
	for _, l := range strings.Split(e.run("pg_controldata", primary.data), "\n") {
		if v, ok := strings.CutPrefix(l, "Latest checkpoint's REDO WAL file:"); ok {
			current = strings.TrimSpace(v)
		}
	}
	if current <= last {
		t.Fatalf("the shutdown checkpoint is in segment %q, want one after %s", current, last)
	}
	backups, _ := filepath.Glob(filepath.Join(store, "pg", "pushed", "*.backup"))
	if len(backups) != 1 {
		t.Errorf("want one .backup file archived, have %q", backups)
	}

	// Point-in-time recovery of the base backup from the archive.
	restored := e.cluster("base")
	restored.data = base
	restored.conf(fmt.Sprintf("restore_command = '%s'", fetch), "recovery_target_timeline = 'latest'",
		fmt.Sprintf("archive_command = '%s'", push))
	if err := os.WriteFile(filepath.Join(base, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(base, "recovery.signal"), e.uid, e.gid)
	e.run("cp", filepath.Join(primary.data, "pg_wal", current), filepath.Join(base, "pg_wal", current))
	restored.start()
	ferrytest.Eventually(t, 60*time.Second, "recovery ends and the copy is promoted", func() (bool, string) {
		out, err := e.try("psql", "-X", "-At", "-h", restored.sock, "-p", strconv.Itoa(restored.port), "-d", "postgres",
			"-c", "select pg_is_in_recovery()")
		return err == nil && strings.TrimSpace(out) == "f", out
	})
	if got := restored.sql("select count(*) || ' ' || sum(id) || ' ' || md5(string_agg(v, ',' order by id)) from t"); got != want {
		t.Fatalf("restored table %q, want %q\n--- restored server log ---\n%s", got, want, restored.log())
	}
	if !strings.Contains(restored.log(), "restored log file \""+last+"\" from archive") {
		t.Errorf("the restored copy did not fetch %s from the archive:\n%s", last, restored.log())
	}
	t.Logf("%s: restored and promoted; table matches (%s)", time.Since(start).Round(time.Millisecond), want)

	// The new timeline's history file goes through the same stream.
	restored.waitArchived("00000002.history")
	restored.waitArchived(current + ".partial")
	restored.stop()
	// Under runuser (as root) the status is runuser's, which ends itself
	// with the signal; tests/e2e TestPushOnlyShipper checks ferry's.
	if code := ship.Terminate(30 * time.Second); code != 0 && e.runAs == "" {
		t.Errorf("the push-only shipper exited %d on SIGTERM, want 0 (a service stop):\n%s", code, ship)
	}

	// Every archived file, fetched from the store and from a receiver's tree.
	tree := e.mkdir("archive")
	e.run(e.ferry, "receive", "--store", store, "--stream", "pg", "--state", e.mkdir("state"), "--apply", "dir:"+tree, "--once")
	markers, _ := os.ReadDir(filepath.Join(store, "pg", "pushed"))
	var names []string
	for _, m := range markers {
		names = append(names, m.Name())
	}
	for _, suffix := range []string{".history", ".backup", ".partial"} {
		found := false
		for _, n := range names {
			found = found || strings.HasSuffix(n, suffix)
		}
		if !found {
			t.Errorf("no %s file among the archived %q", suffix, names)
		}
	}
	out := e.mkdir("out")
	for _, n := range names {
		got := filepath.Join(out, n)
		e.run(e.ferry, "fetch", "--store", store, "--stream", "pg", n, got)
		a, _ := os.ReadFile(got)
		b, err := os.ReadFile(filepath.Join(tree, n))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: fetched %d bytes, the receiver's tree has %d (%v)", n, len(a), len(b), err)
		}
	}
	e.run(e.ferry, "verify", "--store", store, "--stream", "pg")
	t.Logf("%s: %d archived files, fetched from the store and the receiver's tree alike", time.Since(start).Round(time.Millisecond), len(names))
}
