package source

import (
	"context"
	"testing"
	"time"
)

// None reads nothing and ends, without error, only when ctx does.
func TestNoneEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- None{}.Run(ctx, nil) }()
	select {
	case err := <-done:
		t.Fatalf("None returned before its context ended: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("None: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("None did not return after its context ended")
	}
}
