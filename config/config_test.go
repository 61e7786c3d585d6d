package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeConfig writes content to a fresh file and returns its path.
func writeConfig(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ferry.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// valid is a complete config for both verbs; tests append to or edit it.
const valid = `stream = "app"
store = "/srv/store"
[ship]
spool = "/srv/spool"
[receive]
state = "/srv/state"
apply = "stdout"
`

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
	}{
		{"0", 0},
		{"123", 123},
		{"123B", 123},
		{"123 b", 123},
		{"512KiB", 512 * KiB},
		{"4MiB", 4 * MiB},
		{"16 MiB", 16 * MiB},
		{"4mib", 4 * MiB},
		{"1GiB", GiB},
		{"1TiB", TiB},
		{"2PiB", 2 * PiB},
		{"4MB", 4_000_000},
		{"4kB", 4000},
		{"4KB", 4000},
		{"3gb", 3_000_000_000},
		{"  7 KiB  ", 7 * KiB},
		{"8191PiB", 8191 * PiB},
		{"9223372036854775807", 1<<63 - 1},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"", " ", "-1", "-4MiB", "MiB", "4 potatoes", "4K", "4M", "1.5MiB", "+4MiB",
		"0x10", "4MiBs", "8192PiB", "9223372036854775808", "99999999999999999999B", "4 Mi B",
	} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", in, got)
		}
	}
}

func TestSizeString(t *testing.T) {
	for _, tc := range []struct {
		in   Size
		want string
	}{
		{0, "0B"}, {1, "1B"}, {1000, "1000B"}, {KiB, "1KiB"}, {1536, "1536B"},
		{4 * MiB, "4MiB"}, {1024 * MiB, "1GiB"}, {3 * TiB, "3TiB"}, {4_000_000, "4000000B"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tc.in), got, tc.want)
		}
		if back, err := ParseSize(tc.in.String()); err != nil || back != tc.in {
			t.Errorf("ParseSize(%q) = %d, %v; want round trip to %d", tc.in.String(), back, err, tc.in)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"0", 0}, {"0s", 0}, {"250ms", 250 * time.Millisecond}, {"2s", 2 * time.Second},
		{"1m", time.Minute}, {"1h30m", 90 * time.Minute}, {" 5s ", 5 * time.Second},
		{"1d", 24 * time.Hour}, {"30d", 720 * time.Hour}, {"1d12h", 36 * time.Hour},
		{"1.5d", 36 * time.Hour}, {"2d30m10s", 48*time.Hour + 30*time.Minute + 10*time.Second},
	} {
		got, err := ParseDuration(tc.in)
		if err != nil || time.Duration(got) != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "2", "-1s", "-0.5s", "soon", "2 s", "-1d", "d", "1dd", "1d 2h", "1x2d", "110000d", ".d"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want error", in, got)
		}
	}
	if got := Duration(90 * time.Second).String(); got != "1m30s" {
		t.Errorf("String() = %q, want 1m30s", got)
	}
}

func TestFlagValues(t *testing.T) {
	var s Size = 4 * MiB
	var d Duration = Duration(2 * time.Second)
	fs := flag.NewFlagSet("ship", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	fs.Var(&s, "max-bytes", "seal size")
	fs.Var(&d, "max-age", "seal age")
	if err := fs.Parse([]string{"-max-bytes", "8MiB", "-max-age=250ms"}); err != nil {
		t.Fatal(err)
	}
	if s != 8*MiB || d != Duration(250*time.Millisecond) {
		t.Errorf("got %v %v, want 8MiB 250ms", s, d)
	}
	if fs.Lookup("max-bytes").Value.String() != "8MiB" {
		t.Errorf("flag String() = %q", fs.Lookup("max-bytes").Value.String())
	}
	for _, arg := range []string{"-max-bytes=-1", "-max-age=-1s", "-max-bytes=lots"} {
		if err := fs.Parse([]string{arg}); err == nil {
			t.Errorf("Parse(%s): want error", arg)
		}
	}
}

func TestDefaults(t *testing.T) {
	d := Defaults()
	if d.Generation != 0 || d.LogLevel != "info" || d.LogFormat != "text" {
		t.Errorf("common defaults: %+v", d)
	}
	wantShip := Ship{Source: "stdin", Format: "line", Fsync: "batch", MaxBytes: 4 * MiB,
		MaxAge: Duration(2 * time.Second), MaxRecordSize: 16 * MiB, SpoolLimit: GiB,
		ShutdownTimeout: Duration(30 * time.Second), Compression: "fastest", Ack: "local", LeaseTTL: DurationOrOff(30 * time.Second), BundleMax: MiB}
	if !reflect.DeepEqual(d.Ship, wantShip) {
		t.Errorf("ship defaults = %+v, want %+v", d.Ship, wantShip)
	}
	wantRecv := Receive{GapTimeout: Duration(30 * time.Second), PollMin: Duration(200 * time.Millisecond),
		PollMax: Duration(5 * time.Second), RetryMin: Duration(time.Second), RetryMax: Duration(time.Minute),
		Prefetch: 4, MaxSegmentBytes: 256 * MiB, OnceTimeout: Duration(5 * time.Minute)}
	if !reflect.DeepEqual(d.Receive, wantRecv) {
		t.Errorf("receive defaults = %+v, want %+v", d.Receive, wantRecv)
	}
	if d.S3.PathStyle != nil || d.S3.UsePathStyle() {
		t.Error("path_style should default to unset")
	}
	if err := d.Validate(""); err != nil {
		t.Errorf("Defaults().Validate(\"\") = %v", err)
	}

	// An empty file is the defaults; a partial one keeps the rest.
	f, err := Load(writeConfig(t, ""))
	if err != nil || !reflect.DeepEqual(f, Defaults()) {
		t.Errorf("Load(empty) = %+v, %v; want defaults", f, err)
	}
	f, err = Load(writeConfig(t, "[ship]\nmax_age = \"0s\"\n[s3]\npath_style = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Ship.MaxAge != 0 || f.Ship.MaxBytes != 4*MiB || f.Receive.PollMax != Duration(5*time.Second) {
		t.Errorf("partial file: %+v", f)
	}
	if f.S3.PathStyle == nil || *f.S3.PathStyle || f.S3.UsePathStyle() {
		t.Errorf("path_style = false should be set and false, got %v", f.S3.PathStyle)
	}
}

func TestLoadValues(t *testing.T) {
	f, err := Load(writeConfig(t, strings.Replace(valid, "[ship]\n", `[ship]
max_bytes = 2048
max_record_size = "1 MiB"
`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Ship.MaxBytes != 2048 || f.Ship.MaxRecordSize != MiB {
		t.Errorf("sizes: %v %v", f.Ship.MaxBytes, f.Ship.MaxRecordSize)
	}
	if err := f.Validate("ship"); err != nil {
		t.Error(err)
	}
	if err := f.Validate("receive"); err != nil {
		t.Error(err)
	}
}

// lease_ttl takes a duration or "off" (0, like a bare 0); [site] id a name.
func TestLoadLeaseAndSite(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    DurationOrOff
	}{
		{"[ship]\nlease_ttl = \"45s\"\n", DurationOrOff(45 * time.Second)},
		{"[ship]\nlease_ttl = \"off\"\n", 0},
		{"[ship]\nlease_ttl = 0\n", 0},
		{"", DurationOrOff(30 * time.Second)},
	} {
		f, err := Load(writeConfig(t, tc.content))
		if err != nil || f.Ship.LeaseTTL != tc.want {
			t.Errorf("%q: lease_ttl %v, %v; want %v", tc.content, f.Ship.LeaseTTL, err, tc.want)
		}
	}
	f, err := Load(writeConfig(t, "[site]\nid = \"dr-b\"\n"))
	if err != nil || f.Site.ID != "dr-b" {
		t.Errorf("site.id: %+v, %v", f.Site, err)
	}
	if got := DurationOrOff(0).String(); got != "off" {
		t.Errorf("0 formats as %q, want off", got)
	}
}

// Durations in the config file take days too.
func TestLoadDays(t *testing.T) {
	f, err := Load(writeConfig(t, "[retention]\nkeep_for = \"30d\"\n[receive]\ngap_timeout = \"1d12h\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(f.Retention.KeepFor) != 720*time.Hour || time.Duration(f.Receive.GapTimeout) != 36*time.Hour {
		t.Errorf("keep_for %v, gap_timeout %v; want 720h, 36h", f.Retention.KeepFor, f.Receive.GapTimeout)
	}
}

func TestLoadUnknownKey(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"top level", "stream = \"a\"\n\nstrem = \"b\"\n", `:3: unknown key "strem" (did you mean "stream"?)`},
		{"in ship", "stream = \"a\"\n[ship]\nspool = \"/s\"\n\n# comment\nfsync = \"off\"\nmax_byts = \"4MiB\"\n",
			`:7: unknown key "ship.max_byts" (did you mean "ship.max_bytes"?)`},
		{"in s3", "[ship]\nspool = \"/s\"\n[s3]\nregion = \"x\"\nsecret = \"y\"\n", `:5: unknown key "s3.secret"`},
		{"dotted", "stream = \"a\"\nship.fsyncc = \"off\"\n", `:2: unknown key "ship.fsyncc" (did you mean "ship.fsync"?)`},
		{"inline table", "stream = \"a\"\ns3 = { region = \"x\",\n  regio = \"y\" }\n", `:3: unknown key "s3.regio"`},
		{"unknown table", "stream = \"a\"\n\n[shipp]\nspool = \"/s\"\n", `:3: unknown key "shipp" (did you mean "ship"?)`},
		{"implicit table", "stream = \"a\"\n[x.y]\nz = 1\n", `:2: unknown key "x"`},
		{"dotted unknown table", "stream = \"a\"\nfoo.bar = 1\n", `:2: unknown key "foo"`},
		{"array of tables", "stream = \"a\"\n[[peers]]\nhost = \"x\"\n", `:2: unknown key "peers"`},
		{"wrong case", "Stream = \"a\"\n", `:1: unknown key "Stream" (did you mean "stream"?)`},
		{"key above its table", "spool = \"/s\"\n[ship]\n", `:1: unknown key "spool" (did you mean "ship.spool"?)`},
		{"quoted", "stream = \"a\"\n\"we ird\" = 1\n", `:2: unknown key "\"we ird\""`},
		{"lease ttl", "[ship]\nlease_tll = \"30s\"\n", `:2: unknown key "ship.lease_tll" (did you mean "ship.lease_ttl"?)`},
		{"site", "[site]\nidd = \"dr-b\"\n", `:2: unknown key "site.idd" (did you mean "site.id"?)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), path+tc.want) {
				t.Errorf("Load error = %v\nwant it to contain %q", err, path+tc.want)
			}
		})
	}
}

func TestLoadManyUnknownKeys(t *testing.T) {
	var b strings.Builder
	for i := range maxUnknownReported + 5 {
		fmt.Fprintf(&b, "k%d = 1\n", i)
	}
	path := writeConfig(t, b.String())
	_, err := Load(path)
	if err == nil {
		t.Fatal("want error")
	}
	msg := err.Error()
	if !strings.Contains(msg, path+":1: unknown key \"k0\"") || !strings.Contains(msg, "and 5 more unknown keys") {
		t.Errorf("error = %v", err)
	}
}

func TestLoadSyntaxAndTypeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"unterminated string", "stream = \"a\"\n[ship]\nspool = \"/s\n", []string{":3: "}},
		{"missing value", "stream = \"a\"\n\nstore =\n", []string{":3: "}},
		{"duplicate key", "stream = \"a\"\nstream = \"b\"\n", []string{":2: ", "stream"}},
		{"bad table header", "[ship\n", []string{":1: "}},
		{"size bool", "[ship]\nspool = \"/s\"\nmax_bytes = true\n", []string{":3: ship.max_bytes: ", `invalid size "true"`}},
		{"size unit", "[ship]\n\nmax_bytes = \"4 potatoes\"\n", []string{":3: ship.max_bytes: ", `unknown unit "potatoes"`}},
		{"size float", "[ship]\nmax_bytes = 1.5\n", []string{":2: ship.max_bytes: "}},
		{"negative size", "[ship]\nspool_limit = -1\n", []string{":2: ship.spool_limit: ", "negative"}},
		{"duration no unit", "[receive]\npoll_min = 5\n", []string{":2: receive.poll_min: ", "2s"}},
		{"negative duration", "[receive]\n\ngap_timeout = \"-1s\"\n", []string{":3: receive.gap_timeout: ", "negative"}},
		{"generation string", "\ngeneration = \"one\"\n", []string{":2: generation: ", "string"}},
		{"generation negative", "generation = -1\n", []string{":1: generation: "}},
		{"generation overflow", "generation = 4294967296\n", []string{":1: generation: "}},
		{"lease_ttl no unit", "[ship]\nlease_ttl = 30\n", []string{":2: ship.lease_ttl: ", `or "off"`}},
		{"lease_ttl word", "[ship]\nlease_ttl = \"never\"\n", []string{":2: ship.lease_ttl: ", `or "off"`}},
		{"lease_ttl short", "[ship]\n\nlease_ttl = \"100ms\"\n", []string{":3: ship.lease_ttl: 100ms is below 1s"}},
		{"bool as string", "[s3]\npath_style = \"yes\"\n", []string{":2: s3.path_style: "}},
		{"table as string", "ship = \"x\"\n", []string{":1: ship: "}},
		{"string as table", "[stream]\nx = 1\n", []string{"stream"}},
		{"store.s3 table", "stream = \"a\"\n[store.s3]\nregion = \"x\"\n", []string{":2: store: ", "top-level [s3] table"}},
		{"store and store.s3", "store = \"/s\"\n\n[store.s3]\nregion = \"x\"\n", []string{":3: ", "top-level [s3] table"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded, want error")
			}
			if !strings.HasPrefix(err.Error(), path) {
				t.Errorf("error %q does not start with the file name", err)
			}
			for _, w := range tc.want {
				if w[0] == ':' {
					w = path + w
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}
