package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The cap of the open window shows in both forms of ferry status, and
// only when one applies.
func TestStatusWindowCap(t *testing.T) {
	now := time.Date(2026, 3, 10, 22, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		win   windowStatus
		human string // in the window line; "" for none
		json  string // in --json; "" for absent
	}{
		{"capped", windowStatus{Open: true, Until: now.Add(time.Hour), BandwidthLimit: 5 << 20}, "sending capped at 5.0 MiB/s per target", `"bandwidth_limit": 5242880`},
		{"uncapped", windowStatus{Open: true, Until: now.Add(time.Hour)}, "", ""},
		{"closed", windowStatus{NextOpen: now.Add(time.Hour)}, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := shipStatus{Role: "shipper", Running: true, PID: 1, UpdatedAt: now, Stream: "app", Generation: 1, Window: &c.win}
			var out bytes.Buffer
			printShipStatus(&out, s, now)
			line := ""
			for l := range strings.Lines(out.String()) {
				if strings.HasPrefix(l, "window") {
					line = l
				}
			}
			if line == "" {
				t.Fatalf("no window line in:\n%s", out.String())
			}
			if got := strings.Contains(line, "capped"); got != (c.human != "") || !strings.Contains(line, c.human) {
				t.Errorf("window line %q, want it to say %q", line, c.human)
			}
			out.Reset()
			if err := printJSON(&out, s); err != nil {
				t.Fatal(err)
			}
			js := out.String()
			if got := strings.Contains(js, "bandwidth_limit"); got != (c.json != "") || !strings.Contains(js, c.json) {
				t.Errorf("--json %s\nwant it to contain %q", js, c.json)
			}
			var back shipStatus
			if err := json.Unmarshal(out.Bytes(), &back); err != nil || back.Window.BandwidthLimit != c.win.BandwidthLimit {
				t.Errorf("--json read back: %+v, %v", back.Window, err)
			}
		})
	}
}
