package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// servingNotified is set once notifyServing has told systemd READY=1: a
// reload before that must not say READY=1 (the start is not done).
var servingNotified atomic.Bool

// notifyServing tells systemd (a Type=notify unit) that a long-running
// verb is serving: READY=1 now; WATCHDOG=1 every half of the unit's
// WatchdogSec= for as long as alive returns, until stop (through the
// drain, so that a long one is not taken for a hang); STOPPING=1 when ctx
// ends (a signal: shutdown begins) or, at the latest, at stop. alive takes the locks the verb's main loops take, so a loop stuck
// holding one stops the pings and systemd restarts ferry (with SIGABRT,
// whose goroutine dump shows where it was stuck). Outside systemd
// ($NOTIFY_SOCKET unset) it does nothing.
func notifyServing(ctx context.Context, log *slog.Logger, alive func()) (stop func()) {
	var warnOnce sync.Once
	send := func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			warnOnce.Do(func() { log.Warn("cannot notify systemd", "state", state, "err", err) })
		}
	}
	// Set before READY=1 is sent: a SIGHUP sent by whoever read READY=1
	// must find it set, or the reload says nothing to systemd (a clean-
	// clone CI run lost its RELOADING=1 to that race).
	servingNotified.Store(true)
	send(daemon.SdNotifyReady)

	pings, stopPings := context.WithCancel(context.Background())
	var done sync.WaitGroup
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog off", "err", err)
	}
	if interval > 0 {
		done.Add(1)
		go func() {
			defer done.Done()
			t := time.NewTicker(interval / 2)
			defer t.Stop()
			for {
				select {
				case <-pings.Done():
					return
				case <-t.C:
				}
				alive()
				send(daemon.SdNotifyWatchdog)
			}
		}()
	}
	var stopping sync.Once
	done.Add(1)
	go func() {
		defer done.Done()
		select {
		case <-ctx.Done():
			stopping.Do(func() { send(daemon.SdNotifyStopping) })
		case <-pings.Done():
		}
	}()
	return func() {
		stopping.Do(func() { send(daemon.SdNotifyStopping) })
		stopPings()
		done.Wait()
	}
}

// notifyReloading tells systemd that a reload (SIGHUP) begins:
// RELOADING=1 with MONOTONIC_USEC, the CLOCK_MONOTONIC time of the start,
// as systemd's reload protocol asks; done says READY=1 once the reload is
// applied or refused (either way the process serves on). Before the verb
// has said READY=1, and outside systemd, it does nothing.
func notifyReloading(log *slog.Logger) (done func()) {
	if !servingNotified.Load() {
		return func() {}
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		log.Warn("cannot read CLOCK_MONOTONIC for systemd's reload notification", "err", err)
	}
	state := fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, ts.Nano()/1000)
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("cannot notify systemd", "state", daemon.SdNotifyReloading, "err", err)
	}
	return func() {
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			log.Warn("cannot notify systemd", "state", daemon.SdNotifyReady, "err", err)
		}
	}
}
