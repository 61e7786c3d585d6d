package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
