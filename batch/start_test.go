package batch

import (
	"strings"
	"testing"
	"time"
)

func TestStartMarkerRoundTripAndDamage(t *testing.T) {
	s := Start{Stream: "app", Generation: 2, Seq: 1001, PrevSHA256: ZeroHash, Reason: StartPruned, Time: time.Unix(1e9, 0)}
	name := StartName(s.Generation, s.Seq)
	if g, seq, ok := ParseStartName(name); !ok || g != 2 || seq != 1001 {
		t.Fatalf("ParseStartName(%s) = %d, %d, %v", name, g, seq, ok)
	}
	got, err := ParseStart(name, MarshalStart(s))
	if err != nil || got.Seq != 1001 || got.Reason != StartPruned || got.Version != StartVersion {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{"00000002-0000000000000001.json", "0000002-00000000000003e9.json", "00000000-00000000000003e9.json"} {
		if _, _, ok := ParseStartName(bad); ok {
			t.Errorf("ParseStartName(%s) accepted", bad)
		}
	}
	for data, want := range map[string]string{
		`{"version":2,"generation":2,"seq":1001}`:                                  "upgrade ferry",
		`{"version":1,"generation":2,"seq":1000,"prev_sha256":"` + ZeroHash + `"}`: "damaged",
		`{"version":1,"generation":2,"seq":1001,"prev_sha256":"abc"}`:              "not a SHA-256",
		`{`: "damaged",
	} {
		if _, err := ParseStart(name, []byte(data)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseStart(%s): %v, want %q", data, err, want)
		}
	}
}
