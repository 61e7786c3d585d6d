package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

const promoteExamples = `  # the primary is gone: make this DR site the writer of the stream
  ferry promote --store s3://dr-bucket/ferry --stream app --state /var/lib/ferry/state --site dr

  # a direct-link secondary: the generation record goes into its inbox
  ferry promote --config /etc/ferry/receive.toml --site dr
`

// promotion is what promote did, for its report.
type promotion struct {
	Stream     string    `json:"stream"`
	Generation uint32    `json:"generation"`
	Parent     uint32    `json:"parent"`
	ForkSeq    uint64    `json:"fork_seq"`
	Site       string    `json:"site"`
	Time       time.Time `json:"time"`
	// What the old generation had beyond the fork as far as the store
	// knows: never applied here, so lost unless the old primary rejoins
	// and an operator reconciles its divergence report.
	LostRecords  uint64  `json:"lost_records"`
	LostBytes    int64   `json:"lost_bytes"`
	LostSeconds  float64 `json:"lost_seconds"`
	LostSegments int     `json:"lost_segments"`
	// Spool is the spool seeded to continue the new generation (--spool).
	Spool    string   `json:"spool,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

func runPromote(args []string, stdout, stderr io.Writer) error {
	c := newFlags("promote", "ferry promote --store URL --stream NAME --state DIR [--site NAME] [--reason TEXT] [--json] [--config FILE]", promoteExamples, stderr)
	c.accept("state", "inbox", "spool", "source", "id")
	site := c.fs.String("site", "", "this site's `name` in the generation record (default the host name)")
	reason := c.fs.String("reason", "promote", "why, recorded in the generation record")
	asJSON := c.fs.Bool("json", false, "print the promotion as JSON")
	force := c.fs.Bool("force", false, "promote even though another site was promoted after this site's checkpoint")
	if err := c.parseNoArgs(args, ""); err != nil {
		return err
	}
	cfg := c.cfg
	if err := needStreamStore(cfg, ""); err != nil {
		return err
	}
	if cfg.Receive.State == "" {
		return usageError{errors.New("--state is required: the receiver state of this site")}
	}
	log := c.logger(stderr)
	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	p, err := promote(ctx, cfg, siteName(*site), *reason, *force)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	fmt.Fprintf(stdout, "promoted %s: generation %d (parent %d) forked at seq %d on %s at %s\n",
		p.Stream, p.Generation, p.Parent, p.ForkSeq, p.Site, p.Time.Format(time.RFC3339))
	if p.LostSegments == 0 {
		fmt.Fprintf(stdout, "nothing beyond the fork in the store: no records lost that the store knew of\n")
	} else {
		fmt.Fprintf(stdout, "beyond the fork, never applied here: %d records, %s in %d segments, %.1fs of the old primary's writes\n",
			p.LostRecords, sizeString(p.LostBytes), p.LostSegments, p.LostSeconds)
	}
	for _, w := range p.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "this site now writes generation %d from seq %d: start ferry ship on stream %s\n", p.Generation, p.ForkSeq+1, p.Stream)
	return nil
}

// siteName is the --site given, or the host name.
func siteName(site string) string {
	if site != "" {
		return site
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "unknown"
}

// historyStore opens the store that holds the stream's history for a
// site: for a direct-link secondary (tcp://) its inbox, where the link
// server and its receiver read the records.
func historyStore(ctx context.Context, cfg *config.File) (store.Store, error) {
	if strings.HasPrefix(cfg.Store, "tcp://") {
		inbox := cfg.TCP.Inbox
		if inbox == "" {
			inbox = filepath.Join(cfg.Receive.State, "inbox")
		}
		return openDir(inbox)
	}
	return openExistingStore(ctx, cfg, nil)
}

// promote records generation Newest+1 forked at this site's checkpoint and
// marks the state dir as promoted. A generation newer than the checkpoint's
// means another site was promoted meanwhile: promote refuses unless forced. The receiver must be stopped: its state
// dir's lock is held throughout.
func promote(ctx context.Context, cfg *config.File, site, reason string, force bool) (promotion, error) {
	state := cfg.Receive.State
	lock, err := fsutil.Lock(state, "receiver state")
	if err != nil {
		return promotion{}, fmt.Errorf("%w (stop the receiver before promoting this site)", err)
	}
	defer lock.Close()
	if err := receiver.CheckNotPromoted(state); err != nil {
		return promotion{}, err
	}
	cp, ok, err := receiver.LoadCheckpoint(state)
	if err != nil {
		return promotion{}, err
	}
	if !ok {
		cp = receiver.Checkpoint{Stream: cfg.Stream, Generation: 1}
	}
	switch {
	case cp.Stream != cfg.Stream:
		return promotion{}, fmt.Errorf("state %s holds the checkpoint of stream %q, not %q", state, cp.Stream, cfg.Stream)
	case cp.PartialHash != "":
		return promotion{}, fmt.Errorf("state %s: a restore stopped inside segment %s at seq %d; finish or redo the restore before promoting", state, cp.Segment, cp.LastSeq)
	}
	st, err := historyStore(ctx, cfg)
	if err != nil {
		return promotion{}, err
	}
	h, err := catalog.ReadHistory(ctx, st, cfg.Stream)
	if err != nil {
		return promotion{}, fmt.Errorf("read the history of %s in %s: %w", cfg.Stream, st, err)
	}
	if _, _, err := h.Next(cp.Generation, cp.LastSeq); err != nil {
		return promotion{}, fmt.Errorf("this site cannot be promoted: %w", err)
	}
	newest := h.Newest()
	if newest.Generation > cp.Generation && !force {
		// Another site was promoted since this one last applied: it is the
		// primary, and promoting this site too would fence it.
		return promotion{}, fmt.Errorf("%w: generation %d was already promoted at seq %d on %s at %s, after this site's checkpoint (generation %d, seq %d); follow it with ferry receive, or stop that site and promote with --force",
			catalog.ErrPromoted, newest.Generation, newest.ForkSeq, newest.Site, newest.Time.Format(time.RFC3339), cp.Generation, cp.LastSeq)
	}
	rec := batch.Generation{
		Stream:     cfg.Stream,
		Generation: newest.Generation + 1,
		Parent:     newest.Generation,
		ForkSeq:    cp.LastSeq,
		Time:       time.Now().UTC().Truncate(time.Millisecond),
		Site:       site,
		Reason:     reason,
	}
	if cp.LastSeq > 0 {
		rec.ForkHash = cp.LastHash
	}
	rec.Host, _ = os.Hostname()
	p := promotion{Stream: cfg.Stream, Generation: rec.Generation, Parent: rec.Parent, ForkSeq: rec.ForkSeq, Site: site, Time: rec.Time}
	if err := beyondFork(ctx, st, cfg.Stream, cp, &p); err != nil {
		return promotion{}, err
	}
	var sp *spool.Spool
	if cfg.Ship.Spool != "" {
		// Checked before the record exists: a promotion that cannot seed
		// the spool it was asked to should not happen at all.
		if sp, err = openFreshSpool(cfg, replicaSize(cp)); err != nil {
			return promotion{}, err
		}
		defer sp.Close()
	}
	if err := catalog.CreateGeneration(ctx, st, rec); err != nil {
		return promotion{}, fmt.Errorf("promote %s in %s: %w", cfg.Stream, st, err)
	}
	// This site no longer receives the stream: its watermark would hold
	// retention back for ever.
	if id := receiverID(cfg.Receive.ID); !store.IsSegmentsOnly(st) {
		if err := catalog.UnregisterReceiver(ctx, st, cfg.Stream, id); err != nil {
			p.Warnings = append(p.Warnings, fmt.Sprintf("could not remove this site's receiver watermark from %s (%v); remove %s by hand or retention keeps everything after it",
				st, err, catalog.WatermarkDir(cfg.Stream, id)))
		}
	}
	if sp != nil {
		if err := seedSpool(sp, cfg, append(h.Records(), rec), rec, replicaSize(cp)); err != nil {
			return p, fmt.Errorf("generation %d is recorded in %s, but seeding spool %s failed: %w; start ferry ship with a new spool, it continues the generation from the store",
				rec.Generation, st, cfg.Ship.Spool, err)
		}
		p.Spool = cfg.Ship.Spool
	}
	err = receiver.SavePromotion(state, receiver.Promotion{Stream: cfg.Stream, Generation: rec.Generation,
		ForkSeq: rec.ForkSeq, ForkHash: rec.ForkHash, Time: rec.Time, Site: site, ReplicaSize: replicaSize(cp)})
	if err != nil {
		// The record is in the store: the stream has moved on whatever
		// this site does, so say so rather than leave it unsaid.
		return p, fmt.Errorf("generation %d is recorded in %s, but marking %s as promoted failed: %w; do not start ferry receive there",
			rec.Generation, st, state, err)
	}
	return p, nil
}

// replicaSize is the size of a file: replica at the checkpoint (the file
// applier's state), or -1 when the checkpoint holds no file applier's.
func replicaSize(cp receiver.Checkpoint) int64 {
	if size, ok := apply.FileSize(cp.Applier); ok {
		return size
	}
	return -1
}

// beyondFork fills in what the store holds past the checkpoint in the
// checkpoint's own line of segments: what this promotion gives up.
func beyondFork(ctx context.Context, st store.Store, stream string, cp receiver.Checkpoint, p *promotion) error {
	var appliedAt, newest time.Time
	segs, err := listSegments(ctx, st, stream) // alone and in bundles
	if err != nil {
		return err
	}
	for _, o := range segs {
		gen, first, last, _ := batch.ParseSegmentName(o.Name)
		if gen < cp.Generation {
			continue
		}
		if o.Name == cp.Segment {
			appliedAt = o.ModTime
		}
		if last <= cp.LastSeq {
			continue
		}
		p.LostSegments++
		p.LostRecords += last - max(first, cp.LastSeq+1) + 1
		p.LostBytes += o.Size
		if o.ModTime.After(newest) {
			newest = o.ModTime
		}
	}
	if appliedAt.IsZero() {
		appliedAt = cp.AppliedAt
	}
	if p.LostSegments > 0 && !appliedAt.IsZero() && newest.After(appliedAt) {
		p.LostSeconds = newest.Sub(appliedAt).Seconds()
	}
	return nil
}

// openFreshSpool opens the spool a promoted site will ship from, which
// must be new: an old spool of this site belongs to the stream's past.
// With a tail: source the file must hold the replica's bytes at the fork.
func openFreshSpool(cfg *config.File, size int64) (*spool.Spool, error) {
	if path, ok := strings.CutPrefix(cfg.Ship.Source, "tail:"); ok {
		if size < 0 {
			return nil, fmt.Errorf("--source %s: the checkpoint holds no file: replica size to start the tail after", cfg.Ship.Source)
		}
		if _, err := source.TailCursorAt(path, size); err != nil {
			return nil, err
		}
	}
	sp, err := spool.Open(spool.Config{Dir: cfg.Ship.Spool, Stream: cfg.Stream}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	if !sp.Fresh() {
		sp.Close()
		return nil, fmt.Errorf("spool %s has records of its own; a promoted site ships from a new spool (move the old one aside)", cfg.Ship.Spool)
	}
	return sp, nil
}

// seedSpool makes a fresh spool continue generation rec at its fork, and a
// tail: source start right after the replica's bytes at the fork.
func seedSpool(sp *spool.Spool, cfg *config.File, history []batch.Generation, rec batch.Generation, size int64) error {
	hash := rec.ForkHash
	if rec.ForkSeq == 0 {
		hash = batch.ZeroHash
	}
	if err := sp.Continue(rec.Generation, rec.ForkSeq, hash); err != nil {
		return err
	}
	// A copy of the history, for a shipper whose targets are all links.
	hs, err := dir.New(spoolHistoryDir(cfg.Ship.Spool))
	if err != nil {
		return err
	}
	for _, r := range history {
		if err := catalog.CreateGeneration(context.Background(), hs, r); err != nil {
			return err
		}
	}
	if path, ok := strings.CutPrefix(cfg.Ship.Source, "tail:"); ok {
		cur, err := source.TailCursorAt(path, size)
		if err != nil {
			return err
		}
		if err := sp.SeedCursor(cur); err != nil {
			return err
		}
	}
	return sp.Close()
}
