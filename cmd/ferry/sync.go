package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/metrics"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/store"
)

const syncExamples = `  # one site of a pair: both sites share a store and list each other as peers
  ferry sync --config /etc/ferry/sync-a.toml     # on site a (etc/ferry-sync-a.toml)
  ferry sync --config /etc/ferry/sync-b.toml     # on site b (etc/ferry-sync-b.toml)
`

// runSync runs one site of a bi-directional pair (or ring, or mesh)
// (docs/SYNC.md): a shipper of this site's changes as STREAM@SITE and one
// receiver per peer applying STREAM@PEER. For a directory tree they share
// the site's sync ledger so that what a peer changed is never shipped
// back; for a record stream the peers' records are applied marked with
// their origin, and the source ships only unmarked lines.
func runSync(args []string, stdout, stderr io.Writer) error {
	c := newFlags("sync", "ferry sync --config FILE", syncExamples, stderr)
	c.accept("metrics-addr", "site")
	rejoin := c.fs.Bool("rejoin", false, "rebuild this site's lost tree from the streams in the store and re-join without shipping it again (an empty tree, spool and state: docs/SYNC.md \"Rejoin\")")
	if err := c.parseNoArgs(args, "sync"); err != nil {
		return err
	}
	log := c.logger(stderr)
	reload := c.watchReload("sync", log) // SIGHUP: the log level and health_max_lag
	defer reload.close()
	cfg := c.cfg
	y := cfg.Sync
	site := cfg.Site.ID
	kind, path, _ := strings.Cut(y.Data, ":")
	records := kind == "tail"
	name := y.Stream
	if name == "" {
		name = syncStreamName(path)
	}
	if err := os.MkdirAll(y.State, 0o755); err != nil {
		return fmt.Errorf("sync.state: %w", err)
	}
	lock, err := fsutil.Lock(y.State, "ferry sync")
	if err != nil {
		return err
	}
	defer lock.Close()
	if *rejoin && records {
		return usageError{fmt.Errorf("--rejoin rebuilds a tree; sync.data %s is a record stream", y.Data)}
	}
	if !records {
		if err := syncRejoinCheck(y, cfg.Store, *rejoin); err != nil {
			return err
		}
	}
	var ledger *dirsync.Ledger
	if !records {
		if ledger, err = dirsync.Open(y.State, site, log); err != nil {
			return err
		}
		defer ledger.Close()
	}
	applyPath := path // a record stream's peers' records: default the tailed log
	if p, ok := strings.CutPrefix(y.Apply, "file:"); ok {
		applyPath = p
	}
	if records {
		// The log may not exist before the application's first event; the
		// peers' records may come first and create it all the same.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
		if err != nil {
			return fmt.Errorf("sync.data %s: %w", y.Data, err)
		}
		f.Close()
	}

	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	if *rejoin {
		if err := syncRejoin(ctx, cfg, name, path, ledger, log); err != nil {
			return err
		}
	}

	// The link peers' streams arrive on sync.listen. It listens before
	// the shipper opens its links: on a first start (a fresh spool) the
	// shipper waits for every peer to answer, and each peer's waits for
	// this listener.
	var listener *syncListener
	var listenErr <-chan error
	if y.Listen != "" {
		if listener, err = openSyncListener(ctx, cfg, name, log); err != nil {
			return err
		}
		listenCtx, stopListen := context.WithCancel(ctx)
		listenErr = listener.serve(listenCtx)
		defer func() { stopListen(); <-listenErr }()
	}

	// This site's changes: a shipper on STREAM@SITE with the dir: source.
	ownCfg := *cfg
	ownCfg.Stream = name + "@" + site
	ownCfg.Ship.Spool = y.Spool
	ownCfg.Ship.Source = y.Data
	syncTargets(&ownCfg, y.Peers)
	if records {
		ownCfg.Ship.Format = source.FormatLine // the lines as they are: JSON objects
	}
	sc := ownCfg.Ship
	retry := store.RetryPolicy{Min: 200 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.2}
	// Metrics as for ferry ship and ferry receive: the shipper's sends,
	// retries and S3 requests, each peer's S3 requests, under their
	// streams' names.
	var reg *metrics.Registry
	var onSent func(string, int, time.Duration)
	s3Hook := func(string) func(string) { return nil }
	if cfg.MetricsAddr != "" {
		reg = metrics.New(readBuildInfo().metrics())
		s3Hook = reg.S3Hook
		retry.OnRetry, onSent = reg.RetryHook(ownCfg.Stream), reg.SendHook(ownCfg.Stream)
	}
	sh, targets, closeTargets, err := openShipper(context.Background(), &ownCfg, s3Hook(ownCfg.Stream), log, func(targets []shipper.Target, gen uint32) shipper.Config {
		c := shipConfig(&ownCfg, targets, gen, nil, nil)
		c.Retry, c.OnSent = retry, onSent
		return c
	})
	if err != nil {
		return err
	}
	defer closeTargets()
	defer sh.Close()
	var src shipper.Source
	var sink shipper.Sink = sh
	var own *source.OwnRecords
	if records {
		src = &source.Tail{Path: path, Format: source.FormatLine, MaxRecordSize: int(sc.MaxRecordSize),
			Cursor: sh.Spool().Cursor(), Log: log}
		own = &source.OwnRecords{Sink: sh, Path: path, Log: log}
		sink = own
	} else {
		ds := &source.Dir{Root: path, SpoolDir: sc.Spool, Exclude: y.Exclude, MaxRecordSize: int(sc.MaxRecordSize),
			Cursor: sh.Spool().Cursor(), Log: log, Ledger: ledger}
		ledger.OnReship = ds.Reship
		src = ds
		// Baselines (ship.baseline, SIGUSR1) as for ferry ship: a rejoin
		// starts each stream at its newest one (docs/SYNC.md "Baselines").
		if err := syncSeedBaseline(ctx, cfg, ownCfg.Stream, log); err != nil {
			return err
		}
		stopBaselines, err := startBaselines(ctx, &ownCfg, sh, targets, ds, log)
		if err != nil {
			return err
		}
		defer stopBaselines() // after the drain below
	}

	// Each peer's changes: a receiver of STREAM@PEER applying to the tree.
	type peerRun struct {
		id     string
		stream string
		state  string // its receiver's state dir, where it publishes status.json
		r      *receiver.Receiver
		failed atomic.Pointer[error]
	}
	var peers []*peerRun
	for _, p := range y.Peers {
		pc := *cfg
		pc.Stream = name + "@" + p.ID
		if p.Store != "" {
			pc.Store = p.Store
		}
		var st store.Store
		var onApplied func(uint64)
		if p.Link != "" {
			st, onApplied = listener.inbox, func(uint64) { listener.srv.AppliedChanged() }
		} else if st, err = openStoreWith(ctx, &pc, s3Hook(pc.Stream), log); err != nil {
			return fmt.Errorf("peer %s: %w", p.ID, err)
		}
		var ap receiver.Applier = &apply.Dir{Root: path, Ledger: ledger, Peer: p.ID}
		if records {
			ap = &apply.SyncLog{Path: applyPath, Peer: p.ID, MaxLine: max(int(cfg.Ship.MaxRecordSize), 16<<20) + 256, Log: log.With("peer", p.ID)}
		}
		rcfg := receiveConfig(cfg.Receive)
		rcfg.Stream, rcfg.Generation, rcfg.StateDir = pc.Stream, 1, filepath.Join(y.State, "peer-"+p.ID)
		rcfg.Store, rcfg.Applier = st, ap
		rcfg.ReceiverID, rcfg.OnApplied = site, onApplied
		r, err := receiver.Open(rcfg, log.With("peer", p.ID))
		if err != nil {
			return fmt.Errorf("peer %s: %w", p.ID, err)
		}
		defer r.Close()
		if d, ok := ap.(*apply.Dir); ok {
			// What its checkpoint proves is in the tree, and what it left
			// half applied (dirsync.Ledger.SetApplied).
			ledger.SetApplied(p.ID, r.Checkpoint().LastSeq, d.Continuing())
		}
		listener.receiving(pc.Stream, r)
		peers = append(peers, &peerRun{id: p.ID, stream: pc.Stream, state: rcfg.StateDir, r: r})
	}
	if reg != nil {
		reg.WatchShipper(sh, ownCfg.Stream, metrics.Health{MaxLag: time.Duration(cfg.HealthMaxLag)})
		if ledger != nil {
			reg.WatchSync(ownCfg.Stream, site, ledger.Conflicts)
		}
		for _, p := range peers {
			reg.WatchReceiver(p.r, p.stream, func() error {
				if e := p.failed.Load(); e != nil {
					return *e
				}
				return nil
			}, metrics.Health{MaxLag: time.Duration(cfg.HealthMaxLag)})
		}
		reload.onApply(func(next *config.File, changed []string) error { return applyHealthReload(next, changed, reg, log) })
		stopMetrics, err := reg.Serve(ctx, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	defer notifyServing(ctx, log, func() {
		sh.Spool().Stats()
		sh.Targets()
		for _, p := range peers {
			p.r.Stats()
		}
	})()
	logStart(log, "sync", "site", site, "data", y.Data, "ships", ownCfg.Stream, "generation", sh.Generation(),
		"resume_after_seq", sh.Spool().Stats().LastSeq, "peers", len(peers))
	start := time.Now()
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	shErr := make(chan error, 1)
	go func() { shErr <- sh.Run(runCtx) }()
	statusCtx, stopStatus := context.WithCancel(context.Background())
	statusDone := make(chan struct{})
	go func() {
		statusLoop(statusCtx, sh, ownCfg.Stream, sh.Generation(), sc.Ack, sc.Spool, tailPath(sc.Source), nil, 0)
		close(statusDone)
	}()
	// Each peer's receiver publishes its status as ferry receive's does
	// (status.json in STATE/peer-ID): ferry status --state STATE shows it.
	var recvStatus sync.WaitGroup
	for _, p := range peers {
		recvStatus.Add(1)
		go func() {
			defer recvStatus.Done()
			recvStatusLoop(statusCtx, p.r, p.stream, p.state)
		}()
	}
	defer func() { stopStatus(); <-statusDone; recvStatus.Wait() }() // before the receivers close: their locks are held

	// Any part failing stops the site: a source, shipper or receiver that
	// cannot go on leaves the others nothing sound to do.
	partCtx, stopParts := context.WithCancel(ctx)
	defer stopParts()
	var fatalMu sync.Mutex
	var fatal error
	fail := func(what string, err error) {
		if err == nil || errors.Is(err, context.Canceled) {
			return
		}
		fatalMu.Lock()
		if fatal == nil {
			fatal = fmt.Errorf("%s: %w", what, err)
		}
		fatalMu.Unlock()
		stopParts()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fail(kind+" source", src.Run(partCtx, sink))
	}()
	if listener != nil {
		go func() {
			select {
			case err := <-listenErr:
				fail("sync.listen "+y.Listen, listenerStopped(ctx, err))
			case <-partCtx.Done():
			}
		}()
		if keep := cfg.TCP.InboxKeep; keep > 0 {
			for _, p := range peers {
				if listener.receives(p.stream) {
					wg.Add(1)
					go func() {
						defer wg.Done()
						pruneInbox(partCtx, listener.inbox, p.stream, keep, p.r.Checkpoint, log.With("peer", p.id))
					}()
				}
			}
		}
	}
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.r.Run(partCtx)
			if partCtx.Err() == nil && err == nil {
				err = errors.New("receiver stopped")
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				p.failed.Store(&err)
			}
			fail("peer "+p.id, err)
		}()
	}
	go func() {
		select {
		case err := <-shErr:
			fail("shipper", err)
			if err == nil {
				stopParts()
			}
		case <-partCtx.Done():
		}
	}()
	wg.Wait()
	if fatal == nil {
		drainCtx, cancel := context.WithTimeout(context.Background(), time.Duration(sc.ShutdownTimeout))
		if err := sh.Drain(drainCtx); err != nil {
			fail("shipper drain", err)
		}
		cancel()
	}
	stopRun()
	st := sh.Spool().Stats()
	sum := summary{verb: "sync"}
	line := fmt.Sprintf("ferry sync: site %s shipped %d records (%s) as %s in %.2fs", site, st.RecordsIn, sizeString(st.BytesIn), ownCfg.Stream, time.Since(start).Seconds())
	sum.add("site", site, "stream", ownCfg.Stream, "records", st.RecordsIn, "bytes", st.BytesIn, "seconds", round2(time.Since(start).Seconds()))
	if ledger != nil {
		line += fmt.Sprintf("; %d conflicts resolved (all time)", ledger.Conflicts())
		sum.add("conflicts", ledger.Conflicts())
	} else {
		line += fmt.Sprintf("; %d peers' records seen in the log and not shipped", own.Dropped.Load())
		sum.add("peers_records_not_shipped", own.Dropped.Load())
	}
	sum.line("%s", line)
	var from []any
	for _, p := range peers {
		s := p.r.Stats()
		sum.line("  from %s: applied %d segments, %d records (%s); checkpoint at seq %d", p.id, s.Segments, s.Records, sizeString(s.Bytes), s.LastSeq)
		from = append(from, map[string]any{"peer": p.id, "segments": s.Segments, "records": s.Records, "bytes": s.Bytes, "checkpoint_seq": s.LastSeq})
	}
	sum.add("peers", from)
	sum.write(stderr, cfg.LogFormat)
	return fatal
}

// listenerStopped is what the sync listener's end (err, from serve) means
// to the site run with ctx: nothing when the site is stopping (a signal
// ended ctx, which ends the listener too, and both wake the site's wait
// at once), else a failure.
func listenerStopped(ctx context.Context, err error) error {
	if err == nil && ctx.Err() == nil {
		return errors.New("listener stopped")
	}
	return err
}

var syncNameBad = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// syncStreamName is the default sync.stream: the tree's base name, made a
// valid stream name.
func syncStreamName(root string) string {
	n := syncNameBad.ReplaceAllString(filepath.Base(filepath.Clean(root)), "-")
	n = strings.TrimLeft(n, "._-")
	if n == "" {
		return "tree"
	}
	return n[:min(len(n), 100)]
}

// isSyncState reports whether dir is a ferry sync state directory (it
// holds the ledger).
func isSyncState(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, dirsync.LedgerFile))
	return err == nil
}

// syncStatus is `ferry status --state SYNCSTATE --json`.
type syncStatus struct {
	Role      string             `json:"role"` // "sync"
	Running   bool               `json:"running"`
	PID       int                `json:"pid,omitempty"`
	State     string             `json:"state"`
	Peers     []recvStatus       `json:"peers"`
	Conflicts []dirsync.Conflict `json:"conflicts"`
}

// printSyncStatus shows a sync site's state: each peer's receiver and the
// conflicts the site resolved.
func printSyncStatus(w io.Writer, dir string, asJSON bool) error {
	s := syncStatus{Role: "sync", State: dir, PID: lockHolder(dir)}
	s.Running = s.PID != 0
	cs, err := dirsync.ReadConflicts(dir)
	if err != nil {
		return fmt.Errorf("sync state %s: %w", dir, err)
	}
	s.Conflicts = cs
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("sync state %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "peer-") {
			// A peer's receiver state that cannot be read fails the
			// status, as it does for ferry receive's: left out, the peer
			// would look as if it were not configured.
			r, err := readRecvStatusShared(filepath.Join(dir, e.Name()), time.Now(), nil) // a peer is a receiver of one stream
			if err != nil {
				return fmt.Errorf("sync state %s, peer %s: %w", dir, strings.TrimPrefix(e.Name(), "peer-"), err)
			}
			s.Peers = append(s.Peers, r)
		}
	}
	if asJSON {
		return printJSON(w, s)
	}
	state := "not running"
	if s.Running {
		state = fmt.Sprintf("running (pid %d)", s.PID)
	}
	fmt.Fprintf(w, "sync  state %s  %s\n", dir, state)
	for _, p := range s.Peers {
		fmt.Fprintf(w, "  peer stream %s: applied seq %d", p.Stream, p.AppliedSeq)
		if p.CheckpointAgeSeconds != nil {
			fmt.Fprintf(w, ", checkpoint moved %s ago (at %s)", time.Duration(*p.CheckpointAgeSeconds*float64(time.Second)).Round(time.Millisecond),
				p.AppliedAt.Local().Format(time.RFC3339))
		}
		fmt.Fprintln(w)
		switch {
		case p.Waiting != "":
			fmt.Fprintf(w, "    waiting for its store: %s\n", p.Waiting)
		case p.LastError != "":
			fmt.Fprintf(w, "    failing since %s: %s\n", p.FailingSince.Local().Format(time.RFC3339), p.LastError)
		}
		if !p.GapSince.IsZero() {
			fmt.Fprintf(w, "    waiting on a missing segment since %s\n", p.GapSince.Local().Format(time.RFC3339))
		}
	}
	fmt.Fprintf(w, "  conflicts: %d\n", len(cs))
	for _, c := range cs {
		fmt.Fprintf(w, "    %s  %s  won by %s (%s) over %s (%s)", c.At.Format(time.RFC3339), c.Path,
			c.Winner, time.Unix(0, c.WinnerTime).UTC().Format(time.RFC3339Nano), c.Loser, time.Unix(0, c.LoserTime).UTC().Format(time.RFC3339Nano))
		if c.Copy != "" {
			fmt.Fprintf(w, "; loser kept as %s", c.Copy)
		}
		fmt.Fprintln(w)
	}
	return nil
}
