package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func loadText(t *testing.T, text string) *File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ferry.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

const reloadBase = `stream = "app"
store = "/srv/ferry"
log_level = "info"
[ship]
spool = "/var/lib/ferry/spool"
max_age = "2s"
[s3]
access_key = "AKIDFERRY"
secret_key = "hunter2-very-secret"
`

func TestReloadableNothingChanged(t *testing.T) {
	a, b := loadText(t, reloadBase), loadText(t, reloadBase)
	if live, refused := Reloadable("ship", a, b); len(live)+len(refused) != 0 {
		t.Fatalf("same file: live %q, refused %q", live, refused)
	}
}

func TestReloadableLiveKeys(t *testing.T) {
	a := loadText(t, reloadBase)
	b := loadText(t, strings.NewReplacer(`max_age = "2s"`, "max_age = \"500ms\"\nmax_records = 10\nspool_limit = \"64MiB\"",
		`log_level = "info"`, `log_level = "debug"`).Replace(reloadBase))
	live, refused := Reloadable("ship", a, b)
	if want := []string{"log_level", "ship.max_records", "ship.max_age", "ship.spool_limit"}; !slices.Equal(live, want) || len(refused) != 0 {
		t.Fatalf("live %q refused %q, want live %q", live, refused, want)
	}
	if time.Duration(b.Ship.MaxAge) != 500*time.Millisecond {
		t.Fatalf("max_age %v", b.Ship.MaxAge)
	}
	// receive applies only the log level live.
	live, refused = Reloadable("receive", a, b)
	if !slices.Equal(live, []string{"log_level"}) || !slices.Equal(refused, []string{"ship.max_records", "ship.max_age", "ship.spool_limit"}) {
		t.Fatalf("receive: live %q refused %q", live, refused)
	}
}

// The store, a secret, a nested table and an array of tables are refused
// by name; a secret's value is never in what Reloadable returns.
func TestReloadableRefusedKeys(t *testing.T) {
	a := loadText(t, reloadBase)
	b := loadText(t, strings.NewReplacer(`store = "/srv/ferry"`, `store = "/srv/other"`,
		"hunter2-very-secret", "hunter3-very-secret",
		`max_age = "2s"`, "max_age = \"2s\"\n[[ship.targets]]\nname = \"archive\"\nstore = \"/srv/archive\"").Replace(reloadBase))
	live, refused := Reloadable("ship", a, b)
	if want := []string{"store", "ship.targets", "s3.secret_key"}; len(live) != 0 || !slices.Equal(refused, want) {
		t.Fatalf("live %q refused %q, want refused %q", live, refused, want)
	}
	for _, k := range refused {
		if strings.Contains(k, "hunter") {
			t.Fatalf("a secret value in the refused keys: %q", refused)
		}
	}
}

// Windows, flush_at, retention, the link's bandwidth limit and
// health_max_lag are live for ship; the other [tcp] keys and the targets
// are not. receive takes health_max_lag but not the ship's schedules.
func TestReloadableSchedulesLive(t *testing.T) {
	a := loadText(t, reloadBase)
	b := loadText(t, strings.NewReplacer(`max_age = "2s"`, "max_age = \"2s\"\nflush_at = \"@hourly\"\n[[ship.windows]]\nstart = \"0 22 * * *\"\nduration = \"6h\"\nbandwidth_limit = \"1MiB\"\n"+
		"[retention]\nkeep_for = \"30d\"\nkeep_min = 5\nschedule = \"@daily\"\n[tcp]\nbandwidth_limit = \"2MiB\"",
		`log_level = "info"`, "log_level = \"info\"\nhealth_max_lag = \"90s\"\ntime_zone = \"UTC\"").Replace(reloadBase))
	live, refused := Reloadable("ship", a, b)
	want := []string{"health_max_lag", "time_zone", "ship.flush_at", "ship.windows", "tcp.bandwidth_limit",
		"retention.keep_for", "retention.keep_min", "retention.schedule"}
	slices.Sort(live)
	slices.Sort(want)
	if !slices.Equal(live, want) || len(refused) != 0 {
		t.Fatalf("ship: live %q refused %q, want live %q", live, refused, want)
	}
	live, refused = Reloadable("receive", a, b)
	if !slices.Equal(live, []string{"health_max_lag"}) || !slices.Contains(refused, "ship.windows") || !slices.Contains(refused, "tcp.bandwidth_limit") {
		t.Fatalf("receive: live %q refused %q", live, refused)
	}
	c := loadText(t, strings.Replace(reloadBase, `max_age = "2s"`, "max_age = \"2s\"\n[tcp]\nmax_in_flight = 4", 1))
	if live, refused := Reloadable("ship", a, c); len(live) != 0 || !slices.Equal(refused, []string{"tcp.max_in_flight"}) {
		t.Fatalf("tcp.max_in_flight: live %q refused %q, want it refused", live, refused)
	}
}
