package config

import (
	"strings"
	"testing"
	"time"
)

// streamsConfig is a valid multi-stream ship config.
const streamsConfig = `
store = "/srv/store"
[ship]
spool = "/srv/spool"
max_age = "1s"

[[streams]]
name = "orders"
source = "tail:/var/log/orders.log"
max_age = "250ms"

[[streams]]
name = "app-{base}"
source = "tail:/var/log/app/*.log"
max_bytes = "64KiB"
scan_interval = "500ms"
`

func TestLoadStreams(t *testing.T) {
	f, err := Load(writeConfig(t, streamsConfig))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate("ship"); err != nil {
		t.Fatal(err)
	}
	if len(f.Streams) != 2 {
		t.Fatalf("streams: %+v", f.Streams)
	}
	o, g := f.Streams[0], f.Streams[1]
	if o.IsGlob() || !g.IsGlob() || g.Path() != "/var/log/app/*.log" || g.Scan() != 500*time.Millisecond || o.Scan() != DefaultScanInterval {
		t.Fatalf("tables: %+v %+v", o, g)
	}
	s := o.Ship(f.Ship, "orders", o.Path())
	if s.Spool != "/srv/spool/orders" || s.Source != "tail:/var/log/orders.log" || time.Duration(s.MaxAge) != 250*time.Millisecond || s.MaxBytes != f.Ship.MaxBytes {
		t.Fatalf("orders ship: %+v", s)
	}
	s = g.Ship(f.Ship, "app-web", "/var/log/app/web.log")
	if s.Spool != "/srv/spool/app-web" || s.MaxBytes != 64*KiB || time.Duration(s.MaxAge) != time.Second {
		t.Fatalf("glob ship: %+v", s)
	}
}

func TestValidateStreams(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(f *File)
		want string // "" means valid
	}{
		{"valid", func(f *File) {}, ""},
		{"duplicate", func(f *File) { f.Streams[1].Name = "orders"; f.Streams[1].Source = "tail:/x" }, `streams[1].name: "orders" is also the name of streams[0]`},
		{"dot dot", func(f *File) { f.Streams[0].Name = "a..b" }, `streams[0].name: "a..b"`},
		{"leading dots", func(f *File) { f.Streams[0].Name = "../etc" }, `streams[0].name: "../etc"`},
		{"slash", func(f *File) { f.Streams[0].Name = "a/b" }, `streams[0].name: "a/b"`},
		{"control", func(f *File) { f.Streams[0].Name = "a\nb" }, `streams[0].name: "a\nb" holds a control character`},
		{"at", func(f *File) { f.Streams[0].Name = "a@b" }, `streams[0].name: "a@b"`},
		{"empty name", func(f *File) { f.Streams[0].Name = "" }, `streams[0].name: required`},
		{"glob without template", func(f *File) { f.Streams[1].Name = "app" }, `streams[1].name: "app" has no {base} or {name}`},
		{"template without glob", func(f *File) { f.Streams[0].Name = "o-{base}" }, `streams[0].name: "o-{base}" is a template, but source "tail:/var/log/orders.log" is not a glob`},
		{"template slash", func(f *File) { f.Streams[1].Name = "a/{base}" }, `streams[1].name: "a/{base}"`},
		{"stdin source", func(f *File) { f.Streams[0].Source = "stdin" }, `streams[0].source: "stdin": want tail:PATH or tail:GLOB`},
		{"empty tail", func(f *File) { f.Streams[0].Source = "tail:" }, `streams[0].source: "tail:" needs a file path or glob`},
		{"bad glob", func(f *File) { f.Streams[1].Source = "tail:/var/log/[a.log" }, `streams[1].source: "tail:/var/log/[a.log": bad glob`},
		{"glob dir", func(f *File) { f.Streams[1].Source = "tail:/var/*/a.log" }, `only the file name may be a glob`},
		{"top-level stream", func(f *File) { f.Stream = "app" }, `stream: is set together with [[streams]] tables`},
		{"top-level source", func(f *File) { f.Ship.Source = "tail:/var/log/x.log" }, `ship.source: "tail:/var/log/x.log" is set together with [[streams]] tables`},
		{"tcp store", func(f *File) { f.Store = "tcp://dr:7000" }, `store: a tcp:// link carries one stream`},
		{"tcp target", func(f *File) { f.Ship.Targets = []Target{{Store: "tcp://dr:7000"}} }, `ship.targets[0].store: a tcp:// link carries one stream`},
		{"retention schedule", func(f *File) { f.Retention.Schedule = "@daily"; f.Retention.KeepMin = 5 }, `retention.schedule: is not run by a ship with [[streams]] yet`},
		{"raw", func(f *File) { f.Ship.Format = "raw" }, `ship.format: "raw" is not a format a tail: source reads`},
		{"pg_data", func(f *File) { f.Ship.PGData = "/var/lib/postgresql/16/main" }, `ship.pg_data: is not read by a ship with [[streams]]`},
		{"memory_limit", func(f *File) { f.Ship.MemoryLimit = 64 * MiB }, `ship.memory_limit: is not set by a ship with [[streams]] yet`},
		{"format", func(f *File) { f.Streams[0].Format = "raw" }, `streams[0].format: "raw" is not one of line, ndjson`},
		{"max_bytes", func(f *File) { f.Streams[0].MaxBytes = 10 }, `streams[0].max_bytes: 10B is out of range`},
		{"max_records", func(f *File) { f.Streams[0].MaxRecords = -1 }, `streams[0].max_records: -1 is negative`},
		{"max_age", func(f *File) { f.Streams[0].MaxAge = -1 }, `streams[0].max_age: must not be negative`},
		{"scan on a file", func(f *File) { f.Streams[0].ScanInterval = Duration(time.Second) }, `streams[0].scan_interval: is only for a glob source`},
		{"bundles", func(f *File) { f.Ship.BundleInterval = Duration(time.Second); f.Ship.BundleMax = 256 * KiB }, ""},
		{"bundle_interval negative", func(f *File) { f.Ship.BundleInterval = -1 }, `ship.bundle_interval: must not be negative`},
		{"bundle_interval tiny", func(f *File) { f.Ship.BundleInterval = Duration(time.Millisecond) }, `ship.bundle_interval: 1ms is below 10ms`},
		{"bundle_interval one stream", func(f *File) { f.Streams = nil; f.Stream = "app"; f.Ship.BundleInterval = Duration(time.Second) },
			`ship.bundle_interval: bundles are for a ship with [[streams]] tables`},
		{"bundle_interval ack", func(f *File) { f.Ship.BundleInterval = Duration(time.Second); f.Ship.Ack = "received" },
			`ship.bundle_interval: bundles are only for ship.ack = "local" (ack is "received")`},
		{"bundle_interval windows", func(f *File) {
			f.Ship.BundleInterval = Duration(time.Second)
			f.Ship.Windows = []Window{{Start: "0 1 * * *", Duration: Duration(time.Hour)}}
		}, `ship.bundle_interval: bundles are put at every tick, and [[ship.windows]] would not hold them back`},
		{"bundle_max small", func(f *File) { f.Ship.BundleMax = 10 }, `ship.bundle_max: 10B is out of range 1KiB to 64MiB`},
		{"bundle_max large", func(f *File) { f.Ship.BundleMax = 65 * MiB }, `ship.bundle_max: 65MiB is out of range`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Defaults()
			f.Store = "/srv/store"
			f.Ship.Spool = "/srv/spool"
			f.Streams = []StreamTable{
				{Name: "orders", Source: "tail:/var/log/orders.log"},
				{Name: "app-{base}", Source: "tail:/var/log/app/*.log"},
			}
			tc.edit(f)
			err := f.Validate("ship")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
		})
	}
}

// TestLoadStreamsErrorLine checks a [[streams]] problem names the file
// line of its key in the right table.
func TestLoadStreamsErrorLine(t *testing.T) {
	path := writeConfig(t, strings.Replace(streamsConfig, `name = "app-{base}"`, `name = "orders"`, 1))
	_, err := Load(path)
	if err == nil {
		t.Fatal("duplicate name accepted")
	}
	if want := path + ":13: streams[1].name"; !strings.Contains(err.Error(), want) {
		t.Fatalf("want %q in %v", want, err)
	}
}

func TestStreamName(t *testing.T) {
	for _, tc := range []struct {
		template, file, want, err string
	}{
		{"app-{base}", "/var/log/app/web.log", "app-web", ""},
		{"app-{name}", "/var/log/app/web.log", "app-web.log", ""},
		{"{base}", "/var/log/app/web.1.log", "web.1", ""},
		{"app-{base}", "/var/log/app/web 1@x/y.log", "app-y", ""},
		{"app-{base}", "/d/web 1@x:é.log", "app-web_1_x__", ""},
		{"app-{base}", "/d/.hidden.log", "app-.hidden", ""}, // Ext of ".hidden.log" is ".log"
		{"{base}", "/d/.log", "", `template "{base}" gives ""`},
		{"{name}", "/d/.x", "", `template "{name}" gives ".x"`},
		{"{base}", "/d/-x.log", "", `gives "-x"`},
		{"{base}-{base}", "/d/a.log", "a-a", ""},
		{"a{base}", "/d/" + strings.Repeat("x", 130) + ".log", "", "invalid"},
	} {
		got, err := StreamName(tc.template, tc.file)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.file) {
				t.Errorf("StreamName(%q, %q) = %q, %v; want error %q naming the file", tc.template, tc.file, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("StreamName(%q, %q) = %q, %v; want %q", tc.template, tc.file, got, err, tc.want)
		}
	}
}
