package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/retention"
)

const pruneExamples = `  # see what a 30-day retention keeping at least 100 segments would delete
  ferry prune --store s3://archive/ferry --stream app --keep-for 720h --keep-min 100 --dry-run

  # prune by the [retention] table of the config
  ferry prune --config /etc/ferry/archive.toml
`

func runPrune(args []string, stdout, stderr io.Writer) error {
	c := newFlags("prune", "ferry prune --store URL --stream NAME [--keep-for 720h] [--keep-min N] [--dry-run] [--config FILE]", pruneExamples, stderr)
	c.accept("keep-for", "keep-min")
	dryRun := c.fs.Bool("dry-run", false, "say what would be deleted, delete nothing")
	err := c.parseNoArgs(args, "")
	if err != nil {
		return err
	}
	switch {
	case c.cfg.Stream == "":
		return usageError{errors.New("--stream is required")}
	case c.cfg.Store == "":
		return usageError{errors.New("--store is required")}
	case strings.HasPrefix(c.cfg.Store, "tcp://"):
		return usageError{errors.New("prune works on an archive store (a directory or s3://), not on a tcp:// link")}
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
	fmt.Fprint(stdout, plan.Summary(*dryRun))
	return nil
}
