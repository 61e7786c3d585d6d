package ferrytest

import (
	"testing"
	"time"
)

func TestClockFiresAfterWhenMovedPast(t *testing.T) {
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	c := NewClock(start)
	if got := <-c.After(0); !got.Equal(start) {
		t.Fatalf("After(0) fired with %v, want %v at once", got, start)
	}
	soon, later := c.After(time.Second), c.After(time.Minute)
	if c.Pending() != 2 {
		t.Fatalf("Pending() = %d, want 2", c.Pending())
	}
	c.Advance(999 * time.Millisecond)
	select {
	case <-soon:
		t.Fatal("After(1s) fired 999ms in")
	default:
	}
	c.Advance(time.Millisecond)
	if got := <-soon; !got.Equal(start.Add(time.Second)) {
		t.Fatalf("After(1s) fired with %v", got)
	}
	c.Set(start.Add(time.Hour))
	if got := <-later; !got.Equal(start.Add(time.Hour)) || c.Pending() != 0 {
		t.Fatalf("After(1m) fired with %v, %d still pending", got, c.Pending())
	}
	if !c.Now().Equal(start.Add(time.Hour)) {
		t.Fatalf("Now() = %v after Set", c.Now())
	}
}
