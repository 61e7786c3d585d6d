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
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store/catalog"
)

const switchoverExamples = `  # planned role swap: site a (primary) becomes the secondary of site b
  ferry switchover --primary /etc/ferry/a.toml --secondary /etc/ferry/b.toml
  # then, on b: ferry ship --config /etc/ferry/b.toml
  #       on a: ferry receive --config /etc/ferry/a.toml
`

// switchoverResult is what switchover did, for its report (--json).
type switchoverResult struct {
	Stream     string `json:"stream"`
	From       string `json:"from"` // config file of the old primary
	To         string `json:"to"`   // config file of the new primary
	FromSite   string `json:"from_site"`
	ToSite     string `json:"to_site"`
	LastSeq    uint64 `json:"last_seq"`   // the old primary's last seq: the fork
	Generation uint32 `json:"generation"` // the new primary's
	Parent     uint32 `json:"parent"`
	// The pids stopped (0: none was running).
	ShipperPID  int `json:"shipper_pid"`
	ReceiverPID int `json:"receiver_pid"`
	// The rejoin report of the old primary: empty in a switchover.
	Report           string `json:"report"`
	DivergentRecords int    `json:"divergent_records"`
	CutBytes         int64  `json:"cut_bytes"`
	Spool            string `json:"spool,omitempty"` // the new primary's seeded spool
	// Wall time of each step, in seconds.
	DrainSeconds   float64  `json:"drain_seconds"`
	CatchUpSeconds float64  `json:"catchup_seconds"`
	PromoteSeconds float64  `json:"promote_seconds"`
	RejoinSeconds  float64  `json:"rejoin_seconds"`
	TotalSeconds   float64  `json:"total_seconds"`
	Next           []string `json:"next"` // what to start now
}

func runSwitchover(args []string, stdout, stderr io.Writer) error {
	c := newFlags("switchover", "ferry switchover --primary A.toml --secondary B.toml [--report FILE] [--timeout 2m] [--json]", switchoverExamples, stderr)
	from := c.fs.String("primary", "", "config `file` of the primary, which becomes a secondary")
	to := c.fs.String("secondary", "", "config `file` of the secondary, which becomes the primary")
	// --from and --to are seqs everywhere else (cat).
	c.alias("from", "primary")
	c.alias("to", "secondary")
	report := c.fs.String("report", "", "write the old primary's divergence report to this `file` (default SPOOL.switchover-GEN.ndjson)")
	timeout := c.duration("timeout", 2*time.Minute, "bound of each step")
	asJSON := c.fs.Bool("json", false, "print the result as JSON")
	if err := c.parseNoArgs(args, ""); err != nil {
		return err
	}
	if *from == "" || *to == "" {
		return usageError{errors.New("--primary and --secondary are required: their config files")}
	}
	a, err := config.Load(*from)
	if err != nil {
		return err
	}
	b, err := config.Load(*to)
	if err != nil {
		return err
	}
	log := c.logger(stderr)
	// One signal is enough to stop: a half-done switchover says where it
	// stopped, and every step can be redone by hand.
	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	res, err := switchover(ctx, switchoverConfig{From: *from, To: *to, A: a, B: b, Report: *report, Timeout: *timeout}, log)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "switched over %s at seq %d: %s (%s) is the primary, generation %d; %s (%s) follows it\n",
		res.Stream, res.LastSeq, res.ToSite, res.To, res.Generation, res.FromSite, res.From)
	fmt.Fprintf(stdout, "  drain     %6.2fs  shipper pid %d stopped, nothing unsent\n", res.DrainSeconds, res.ShipperPID)
	fmt.Fprintf(stdout, "  catch-up  %6.2fs  receiver pid %d applied seq %d, stopped\n", res.CatchUpSeconds, res.ReceiverPID, res.LastSeq)
	fmt.Fprintf(stdout, "  promote   %6.2fs  generation %d (parent %d) forked at seq %d\n", res.PromoteSeconds, res.Generation, res.Parent, res.LastSeq)
	fmt.Fprintf(stdout, "  rejoin    %6.2fs  report %s: no divergence\n", res.RejoinSeconds, res.Report)
	fmt.Fprintf(stdout, "  total     %6.2fs\nstart now (switchover starts no daemons):\n", res.TotalSeconds)
	for _, n := range res.Next {
		fmt.Fprintf(stdout, "  %s\n", n)
	}
	return nil
}

type switchoverConfig struct {
	From, To string       // the config files, for messages
	A, B     *config.File // the primary's and the secondary's
	Report   string
	Timeout  time.Duration // bound of each step
}

// switchover swaps the roles of primary A and secondary B without losing
// a record: it stops A's shipper once it has drained, waits until B has
// applied A's last seq, stops B's receiver, promotes B at that seq and
// rejoins A at it. Each step leaves the sites where a rerun of the rest
// by hand (ferry promote, ferry rejoin) finishes the job, or where
// starting the stopped daemons again undoes it.
func switchover(ctx context.Context, sc switchoverConfig, log *slog.Logger) (switchoverResult, error) {
	a, b := sc.A, sc.B
	res := switchoverResult{Stream: a.Stream, From: sc.From, To: sc.To, FromSite: siteName(a.Site.ID), ToSite: siteName(b.Site.ID)}
	if err := switchoverPreflight(ctx, sc); err != nil {
		return res, err
	}
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, sc.Timeout) }
	begin := time.Now()

	// 1. Drain the primary: its shipper reads its tail to the end, then
	// stops.
	t0 := time.Now()
	if path := tailPath(a.Ship.Source); path != "" {
		sctx, cancel := step()
		err := waitTailRead(sctx, a.Ship.Spool, path)
		cancel()
		if err != nil {
			return res, fmt.Errorf("%s: %w", sc.From, err)
		}
	}
	sctx, cancel := step()
	pid, err := stopLockHolder(sctx, a.Ship.Spool, "the primary's shipper ("+sc.From+")")
	cancel()
	res.ShipperPID = pid
	if err != nil {
		return res, err
	}
	last, gen, err := drainedSpool(a)
	if err != nil && pid == 0 {
		// Nothing was stopped: the spool is as the last shipper left it.
		return res, fmt.Errorf("%s: no shipper was running on spool %s (its LOCK was free): %w", sc.From, a.Ship.Spool, err)
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", sc.From, err)
	}
	res.LastSeq = last
	res.DrainSeconds = time.Since(t0).Seconds()
	log.Info("primary drained", "seq", last, "generation", gen, "spool", a.Ship.Spool)

	// 2. The secondary applies everything, then stops.
	t0 = time.Now()
	sctx, cancel = step()
	err = waitCheckpoint(sctx, b, last, gen)
	if err == nil {
		res.ReceiverPID, err = stopLockHolder(sctx, b.Receive.State, "the secondary's receiver ("+sc.To+")")
	}
	cancel()
	if err != nil {
		return res, fmt.Errorf("%s: %w; nothing was promoted: start the primary's shipper again to go on as before", sc.To, err)
	}
	res.CatchUpSeconds = time.Since(t0).Seconds()

	// 3. Promote the secondary at the primary's last seq.
	t0 = time.Now()
	sctx, cancel = step()
	// forced: the checkpoint may be of the generation before A's when A
	// has shipped nothing of its own yet; A is drained and stopped.
	p, err := promote(sctx, b, siteName(b.Site.ID), "switchover", true)
	cancel()
	if err != nil {
		return res, fmt.Errorf("promote %s: %w", sc.To, err)
	}
	res.Generation, res.Parent, res.Spool = p.Generation, p.Parent, p.Spool
	res.PromoteSeconds = time.Since(t0).Seconds()

	// 4. Rejoin the old primary at the fork, from the new primary's history.
	t0 = time.Now()
	res.Report = sc.Report
	if res.Report == "" {
		res.Report = fmt.Sprintf("%s.switchover-%d.ndjson", filepath.Clean(a.Ship.Spool), p.Generation)
	}
	sctx, cancel = step()
	d, err := rejoinFrom(sctx, b, a, res.Report, log)
	cancel()
	if err != nil {
		return res, fmt.Errorf("%s is promoted (generation %d), but rejoining %s failed: %w; run ferry rejoin --config %s --store <%s's store> --report FILE",
			sc.To, p.Generation, sc.From, err, sc.From, sc.To)
	}
	res.DivergentRecords, res.CutBytes = d.Records, d.CutBytes
	res.RejoinSeconds = time.Since(t0).Seconds()
	res.TotalSeconds = time.Since(begin).Seconds()
	if d.Records > 0 || d.CutBytes > 0 {
		return res, fmt.Errorf("RECORDS LOST: the old primary %s had %d records (%d bytes cut from %s) past seq %d that generation %d does not hold: its shipper took input after the drain; reconcile report %s by hand",
			sc.From, d.Records, d.CutBytes, d.CutFile, last, p.Generation, res.Report)
	}
	res.Next = []string{
		fmt.Sprintf("on %s: ferry ship --config %s", res.ToSite, sc.To),
		fmt.Sprintf("on %s: ferry receive --config %s", res.FromSite, sc.From),
	}
	return res, nil
}

// switchoverPreflight checks what the steps need before anything is
// stopped.
func switchoverPreflight(ctx context.Context, sc switchoverConfig) error {
	a, b := sc.A, sc.B
	switch {
	case a.Stream == "" || a.Stream != b.Stream:
		return fmt.Errorf("%s and %s must name the same stream (%q, %q)", sc.From, sc.To, a.Stream, b.Stream)
	case a.Ship.Spool == "":
		return fmt.Errorf("%s: [ship] spool is required: the primary's spool", sc.From)
	case a.Receive.State == "" || a.Receive.Apply == "":
		return fmt.Errorf("%s: [receive] state and apply are required: where the primary receives from now on", sc.From)
	case b.Receive.State == "":
		return fmt.Errorf("%s: [receive] state is required: the secondary's receiver state", sc.To)
	}
	if err := receiver.CheckNotPromoted(b.Receive.State); err != nil {
		return fmt.Errorf("%s: %w", sc.To, err)
	}
	gen, err := spool.Generation(a.Ship.Spool, a.Stream)
	if err != nil {
		return fmt.Errorf("%s: %w", sc.From, err)
	}
	if _, ok, err := receiver.LoadCheckpoint(a.Receive.State); err != nil || ok {
		p, promoted, perr := receiver.LoadPromotion(a.Receive.State)
		if err == nil && (perr != nil || !promoted || p.Generation != gen) {
			err = fmt.Errorf("state %s already has a checkpoint, and the site was not promoted to write generation %d: give the primary a new [receive] state", a.Receive.State, gen)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", sc.From, err)
		}
	}
	st, err := historyStore(ctx, b)
	if err != nil {
		return fmt.Errorf("%s: %w", sc.To, err)
	}
	h, err := catalog.ReadHistory(ctx, st, a.Stream)
	if err != nil {
		return fmt.Errorf("read the history of %s in %s: %w", a.Stream, st, err)
	}
	if newest := h.Newest().Generation; newest > gen {
		return fmt.Errorf("%s: its spool %s writes generation %d, but generation %d is the newest: the primary is fenced; run ferry rejoin there",
			sc.From, a.Ship.Spool, gen, newest)
	}
	return nil
}

// stopLockHolder sends SIGTERM to the process holding dir/LOCK, if any,
// and waits until the lock is free. It returns the pid signalled (0: the
// lock was free).
func stopLockHolder(ctx context.Context, dir, what string) (int, error) {
	held, err := fsutil.Locked(dir)
	if err != nil || !held {
		return 0, err
	}
	pid := lockHolder(dir)
	if pid == 0 {
		return 0, fmt.Errorf("%s: %s/LOCK is held by a process whose pid it does not name (another host?); stop it by hand and retry", what, dir)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return pid, fmt.Errorf("%s: stop pid %d: %w", what, pid, err)
	}
	for {
		if held, err := fsutil.Locked(dir); err != nil || !held {
			return pid, err
		}
		select {
		case <-ctx.Done():
			return pid, fmt.Errorf("%s: pid %d still holds %s/LOCK (sent SIGTERM): %w", what, pid, dir, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// drainedSpool opens the stopped primary's spool and requires that every
// record it took is confirmed by its targets and, for a tail: source, that
// it read the file to its end. It returns the last seq and the generation.
func drainedSpool(a *config.File) (uint64, uint32, error) {
	sp, err := spool.Open(spool.Config{Dir: a.Ship.Spool, Stream: a.Stream}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, 0, err
	}
	defer sp.Close()
	if n := len(sp.Unconfirmed()); n > 0 {
		return 0, 0, fmt.Errorf("the primary did not drain: %d segments unsent in spool %s; start its shipper again and retry", n, a.Ship.Spool)
	}
	if path := tailPath(a.Ship.Source); path != "" {
		if err := tailAtEnd(path, sp.Cursor()); err != nil {
			return 0, 0, err
		}
	}
	return sp.LastSeq(), sp.Config().Generation, nil
}

// tailAtEnd checks that a tail source's cursor is at the end of the file:
// lines after it were written but never shipped, and a switchover would
// lose them.
func tailAtEnd(path string, cursor []byte) error {
	t, err := tailProgress(path, cursor)
	if err != nil {
		return err
	}
	if !t.AtEnd {
		return fmt.Errorf("the primary did not drain: its shipper stopped at byte %d of %s, which has %d bytes (the application wrote after the shipper's last read, or the file was rotated); stop the application, start the shipper again and retry",
			t.ReadBytes, path, t.Size)
	}
	return nil
}

// waitTailRead waits until the shipper running on spool dir has read its
// tail file to the end as the file is now, by the status it publishes
// (status.json, every statusEvery): a shipper that just started, or that
// is behind, reads the application's last lines before it is stopped.
// Without a running shipper, or with one that publishes no tail progress
// (an older ferry), it returns at once: drainedSpool judges the stopped
// spool either way.
func waitTailRead(ctx context.Context, dir, path string) error {
	var seen *tailStatus
	pid := 0
	for {
		if pid = lockHolder(dir); pid == 0 {
			return nil
		}
		var s shipStatus
		if raw, err := readStateFile(filepath.Join(dir, statusFile)); err == nil && json.Unmarshal(raw, &s) == nil && s.Running && s.PID == pid {
			if s.Tail == nil {
				return nil
			}
			seen = s.Tail
			if fi, err := os.Stat(path); err == nil && seen.AtEnd && seen.Size == fi.Size() {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			size := int64(-1)
			if fi, err := os.Stat(path); err == nil {
				size = fi.Size()
			}
			var where string
			switch {
			case seen == nil:
				where = fmt.Sprintf("published no status (%s) saying how far it read %s", filepath.Join(dir, statusFile), path)
			case seen.OtherFile:
				where = fmt.Sprintf("is still reading a rotated file of %s (the file there now has %d bytes)", path, size)
			default:
				where = fmt.Sprintf("has read %d of the %d bytes of %s (is the application still writing?)", seen.ReadBytes, size, path)
			}
			return fmt.Errorf("the primary did not drain: its shipper (pid %d) %s; nothing was stopped: stop the application and retry: %w", pid, where, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitCheckpoint waits until b's receiver has applied seq last of
// generation gen (or of an older one when gen begins there).
func waitCheckpoint(ctx context.Context, b *config.File, last uint64, gen uint32) error {
	state := b.Receive.State
	var cp receiver.Checkpoint
	for {
		var ok bool
		var err error
		cp, ok, err = receiver.LoadCheckpoint(state)
		if err != nil {
			return err
		}
		if ok && cp.LastSeq >= last {
			break
		}
		select {
		case <-ctx.Done():
			running := "no receiver is running there"
			if pid := lockHolder(state); pid != 0 {
				running = fmt.Sprintf("its receiver is pid %d", pid)
			}
			return fmt.Errorf("the secondary did not catch up: state %s is at seq %d, the primary's last is %d (%s): %w", state, cp.LastSeq, last, running, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if cp.LastSeq > last || cp.Generation > gen {
		return fmt.Errorf("state %s applied generation %d up to seq %d, past the primary's generation %d seq %d: the secondary does not follow this primary", state, cp.Generation, cp.LastSeq, gen, last)
	}
	return nil
}

// rejoinFrom rejoins site a against the history site b writes: b's store,
// or for a direct-link b its inbox, reading b's segments within a's
// max_segment_bytes and decrypting them with a's identity (a becomes b's
// receiver).
func rejoinFrom(ctx context.Context, b, a *config.File, report string, log *slog.Logger) (divergence, error) {
	st, err := historyStore(ctx, b)
	if err != nil {
		return divergence{}, err
	}
	dec, err := decrypterFor(a)
	if err != nil {
		return divergence{}, err
	}
	dec = withKeyEpochs(ctx, dec, st, a.Stream)
	return rejoin(ctx, st, a.Stream, a.Ship.Spool, a.Receive.State, a.Receive.Apply, report, int64(a.Receive.MaxSegmentBytes), dec, log)
}
