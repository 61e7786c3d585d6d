package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/metrics"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/bundle"
	"github.com/ferry-dr/ferry/shipper/multi"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
)

// allStreams is the stream label of what the streams of one ship share:
// the S3 requests of the targets' stores.
const allStreams = "*"

// goneAfter is how long a glob stream's file must stay away, once read to
// its end, before its stream ends (a rotation brings the path back
// sooner).
const goneAfter = 5 * time.Second

// streamJournalRotate and streamStateEvery are each stream's spool's
// JournalRotate and StateEvery (spool.Config), and streamStatusEvery how
// often the ship rewrites streams-status.json, the status of all its
// streams (status_streams.go): 100 streams at max_age 2 s seal 50
// segments a second, and a journal file created and removed per seal,
// state.json and status.json rewritten per stream every second, were
// most of the files the ship created. Confirmed segments wait in the
// spool for state.json up to streamStateEvery; ferry status --spool shows
// a stream as it was up to streamStatusEvery ago (it calls a status
// older than 10 x statusEvery stale).
const (
	streamJournalRotate = 1 << 20
	streamStateEvery    = 10 * time.Second
	streamStatusEvery   = 5 * time.Second
)

// tailCoalesce is each stream's tail's Coalesce (source.Tail) for a
// stream's max_age: a quarter of it, at most a second; none without an
// age seal. With max_age 2 s a busy file is read every 500 ms, and once
// just before its segment seals, instead of every 100 ms. A stream that
// bundle ticks seal (max_age at or above bundle_interval) has the
// interval instead: its tail reads about twice a tick, just before it
// and as it comes.
func tailCoalesce(maxAge time.Duration) time.Duration {
	return min(maxAge/4, time.Second)
}

// runShipStreams is ferry ship with [[streams]] tables (docs/STREAMS.md):
// one shipper per stream, each with its spool under ship.spool, all
// sending to the targets opened once here.
func runShipStreams(cfg *config.File, log *slog.Logger, stderr io.Writer) error {
	ctx := context.Background()
	sc := cfg.Ship
	var reg *metrics.Registry
	retry := store.RetryPolicy{Min: 200 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.2}
	var onS3Request func(string)
	if cfg.MetricsAddr != "" {
		reg = metrics.New(readBuildInfo().metrics())
		onS3Request = reg.S3Hook(allStreams)
	}
	schedules, enc, signer, err := shipSealing(cfg, log)
	if err != nil {
		return err
	}
	if sc.LeaseTTL == 0 {
		log.Warn("ship.lease_ttl is off: nothing keeps a second shipper off the streams")
	}
	targets, closeTargets, err := openTargets(ctx, cfg, onS3Request, log)
	if err != nil {
		return err
	}
	defer closeTargets()
	// One group commit for every stream's journal (fsync "batch"): a sync
	// of the spools' file system every commit interval, not an fsync per
	// stream (spool.Committer).
	commit := spool.NewCommitter(0)
	defer commit.Close()
	commitCtx, stopCommit := context.WithCancel(context.Background())
	commitErr := make(chan error, 1)
	go func() { commitErr <- commit.Run(commitCtx) }()
	defer func() { stopCommit(); <-commitErr }()
	bundler, err := openBundler(cfg, targets, retry, log)
	if err != nil {
		return err
	}
	if bundler != nil {
		defer bundler.Close()
	}
	// One inotify watch per directory for every stream's tail: an idle
	// stream's file is not polled (source.TailWatch).
	watch, err := source.NewTailWatch(log, 0)
	if err != nil {
		return err
	}
	defer watch.Close()
	logStart(log, "ship", "streams", len(cfg.Streams), "store", redact.URL(cfg.Store), "targets", len(targets), "spool", sc.Spool,
		"encrypted", enc != nil)

	// Each stream publishes its status in its spool (ferry status --spool
	// SPOOL/NAME), and its metrics, while it runs: ended[name] stops both
	// (a failed stream's metrics stay: its failure stops the ship).
	// One writer for every stream's status: streams-status.json in the
	// spool root (status_streams.go).
	if err := os.MkdirAll(sc.Spool, 0o755); err != nil {
		return err
	}
	status := newStreamsStatus(sc.Spool, streamStatusEvery)
	statusCtx, stopStatus := context.WithCancel(context.Background())
	statusDone := make(chan struct{})
	go func() { status.run(statusCtx); close(statusDone) }()
	defer func() { stopStatus(); <-statusDone }()
	var endedMu sync.Mutex
	ended := map[string]func(failed bool){}
	tables := make([]multi.Table, len(cfg.Streams))
	for i, t := range cfg.Streams {
		tables[i] = multi.Table{Name: t.Name, Path: t.Path(), Glob: t.IsGlob(), Scan: t.Scan(),
			NameOf: func(file string) (string, error) { return config.StreamName(t.Name, file) }}
	}
	r := &multi.Runner{
		Tables:          tables,
		SpoolRoot:       sc.Spool,
		ShutdownTimeout: time.Duration(sc.ShutdownTimeout),
		Bundler:         bundler,
		Log:             log,
		Start: func(ctx context.Context, table int, name, file string) (*shipper.Shipper, shipper.Source, error) {
			c := *cfg
			c.Stream = name
			t := config.StreamTable{}
			if table >= 0 {
				t = cfg.Streams[table]
			}
			c.Ship = t.Ship(sc, name, file)
			shc := streamShipConfig(&c, targets, enc, signer, retry, schedules, reg)
			shc.Spool.Committer = commit
			// Per-seal file work, times the streams: one journal file for
			// many seals, and state.json rewritten every few seconds, not
			// every second, per stream.
			if shc.Ack == shipper.AckLocal || shc.Ack == "" {
				shc.Spool.JournalRotate = streamJournalRotate
			}
			shc.Spool.StateEvery = streamStateEvery
			coalesce := tailCoalesce(time.Duration(c.Ship.MaxAge))
			if bundler != nil {
				shc.Spool.Parts = bundler.Parts(name)
				// Its tail reads just before each tick, not every Poll
				// (source.Tail Coalesce, Shipper.SealDeadline).
				shc.SealTick = bundler.NextTick
				if sc.BundleInterval > 0 && shc.Spool.Policy.MaxAge >= time.Duration(sc.BundleInterval) {
					// The tick seals it, into a bundle or (over
					// bundle_max) alone: max_age would only race it.
					shc.Spool.Policy.MaxAge = 0
					coalesce = time.Duration(sc.BundleInterval)
				}
			}
			sh, err := shipper.New(ctx, shc, log)
			if err != nil {
				return nil, nil, err
			}
			unwatch := func() {}
			if reg != nil {
				unwatch = reg.WatchShipper(sh, name, metrics.Health{MaxLag: time.Duration(cfg.HealthMaxLag)})
			}
			gen, spoolDir, tailFile := sh.Generation(), c.Ship.Spool, tailPath(c.Ship.Source)
			snap := func(now time.Time) shipStatus {
				return snapshotShip(sh, name, gen, sc.Ack, spoolDir, tailFile, enc, now)
			}
			status.add(name, snap)
			endedMu.Lock()
			ended[name] = func(failed bool) {
				status.remove(name, spoolDir, snap)
				if !failed {
					unwatch()
				}
			}
			endedMu.Unlock()
			if table < 0 {
				return sh, nil, nil // a leftover spool: ship what it holds
			}
			tail := &source.Tail{Path: file, Format: c.Ship.Format, MaxRecordSize: int(sc.MaxRecordSize),
				Cursor: sh.Spool().Cursor(), Log: log.With("stream", name), Watch: watch, Replayable: !sc.TailJournal,
				Coalesce: coalesce}
			if t.IsGlob() {
				tail.EndWhenGone = goneAfter
			}
			return sh, tail, nil
		},
		Ended: func(name string, sh *shipper.Shipper, err error) {
			endedMu.Lock()
			stop := ended[name]
			delete(ended, name)
			endedMu.Unlock()
			if stop != nil {
				stop(err != nil)
			}
			st := sh.Spool().Stats()
			log.Info("stream stopped", "stream", name, "records", st.RecordsIn, "segments", st.SegmentsOut, "last_seq", st.LastSeq,
				"segments_in_spool", st.SealedPending, "err", err)
		},
	}
	if reg != nil {
		stopMetrics, err := reg.Serve(ctx, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	runCtx, stop := signalContext(ctx, log)
	defer stop()
	defer notifyServing(runCtx, log, func() { r.Active() })()
	start := time.Now()
	err = r.Run(runCtx)
	fmt.Fprintf(stderr, "ferry ship: %d stream tables, %.2fs\n", len(cfg.Streams), time.Since(start).Seconds())
	return err
}

// streamShipConfig is the shipper config of one stream of a multi-stream
// ship: cfg is the stream's (its name, its [ship] with the table's
// overrides and spool).
func streamShipConfig(cfg *config.File, targets []shipper.Target, enc batch.Encrypter, signer batch.Signer, retry store.RetryPolicy,
	sched shipper.Schedules, reg *metrics.Registry) shipper.Config {
	c := shipConfig(cfg, targets, cfg.Generation, enc, signer)
	c.Retry, c.Schedules = retry, sched
	if reg != nil {
		c.Retry.OnRetry, c.OnSent = reg.RetryHook(cfg.Stream), reg.SendHook(cfg.Stream)
	}
	return c
}

// openBundler opens the Bundler of a ship with ship.bundle_interval set
// (nil without, unless its spool still holds bundles: then one that only
// puts those): its spool is ship.spool/_bundles, its targets the ship's.
func openBundler(cfg *config.File, targets []shipper.Target, retry store.RetryPolicy, log *slog.Logger) (*bundle.Bundler, error) {
	sc := cfg.Ship
	dir := filepath.Join(sc.Spool, bundle.DirName)
	interval, drain := time.Duration(sc.BundleInterval), false
	if interval <= 0 {
		left, err := bundle.Leftover(dir)
		if err != nil || !left {
			return nil, err
		}
		// Turned off with bundles not yet in every target: their parts
		// are the streams' sealed segments, to be put and adopted.
		interval, drain = time.Second, true
	}
	bt := make([]bundle.Target, len(targets))
	for i, t := range targets {
		bt[i] = bundle.Target{Name: t.Name, Store: t.Store}
	}
	b, err := bundle.Open(bundle.Config{Dir: dir, Interval: interval, Drain: drain,
		MaxBytes: int64(sc.BundleMax), Targets: bt, Retry: retry, Log: log, Step: bundleKillStep()})
	if err != nil {
		return nil, err
	}
	if drain {
		log.Info("bundles off, but the bundle spool holds bundles: they are put, and no new ones sealed", "dir", dir, "writer", b.Writer())
	} else {
		log.Info("bundles on", "interval", interval, "bundle_max", sc.BundleMax, "writer", b.Writer())
	}
	return b, nil
}

// bundleKillStep is FERRY_BUNDLE_KILL's hook: the tests' kill -9 of the
// process at one step of a bundle's life (shipper/bundle Config.Step).
func bundleKillStep() func(string) {
	at := os.Getenv("FERRY_BUNDLE_KILL")
	if at == "" {
		return nil
	}
	return func(step string) {
		if step == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}
