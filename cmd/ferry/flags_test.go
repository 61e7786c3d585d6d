package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
)

// Every verb builds its flag set (accepting a name missing from the table
// panics), and every config flag in the table is accepted by some verb.
func TestEveryConfigFlagHasAVerb(t *testing.T) {
	var help bytes.Buffer
	for name := range verbs {
		if name == "version" {
			continue
		}
		var out, errb bytes.Buffer
		if code := run([]string{name, "--help"}, &out, &errb); code != 0 {
			t.Errorf("ferry %s --help: exit %d\n%s", name, code, errb.String())
		}
		help.Write(out.Bytes())
	}
	for name := range configFlags {
		if !regexp.MustCompile(`(?m)^ +--` + name + `( |$)`).Match(help.Bytes()) {
			t.Errorf("no verb accepts --%s", name)
		}
	}
}

// A config flag given on the command line overrides the config file; one
// left out keeps the file's value.
func TestConfigFlagsOverrideTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.toml")
	file := `stream = "from-file"
store = "/file/store"
[ship]
max_bytes = "8MiB"
max_age = "5s"
[[ship.targets]]
store = "/file/target"
[receive]
prefetch = 7
[tcp]
insecure = true
`
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (*config.File, error) {
		c := newFlags("test", "test", "", io.Discard)
		c.accept("max-bytes", "max-age", "also", "prefetch", "insecure", "listen")
		err := c.parse(append([]string{"--config", path}, args...), "")
		return c.cfg, err
	}

	cfg, err := parse("--max-bytes", "1MiB", "--insecure=false", "--also", "/flag/a", "--also", "/flag/b")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ship.MaxBytes != config.MiB || cfg.TCP.Insecure {
		t.Errorf("set flags did not override the file: max_bytes %v, insecure %v", cfg.Ship.MaxBytes, cfg.TCP.Insecure)
	}
	if cfg.Stream != "from-file" || cfg.Ship.MaxAge.String() != "5s" || cfg.Receive.Prefetch != 7 {
		t.Errorf("unset flags changed the file's values: stream %q, max_age %v, prefetch %d",
			cfg.Stream, cfg.Ship.MaxAge, cfg.Receive.Prefetch)
	}
	var targets []string
	for _, tg := range cfg.Ship.Targets {
		targets = append(targets, tg.Store)
	}
	if want := []string{"/file/target", "/flag/a", "/flag/b"}; !slices.Equal(targets, want) {
		t.Errorf("targets %q, want %q", targets, want)
	}

	// --listen is short for --store tcp://ADDR; --store wins over it.
	if cfg, err := parse("--listen", "127.0.0.1:7000"); err != nil || cfg.Store != "tcp://127.0.0.1:7000" {
		t.Errorf("--listen: store %q, %v", cfg.Store, err)
	}
	if cfg, err := parse("--listen", "127.0.0.1:7000", "--store", "/flag/store"); err != nil || cfg.Store != "/flag/store" {
		t.Errorf("--listen with --store: store %q, %v", cfg.Store, err)
	}

	// A bad value names the flag.
	if _, err := parse("--max-age", "soon"); err == nil || !strings.HasPrefix(err.Error(), "--max-age: invalid duration") {
		t.Errorf("--max-age soon: %v", err)
	}
}

// --generation, --site and --lease-ttl set their keys; a generation that
// does not fit 32 bits is refused rather than taken as 0 (follow the
// history, which only the shipping verbs do), and "off" turns the lease
// off.
func TestFenceFlags(t *testing.T) {
	parseAs := func(verb string, args ...string) (*config.File, error) {
		c := newFlags("test", "test", "", io.Discard)
		c.accept("site", "lease-ttl", "spool")
		err := c.parse(append([]string{"--store", "/s", "--stream", "app", "--spool", "/sp"}, args...), verb)
		return c.cfg, err
	}
	parse := func(args ...string) (*config.File, error) { return parseAs("ship", args...) }
	cfg, err := parse()
	if err != nil || cfg.Generation != 0 || cfg.Site.ID != "" || time.Duration(cfg.Ship.LeaseTTL) != 30*time.Second {
		t.Fatalf("defaults: generation %d, site %q, lease_ttl %v, %v", cfg.Generation, cfg.Site.ID, cfg.Ship.LeaseTTL, err)
	}
	cfg, err = parse("--generation", "3", "--site", "dr-b", "--lease-ttl", "45s")
	if err != nil || cfg.Generation != 3 || cfg.Site.ID != "dr-b" || time.Duration(cfg.Ship.LeaseTTL) != 45*time.Second {
		t.Fatalf("set: generation %d, site %q, lease_ttl %v, %v", cfg.Generation, cfg.Site.ID, cfg.Ship.LeaseTTL, err)
	}
	if cfg, err = parse("--lease-ttl", "off"); err != nil || cfg.Ship.LeaseTTL != 0 {
		t.Fatalf("--lease-ttl off: %v, %v", cfg.Ship.LeaseTTL, err)
	}
	// The verbs that do not ship keep to generation 1 when it is unset.
	if cfg, err = parseAs(""); err != nil || cfg.Generation != 1 {
		t.Fatalf("verb \"\": generation %d, %v; want 1", cfg.Generation, err)
	}
	for _, tc := range []struct{ args, want []string }{
		{[]string{"--generation", "4294967296"}, []string{"--generation", "is not a generation"}},
		{[]string{"--lease-ttl", "never"}, []string{"--lease-ttl: invalid duration", `"off"`}},
		{[]string{"--lease-ttl", "200ms"}, []string{"ship.lease_ttl: 200ms is below 1s"}},
		{[]string{"--site", "dr b"}, []string{`site.id: "dr b" is not a valid site id`}},
	} {
		_, err := parse(tc.args...)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v, want it to say %q", tc.args, err, w)
			}
		}
	}
}

// Flags over FERRY_* variables over FERRY_CONFIG's file; the variables
// taken as settings, and FERRY_CONFIG, are dropped from the environment so
// that what ferry runs (an exec: applier) does not inherit them.
func TestFlagsOverEnvOverFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.toml")
	if err := os.WriteFile(path, []byte("stream = \"from-file\"\n[ship]\nmax_age = \"3s\"\nmax_bytes = \"8MiB\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (*config.File, error) {
		t.Setenv(config.PathEnv, path)
		t.Setenv("FERRY_SHIP_MAX_AGE", "5s")
		t.Setenv("FERRY_STREAM", "from-env")
		t.Setenv("FERRY_CPUPROFILE", "") // not a setting: left alone
		c := newFlags("test", "test", "", io.Discard)
		c.accept("max-age", "max-bytes")
		err := c.parse(args, "")
		return c.cfg, err
	}
	cfg, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Stream != "from-env" || cfg.Ship.MaxAge.String() != "5s" || cfg.Ship.MaxBytes != 8*config.MiB {
		t.Errorf("stream %q max_age %v max_bytes %v, want from-env 5s 8MiB", cfg.Stream, cfg.Ship.MaxAge, cfg.Ship.MaxBytes)
	}
	for _, name := range []string{config.PathEnv, "FERRY_SHIP_MAX_AGE", "FERRY_STREAM"} {
		if v, ok := os.LookupEnv(name); ok {
			t.Errorf("%s=%s is still in the environment", name, v)
		}
	}
	if _, ok := os.LookupEnv("FERRY_CPUPROFILE"); !ok {
		t.Error("FERRY_CPUPROFILE, not a setting, was dropped")
	}
	cfg, err = parse("--max-age", "9s", "--stream", "from-flag")
	if err != nil || cfg.Stream != "from-flag" || cfg.Ship.MaxAge.String() != "9s" {
		t.Errorf("flags: stream %q max_age %v (%v), want from-flag 9s", cfg.Stream, cfg.Ship.MaxAge, err)
	}
	t.Setenv("FERRY_SHIP_MAX_AGEE", "1s")
	if _, err := parse(); err == nil || !strings.Contains(err.Error(), "FERRY_SHIP_MAX_AGEE: unknown variable") {
		t.Errorf("a misspelt variable: %v", err)
	}
}
