package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
		var out bytes.Buffer
		if code := run([]string{name, "--help"}, io.Discard, &out); code != 0 {
			t.Errorf("ferry %s --help: exit %d\n%s", name, code, out.String())
		}
		help.Write(out.Bytes())
	}
	for name := range configFlags {
		if !strings.Contains(help.String(), "  -"+name+" ") && !strings.Contains(help.String(), "  -"+name+"\n") {
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
