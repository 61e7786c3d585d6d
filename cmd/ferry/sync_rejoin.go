package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/store/catalog"
)

// A rejoin (ferry sync --rejoin, docs/SYNC.md "Rejoin") rebuilds the tree
// of a site that lost its tree and its sync state from the streams in the
// store before anything else starts: the site's own stream is read back
// through the sync applier (its versions marked as stored, so the source
// ships none of them), then each peer's, with that peer's receiver state,
// so the peer's receiver goes on from there. The own stream's progress is
// STATE/rejoin, a receiver state; STATE/rejoin/done marks the end.
const (
	syncRejoinDir  = "rejoin"
	syncRejoinDone = "done"
)

// syncRejoinCheck refuses what a rejoin cannot do, before the ledger is
// opened: a site whose state is not new (and holds no unfinished rejoin),
// a tree or spool that is not empty, a site with no store to read its own
// stream from. Without --rejoin it refuses to start over an unfinished
// rejoin.
func syncRejoinCheck(y config.Sync, store string, rejoin bool) error {
	dir := filepath.Join(y.State, syncRejoinDir)
	_, errDir := os.Stat(dir)
	_, errDone := os.Stat(filepath.Join(dir, syncRejoinDone))
	begun, done := errDir == nil, errDone == nil
	if !rejoin {
		if begun && !done {
			return fmt.Errorf("sync.state %s: a rejoin (ferry sync --rejoin) was started and did not finish; run ferry sync --rejoin again to finish it", y.State)
		}
		return nil
	}
	if begun {
		return nil // continue it, or (done) start as usual
	}
	if isSyncState(y.State) {
		return fmt.Errorf("sync.state %s already holds a ledger: --rejoin is for a site rebuilt with no sync state (remove sync.state, sync.spool and the tree's contents first, or start without --rejoin)", y.State)
	}
	if store == "" {
		return errors.New("--rejoin reads this site's own stream from the store, and the config has no top-level store (docs/SYNC.md \"Rejoin\")")
	}
	for _, p := range y.Peers {
		if p.Link != "" {
			return fmt.Errorf("--rejoin reads every peer's stream from a store, and peer %s is a direct link (docs/SYNC.md \"Rejoin\")", p.ID)
		}
	}
	_, tree, _ := strings.Cut(y.Data, ":")
	for what, dir := range map[string]string{"sync.data " + y.Data: tree, "sync.spool " + y.Spool: y.Spool} {
		names, err := readNames(dir)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if len(names) > 0 {
			return fmt.Errorf("%s holds %q, ...: --rejoin rebuilds the tree from the streams in the store into an empty tree, with an empty spool; move them away", what, names[0])
		}
	}
	return nil
}

// readNames lists up to one name in dir (none if it does not exist).
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && len(names) == 0 {
		return nil, nil
	}
	return names, nil
}

// syncRejoin rebuilds tree from the streams in the store (NAME@SITE for
// each site: this one's own, then each peer's, to their ends), unless a
// rejoin already did. Each peer's stream is read with that peer's receiver
// state, so its receiver goes on from there.
func syncRejoin(ctx context.Context, cfg *config.File, name, tree string, ledger *dirsync.Ledger, log *slog.Logger) error {
	dir := filepath.Join(cfg.Sync.State, syncRejoinDir)
	if _, err := os.Stat(filepath.Join(dir, syncRejoinDone)); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("rejoin: %w", err)
	}
	log.Info("rejoin: rebuilding the tree from the streams in the store; do not write to it until the rejoin is done", "tree", tree)
	start := time.Now()
	type part struct{ site, store, state string }
	parts := []part{{cfg.Site.ID, cfg.Store, dir}}
	for _, p := range cfg.Sync.Peers {
		st := cfg.Store
		if p.Store != "" {
			st = p.Store
		}
		parts = append(parts, part{p.ID, st, filepath.Join(cfg.Sync.State, "peer-"+p.ID)})
	}
	for _, p := range parts {
		if err := syncRebuildFrom(ctx, cfg, name+"@"+p.site, p.store, p.state, tree, ledger, p.site, log); err != nil {
			return fmt.Errorf("rejoin: reading %s@%s back: %w (run ferry sync --rejoin again to continue)", name, p.site, err)
		}
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, syncRejoinDone), []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o644); err != nil {
		return fmt.Errorf("rejoin: %w", err)
	}
	log.Info("rejoin: done; the tree is what the streams in the store hold", "tree", tree, "seconds", round2(time.Since(start).Seconds()))
	return nil
}

// syncRebuildFrom applies stream, in storeURL, to its end into tree,
// with the receiver state in state.
func syncRebuildFrom(ctx context.Context, cfg *config.File, stream, storeURL, state, tree string, ledger *dirsync.Ledger, site string, log *slog.Logger) error {
	c := *cfg
	c.Stream, c.Store = stream, storeURL
	st, err := openStoreWith(ctx, &c, nil, log)
	if err != nil {
		return err
	}
	if cl, ok := st.(interface{ Close() error }); ok {
		defer cl.Close()
	}
	// As ferry receive --once reads it (receive.poll_* too, as the
	// site's own receivers of its peers do).
	rcfg := receiveConfig(cfg.Receive)
	rcfg.Stream, rcfg.Generation, rcfg.StateDir, rcfg.Store = stream, 1, state, st
	rcfg.Applier = &apply.Dir{Root: tree, Ledger: ledger, Peer: site, Rebuild: true}
	rcfg.Once, rcfg.RetryBudget, rcfg.ReceiverID = true, time.Duration(cfg.Receive.OnceTimeout), cfg.Site.ID
	if err := syncRebuildStart(ctx, rcfg, log); err != nil {
		return err
	}
	r, err := receiver.Open(rcfg, log.With("rejoin", stream))
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Run(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s := r.Stats()
	log.Info("rejoin: stream read back", "stream", stream, "segments", s.Segments, "records", s.Records, "through_seq", s.LastSeq)
	return r.Close()
}

// syncRebuildStart makes the rebuild of a stream into a new receiver state
// start at the stream's newest complete baseline (docs/DIRTREE.md,
// "Baselines"; docs/SYNC.md "Rejoin"), as a restore does: a sync baseline
// ships again every version of its site that is still the newest it knows,
// its deletes too, so the streams from their baselines on hold the newest
// version of every path. Without a baseline the rebuild reads the stream
// from seq 1, and a stream pruned past it with no baseline to start from
// is refused, naming what is missing. A state with a checkpoint (a rebuild
// interrupted) goes on from there.
func syncRebuildStart(ctx context.Context, rcfg receiver.Config, log *slog.Logger) error {
	if _, ok, err := receiver.LoadCheckpoint(rcfg.StateDir); err != nil || ok {
		return err
	}
	start, err := receiver.PlanRestoreStart(ctx, rcfg.Store, rcfg.Stream, rcfg.Generation, 0, time.Time{})
	if err != nil {
		return err
	}
	if b := start.Baseline; b != nil {
		log.Info("rejoin: the stream is read from its newest baseline", "stream", rcfg.Stream, "begin_seq", b.BeginSeq,
			"end_seq", b.EndSeq, "baseline_end", b.EndTime.Format(time.RFC3339Nano), "segment", start.Segment)
	}
	return receiver.StartAtBaseline(ctx, rcfg, start)
}

// syncSeedBaseline records, in the new spool of a site that re-joined, the
// newest baseline of its own stream in the store as the last one the spool
// completed, so that ship.baseline goes on from it rather than beginning
// one at once (which would ship every version the rejoin read back again).
// Nothing is done if the spool has one, no rejoin finished, or the stream
// has no baseline.
func syncSeedBaseline(ctx context.Context, cfg *config.File, stream string, log *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(cfg.Sync.State, syncRejoinDir, syncRejoinDone)); err != nil || cfg.Store == "" {
		return nil
	}
	if _, ok, err := source.LoadLastBaseline(cfg.Sync.Spool); err != nil || ok {
		return err
	}
	c := *cfg
	c.Stream = stream
	st, err := openStoreWith(ctx, &c, nil, log)
	if err != nil {
		return err
	}
	if cl, ok := st.(interface{ Close() error }); ok {
		defer cl.Close()
	}
	marks, err := catalog.ListBaselines(ctx, st, stream)
	if err != nil || len(marks) == 0 {
		return err
	}
	b, err := catalog.ReadBaseline(ctx, st, marks[len(marks)-1])
	if err != nil {
		return err
	}
	log.Info("rejoin: the next baseline follows the stream's last one in the store", "stream", stream, "begin_seq", b.BeginSeq, "end_seq", b.EndSeq)
	return source.SaveLastBaseline(cfg.Sync.Spool, b)
}
