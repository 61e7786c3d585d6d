package batch

import (
	"strings"
	"testing"
	"time"
)

func TestBaselineMarker(t *testing.T) {
	b := Baseline{Stream: "mail", Generation: 2, BeginSeq: 0x10, EndSeq: 0x2a,
		BeginTime: time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC), EndTime: time.Date(2026, 3, 1, 2, 41, 0, 0, time.UTC), Paths: 7}
	key := BaselineKey("mail", b)
	if key != "mail/baselines/00000002-0000000000000010-000000000000002a.json" {
		t.Fatalf("key %q", key)
	}
	name := strings.TrimPrefix(key, BaselineDir("mail"))
	data := MarshalBaseline(b)
	if string(data) != string(MarshalBaseline(b)) {
		t.Fatal("marker content is not deterministic")
	}
	got, err := ParseBaseline(name, data)
	b.Version = BaselineVersion
	if err != nil || got != b {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, tc := range []struct{ name, data, want string }{
		{name, `{"version":2,"generation":2,"begin_seq":16,"end_seq":42}`, "upgrade ferry"},
		{name, `{"version":1,"generation":2,"begin_seq":16,"end_seq":43}`, "damaged"},
		{name, `{`, "damaged"},
		{"00000002-0000000000000010-0000000000000010.json", `{}`, "not a marker name"},
		{"x.json", `{}`, "not a marker name"},
	} {
		if _, err := ParseBaseline(tc.name, []byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseBaseline(%s, %s): %v, want %q", tc.name, tc.data, err, tc.want)
		}
	}
	if _, err := ParseBaseline(name, []byte(`{"version":1,"generation":2,"begin_seq":16,"end_seq":42,"new":true}`)); err != nil {
		t.Errorf("unknown field refused: %v", err)
	}
}
