package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
)

// Help is on stdout and exits 0, however it is asked for; ferry alone
// prints it on stderr and exits 2.
func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"}, {"-help"},
		{"help", "ship"}, {"ship", "--help"}, {"ship", "-h"}, {"ship", "-help"},
		{"help", "status"}, {"status", "--help"},
		{"cat", "some.seg.zst", "--help"},
	} {
		code, stdout, stderr := runFerry(args...)
		want := "Usage: ferry COMMAND"
		if len(args) == 2 && args[0] == "help" {
			want = "Usage: ferry " + args[1] + " "
		} else if !strings.HasPrefix(args[0], "-") && args[0] != "help" {
			want = "Usage: ferry " + args[0] + " "
		}
		if code != 0 || stderr != "" || !strings.Contains(stdout, want) {
			t.Errorf("ferry %s: exit %d, want 0 and %q on stdout, nothing on stderr\nstdout:\n%s\nstderr:\n%s",
				strings.Join(args, " "), code, want, stdout, stderr)
		}
	}
	code, stdout, stderr := runFerry()
	if code != exitUsage || stdout != "" || !strings.Contains(stderr, "Usage: ferry COMMAND") || !strings.Contains(stderr, "ship") {
		t.Errorf("ferry: exit %d, want %d and the usage on stderr\nstdout:\n%s\nstderr:\n%s", code, exitUsage, stdout, stderr)
	}
	// A verb's help has its flags, types and examples.
	_, stdout, _ = runFerry("help", "prune")
	for _, want := range []string{"--keep-for duration", "--keep-min int", "--json", "--dry-run", "Examples:", "ferry prune --config"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("ferry help prune lacks %q:\n%s", want, stdout)
		}
	}
}

// A mistyped verb or flag is a usage error naming the nearest one.
func TestDidYouMean(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"shp"}, "Did you mean this?\n\tship"},
		{[]string{"verfy", "--store", "x"}, "Did you mean this?\n\tverify"},
		{[]string{"help", "recieve"}, "Did you mean this?\n\treceive"},
		{[]string{"ship", "--stram", "app"}, "unknown flag: --stram (did you mean --stream?)"},
		{[]string{"ls", "-stream", "app", "-stroe", "/x"}, "unknown flag: --stroe (did you mean --store?)"},
		{[]string{"receive", "--max-segment", "1MiB"}, "(did you mean --max-segment-bytes?)"},
		{[]string{"cat", "--jsn", "x.seg.zst"}, "(did you mean --json?)"},
		{[]string{"status", "--spoool", "x"}, "(did you mean --spool?)"},
	} {
		code, _, stderr := runFerry(tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("ferry %s: exit %d, want %d and %q\n%s", strings.Join(tc.args, " "), code, exitUsage, tc.want, stderr)
		}
	}
	// Nothing near: no suggestion.
	if _, _, stderr := runFerry("ship", "--zzzzzzzz"); strings.Contains(stderr, "did you mean") {
		t.Errorf("a suggestion for a flag like none: %s", stderr)
	}
}

// parseVerb runs the verb with args plus --help, which stops it after
// its flags are parsed, and returns the flag set it parsed them with.
func parseVerb(t *testing.T, verb string, args ...string) *common {
	t.Helper()
	verbFlags.take()
	var stderr bytes.Buffer
	err := verbs[verb].run(append(args, "--help"), io.Discard, &stderr)
	c := verbFlags.take()
	if err != errHelp || c == nil {
		t.Fatalf("ferry %s %s --help: %v\n%s", verb, strings.Join(args, " "), err, stderr.String())
	}
	return c
}

// Go-style single-dash long flags keep working: ferry's flags were Go
// flags, and scripts and units use both forms.
func TestSingleDashLongFlags(t *testing.T) {
	c := newFlags("test", "test", "", io.Discard)
	c.accept("max-bytes", "also", "insecure", "keep-for")
	asJSON := c.fs.Bool("json", false, "")
	from := c.fs.Uint64("from", 1, "")
	err := c.parse([]string{"-stream", "app", "-max-bytes=1MiB", "-insecure", "pos", "-also", "-dash-value", "-json",
		"--keep-for", "2d", "-from", "7", "-", "--", "-stream"}, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.cfg
	if cfg.Stream != "app" || cfg.Ship.MaxBytes != config.MiB || !cfg.TCP.Insecure || !*asJSON || *from != 7 ||
		len(cfg.Ship.Targets) != 1 || cfg.Ship.Targets[0].Store != "-dash-value" || time.Duration(cfg.Retention.KeepFor) != 48*time.Hour {
		t.Errorf("single-dash flags not parsed as long ones: %+v json %v from %d", cfg, *asJSON, *from)
	}
	if got := fmt.Sprint(c.fs.Args()); got != "[pos - -stream]" {
		t.Errorf("positional arguments %s, want [pos - -stream]", got)
	}

	// And through the whole command line, as a unit file gives it.
	st := filepath.Join(t.TempDir(), "none")
	code, _, stderr := runFerry("ls", "-store", st, "-stream", "app", "-json")
	if code != 1 || !strings.Contains(stderr, "store "+st+" does not exist") {
		t.Errorf("ferry ls -store %s -stream app -json: exit %d, want 1 and the missing store named\n%s", st, code, stderr)
	}
}

// The renamed flags keep their old names as deprecated aliases: same
// value, a notice on stderr, hidden from help.
func TestDeprecatedAliases(t *testing.T) {
	for _, tc := range []struct {
		verb, old, name string
	}{
		{"bench", "bench-spool", "spool"},
		{"fetch", "from", "tree"},
		{"switchover", "from", "primary"},
		{"switchover", "to", "secondary"},
	} {
		var stderr bytes.Buffer
		verbFlags.take()
		err := verbs[tc.verb].run([]string{"--" + tc.old, "/some/where", "--help"}, io.Discard, &stderr)
		c := verbFlags.take()
		if err != errHelp {
			t.Fatalf("ferry %s --%s: %v", tc.verb, tc.old, err)
		}
		if got := c.fs.Lookup(tc.name).Value.String(); got != "/some/where" {
			t.Errorf("ferry %s --%s /some/where set --%s to %q", tc.verb, tc.old, tc.name, got)
		}
		if want := "--" + tc.old + " has been deprecated, use --" + tc.name; !strings.Contains(stderr.String(), want) {
			t.Errorf("ferry %s --%s: no notice %q:\n%s", tc.verb, tc.old, want, stderr.String())
		}
		_, help, _ := runFerry("help", tc.verb)
		if strings.Contains(help, "--"+tc.old+" ") || !strings.Contains(help, "--"+tc.name+" ") {
			t.Errorf("ferry help %s shows --%s or not --%s:\n%s", tc.verb, tc.old, tc.name, help)
		}
	}
	// The alias really runs: switchover names the file given as --from.
	missing := filepath.Join(t.TempDir(), "a.toml")
	code, _, stderr := runFerry("switchover", "--from", missing, "--to", missing)
	if code != 1 || !strings.Contains(stderr, missing) {
		t.Errorf("switchover --from %s: exit %d, want 1 naming the file\n%s", missing, code, stderr)
	}
}

// Durations take "d", in the verbs' own flags and in the config flags;
// sizes take units in the verbs' own flags too.
func TestDaysAndSizes(t *testing.T) {
	c := parseVerb(t, "prune", "--keep-for", "30d")
	if err := c.parse([]string{"--keep-for", "30d"}, ""); err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(c.cfg.Retention.KeepFor); got != 720*time.Hour {
		t.Errorf("--keep-for 30d is %v, want 720h", got)
	}
	c = parseVerb(t, "push", "--timeout", "1d", "--wait", "90s")
	if got := c.fs.Lookup("timeout").Value.String(); got != (24 * time.Hour).String() {
		t.Errorf("push --timeout 1d is %s", got)
	}
	c = parseVerb(t, "bench", "--size", "1KiB", "--duration", "1d2h")
	if got := c.fs.Lookup("size").Value.String(); got != "1KiB" {
		t.Errorf("bench --size 1KiB is %s", got)
	}
	if got := c.fs.Lookup("duration").Value.String(); got != (26 * time.Hour).String() {
		t.Errorf("bench --duration 1d2h is %s", got)
	}
	code, _, stderr := runFerry("fetch", "--timeout", "soon", "a", "b")
	if code != exitUsage || !strings.Contains(stderr, `invalid duration "soon"`) || !strings.Contains(stderr, "--timeout") {
		t.Errorf("fetch --timeout soon: exit %d, want %d naming the flag and the value\n%s", code, exitUsage, stderr)
	}
}

// A verb in the old style, parsing its own arguments with the standard
// flag package, registers with one line in the verbs table and keeps its
// flags, help and exit codes.
func TestOldStyleVerb(t *testing.T) {
	verbs["oldstyle"] = verb{"a verb parsing its own flags", func(args []string, stdout, stderr io.Writer) error {
		fs := flag.NewFlagSet("oldstyle", flag.ContinueOnError)
		fs.SetOutput(stderr)
		n := fs.Int("n", 1, "how many")
		if err := fs.Parse(args); err == flag.ErrHelp {
			return errHelp
		} else if err != nil {
			return usageError{err}
		}
		fmt.Fprintln(stdout, *n, fs.Args())
		return nil
	}}
	defer delete(verbs, "oldstyle")
	if code, stdout, _ := runFerry("oldstyle", "-n", "3", "x"); code != 0 || stdout != "3 [x]\n" {
		t.Errorf("oldstyle -n 3 x: exit %d, %q", code, stdout)
	}
	if code, _, stderr := runFerry("oldstyle", "-bogus"); code != exitUsage || !strings.Contains(stderr, "bogus") {
		t.Errorf("oldstyle -bogus: exit %d\n%s", code, stderr)
	}
	if code, stdout, _ := runFerry("help", "oldstyle"); code != 0 || !strings.Contains(stdout, "-n int") {
		t.Errorf("help oldstyle: exit %d, want its own usage on stdout\n%s", code, stdout)
	}
	if code, _, stderr := runFerry("oldstyle", "--help"); code != 0 || !strings.Contains(stderr, "-n int") {
		t.Errorf("oldstyle --help: exit %d\n%s", code, stderr)
	}
	if _, stdout, _ := runFerry("--help"); !strings.Contains(stdout, "a verb parsing its own flags") {
		t.Errorf("ferry --help does not list oldstyle:\n%s", stdout)
	}
}

// ferry --version and ferry version print the same line.
func TestVersionThroughCobra(t *testing.T) {
	_, a, _ := runFerry("--version")
	_, b, _ := runFerry("version")
	_, c, _ := runFerry("-v")
	if a != readBuildInfo().String()+"\n" || a != b || a != c {
		t.Errorf("--version %q, version %q, -v %q", a, b, c)
	}
}

// decodeJSON runs ferry with args, wants exit code want, and decodes its
// stdout into v, which must be one JSON document and nothing else.
func decodeJSON(t *testing.T, want int, v any, args ...string) string {
	t.Helper()
	code, stdout, stderr := runFerry(args...)
	if code != want {
		t.Fatalf("ferry %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("ferry %s: stdout is not the JSON summary: %v\n%s", strings.Join(args, " "), err, stdout)
	}
	if dec.More() {
		t.Fatalf("ferry %s: more than one JSON document on stdout:\n%s", strings.Join(args, " "), stdout)
	}
	return stderr
}

// push, verify, restore, drill and prune print a JSON summary with --json
// (after the positional arguments too), and it says what the run did.
func TestJSONSummaries(t *testing.T) {
	dir := t.TempDir()
	st, spool := filepath.Join(dir, "store"), filepath.Join(dir, "spool")
	files := map[string][]byte{}
	var last pushSummary
	for i, name := range []string{"000000010000000000000001", "000000010000000000000002", "00000002.history"} {
		data := bytes.Repeat([]byte(fmt.Sprintf("file %d\n", i)), 1000*(i+1))
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = data
		var p pushSummary
		decodeJSON(t, 0, &p, "push", path, "--json", "--store", st, "--stream", "app", "--spool", spool)
		sum := sha256.Sum256(data)
		if p.Name != name || p.Size != int64(len(data)) || p.SHA256 != hex.EncodeToString(sum[:]) || p.Already ||
			p.Via != "own" || p.FirstSeq == 0 || p.LastSeq < p.FirstSeq || p.FirstSeq <= last.LastSeq {
			t.Fatalf("push --json: %+v (the push before: %+v)", p, last)
		}
		last = p
	}
	var again pushSummary
	decodeJSON(t, 0, &again, "push", "--json", "--store", st, "--stream", "app", "--spool", spool, filepath.Join(dir, "00000002.history"))
	if !again.Already || again.LastSeq != last.LastSeq {
		t.Errorf("the same file pushed again: %+v, want already, seq %d", again, last.LastSeq)
	}

	storeDir, err := openDir(st)
	if err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(t.Context(), storeDir, "app")
	names := segNames(segs)
	if err != nil || len(names) < 3 {
		t.Fatalf("segments %v, %v: want one or more per push", names, err)
	}
	var v verifyReport
	decodeJSON(t, 0, &v, "verify", "--store", st, "--stream", "app", "--json")
	if !v.OK || v.Stream != "app" || v.Segments != uint64(len(names)) || v.FirstSeq != 1 || v.LastSeq != last.LastSeq ||
		v.Records != last.LastSeq || len(v.Defects) != 0 || v.Generation != 1 {
		t.Errorf("verify --json: %+v; want ok, %d segments, seq 1..%d", v, len(names), last.LastSeq)
	}
	seg := filepath.Join(st, "app", names[0])
	v = verifyReport{}
	decodeJSON(t, 0, &v, "verify", seg, "--json")
	if !v.OK || v.Segments != 1 || len(v.Files) != 1 || v.Records == 0 {
		t.Errorf("verify FILE --json: %+v", v)
	}
	junk := filepath.Join(dir, "junk.seg.zst")
	os.WriteFile(junk, []byte("not a segment"), 0o600)
	v = verifyReport{}
	decodeJSON(t, 1, &v, "verify", "--json", seg, junk)
	if v.OK || v.Segments != 1 || len(v.Defects) != 1 || !strings.Contains(v.Defects[0], junk) {
		t.Errorf("verify --json with a damaged file: %+v", v)
	}

	var r restoreSummary
	tree := filepath.Join(dir, "tree")
	decodeJSON(t, 0, &r, "restore", "--store", st, "--stream", "app", "--state", filepath.Join(dir, "state"), "--apply", "dir:"+tree, "--json")
	if r.LastSeq != last.LastSeq || r.Records != last.LastSeq || r.Segments != uint64(len(names)) || r.Bytes <= 0 || r.PartialSegment != "" ||
		r.Applier == "" || r.Stream != "app" {
		t.Errorf("restore --json: %+v; want %d records in %d segments", r, last.LastSeq, len(names))
	}
	for name, data := range files {
		if got, err := os.ReadFile(filepath.Join(tree, name)); err != nil || !bytes.Equal(got, data) {
			t.Errorf("restored %s: %d bytes, %v; want the pushed %d", name, len(got), err, len(data))
		}
	}
	code, _, stderr := runFerry("restore", "--store", st, "--stream", "app", "--state", filepath.Join(dir, "state2"), "--apply", "stdout", "--json")
	if code != exitUsage || !strings.Contains(stderr, "--apply stdout") {
		t.Errorf("restore --apply stdout --json: exit %d\n%s", code, stderr)
	}

	var d drillReport
	decodeJSON(t, 0, &d, "drill", "--store", st, "--stream", "app", "--json")
	if !d.OK || d.LastSeq != last.LastSeq || d.Records != last.LastSeq || d.Segments != uint64(len(names)) {
		t.Errorf("drill --json: %+v", d)
	}

	var p pruneSummary
	decodeJSON(t, 0, &p, "prune", "--store", st, "--stream", "app", "--keep-min", "1", "--dry-run", "--json")
	_, _, lastOfFirst, _ := batch.ParseSegmentName(names[len(names)-2])
	if !p.DryRun || p.Deleted != len(names)-1 || p.Kept != 1 || p.FirstSeq != 1 || p.LastSeq != lastOfFirst ||
		p.KeptFrom != names[len(names)-1] || p.DeletedBytes <= 0 {
		t.Errorf("prune --dry-run --json: %+v; want %d deleted, seq 1..%d, %s kept", p, len(names)-1, lastOfFirst, names[len(names)-1])
	}
	p = pruneSummary{}
	decodeJSON(t, 0, &p, "prune", "--store", st, "--stream", "app", "--keep-min", "1", "--json")
	if after, _ := listSegments(t.Context(), storeDir, "app"); p.DryRun || p.Deleted != len(names)-1 || len(after) != 1 {
		t.Errorf("prune --json: %+v, %d segments left; want %d deleted, 1 left", p, len(after), len(names)-1)
	}
	v = verifyReport{}
	decodeJSON(t, 0, &v, "verify", "--store", st, "--stream", "app", "--json")
	if !v.OK || v.Segments != 1 || v.HistoryStart != lastOfFirst+1 || v.HistoryStartWhy == "" {
		t.Errorf("verify --json after the prune: %+v; want the history to start at %d", v, lastOfFirst+1)
	}
}
