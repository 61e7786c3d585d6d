package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/receiver"
)

const receiveExamples = `  # apply everything in the store to a file, then exit
  ferry receive --store /srv/ferry --stream app --state /var/lib/ferry/state \
      --apply file:/srv/replica/app.log --once

  # keep applying as segments arrive, piping each segment to a command
  ferry receive --store s3://dr-bucket/ferry --stream app --state /var/lib/ferry/state \
      --apply 'exec:/usr/local/bin/load-batch'
`

func runReceive(args []string, stdout, stderr io.Writer) error {
	c := newFlags("receive", "ferry receive --store URL --stream NAME --state DIR --apply file:PATH|exec:CMD|stdout [--once] [--config FILE]", receiveExamples, stderr)
	c.fs.String("state", "", "state `dir`: the durable checkpoint (one receiver per dir)")
	c.fs.String("apply", "", "file:PATH, exec:CMD or stdout")
	once := c.fs.Bool("once", false, "apply what is in the store, then exit (non-zero on a gap)")
	c.fs.String("gap-timeout", "", "how long a missing segment may stay missing before it is reported (default 30s)")
	c.fs.String("poll-min", "", "shortest wait between store polls (default 200ms)")
	c.fs.String("poll-max", "", "longest wait between polls when idle (default 5s)")
	c.fs.String("id", "", "receiver id in the published watermark (default: host name)")
	err := c.parse(args, "receive", func(f *flag.Flag) error {
		r := &c.cfg.Receive
		v := f.Value.String()
		var err error
		switch f.Name {
		case "state":
			r.State = v
		case "apply":
			r.Apply = v
		case "gap-timeout":
			r.GapTimeout, err = config.ParseDuration(v)
		case "poll-min":
			r.PollMin, err = config.ParseDuration(v)
		case "poll-max":
			r.PollMax, err = config.ParseDuration(v)
		case "id":
			r.ID = v
		}
		if err != nil {
			return fmt.Errorf("--%s: %w", f.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", c.fs.Args())}
	}
	log := c.logger(stderr)
	cfg := c.cfg
	rc := cfg.Receive
	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	ap, err := receiver.ParseApplier(rc.Apply, stdout)
	if err != nil {
		return usageError{err}
	}
	r, err := receiver.Open(receiver.Config{
		Stream:     cfg.Stream,
		Generation: cfg.Generation,
		StateDir:   rc.State,
		Store:      st,
		Applier:    ap,
		GapTimeout: time.Duration(rc.GapTimeout),
		PollMin:    time.Duration(rc.PollMin),
		PollMax:    time.Duration(rc.PollMax),
		RetryMin:   time.Duration(rc.RetryMin),
		RetryMax:   time.Duration(rc.RetryMax),
		Once:       *once,
		ReceiverID: receiverID(rc.ID),
	}, log)
	if err != nil {
		return err
	}
	defer r.Close()
	start := time.Now()
	runErr := r.Run(ctx)
	s := r.Stats()
	secs := time.Since(start).Seconds()
	fmt.Fprintf(stderr, "ferry receive: applied %d segments, %d records (%s read) in %.2fs to %s; checkpoint at seq %d\n",
		s.Segments, s.Records, sizeString(s.Bytes), secs, ap, s.LastSeq)
	return runErr
}

func receiverID(configured string) string {
	if configured != "" {
		return configured
	}
	return receiver.DefaultReceiverID()
}
