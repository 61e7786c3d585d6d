package batch

import (
	"testing"
	"time"
)

func TestFlushPolicyDue(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	all := FlushPolicy{MaxBytes: 1000, MaxRecords: 10, MaxAge: time.Second}
	cases := []struct {
		name string
		p    FlushPolicy
		size int64
		n    int
		now  time.Time
		want string // "" when not due
	}{
		{"empty batch never due", all, 5000, 0, t0.Add(time.Hour), ""},
		{"under every trigger", all, 999, 9, t0.Add(time.Second - 1), ""},
		{"bytes at limit", all, 1000, 1, t0, "max_bytes"},
		{"bytes over limit", all, 1 << 20, 1, t0, "max_bytes"},
		{"records at limit", all, 1, 10, t0, "max_records"},
		{"age at limit", all, 1, 1, t0.Add(time.Second), "max_age"},
		{"age over limit", all, 1, 1, t0.Add(time.Minute), "max_age"},
		{"bytes wins over records and age", all, 1000, 10, t0.Add(time.Minute), "max_bytes"},
		{"records win over age", all, 1, 10, t0.Add(time.Minute), "max_records"},
		{"clock before first", all, 1, 1, t0.Add(-time.Hour), ""},
		{"all disabled", FlushPolicy{}, 1 << 40, 1 << 30, t0.Add(1000 * time.Hour), ""},
		{"bytes disabled", FlushPolicy{MaxRecords: 10, MaxAge: time.Second}, 1 << 40, 1, t0, ""},
		{"records disabled", FlushPolicy{MaxBytes: 1000, MaxAge: time.Second}, 1, 1 << 30, t0, ""},
		{"age disabled", FlushPolicy{MaxBytes: 1000, MaxRecords: 10}, 1, 1, t0.Add(1000 * time.Hour), ""},
		{"negative age disabled", FlushPolicy{MaxAge: -time.Second}, 1, 1, t0.Add(time.Hour), ""},
		{"only bytes", FlushPolicy{MaxBytes: 1}, 1, 1, t0, "max_bytes"},
		{"only records", FlushPolicy{MaxRecords: 1}, 0, 1, t0, "max_records"},
		{"only age", FlushPolicy{MaxAge: time.Nanosecond}, 0, 1, t0.Add(time.Nanosecond), "max_age"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			due, why := c.p.Due(c.size, c.n, t0, c.now)
			if due != (c.want != "") || why != c.want {
				t.Fatalf("Due = %t, %q; want %t, %q", due, why, c.want != "", c.want)
			}
		})
	}
}

func TestFlushPolicyDeadline(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p := FlushPolicy{MaxAge: 5 * time.Second}
	d := p.Deadline(t0)
	if !d.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("Deadline = %v", d)
	}
	// Due agrees with Deadline: not at d-1ns, yes at d.
	if due, _ := p.Due(1, 1, t0, d.Add(-1)); due {
		t.Fatal("due before the deadline")
	}
	if due, why := p.Due(1, 1, t0, d); !due || why != "max_age" {
		t.Fatalf("at the deadline: %t %q", due, why)
	}
	for _, p := range []FlushPolicy{{}, {MaxAge: -1}, {MaxBytes: 1, MaxRecords: 1}} {
		if d := p.Deadline(t0); !d.IsZero() {
			t.Fatalf("%+v: Deadline = %v, want zero", p, d)
		}
	}
}
