package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTCPTokenNeverPrinted(t *testing.T) {
	tc := TCP{Token: "hunter2-token", Insecure: true, Listen: "127.0.0.1:7000"}
	f := Defaults()
	f.TCP = tc
	for _, s := range []string{tc.String(), tc.GoString(), fmt.Sprintf("%v", tc), fmt.Sprintf("%+v", tc),
		fmt.Sprintf("%#v", tc), fmt.Sprintf("%s", tc), fmt.Sprintf("%+v", *f), fmt.Sprintf("%#v", f)} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("token printed: %s", s)
		}
	}
	if !strings.Contains(tc.String(), "***") {
		t.Fatalf("a set token should show as ***: %s", tc)
	}
}

func TestTCPTableLoadsAndIsStrict(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("stream = \"app\"\nstore = \"tcp://dr:7000\"\n[tcp]\ntoken = \"x\"\nca_file = \"/etc/ca.pem\"\nbandwidth_limit = \"10MiB\"\n"), 0o644)
	f, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if f.TCP.Token != "x" || f.TCP.BandwidthLimit != 10*MiB || f.TCP.CAFile != "/etc/ca.pem" {
		t.Fatalf("loaded %+v", f.TCP)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("stream = \"app\"\n[tcp]\ntokn = \"x\"\n"), 0o644)
	_, err = Load(bad)
	if err == nil || !strings.Contains(err.Error(), "tcp.tokn") || !strings.Contains(err.Error(), ":3:") {
		t.Fatalf("unknown [tcp] key: got %v, want an error naming tcp.tokn on line 3", err)
	}
}

// tcp.max_in_flight loads, and a value out of range is an error naming the
// key.
func TestTCPMaxInFlight(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		value string
		want  int
		err   bool
	}{{"1", 1, false}, {"16", 16, false}, {"-1", 0, true}, {"65", 0, true}} {
		path := filepath.Join(dir, "c.toml")
		os.WriteFile(path, []byte("stream = \"app\"\nstore = \"tcp://dr:7000\"\n[tcp]\ntoken = \"x\"\nmax_in_flight = "+tc.value+"\n"), 0o644)
		f, err := Load(path)
		switch {
		case tc.err && (err == nil || !strings.Contains(err.Error(), "tcp.max_in_flight")):
			t.Errorf("max_in_flight = %s: got %v, want an error naming tcp.max_in_flight", tc.value, err)
		case !tc.err && err != nil:
			t.Errorf("max_in_flight = %s: %v", tc.value, err)
		case !tc.err && f.TCP.MaxInFlight != tc.want:
			t.Errorf("max_in_flight = %s loaded as %d", tc.value, f.TCP.MaxInFlight)
		}
	}
}

// tcp.checkpoint_delay defaults to 100ms, loads, and a negative one is an
// error naming the key.
func TestTCPCheckpointDelay(t *testing.T) {
	if d := Defaults().TCP.CheckpointDelay; d != Duration(DefaultCheckpointDelay) {
		t.Fatalf("default checkpoint_delay %v, want %v", d, DefaultCheckpointDelay)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		value string
		want  time.Duration
		err   bool
	}{{`"0s"`, 0, false}, {`"2s"`, 2 * time.Second, false}, {`"-1s"`, 0, true}} {
		path := filepath.Join(dir, "c.toml")
		os.WriteFile(path, []byte("stream = \"app\"\nstore = \"tcp://dr:7000\"\n[tcp]\ntoken = \"x\"\ncheckpoint_delay = "+tc.value+"\n"), 0o644)
		f, err := Load(path)
		switch {
		case tc.err && (err == nil || !strings.Contains(err.Error(), "tcp.checkpoint_delay")):
			t.Errorf("checkpoint_delay = %s: got %v, want an error naming tcp.checkpoint_delay", tc.value, err)
		case !tc.err && err != nil:
			t.Errorf("checkpoint_delay = %s: %v", tc.value, err)
		case !tc.err && time.Duration(f.TCP.CheckpointDelay) != tc.want:
			t.Errorf("checkpoint_delay = %s loaded as %v", tc.value, f.TCP.CheckpointDelay)
		}
	}
}
