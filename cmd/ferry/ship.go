package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/metrics"
	"github.com/ferry-dr/ferry/retention"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/transport/tcp"
)

const shipExamples = `  # ship a log file through stdin into a local directory store
  ferry ship --store /srv/ferry --stream app --spool /var/lib/ferry/spool < app.log

  # follow a growing file across rotation, sealing every 4 MiB or 2 s
  ferry ship --store /srv/ferry --stream app --spool /var/lib/ferry/spool \
      --source tail:/var/log/app.log --max-bytes 4MiB --max-age 2s

  # keep a directory tree (a mail store) in step on the DR site
  ferry ship --store s3://dr-bucket/ferry --stream mail --spool /var/lib/ferry/spool --source dir:/var/mail

  # straight to a receiver over TLS (see [tcp] in the config for token_file and
  # certificates, or set FERRY_TOKEN)
  ferry ship --config /etc/ferry/ship.toml --store tcp://dr-site:7000 --tls-ca /etc/ferry/ca.pem

  # everything from a config file
  ferry ship --config /etc/ferry/ship.toml

  # push-only, for PostgreSQL's archive_command: ferry push hands it each WAL
  # file through SPOOL/push.sock, and it reads no stdin (etc/ferry-pg.toml)
  ferry ship --store s3://pg-archive/ferry --stream pg-wal --spool /var/lib/ferry/pg-spool --source none
`

func runShip(args []string, stdout, stderr io.Writer) error {
	c := newFlags("ship", "ferry ship --store URL --stream NAME --spool DIR [--source stdin|tail:PATH] [--format line|ndjson|raw] [--max-bytes 4MiB] [--max-age 2s] [--max-records N] [--config FILE]", shipExamples, stderr)
	c.accept("spool", "source", "format", "fsync", "max-bytes", "max-age", "max-records", "max-record-size",
		"spool-limit", "shutdown-timeout", "compression", "ack", "metrics-addr", "also", "start-now", "site", "lease-ttl", "pg-data", "tail-journal")
	c.accept(shipperLinkFlags...)
	err := c.parseNoArgs(args, "ship")
	if err != nil {
		return err
	}
	log := c.logger(stderr)
	reload := c.watchReload("ship", log) // SIGHUP
	defer reload.close()
	cfg := c.cfg
	if cfg.Ship.TailJournal && len(cfg.Streams) == 0 && !strings.HasPrefix(cfg.Ship.Source, "tail:") {
		return usageError{fmt.Errorf("ship.tail_journal (--tail-journal) is for a tail: source, whose lines are otherwise not journaled; ship.source is %q", cfg.Ship.Source)}
	}
	if len(cfg.Streams) > 0 {
		reload.onApply(func(*config.File, []string) error {
			return errors.New("a ship with [[streams]] applies no reload yet: restart it to change its settings")
		})
		return runShipStreams(cfg, log, stderr)
	}
	sc := cfg.Ship

	ctx := context.Background()
	var reg *metrics.Registry
	retry := store.RetryPolicy{Min: 200 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.2}
	var onSent func(string, int, time.Duration)
	var onS3Request func(string)
	if cfg.MetricsAddr != "" {
		reg = metrics.New(readBuildInfo().metrics())
		onS3Request, retry.OnRetry, onSent = reg.S3Hook(cfg.Stream), reg.RetryHook(cfg.Stream), reg.SendHook(cfg.Stream)
	}
	schedules, enc, signer, err := shipSealing(cfg, log)
	if err != nil {
		return err
	}
	if sc.LeaseTTL == 0 {
		log.Warn("ship.lease_ttl is off: nothing keeps a second shipper off the stream", "stream", cfg.Stream)
	}
	memLimit := limitMemory(sc) // before the spool's recovery reads segments
	// SIGINT and SIGTERM are handled from here on: while the spool and the
	// targets open (a store that does not answer, a lease to wait for) a
	// signal ends the open; from the shipper's first status on it stops the
	// shipper gracefully (ferry switchover signals it once that status says
	// its tail is read).
	srcCtx, stopSrc := signalContext(ctx, log)
	defer stopSrc()
	openCtx, endOpen := context.WithCancel(ctx)
	defer endOpen()
	openDone := context.AfterFunc(srcCtx, endOpen)
	sh, targets, closeTargets, err := openShipper(openCtx, cfg, onS3Request, log, func(targets []shipper.Target, gen uint32) shipper.Config {
		c := shipConfig(cfg, targets, gen, enc, signer)
		c.Retry, c.OnSent, c.Schedules = retry, onSent, schedules
		return c
	})
	if !openDone() || err != nil {
		// A signal came while opening; openCtx is not used past the open.
		if err == nil {
			sh.Close()
			closeTargets()
		}
		if srcCtx.Err() != nil && stopSignal.Load() != 0 {
			if sc.Source == "stdin" || sc.Source == "" {
				return fmt.Errorf("ship of stream %s: stopped while opening the spool %s and the targets (nothing was read from stdin): %w", cfg.Stream, sc.Spool, errInterrupted)
			}
			// A service stopped by a signal exits 0, as it does later on.
			log.Info("stopped while opening the spool and the targets", "stream", cfg.Stream, "spool", sc.Spool)
			return nil
		}
		return err
	}
	defer closeTargets()
	defer sh.Close()
	logStart(log, "ship", "stream", cfg.Stream, "generation", sh.Generation(), "store", redact.URL(cfg.Store), "targets", len(targets),
		"spool", sc.Spool, "source", sc.Source, "resume_after_seq", sh.Spool().Stats().LastSeq, "held_records", sh.Spool().Stats().Held,
		"encrypted", enc != nil, "memory_limit", memLimit)
	rule, err := retentionRule(cfg)
	if err != nil {
		return err
	}
	pruner := retention.NewScheduler(rule)
	reload.onApply(func(next *config.File, changed []string) error {
		return applyShipReload(next, changed, sh, targets, pruner, reg, log)
	})
	if reg != nil {
		reg.WatchShipper(sh, cfg.Stream, metrics.Health{MaxLag: time.Duration(cfg.HealthMaxLag)})
		stopMetrics, err := reg.Serve(ctx, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	var src shipper.Source
	stdinSource := sc.Source == "stdin" || sc.Source == ""
	// A pollable stdin lets a signal interrupt a read that is waiting on a
	// quiet pipe (a plain blocking read would not notice).
	stdin := os.Stdin
	if stdinSource && syscall.SetNonblock(0, true) == nil {
		defer syscall.SetNonblock(0, false)
		stdin = os.NewFile(0, "stdin")
	}
	switch {
	case sc.Source == "none":
		src = source.None{} // push-only: records come through push.sock
		// A pushed file stays where it is until its push returns
		// (PostgreSQL keeps a WAL file until archive_command exits 0),
		// and a push returns only once its records are sealed: they
		// are written once, into the segment, with no journal copy.
		sh.SourceReplayable()
	case stdinSource:
		src = &source.Reader{R: stdin, Name: "stdin", Format: sc.Format, MaxRecordSize: int(sc.MaxRecordSize)}
	case strings.HasPrefix(sc.Source, "tail:"):
		src = &source.Tail{Path: strings.TrimPrefix(sc.Source, "tail:"), Format: sc.Format,
			MaxRecordSize: int(sc.MaxRecordSize), Cursor: sh.Spool().Cursor(), Log: log, Replayable: !sc.TailJournal}
	case strings.HasPrefix(sc.Source, "dir:"):
		ds := &source.Dir{Root: strings.TrimPrefix(sc.Source, "dir:"), SpoolDir: sc.Spool, Exclude: sc.DirExclude,
			MaxRecordSize: int(sc.MaxRecordSize), Cursor: sh.Spool().Cursor(), Log: log}
		stopBaselines, err := startBaselines(ctx, cfg, sh, targets, ds, log)
		if err != nil {
			return err
		}
		defer stopBaselines() // after the drain: runs after every later defer
		src = ds
	default:
		return usageError{fmt.Errorf("ship.source %q: want stdin, tail:PATH, dir:PATH or none", sc.Source)}
	}

	start := time.Now()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runErr := make(chan error, 1)
	go func() { runErr <- sh.Run(runCtx) }()
	pusher := newPusher(cfg, sh, targets, log)
	defer servePush(runCtx, cfg, pusher, log)() // ferry push hands files over through SPOOL/push.sock
	if sc.PGData != "" {
		stopAhead, err := startPGReadAhead(runCtx, sc.PGData, pusher, log)
		if err != nil {
			return err
		}
		defer stopAhead()
	}

	statusCtx, stopStatus := context.WithCancel(ctx)
	statusDone := make(chan struct{})
	go func() {
		statusLoop(statusCtx, sh, cfg.Stream, sh.Generation(), sc.Ack, sc.Spool, tailPath(sc.Source), enc, 0)
		close(statusDone)
	}()
	defer func() { stopStatus(); <-statusDone }()
	pruneDone := make(chan struct{}) // [retention] schedule, which a reload may set
	go func() {
		pruner.Run(statusCtx, func(ctx context.Context, pol retention.Policy) { pruneTargets(ctx, cfg.Stream, pol, targets, log) })
		close(pruneDone)
	}()
	defer func() { stopStatus(); <-pruneDone }()

	if stdinSource {
		// A read from stdin does not notice ctx; closing stdin ends it.
		go func() { <-srcCtx.Done(); stdin.SetReadDeadline(time.Now()) }()
	}
	srcErr := make(chan error, 1)
	go func() { srcErr <- src.Run(srcCtx, sh) }()
	defer notifyServing(srcCtx, log, func() { sh.Spool().Stats(); sh.Targets() })()

	var fatal, inputErr error
	inputEnded := false // stdin reached its end before any signal
	select {
	case inputErr = <-srcErr:
		inputEnded = srcCtx.Err() == nil
		if srcCtx.Err() != nil && (errors.Is(inputErr, os.ErrDeadlineExceeded) || errors.Is(inputErr, os.ErrClosed)) {
			inputErr = nil // stdin read interrupted by the signal handler
		}
	case fatal = <-runErr:
		stopSrc()
	}
	if fatal == nil {
		drainCtx, cancel := context.WithTimeout(ctx, time.Duration(sc.ShutdownTimeout))
		drained := make(chan error, 1)
		go func() { drained <- sh.Drain(drainCtx) }()
		select {
		case err := <-drained:
			if err != nil {
				fatal = err
			}
		case fatal = <-runErr:
		}
		cancel()
	}
	stopRun()
	elapsed := time.Since(start)
	summarizeShip(stderr, cfg, sh, elapsed)
	if fatal != nil {
		return fatal
	}
	if inputErr != nil {
		return fmt.Errorf("input stopped: %w (records before it were shipped)", inputErr)
	}
	if stdinSource && !inputEnded {
		// A tail:, dir: or none source runs as a service, which a signal stops
		// (exit 0); stdin has an end, which a signal may come before.
		return interrupted(srcCtx, "stopped before the end of stdin (the records read before it were shipped)")
	}
	return nil
}

func summarizeShip(w io.Writer, cfg *config.File, sh *shipper.Shipper, elapsed time.Duration) {
	st := sh.Spool().Stats()
	ratio := 0.0
	if st.BytesSealed > 0 {
		ratio = float64(st.UncompSealed) / float64(st.BytesSealed)
	}
	secs := elapsed.Seconds()
	sum := summary{verb: "ship"}
	line := fmt.Sprintf("ferry ship: %d records (%s) in %d segments, %s stored (ratio %.2fx), %.2fs, %.1f MB/s, %.0f records/s; last seq %d",
		st.RecordsIn, sizeString(st.BytesIn), st.SegmentsOut, sizeString(st.BytesSealed), ratio, secs,
		float64(st.BytesIn)/1e6/secs, float64(st.RecordsIn)/secs, st.LastSeq)
	if st.SealedPending > 0 {
		line += fmt.Sprintf("; %d segments still in spool", st.SealedPending)
	}
	if st.Held > 0 {
		line += fmt.Sprintf("; %d records held in spool until a target answers", st.Held)
	}
	sum.line("%s", line)
	sum.add("stream", cfg.Stream, "records", st.RecordsIn, "bytes", st.BytesIn, "segments", st.SegmentsOut, "stored_bytes", st.BytesSealed,
		"ratio", round2(ratio), "seconds", round2(secs), "last_seq", st.LastSeq, "segments_in_spool", st.SealedPending, "held_records", st.Held)
	var behind []any
	for _, t := range sh.Targets() {
		if t.LastError != "" && t.SentSeq < st.LastSeq {
			sum.line("  target %s (%s): sent through seq %d, last error: %s", t.Name, t.Store, t.SentSeq, t.LastError)
			behind = append(behind, map[string]any{"target": t.Name, "store": t.Store, "sent_seq": t.SentSeq, "last_error": t.LastError})
		}
	}
	if len(behind) > 0 {
		sum.add("targets_behind", behind)
	}
	sum.write(w, cfg.LogFormat)
}

// round2 rounds x to two decimals, for figures in a JSON summary.
func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }

// openShipper opens the targets and a shipper on them, whose config build
// makes for the targets and the generation to write (0: follow the
// stream's history). A tcp:// link client names its generation to the
// receiver when it connects, and is built before the shipper has read the
// history: when the shipper follows the history into another generation
// than the clients were built for, both are closed and opened again for
// that one, which the spool is in by then. closeAll closes the targets
// (after the shipper).
func openShipper(ctx context.Context, cfg *config.File, onS3Request func(string), log *slog.Logger,
	build func(targets []shipper.Target, gen uint32) shipper.Config) (sh *shipper.Shipper, targets []shipper.Target, closeAll func(), err error) {
	c := *cfg
	var history []batch.Generation
	for {
		targets, closeAll, err := openTargets(ctx, &c, onS3Request, log)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, t := range targets {
			if lc, ok := t.Store.(*tcp.Client); ok && history != nil {
				if err := lc.SetHistory(history); err != nil {
					closeAll()
					return nil, nil, nil, err
				}
			}
		}
		sh, err := shipper.New(ctx, build(targets, c.Generation), log)
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		if gen := sh.Generation(); c.Generation == 0 && gen != 1 && slices.ContainsFunc(targets, isLink) {
			// The links announce their generation when they connect, and
			// must carry its record to the receivers.
			log.Info("opening the tcp:// links again for the generation the shipper follows", "stream", c.Stream, "generation", gen)
			history, err = linkHistory(ctx, sh, &c)
			sh.Close()
			closeAll()
			if err != nil {
				return nil, nil, nil, err
			}
			c.Generation = gen
			continue
		}
		return sh, targets, closeAll, nil
	}
}

// limitMemory sets the Go runtime's soft memory limit to
// ship.memory_limit (config.Ship.MemoryLimitFor) and returns it, for the
// log; GOMEMLIMIT, when set, wins and is returned as the runtime read it.
func limitMemory(sc config.Ship) string {
	if os.Getenv("GOMEMLIMIT") != "" {
		if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
			return "GOMEMLIMIT " + config.Size(l).String()
		}
		return "GOMEMLIMIT off"
	}
	limit := sc.MemoryLimitFor()
	debug.SetMemoryLimit(int64(limit))
	return limit.String()
}

// isLink reports whether t is a tcp:// link (a segments-only store).
func isLink(t shipper.Target) bool { return store.IsSegmentsOnly(t.Store) }

// shipConfig is the shipper's config as cfg's [ship] sets it: its spool
// (for generation gen, sealing with enc and signer when set), the ack mode
// and the writer lease, sending to targets. Callers add the retry policy
// and any hooks or schedules.
func shipConfig(cfg *config.File, targets []shipper.Target, gen uint32, enc batch.Encrypter, signer batch.Signer) shipper.Config {
	sc := cfg.Ship
	return shipper.Config{
		Spool: spool.Config{
			Dir:           sc.Spool,
			Stream:        cfg.Stream,
			Generation:    gen,
			Fsync:         spool.FsyncMode(sc.Fsync),
			Policy:        batch.FlushPolicy{MaxBytes: int64(sc.MaxBytes), MaxRecords: int(sc.MaxRecords), MaxAge: time.Duration(sc.MaxAge)},
			MaxRecordSize: int(sc.MaxRecordSize),
			Limit:         int64(sc.SpoolLimit),
			Level:         batch.Level(sc.Compression),
			Format:        sc.SegmentFormat,
			Encrypter:     enc,
			Signer:        signer,
		},
		Targets: targets,
		Ack:     shipper.AckMode(sc.Ack),
		Lease:   leaseConfig(cfg),
	}
}

// leaseConfig is the shipper's writer lease as the config sets it.
func leaseConfig(cfg *config.File) shipper.LeaseConfig {
	l := shipper.LeaseConfig{TTL: time.Duration(cfg.Ship.LeaseTTL), Site: cfg.Site.ID}
	if l.TTL == 0 {
		l.TTL = -1 // "off"
	}
	return l
}

// openTargets opens the main store (target "store") and every
// [[ship.targets]] entry, s3:// ones counting their requests with
// onS3Request (nil: not counted). closeAll closes those that hold
// connections.
func openTargets(ctx context.Context, cfg *config.File, onS3Request func(string), log *slog.Logger) (targets []shipper.Target, closeAll func(), err error) {
	var closers []func() error
	closeAll = func() {
		for _, c := range closers {
			c()
		}
	}
	open := func(name, url string, async bool, bw config.Size) error {
		c := *cfg
		c.Store = url
		if bw != 0 {
			c.TCP.BandwidthLimit = bw
		}
		st, err := openStoreWith(ctx, &c, onS3Request, log)
		if err != nil {
			if name != "store" {
				return fmt.Errorf("target %s: %w", name, err)
			}
			return err
		}
		if cl, ok := st.(interface{ Close() error }); ok {
			closers = append(closers, cl.Close)
		}
		startNow := slices.Contains(cfg.Ship.StartNow, name) || slices.Contains(cfg.Ship.StartNow, url)
		targets = append(targets, shipper.Target{Name: name, Store: st, Async: async, StartNow: startNow})
		return nil
	}
	if err := open("store", cfg.Store, false, 0); err != nil {
		return nil, closeAll, err
	}
	for _, t := range cfg.Ship.Targets {
		name := t.Name
		if name == "" {
			name = t.Store
		}
		if err := open(name, t.Store, t.Async, t.BandwidthLimit); err != nil {
			closeAll()
			return nil, func() {}, err
		}
	}
	return targets, closeAll, nil
}

// shipSealing reads what a ship's segments are sealed and sent with:
// flush_at and the sending windows, the encrypter and the signer (nil
// when off).
func shipSealing(cfg *config.File, log *slog.Logger) (shipper.Schedules, batch.Encrypter, batch.Signer, error) {
	schedules, err := shipSchedules(cfg)
	if err != nil {
		return schedules, nil, nil, err
	}
	enc, err := encrypterFor(cfg, log)
	if err != nil {
		return schedules, nil, nil, err
	}
	signer, err := signerFor(cfg, log)
	return schedules, enc, signer, err
}

// shipSchedules builds flush_at and the sending windows from the config.
func shipSchedules(cfg *config.File) (shipper.Schedules, error) {
	var sc shipper.Schedules
	if spec := cfg.Ship.FlushAt; spec != "" {
		s, err := cfg.Schedule(spec)
		if err != nil {
			return sc, usageError{fmt.Errorf("ship.flush_at %q: %w", spec, err)}
		}
		sc.FlushAt = s
	}
	for i, w := range cfg.Ship.Windows {
		s, err := cfg.Schedule(w.Start)
		if err != nil {
			return sc, usageError{fmt.Errorf("ship.windows[%d].start %q: %w", i, w.Start, err)}
		}
		sc.Windows = append(sc.Windows, shipper.Window{Start: s, Duration: time.Duration(w.Duration), Spec: w.Start,
			BandwidthLimit: int64(w.BandwidthLimit)})
	}
	return sc, nil
}

// retentionRule is the [retention] schedule and policy of cfg; no
// schedule when retention.schedule is not set.
func retentionRule(cfg *config.File) (retention.Rule, error) {
	rule := retention.Rule{Policy: retention.Policy{KeepFor: time.Duration(cfg.Retention.KeepFor), KeepMin: cfg.Retention.KeepMin}}
	if spec := cfg.Retention.Schedule; spec != "" {
		sched, err := cfg.Schedule(spec)
		if err != nil {
			return rule, usageError{fmt.Errorf("retention.schedule %q: %w", spec, err)}
		}
		rule.Schedule = sched
	}
	return rule, nil
}

// pruneTargets applies the retention policy pol to every store target
// (not tcp:// links, whose receiver owns its inbox): a scheduled prune.
// Failures are logged; the next run tries again.
func pruneTargets(ctx context.Context, stream string, pol retention.Policy, targets []shipper.Target, log *slog.Logger) {
	for _, t := range targets {
		if store.IsSegmentsOnly(t.Store) {
			continue
		}
		plan, err := retention.Compute(ctx, t.Store, stream, pol, time.Now())
		if err == nil {
			_, err = plan.Apply(ctx, t.Store, log)
		}
		if err != nil {
			log.Error("scheduled prune failed", "target", t.Name, "err", err)
			continue
		}
		log.Info("scheduled prune", "target", t.Name, "deleted", plan.Delete, "bytes", plan.DeleteBytes(),
			"kept", len(plan.Segments)-plan.Delete, "why", plan.Reason, "keep_for", pol.KeepFor, "keep_min", pol.KeepMin)
	}
}
