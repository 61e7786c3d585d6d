package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A follower times every complete line when it reads it, carries a line
// split across reads to the read that completes it, and counts each line
// out of order, repeated or after a missing one.
func TestFollower(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s-a.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	line := func(n int) string {
		return fmt.Sprintf("%s %08d GET /api/v1/items/1?user=0 200 1ms\n", t0.Add(time.Duration(n)*time.Millisecond).Format(time.RFC3339Nano), n)
	}
	fl := &follower{path: path}
	st := &stats{badLog: 10} // nothing on stderr
	f.WriteString(line(1) + line(2)[:20])
	if err := fl.read(t0.Add(time.Second), st); err != nil {
		t.Fatal(err)
	}
	if len(st.lat) != 1 || st.lat[0] != time.Second-time.Millisecond {
		t.Fatalf("after line 1 and half of 2: latencies %v", st.lat)
	}
	f.WriteString(line(2)[20:] + line(3))
	if err := fl.read(t0.Add(2*time.Second), st); err != nil {
		t.Fatal(err)
	}
	if len(st.lat) != 3 || st.lat[1] != 2*time.Second-2*time.Millisecond || st.bad != 0 {
		t.Fatalf("lines 1-3: latencies %v, bad %d", st.lat, st.bad)
	}
	f.WriteString(line(3) + line(5) + line(6) + line(4) + "not a line\n")
	if err := fl.read(t0.Add(3*time.Second), st); err != nil {
		t.Fatal(err)
	}
	// 3 repeated, 5 after a missing 4, 4 out of order, the last unparsable.
	if st.bad != 4 || len(st.lat) != 7 {
		t.Fatalf("bad %d, %d lines timed; want 4 bad, 7 timed", st.bad, len(st.lat))
	}
}
