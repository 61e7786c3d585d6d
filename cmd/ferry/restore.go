package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/store"
)

const restoreExamples = `  # rebuild a file replica as it was at seq 123456, into a new state dir and target
  ferry restore --store s3://dr-bucket/ferry --stream app --until 123456 \
      --apply file:/srv/restore/app.log --state /srv/restore/state

  # as it was at a point in time: every record up to the first one stamped after it
  ferry restore --store /srv/ferry --stream app --until 2026-03-01T12:00:00Z \
      --apply file:/srv/restore/app.log --state /srv/restore/state

  # interrupted? run the same command again: it continues where it stopped
`

// restoreSummary is what ferry restore --json prints on stdout.
type restoreSummary struct {
	Stream   string `json:"stream"`
	Store    string `json:"store"`
	State    string `json:"state"`
	Applier  string `json:"applier"`
	Until    string `json:"until,omitempty"`
	Segments uint64 `json:"segments"` // read and applied by this run
	Records  uint64 `json:"records"`
	Bytes    int64  `json:"bytes"` // segment bytes read
	// LastSeq is the seq the target is restored through; PartialSegment
	// the segment the boundary fell inside, if it did.
	LastSeq        uint64  `json:"last_seq"`
	PartialSegment string  `json:"partial_segment,omitempty"`
	Seconds        float64 `json:"seconds"`
}

func runRestore(args []string, stdout, stderr io.Writer) error {
	c := newFlags("restore", "ferry restore --store URL --stream NAME --state DIR --apply file:PATH|dir:PATH|exec:CMD|stdout [--until SEQ|TIME] [--prefetch N] [--json]", restoreExamples, stderr)
	state := c.fs.String("state", "", "state `dir` of this restore: a new one, or the one of an interrupted restore to continue it")
	applySpec := c.fs.String("apply", "", "file:PATH, dir:PATH, exec:CMD or stdout (a file or dir target must be new)")
	until := c.fs.String("until", "", "stop after this `seq`, or before the first record whose time is after this RFC 3339 time (default: everything in the store)")
	pf := c.fs.Int("prefetch", receiver.DefaultPrefetch, "segments read and verified ahead of the one being applied (0 for none)")
	asJSON := c.fs.Bool("json", false, "print a summary as JSON on stdout (not with --apply stdout)")
	gapTimeout := c.duration("gap-timeout", 0, "how long a missing segment may stay missing before the restore fails (default: the config's receive.gap_timeout, 30s)")
	c.accept("max-segment-bytes")
	if err := c.parseNoArgs(args, ""); err != nil {
		return err
	}
	switch {
	case c.cfg.Stream == "" || c.cfg.Store == "":
		return usageError{errors.New("--store and --stream are required")}
	case *state == "":
		return usageError{errors.New("--state is required: a new directory, or the state of the restore to continue")}
	case *applySpec == "":
		return usageError{errors.New("--apply is required")}
	case *pf < 0 || *pf > 64:
		return usageError{fmt.Errorf("--prefetch %d is out of range 0 to 64", *pf)}
	case *asJSON && *applySpec == "stdout":
		return usageError{errors.New("--json and --apply stdout both write to stdout: apply to a file, a dir or exec: instead")}
	}
	b, err := parseUntil(*until)
	if err != nil {
		return usageError{err}
	}
	log := c.logger(stderr)
	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	st, err := openExistingStore(ctx, c.cfg, log)
	if err != nil {
		return err
	}
	ap, err := apply.Parse(*applySpec, stdout)
	if err != nil {
		return usageError{err}
	}
	res, err := restoreStream(ctx, restoreJob{cfg: c.cfg, store: st, state: *state, applier: ap, boundary: b,
		prefetch: *pf, gapTimeout: *gapTimeout, progress: stderr}, log)
	if err != nil {
		return err
	}
	s, cp := res.stats, res.cp
	if *asJSON {
		sum := restoreSummary{Stream: c.cfg.Stream, Store: redact.URL(c.cfg.Store), State: *state, Applier: ap.String(), Until: *until,
			Segments: s.Segments, Records: s.Records, Bytes: s.Bytes, LastSeq: cp.LastSeq, Seconds: res.elapsed.Seconds()}
		if cp.PartialHash != "" {
			sum.PartialSegment = cp.Segment
		}
		return printJSON(stdout, sum)
	}
	where := ""
	if cp.PartialHash != "" {
		where = " (inside segment " + cp.Segment + ")"
	}
	sum := summary{verb: "restore"}
	sum.line("ferry restore: applied %d records from %d segments (%s read) in %.2fs to %s; restored through seq %d%s",
		s.Records, s.Segments, sizeString(s.Bytes), res.elapsed.Seconds(), ap, cp.LastSeq, where)
	sum.add("stream", c.cfg.Stream, "records", s.Records, "segments", s.Segments, "bytes", s.Bytes,
		"seconds", round2(res.elapsed.Seconds()), "apply", ap.String(), "restored_seq", cp.LastSeq)
	if cp.PartialHash != "" {
		sum.add("inside_segment", cp.Segment)
	}
	sum.write(stderr, c.cfg.LogFormat)
	return nil
}

// boundary is where a restore stops; zero for the end of the store.
type boundary struct {
	seq  uint64
	time time.Time
}

// parseUntil reads --until: a seq (digits) or an RFC 3339 time.
func parseUntil(v string) (boundary, error) {
	if v == "" {
		return boundary{}, nil
	}
	if seq, err := strconv.ParseUint(v, 10, 64); err == nil {
		if seq == 0 {
			return boundary{}, errors.New("--until: seqs start at 1")
		}
		return boundary{seq: seq}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return boundary{}, fmt.Errorf("--until %q is neither a seq nor an RFC 3339 time (like 2026-03-01T12:00:00Z)", v)
	}
	return boundary{time: t}, nil
}

// restoreJob is one restore run: restore and drill share it.
type restoreJob struct {
	cfg        *config.File
	store      store.Store
	state      string
	applier    receiver.Applier
	boundary   boundary
	prefetch   int // 0 for none
	gapTimeout time.Duration
	progress   io.Writer // a progress line if it is a terminal
}

type restoreResult struct {
	stats   receiver.Stats
	cp      receiver.Checkpoint
	elapsed time.Duration
}

// restoreStream runs a receiver with the job's boundary until it is
// reached (or the store ends), showing progress on a terminal.
func restoreStream(ctx context.Context, job restoreJob, log *slog.Logger) (restoreResult, error) {
	cfg := job.cfg
	gap := job.gapTimeout
	if gap <= 0 {
		gap = time.Duration(cfg.Receive.GapTimeout)
	}
	dec, err := decrypterFor(cfg)
	if err != nil {
		return restoreResult{}, err
	}
	trusted, err := verifierFor(cfg)
	if err != nil {
		return restoreResult{}, err
	}
	rcfg := receiver.Config{
		Stream:     cfg.Stream,
		Generation: cfg.Generation,
		StateDir:   job.state,
		Store:      job.store,
		Applier:    job.applier,
		GapTimeout: gap,
		RetryMin:   time.Duration(cfg.Receive.RetryMin),
		RetryMax:   time.Duration(cfg.Receive.RetryMax),
		Once:       true,
		Prefetch:   prefetch(job.prefetch),

		RetryBudget: time.Duration(cfg.Receive.OnceTimeout),
		Until:       job.boundary.seq,
		UntilTime:   job.boundary.time,

		MaxSegmentBytes: int64(cfg.Receive.MaxSegmentBytes),

		Decrypter:         withKeyEpochs(ctx, dec, job.store, cfg.Stream),
		RequireEncryption: cfg.Encryption.RequireEncryption,
		Verifier:          batchVerifier(trusted),
	}
	configureApplier(job.applier, cfg.Receive, log)
	if err := startAtBaseline(ctx, rcfg, log); err != nil {
		return restoreResult{}, err
	}
	r, err := receiver.Open(rcfg, log)
	if err != nil {
		return restoreResult{}, err
	}
	defer r.Close()
	start := time.Now()
	done := make(chan struct{})
	shown := make(chan struct{})
	go func() {
		defer close(shown)
		showRestoreProgress(ctx, job, r, log, start, done)
	}()
	runErr := r.Run(ctx)
	close(done)
	<-shown
	res := restoreResult{stats: r.Stats(), cp: r.Checkpoint(), elapsed: time.Since(start)}
	if runErr == nil && ctx.Err() != nil {
		runErr = fmt.Errorf("interrupted at seq %d; run the same command again (same --state) to continue", res.cp.LastSeq)
	}
	if err := r.Close(); err != nil && runErr == nil {
		runErr = err
	}
	return res, runErr
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// showRestoreProgress shows (showProgress) segments and records applied,
// MB/s read, and an ETA from the segments the store lists up to the
// boundary.
func showRestoreProgress(ctx context.Context, job restoreJob, r *receiver.Receiver, log *slog.Logger, start time.Time, done <-chan struct{}) {
	from := r.Checkpoint().LastSeq
	var totalSegs int
	var totalBytes int64
	if segs, err := listSegments(ctx, job.store, job.cfg.Stream); err == nil {
		for _, s := range segs {
			name := s.Name
			_, first, last, _ := batch.ParseSegmentName(name)
			if last <= from || (job.boundary.seq > 0 && first > job.boundary.seq) {
				continue
			}
			totalSegs++
			totalBytes += s.Size
		}
	}
	showProgress(job.progress, log, "restore progress", done, func() progressLine {
		s := r.Stats()
		rate := float64(s.Bytes) / time.Since(start).Seconds()
		line := fmt.Sprintf("%d/%d segments, %d records, seq %d, %.1f MB/s", s.Segments, totalSegs, s.Records, s.LastSeq, rate/1e6)
		attrs := []any{"stream", job.cfg.Stream, "segments", s.Segments, "of_segments", totalSegs, "records", s.Records,
			"seq", s.LastSeq, "mb_per_s", fmt.Sprintf("%.1f", rate/1e6)}
		if totalBytes > 0 && rate > 0 {
			left := max(totalBytes-s.Bytes, 0)
			eta := time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second)
			pct := 100 * float64(s.Bytes) / float64(totalBytes)
			line = fmt.Sprintf("%5.1f%% %s, ETA %s", pct, line, eta)
			attrs = append(attrs, "percent", fmt.Sprintf("%.1f", pct), "eta", eta.String())
		}
		return progressLine{text: line, attrs: attrs}
	})
}

// startAtBaseline makes a restore into a new state start at the newest
// baseline that ends by the boundary (docs/DIRTREE.md, "Restoring from a
// baseline"), and refuses one whose segments were pruned with no baseline
// to start from. A state with a checkpoint is resumed as it is.
func startAtBaseline(ctx context.Context, rcfg receiver.Config, log *slog.Logger) error {
	if _, ok, err := receiver.LoadCheckpoint(rcfg.StateDir); err != nil || ok {
		return err
	}
	start, err := receiver.PlanRestoreStart(ctx, rcfg.Store, rcfg.Stream, rcfg.Generation, rcfg.Until, rcfg.UntilTime)
	if err != nil {
		return err
	}
	if b := start.Baseline; b != nil {
		log.Info("restore starts at a baseline", "stream", rcfg.Stream, "begin_seq", b.BeginSeq, "end_seq", b.EndSeq,
			"baseline_end", b.EndTime.Format(time.RFC3339Nano), "segment", start.Segment)
	}
	return receiver.StartAtBaseline(ctx, rcfg, start)
}
