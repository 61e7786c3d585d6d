package config

import (
	"strings"
	"testing"
	"time"
)

func TestShipTargets(t *testing.T) {
	f, err := Load(writeConfig(t, `stream = "app"
store = "tcp://dr-site:7000"
[ship]
spool = "/var/lib/ferry/spool"
ack = "received"

[[ship.targets]]
name = "archive"
store = "s3://archive-bucket/app"
async = true

[[ship.targets]]
store = "tcp://second-site:7000"
bandwidth_limit = "5MiB"
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate("ship"); err != nil {
		t.Fatal(err)
	}
	want := []Target{
		{Name: "archive", Store: "s3://archive-bucket/app", Async: true},
		{Store: "tcp://second-site:7000", BandwidthLimit: 5 * MiB},
	}
	if len(f.Ship.Targets) != len(want) {
		t.Fatalf("targets = %+v", f.Ship.Targets)
	}
	for i := range want {
		if f.Ship.Targets[i] != want[i] {
			t.Errorf("target %d = %+v, want %+v", i, f.Ship.Targets[i], want[i])
		}
	}
}

func TestShipTargetsBad(t *testing.T) {
	head := "stream = \"app\"\nstore = \"/srv/ferry\"\n[ship]\nspool = \"/s\"\n"
	for _, c := range []struct{ name, body, want string }{
		{"unknown key", "[[ship.targets]]\nstore = \"/a\"\n\n[[ship.targets]]\nstore = \"/b\"\nasync = true\nbogus = 1\n",
			`:11: unknown key "ship.targets.bogus"`},
		{"no store", "[[ship.targets]]\nname = \"x\"\n", "ship.targets[0].store: required"},
		{"bad url", "[[ship.targets]]\nstore = \"s3://Bad_Bucket/x\"\n", "ship.targets[0].store"},
		{"duplicate name", "[[ship.targets]]\nstore = \"/a\"\nname = \"n\"\n[[ship.targets]]\nstore = \"/b\"\nname = \"n\"\n",
			`ship.targets[1].name: "n" is used by another target`},
		{"name of main store", "[[ship.targets]]\nstore = \"/a\"\nname = \"store\"\n", `ship.targets[0].name: "store" is used`},
		{"bandwidth on s3", "[[ship.targets]]\nstore = \"s3://bucket/x\"\nbandwidth_limit = \"1MiB\"\n",
			"ship.targets[0].bandwidth_limit: only tcp:// targets"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeConfig(t, head+c.body)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Load: %v\nwant an error naming %s and containing %q", err, path, c.want)
			}
		})
	}
}

func TestSchedules(t *testing.T) {
	f, err := Load(writeConfig(t, `stream = "app"
store = "/srv/ferry"
time_zone = "Europe/Paris"
[ship]
spool = "/s"
flush_at = "0 * * * *"

[[ship.windows]]
start = "0 22 * * 1-5"
duration = "6h"

[[ship.windows]]
start = "CRON_TZ=UTC @daily"
duration = "30m"

[retention]
keep_for = "720h"
schedule = "@every 6h"
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Ship.Windows) != 2 || time.Duration(f.Ship.Windows[0].Duration) != 6*time.Hour {
		t.Fatalf("windows %+v", f.Ship.Windows)
	}
	s, err := f.Schedule(f.Ship.Windows[0].Start)
	if err != nil {
		t.Fatal(err)
	}
	// Friday 2026-03-13 12:00 UTC is 13:00 in Paris: the next start is
	// 22:00 Paris time, 21:00 UTC.
	next := s.Next(time.Date(2026, 3, 13, 12, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 3, 13, 21, 0, 0, 0, time.UTC); !next.Equal(want) {
		t.Fatalf("next window start %s, want %s", next.UTC(), want)
	}
	head := "stream = \"app\"\nstore = \"/srv/ferry\"\n[ship]\nspool = \"/s\"\n"
	for _, c := range []struct{ name, body, want string }{
		{"bad flush_at", "flush_at = \"every hour\"\n", "ship.flush_at"},
		{"window without duration", "[[ship.windows]]\nstart = \"0 1 * * *\"\n", "ship.windows[0].duration"},
		{"window with a bad start", "[[ship.windows]]\nstart = \"61 * * * *\"\nduration = \"1h\"\n", "ship.windows[0].start"},
		{"unknown window key", "[[ship.windows]]\nstart = \"0 1 * * *\"\nduration = \"1h\"\nend = \"0 2 * * *\"\n", `unknown key "ship.windows.end"`},
		{"bad time zone", "", "time_zone"},
		{"retention schedule without a rule", "[retention]\nschedule = \"@daily\"\n", "retention.schedule"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := head + c.body
			if c.name == "bad time zone" {
				body = "time_zone = \"Mars/Olympus\"\n" + body
			}
			path := writeConfig(t, body)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Load: %v\nwant an error naming %s and containing %q", err, path, c.want)
			}
		})
	}
}
