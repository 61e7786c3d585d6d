package config

import (
	"strings"
	"testing"
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
