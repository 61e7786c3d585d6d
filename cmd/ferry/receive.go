package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/metrics"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/transport/tcp"
)

const receiveExamples = `  # apply everything in the store to a file, then exit
  ferry receive --store /srv/ferry --stream app --state /var/lib/ferry/state \
      --apply file:/srv/replica/app.log --once

  # accept shippers directly over TCP (TLS or --insecure; the token from FERRY_TOKEN,
  # --token-file or token_file in [tcp] of the config)
  ferry receive --listen 0.0.0.0:7000 --stream app --state /var/lib/ferry/state \
      --apply file:/srv/replica/app.log --tls-cert cert.pem --tls-key key.pem --config /etc/ferry/receive.toml

  # keep applying as segments arrive, piping each segment to a command
  ferry receive --store s3://dr-bucket/ferry --stream app --state /var/lib/ferry/state \
      --apply 'exec:/usr/local/bin/load-batch'

  # keep a directory tree (a dir: source, or files from ferry push) in step
  ferry receive --store s3://dr-bucket/ferry --stream mail --state /var/lib/ferry/state \
      --apply dir:/srv/replica/mail
`

func runReceive(args []string, stdout, stderr io.Writer) error {
	c := newFlags("receive", "ferry receive --store URL --stream NAME --state DIR --apply file:PATH|exec:CMD|dir:DIR|stdout [--once] [--repair] [--config FILE]", receiveExamples, stderr)
	c.accept("state", "apply", "gap-timeout", "poll-min", "poll-max", "id", "prefetch", "metrics-addr", "max-segment-bytes", "once-timeout", "exec-timeout")
	c.accept(receiverLinkFlags...)
	c.accept("fleet", "fleet-member", "fleet-ttl")
	once := c.fs.Bool("once", false, "apply what is in the store, then exit (non-zero on a gap, or on an error that persists for --once-timeout)")
	repair := c.fs.Bool("repair", false, "accept a file: replica that is not as the checkpoint left it where that can be repaired: cut the bytes past the checkpoint that ferry did not write (the cut is logged), adopt a replica replaced by a copy")
	err := c.parseNoArgs(args, "receive")
	if err != nil {
		return err
	}
	log := c.logger(stderr)
	reload := c.watchReload("receive", log) // SIGHUP: the log level and health_max_lag
	defer reload.close()
	cfg := c.cfg
	rc := cfg.Receive
	if cfg.MultiStream() {
		if *once || *repair {
			return usageError{errors.New("--once and --repair take one stream, not a list, a glob or a fleet")}
		}
		ctx, stop := signalContext(context.Background(), log)
		defer stop()
		return runReceiveMulti(ctx, cfg, stdout, log)
	}
	if err := receiver.CheckNotPromoted(rc.State); err != nil {
		return err
	}
	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	var reg *metrics.Registry
	var onS3Request func(string)
	if cfg.MetricsAddr != "" {
		reg = metrics.New(readBuildInfo().metrics())
		onS3Request = reg.S3Hook(cfg.Stream)
	}
	var st store.Store
	var srv *tcp.Server
	if listen, ok := strings.CutPrefix(cfg.Store, "tcp://"); ok {
		// Direct link: segments arrive over TCP into a local inbox (a
		// directory store) and are applied from there like from any store.
		if *once {
			return usageError{errors.New("--once cannot be used with --listen / a tcp:// store")}
		}
		inboxDir := cfg.TCP.Inbox
		if inboxDir == "" {
			inboxDir = filepath.Join(rc.State, "inbox")
		}
		// The link server, which only ever puts segments, writes the
		// inbox through a store that publishes before it fsyncs. The
		// receiver, which also writes its watermarks there, keeps the
		// ordinary order: a watermark cannot be resent, so it must never
		// be torn. Publishing first saves a journal commit per segment on
		// the ack path; a crash can then tear only unacknowledged
		// segments, which tcp.RecoverInbox removes below.
		inbox, err := openDirWith(inboxDir, dir.Options{PublishBeforeSync: true})
		if err != nil {
			return err
		}
		if st, err = openDir(inboxDir); err != nil {
			return err
		}
		cfg.TCP.Listen = listen
		if srv, err = newLinkServer(cfg, inbox, st, log); err != nil {
			return err
		}
		// Before the receiver reads the inbox and before any shipper is
		// told the newest segment in it: a torn segment can only be the
		// newest of a generation that was being written.
		h, err := catalog.ReadHistory(ctx, st, cfg.Stream)
		if err != nil {
			return fmt.Errorf("inbox %s: %w", inboxDir, err)
		}
		for g := uint32(1); g <= h.Newest().Generation; g++ {
			if err := tcp.RecoverInbox(ctx, inbox, cfg.Stream, g, log); err != nil {
				return err // names the inbox
			}
		}
	} else if st, err = openExistingStoreWith(ctx, cfg, onS3Request, log); err != nil {
		var missing missingStoreError
		if *once || !errors.As(err, &missing) {
			return err
		}
		// A service may start before its shipper has made the store:
		// wait for it, saying so, but never create it (a mistyped path
		// would otherwise be a new empty store, polled for ever).
		if st, err = waitForStore(ctx, cfg, onS3Request, missing.path, log); err != nil {
			return err
		}
		if st == nil {
			return nil // stopped by a signal while waiting
		}
	}
	ap, err := apply.Parse(rc.Apply, stdout)
	if err != nil {
		return usageError{err}
	}
	configureApplier(ap, rc, log)
	if f, ok := ap.(*apply.File); ok {
		f.Repair = *repair
	} else if *repair {
		return usageError{fmt.Errorf("--repair applies to a file: replica, not %s", ap)}
	}
	var retryBudget time.Duration
	if *once {
		retryBudget = time.Duration(rc.OnceTimeout)
	}
	var onApplied func(uint64)
	var checkpointDelay time.Duration
	if srv != nil {
		onApplied = func(uint64) { srv.AppliedChanged() }
		checkpointDelay = time.Duration(cfg.TCP.CheckpointDelay)
	}
	dec, err := decrypterFor(cfg)
	if err != nil {
		return err
	}
	trusted, err := verifierFor(cfg)
	if err != nil {
		return err
	}
	rcfg := receiveConfig(rc)
	rcfg.OnApplied = onApplied
	rcfg.Stream, rcfg.Generation, rcfg.StateDir = cfg.Stream, cfg.Generation, rc.State
	rcfg.Store, rcfg.Applier = st, ap
	rcfg.Once, rcfg.RetryBudget = *once, retryBudget
	rcfg.ReceiverID = receiverID(rc.ID)
	rcfg.CheckpointDelay = checkpointDelay
	rcfg.Decrypter = withKeyEpochs(ctx, dec, st, cfg.Stream)
	rcfg.RequireEncryption = cfg.Encryption.RequireEncryption
	rcfg.Verifier = batchVerifier(trusted)
	r, err := receiver.Open(rcfg, log)
	if err != nil {
		return err
	}
	defer r.Close()
	cp := r.Checkpoint()
	logStart(log, "receive", "stream", cfg.Stream, "generation", cp.Generation, "store", redact.URL(cfg.Store), "state", rc.State,
		"apply", ap.String(), "resume_after_seq", cp.LastSeq, "decrypts", dec != nil)
	if err := writeRecvEncryption(rc.State, cfg, dec); err != nil {
		log.Warn("could not write the encryption report for ferry status", "state", rc.State, "err", err)
	}
	var failed atomic.Pointer[error]
	if reg != nil {
		reg.WatchReceiver(r, cfg.Stream, func() error {
			if p := failed.Load(); p != nil {
				return *p
			}
			return nil
		}, metrics.Health{MaxLag: time.Duration(cfg.HealthMaxLag)})
		reload.onApply(func(next *config.File, changed []string) error { return applyHealthReload(next, changed, reg, log) })
		stopMetrics, err := reg.Serve(ctx, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	if !*once {
		statusCtx, stopStatus := context.WithCancel(context.Background())
		statusDone := make(chan struct{})
		go func() {
			recvStatusLoop(statusCtx, r, cfg.Stream, rc.State)
			close(statusDone)
		}()
		defer func() { stopStatus(); <-statusDone }() // before r.Close: the lock is still held
	}
	defer notifyServing(ctx, log, func() { r.Stats() })()
	start := time.Now()
	var runErr error
	if srv != nil {
		srv.Applied = func(string) uint64 { return r.Applied() }
		srv.Stored = func(_ string, seg *batch.Segment, size int64, data []byte) {
			if data == nil { // streamed into the inbox, never held
				r.Offer(seg.Meta.Name(), size)
				return
			}
			r.OfferVerified(seg, data)
		}
		if keep := cfg.TCP.InboxKeep; keep > 0 {
			pruneCtx, stopPrune := context.WithCancel(ctx)
			pruned := make(chan struct{})
			go func() {
				pruneInbox(pruneCtx, st, cfg.Stream, keep, r.Checkpoint, log)
				close(pruned)
			}()
			defer func() { stopPrune(); <-pruned }()
		}
		runErr = runWithLink(ctx, srv, r, log)
	} else {
		runErr = r.Run(ctx)
	}
	if runErr == nil && *once {
		// Without --once a signal is a service stop: exit 0.
		runErr = interrupted(ctx, fmt.Sprintf("stopped at seq %d, before the end of the store", r.Stats().LastSeq))
	}
	if runErr != nil {
		failed.Store(&runErr)
	}
	s := r.Stats()
	sum := summary{verb: "receive"}
	sum.line("ferry receive: applied %d segments, %d records (%s read) in %.2fs to %s; checkpoint at seq %d",
		s.Segments, s.Records, sizeString(s.Bytes), time.Since(start).Seconds(), ap, s.LastSeq)
	sum.add("stream", cfg.Stream, "segments", s.Segments, "records", s.Records, "bytes", s.Bytes,
		"seconds", round2(time.Since(start).Seconds()), "apply", ap.String(), "checkpoint_seq", s.LastSeq)
	sum.write(stderr, cfg.LogFormat)
	return runErr
}

// configureApplier gives an applier the [receive] settings that are its
// own, and the log.
func configureApplier(ap receiver.Applier, rc config.Receive, log *slog.Logger) {
	switch a := ap.(type) {
	case *apply.File:
		a.Log = log
	case *apply.Exec:
		a.Timeout = time.Duration(rc.ExecTimeout)
	}
}

// runWithLink serves the direct link while the receiver applies from its
// inbox; whichever stops first stops the other.
func runWithLink(ctx context.Context, srv *tcp.Server, r *receiver.Receiver, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srvErr := make(chan error, 1)
	go func() {
		err := srv.ListenAndServe(ctx)
		if err != nil {
			log.Error("listener stopped", "addr", srv.Addr, "err", err)
		}
		srvErr <- err
		cancel()
	}()
	runErr := r.Run(ctx)
	cancel()
	if err := <-srvErr; err != nil && runErr == nil {
		runErr = fmt.Errorf("listen %s: %w", srv.Addr, err)
	}
	return runErr
}

// receiveConfig is a receiver's config as [receive] sets its gap
// timeout, poll and retry bounds, prefetch and segment size limit, with
// catch-up progress logged; callers add the stream, store, applier and
// the rest.
func receiveConfig(rc config.Receive) receiver.Config {
	return receiver.Config{
		GapTimeout:      time.Duration(rc.GapTimeout),
		PollMin:         time.Duration(rc.PollMin),
		PollMax:         time.Duration(rc.PollMax),
		RetryMin:        time.Duration(rc.RetryMin),
		RetryMax:        time.Duration(rc.RetryMax),
		Prefetch:        prefetch(rc.Prefetch),
		MaxSegmentBytes: int64(rc.MaxSegmentBytes),
		CatchUpLog:      progressEvery,
	}
}

// prefetch maps the config's prefetch (0 = none) to receiver.Config's
// (0 = the default, negative = none).
func prefetch(configured int) int {
	if configured == 0 {
		return -1
	}
	return configured
}

func receiverID(configured string) string {
	if configured != "" {
		return configured
	}
	return receiver.DefaultReceiverID()
}

// inboxPruneEvery is how often a link receiver with tcp.inbox_keep looks
// for applied segments to delete from its inbox; inboxPrunePace spaces the
// deletions.
const (
	inboxPruneEvery = 2 * time.Second
	inboxPrunePace  = time.Millisecond
)

// pruneInbox deletes applied segments from a link receiver's inbox, oldest
// first, keeping the newest keep (at least one: a shipper on a fresh spool
// continues the stream from the newest segment it fetches back) until ctx
// ends. Failures are logged and retried at the next round.
func pruneInbox(ctx context.Context, inbox store.Store, stream string, keep int, checkpoint func() receiver.Checkpoint, log *slog.Logger) {
	keep = max(keep, 1)
	t := time.NewTicker(inboxPruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var names []string
		err := inbox.List(ctx, batch.StreamDir(stream), "", func(o store.Object) error {
			if _, _, _, ok := batch.ParseSegmentName(strings.TrimPrefix(o.Name, batch.StreamDir(stream))); ok {
				names = append(names, o.Name)
			}
			return nil
		})
		if err != nil {
			log.Warn("inbox prune: list failed", "err", err)
			continue
		}
		sort.Strings(names)
		cp := checkpoint()
		n := 0 // the applied segments in front of the newest keep
		for _, key := range names[:max(len(names)-keep, 0)] {
			gen, _, last, _ := batch.ParseSegmentName(strings.TrimPrefix(key, batch.StreamDir(stream)))
			if gen > cp.Generation || (gen == cp.Generation && last > cp.LastSeq) {
				break // not applied yet
			}
			n++
		}
		if n == 0 {
			continue
		}
		// So that ferry verify on the inbox tells the pruned start from
		// lost segments.
		if err := catalog.MarkPruned(ctx, inbox, stream, strings.TrimPrefix(names[n], batch.StreamDir(stream))); err != nil {
			log.Warn("inbox prune: cannot write the start marker; nothing pruned", "err", err)
			continue
		}
		_, keptFirst, _, _ := batch.ParseSegmentName(strings.TrimPrefix(names[n], batch.StreamDir(stream)))
		if starts, err := catalog.ListStarts(ctx, inbox, stream); err == nil {
			for _, m := range starts {
				if m.Seq < keptFirst {
					inbox.Delete(ctx, m.Key) // moot: a marker above it stands; a failure leaves a harmless file
				}
			}
		}
		for i, key := range names[:n] {
			if i > 0 {
				// Spaced out, like the shipper's spool: back-to-back
				// deletions load one journal commit (and its discards),
				// delaying the inbox's and the replica's fsyncs behind it.
				select {
				case <-ctx.Done():
					return
				case <-time.After(inboxPrunePace):
				}
			}
			if err := inbox.Delete(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
				log.Warn("inbox prune: delete failed", "segment", key, "err", err)
				break
			}
		}
	}
}

// waitForStore opens cfg's directory store, which did not exist at path,
// once it does, polling at poll_max and warning at once and every minute
// while it is missing. A signal ends the wait with a nil store.
func waitForStore(ctx context.Context, cfg *config.File, onS3Request func(string), path string, log *slog.Logger) (store.Store, error) {
	poll := time.Duration(cfg.Receive.PollMax)
	var warned time.Time
	for {
		if time.Since(warned) >= time.Minute {
			log.Warn("the store does not exist: waiting for a shipper to create it (receive never creates a store; check the path if nothing ships to it)", "store", path)
			warned = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(poll):
		}
		st, err := openExistingStoreWith(ctx, cfg, onS3Request, log)
		if !errors.Is(err, fs.ErrNotExist) {
			if err == nil {
				log.Info("the store exists now", "store", path)
			}
			return st, err
		}
	}
}
