package config

import (
	"fmt"
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
	f, err := Load(writeConfig(t, tcpConfig+"ca_file = \"/etc/ca.pem\"\nbandwidth_limit = \"10MiB\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.TCP.Token != "config-test-token-0123" || f.TCP.BandwidthLimit != 10*MiB || f.TCP.CAFile != "/etc/ca.pem" {
		t.Fatalf("loaded %+v", f.TCP)
	}
	_, err = Load(writeConfig(t, "stream = \"app\"\n[tcp]\ntokn = \"x\"\n"))
	if err == nil || !strings.Contains(err.Error(), "tcp.tokn") || !strings.Contains(err.Error(), ":3:") {
		t.Fatalf("unknown [tcp] key: got %v, want an error naming tcp.tokn on line 3", err)
	}
}

// tcpConfig is a shipper config for a tcp:// store, ending inside [tcp].
const tcpConfig = "stream = \"app\"\nstore = \"tcp://dr:7000\"\n[tcp]\ntoken = \"config-test-token-0123\"\n"

// loadTCPKey loads tcpConfig with key = value in [tcp]. It fails the test
// unless the load fails exactly when bad, with an error naming tcp.KEY;
// ok says it loaded as expected, for the caller to check the value.
func loadTCPKey(t *testing.T, key, value string, bad bool) (*File, bool) {
	t.Helper()
	f, err := Load(writeConfig(t, tcpConfig+key+" = "+value+"\n"))
	switch {
	case bad && (err == nil || !strings.Contains(err.Error(), "tcp."+key)):
		t.Errorf("%s = %s: got %v, want an error naming tcp.%s", key, value, err, key)
	case !bad && err != nil:
		t.Errorf("%s = %s: %v", key, value, err)
	}
	return f, err == nil && !bad
}

// tcp.max_in_flight loads, and a value out of range is an error naming the
// key.
func TestTCPMaxInFlight(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int
		err   bool
	}{{"1", 1, false}, {"16", 16, false}, {"-1", 0, true}, {"65", 0, true}} {
		if f, ok := loadTCPKey(t, "max_in_flight", tc.value, tc.err); ok && f.TCP.MaxInFlight != tc.want {
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
	for _, tc := range []struct {
		value string
		want  time.Duration
		err   bool
	}{{`"0s"`, 0, false}, {`"2s"`, 2 * time.Second, false}, {`"-1s"`, 0, true}} {
		if f, ok := loadTCPKey(t, "checkpoint_delay", tc.value, tc.err); ok && time.Duration(f.TCP.CheckpointDelay) != tc.want {
			t.Errorf("checkpoint_delay = %s loaded as %v", tc.value, f.TCP.CheckpointDelay)
		}
	}
}

// The listener's limits load, and values out of range are errors naming
// the key.
func TestTCPListenLimits(t *testing.T) {
	f, ok := loadTCPKey(t, "max_startups", "8\nmax_connections = 20\nhandshake_timeout = \"2s\"", false)
	if ok && (f.TCP.MaxStartups != 8 || f.TCP.MaxConnections != 20 || time.Duration(f.TCP.HandshakeTimeout) != 2*time.Second) {
		t.Errorf("loaded %+v", f.TCP)
	}
	for _, tc := range []struct{ key, value string }{
		{"max_startups", "-1"}, {"max_startups", "64"}, {"max_startups", "10\nmax_connections = 10"},
		{"max_connections", "-1"}, {"max_connections", "1"}, {"handshake_timeout", "\"-1s\""},
	} {
		loadTCPKey(t, tc.key, tc.value, true)
	}
}
