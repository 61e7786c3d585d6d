package config

import (
	"strings"
	"testing"
)

func TestWindowBandwidthLimit(t *testing.T) {
	const head = "stream = \"app\"\nstore = \"/srv/ferry\"\n[ship]\nspool = \"/s\"\n\n"
	f, err := Load(writeConfig(t, head+`[[ship.windows]]
start = "0 22 * * *"
duration = "6h"
bandwidth_limit = "5MiB"

[[ship.windows]]
start = "0 12 * * *"
duration = "1h"
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Ship.Windows[0].BandwidthLimit; got != 5*MiB {
		t.Errorf("windows[0].bandwidth_limit = %v, want 5MiB", got)
	}
	if got := f.Ship.Windows[1].BandwidthLimit; got != 0 {
		t.Errorf("windows[1].bandwidth_limit = %v, want 0 (no cap) when left out", got)
	}

	// Each bad value is reported with the file, the line that set it and
	// the key.
	for _, c := range []struct{ name, value, want string }{
		{"negative integer", "-5", "must not be negative"},
		{"negative size", `"-5MiB"`, "must not be negative"},
		{"below the minimum", `"1KiB"`, "ship.windows[1].bandwidth_limit: 1KiB is below the minimum 16KiB"},
		{"no unit", `"5 fast"`, "unknown unit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := head + "[[ship.windows]]\nstart = \"0 1 * * *\"\nduration = \"1h\"\n\n" +
				"[[ship.windows]]\nstart = \"0 2 * * *\"\nduration = \"1h\"\nbandwidth_limit = " + c.value + "\n"
			path := writeConfig(t, body)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path+":13:") {
				t.Fatalf("Load: %v\nwant an error at %s:13 containing %q", err, path, c.want)
			}
		})
	}

	f = Defaults()
	f.Ship.Windows = []Window{{Start: "@daily", Duration: Duration(3600e9), BandwidthLimit: minWindowBandwidth}}
	if err := f.Validate(""); err != nil {
		t.Errorf("bandwidth_limit at the minimum: %v", err)
	}
}

func TestArrayKeyLine(t *testing.T) {
	src := `stream = "app"
[[ship.windows]]
start = "0 1 * * *"
bandwidth_limit = "1MiB"
[[ ship . windows ]]
start = "0 2 * * *"
[ship.s3]
bandwidth_limit = "2MiB"
[[ship.windows]]
  "bandwidth_limit" = "3MiB"
`
	for key, want := range map[string]int{
		"ship.windows[0].bandwidth_limit": 4,
		"ship.windows[1].start":           6,
		"ship.windows[1].bandwidth_limit": 0, // not in that table; the next table's is not it
		"ship.windows[2].bandwidth_limit": 10,
		"ship.windows[3].start":           0,
		"ship.targets[0].store":           0,
		"ship.spool":                      0,
	} {
		if got := arrayKeyLine(src, key); got != want {
			t.Errorf("arrayKeyLine(%q) = %d, want %d", key, got, want)
		}
	}
}
