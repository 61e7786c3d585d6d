package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/retention"
)

const pruneExamples = `  # see what a 30-day retention keeping at least 100 segments would delete
  ferry prune --store s3://archive/ferry --stream app --keep-for 30d --keep-min 100 --dry-run

  # prune by the [retention] table of the config
  ferry prune --config /etc/ferry/archive.toml
`

// pruneSummary is what ferry prune --json prints on stdout.
type pruneSummary struct {
	Stream string `json:"stream"`
	Store  string `json:"store"`
	DryRun bool   `json:"dry_run"`
	// Deleted segments (would be, with DryRun), oldest first: seq
	// FirstSeq..LastSeq, DeletedBytes in all.
	Deleted      int    `json:"deleted"`
	DeletedBytes int64  `json:"deleted_bytes"`
	FirstSeq     uint64 `json:"first_seq,omitempty"`
	LastSeq      uint64 `json:"last_seq,omitempty"`
	Kept         int    `json:"kept"`
	// KeptFrom is the oldest segment kept, and Reason why it is.
	KeptFrom string `json:"kept_from,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Baseline string `json:"baseline,omitempty"` // kept with everything after it
}

func runPrune(args []string, stdout, stderr io.Writer) error {
	c := newFlags("prune", "ferry prune --store URL --stream NAME [--keep-for 30d] [--keep-min N] [--dry-run] [--json] [--config FILE]", pruneExamples, stderr)
	c.accept("keep-for", "keep-min")
	dryRun := c.fs.Bool("dry-run", false, "say what would be deleted, delete nothing")
	asJSON := c.fs.Bool("json", false, "print what was (or would be) deleted as JSON")
	err := c.parseNoArgs(args, "")
	if err != nil {
		return err
	}
	if err := needStreamStore(c.cfg, "prune works on an archive store (a directory or s3://), not on a tcp:// link"); err != nil {
		return err
	}
	pol := retention.Policy{KeepFor: time.Duration(c.cfg.Retention.KeepFor), KeepMin: c.cfg.Retention.KeepMin}
	if err := pol.Check(); err != nil {
		return usageError{fmt.Errorf("%w (--keep-for, --keep-min or [retention] in the config)", err)}
	}
	log := c.logger(stderr)
	ctx := context.Background()
	st, err := openExistingStore(ctx, c.cfg, log)
	if err != nil {
		return err
	}
	plan, err := retention.Compute(ctx, st, c.cfg.Stream, pol, time.Now())
	if err != nil {
		return fmt.Errorf("prune %s in %s: %w", c.cfg.Stream, st, err)
	}
	if !*dryRun {
		if _, err := plan.Apply(ctx, st, log); err != nil {
			return fmt.Errorf("prune %s in %s: %w", c.cfg.Stream, st, err)
		}
	}
	if *asJSON {
		return printJSON(stdout, summarizePrune(plan, redact.URL(c.cfg.Store), *dryRun))
	}
	fmt.Fprint(stdout, plan.Summary(*dryRun))
	return nil
}

func summarizePrune(p *retention.Plan, store string, dryRun bool) pruneSummary {
	s := pruneSummary{Stream: p.Stream, Store: store, DryRun: dryRun, Deleted: p.Delete, DeletedBytes: p.DeleteBytes(),
		Kept: len(p.Segments) - p.Delete, Reason: p.Reason}
	if p.Delete > 0 {
		s.FirstSeq, s.LastSeq = p.Segments[0].First, p.Segments[p.Delete-1].Last
	}
	if p.Delete < len(p.Segments) {
		s.KeptFrom = p.Segments[p.Delete].Name
	}
	if a := p.Anchor; a != nil {
		s.Baseline = batch.BaselineName(a.Generation, a.BeginSeq, a.EndSeq)
	}
	return s
}
