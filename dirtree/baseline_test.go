package dirtree

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCheckBaseline(t *testing.T) {
	data, _ := json.Marshal(BaselineData{Version: 1, StartedAt: time.Unix(1, 0).UTC(), BeginSeq: 3, Paths: 9})
	if err := CheckBaseline(OpBaselineEnd, []byte("."), data); err != nil {
		t.Fatalf("what the source writes: %v", err)
	}
	if err := CheckBaseline(OpBaselineBegin, []byte("."), []byte(`{"version":2,"new_field":true}`)); err != nil {
		t.Fatalf("a later version with unknown fields: %v", err)
	}
	for _, c := range []struct {
		key, data, wantInErr string
	}{
		{"x", `{"version":1}`, `want "."`},
		{".", "junk", "not a baseline header"},
		{".", `{"version":0}`, "not a baseline header"},
		{".", "", "not a baseline header"},
	} {
		err := CheckBaseline(OpBaselineBegin, []byte(c.key), []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.wantInErr) {
			t.Errorf("CheckBaseline(%q, %q): %v, want an error saying %q", c.key, c.data, err, c.wantInErr)
		}
	}
}
