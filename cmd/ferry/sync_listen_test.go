package main

import (
	"context"
	"errors"
	"testing"
)

// A site stopped by a signal ends its listener with it: the listener's
// end then wakes the site's wait as well as the stop does, and must not
// count as a failure (the site exited 143 instead of 0 on SIGTERM when
// the wait took the listener's end first: seen in TestSyncLinkChurnKill9
// under load). A listener that ends while the site runs is one.
func TestListenerStoppedIsNoFailureWhenTheSiteStops(t *testing.T) {
	stopped, stop := context.WithCancel(context.Background())
	stop()
	if err := listenerStopped(stopped, nil); err != nil {
		t.Errorf("the listener ended with the stopping site: %v; want no failure", err)
	}
	if err := listenerStopped(context.Background(), nil); err == nil {
		t.Error("the listener ended while the site runs: no failure; want one")
	}
	bad := errors.New("accept: too many open files")
	for _, ctx := range []context.Context{stopped, context.Background()} {
		if err := listenerStopped(ctx, bad); !errors.Is(err, bad) {
			t.Errorf("the listener failed: %v; want its error", err)
		}
	}
}
