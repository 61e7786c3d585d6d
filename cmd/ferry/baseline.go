package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/store"
)

// startBaselines wires the baselines of a dir: source (docs/DIRTREE.md,
// "Baselines"): ship.baseline schedules them, SIGUSR1 asks for one now, and
// each completed baseline's marker goes to every target that holds
// arbitrary objects once that target has stored its end. stop ends the
// marker writer after one last pass (call it once the spool is drained, so
// the marker of a baseline that just ended is not left for the next start).
func startBaselines(ctx context.Context, cfg *config.File, sh *shipper.Shipper, targets []shipper.Target,
	ds *source.Dir, log *slog.Logger) (stop func(), err error) {
	if spec := cfg.Ship.Baseline; spec != "" {
		sched, err := cfg.Schedule(spec)
		if err != nil {
			return nil, usageError{err}
		}
		ds.Baseline = sched
	}
	m := &shipper.BaselineMarkers{Shipper: sh, Log: log}
	for _, t := range targets {
		if !store.IsSegmentsOnly(t.Store) {
			m.Targets = append(m.Targets, t)
		}
	}
	// The marker of the last baseline the spool completed is queued again:
	// a crash may have come before it was written everywhere, and writing
	// it again stores the same bytes.
	last, ok, err := source.LoadLastBaseline(cfg.Ship.Spool)
	if err != nil {
		return nil, err
	}
	if ok {
		m.Add(last)
	}
	ds.OnBaseline = m.Add
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-runCtx.Done():
				return
			case <-usr1:
				log.Info("SIGUSR1: baseline requested")
				ds.RequestBaseline()
			}
		}
	}()
	writer := make(chan struct{})
	go func() {
		m.Run(runCtx)
		close(writer)
	}()
	return func() {
		signal.Stop(usr1)
		cancel()
		<-done
		<-writer
		flushCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if left := m.Flush(flushCtx); left > 0 {
			log.Warn("baseline markers not written yet; the next start writes the last one", "left", left)
		}
	}, nil
}
