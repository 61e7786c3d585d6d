package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/loadgen"
	"github.com/ferry-dr/ferry/store"
)

const benchExamples = `  # size an S3 bucket: 200 000 records of 200 bytes, as fast as it takes them
  ferry bench --config /etc/ferry/ship.toml --store s3://bucket/ferry-bench --records 200000 --size 200

  # a WAN link at the rate the application will produce, with real data
  # (on the DR site: ferry receive --listen :7000 --stream bench --apply stdout > /dev/null ...)
  ferry bench --store tcp://dr-site:7000 --tls-ca ca.pem --stream bench --rate 5000 --duration 60s \
      --sample /var/log/app/sample.log --ack received --concurrency 64
`

// benchResult is what ferry bench prints (--json).
type benchResult struct {
	Target      string `json:"target"`
	Stream      string `json:"stream"`
	Ack         string `json:"ack"`
	Concurrency int    `json:"concurrency"`
	Rate        int    `json:"rate,omitempty"`
	loadgen.Result
	Ratio     float64 `json:"compression_ratio"`
	Segments  uint64  `json:"segments"`
	DrainSecs float64 `json:"drain_seconds"`
}

func runBench(args []string, stdout, stderr io.Writer) error {
	c := newFlags("bench", "ferry bench --store URL [--stream NAME] [--records N | --duration D] [--rate R] [--size SIZE | --sample FILE] [--spool DIR] [--concurrency C] [--ack MODE] [--config FILE]", benchExamples, stderr)
	records := c.fs.Int64("records", 0, "records to append (default 100000 unless --duration)")
	duration := c.duration("duration", 0, "append for this long instead of a record count")
	rate := c.fs.Int("rate", 0, "records per second offered (default: as fast as accepted)")
	size := c.size("size", 200, "size of a synthetic record (e.g. 200 or 1KiB)")
	sample := c.fs.String("sample", "", "cycle through the lines of this `file` instead of synthetic records")
	conc := c.fs.Int("concurrency", 16, "concurrent appenders")
	spoolDir := c.fs.String("spool", "", "spool `dir` (default: a temporary one, removed afterwards)")
	c.alias("bench-spool", "spool")
	keep := c.fs.Bool("keep", false, "keep the bench segments in the store (default: delete them from directory and S3 stores)")
	asJSON := c.fs.Bool("json", false, "print the result as JSON")
	c.acceptWithUsage("ack", "local, received or applied (default: the config's, else local)")
	c.acceptWithUsage("max-bytes", "seal at this many uncompressed bytes (default: the config's)")
	c.acceptWithUsage("max-age", "seal this long after the first record (default: the config's)")
	c.accept(shipperLinkFlags...)
	err := c.parseNoArgs(args, "")
	if err != nil {
		return err
	}
	cfg := c.cfg
	if cfg.Store == "" {
		return usageError{errors.New("--store is required: the target to measure")}
	}
	streamSet := c.fs.Changed("stream")
	if strings.HasPrefix(cfg.Store, "tcp://") && !streamSet {
		return usageError{errors.New("a tcp:// target needs --stream: the receiver accepts only its own stream, and benching into a production stream would apply the bench records; start a receiver for a bench stream")}
	}
	if !streamSet {
		cfg.Stream = "ferry-bench-" + time.Now().UTC().Format("20060102T150405")
	}
	if *records == 0 && *duration == 0 {
		*records = 100000
	}
	var lines [][]byte
	if *sample != "" {
		data, err := os.ReadFile(*sample)
		if err != nil {
			return err
		}
		lines = bytes.SplitAfter(data, []byte("\n"))
		if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		if len(lines) == 0 {
			return fmt.Errorf("sample %s is empty", *sample)
		}
	}
	log := c.logger(stderr)
	ctx := context.Background()
	spoolPath := *spoolDir
	if spoolPath == "" {
		if spoolPath, err = os.MkdirTemp("", "ferry-bench-spool-"); err != nil {
			return err
		}
		defer os.RemoveAll(spoolPath)
	}
	targets, closeTargets, err := openTargets(ctx, cfg, nil, log)
	if err != nil {
		return err
	}
	defer closeTargets()
	sc := cfg.Ship
	enc, err := encrypterFor(cfg, log)
	if err != nil {
		return err
	}
	signer, err := signerFor(cfg, log)
	if err != nil {
		return err
	}
	shc := shipConfig(cfg, targets, cfg.Generation, enc, signer)
	shc.Spool.Dir = spoolPath
	shc.Retry = store.RetryPolicy{Min: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
	if !streamSet {
		// A stream of its own has no other writer to keep out, and the
		// clean-up would have to remove the lease object too.
		shc.Lease.TTL = -1
	}
	sh, err := shipper.New(ctx, shc, log)
	if err != nil {
		return err
	}
	defer sh.Close()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runErr := make(chan error, 1)
	go func() { runErr <- sh.Run(runCtx) }()

	sigCtx, stopSig := signalContext(ctx, log)
	defer stopSig()
	var prog loadgen.Progress
	progDone := make(chan struct{})
	go showBenchProgress(stderr, log, &prog, *records, *duration, progDone)
	res, lerr := loadgen.Run(sigCtx, sh, loadgen.Options{Records: *records, Duration: *duration, Concurrency: *conc,
		Rate: *rate, Size: int(*size), Sample: lines}, &prog)
	close(progDone)
	drainStart := time.Now()
	drainCtx, cancel := context.WithTimeout(ctx, time.Duration(sc.ShutdownTimeout))
	derr := sh.Drain(drainCtx)
	cancel()
	stopRun()
	if err := <-runErr; err != nil && lerr == nil {
		lerr = err
	}
	if lerr == nil {
		lerr = derr
	}
	st := sh.Spool().Stats()
	out := benchResult{Target: targets[0].Store.String(), Stream: cfg.Stream, Ack: string(sc.Ack), Concurrency: *conc, Rate: *rate,
		Result: res, Segments: st.SegmentsOut, DrainSecs: time.Since(drainStart).Seconds()}
	if st.BytesSealed > 0 {
		out.Ratio = float64(st.UncompSealed) / float64(st.BytesSealed)
	}
	if !*keep && !streamSet {
		cleanBench(ctx, targets, cfg.Stream, log)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		fmt.Fprintf(stdout, "ferry bench: %d records (%s) to %s, stream %s, ack %s, %d appenders",
			res.Records, sizeString(res.Bytes), out.Target, out.Stream, out.Ack, out.Concurrency)
		if *rate > 0 {
			fmt.Fprintf(stdout, ", offered %d/s", *rate)
		}
		fmt.Fprintf(stdout, "\n  throughput   %.0f records/s, %.1f MB/s over %.2fs (then %.2fs to drain the spool)\n",
			res.RecordsPerSec, res.MBPerSec, res.Seconds, out.DrainSecs)
		fmt.Fprintf(stdout, "  compression  %.2fx in %d segments\n", out.Ratio, out.Segments)
		fmt.Fprintf(stdout, "  append latency (until accepted under ack %s): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			out.Ack, res.P50ms, res.P90ms, res.P99ms, res.Maxms)
	}
	return lerr
}

// showBenchProgress shows (showProgress) the records appended, their
// rate and bytes, and how far through the run.
func showBenchProgress(w io.Writer, log *slog.Logger, p *loadgen.Progress, total int64, d time.Duration, done <-chan struct{}) {
	start := time.Now()
	showProgress(w, log, "bench progress", done, func() progressLine {
		n, el := p.Done.Load(), time.Since(start).Seconds()
		pct := ""
		switch {
		case total > 0:
			pct = fmt.Sprintf("%5.1f%%", 100*float64(n)/float64(total))
		case d > 0:
			pct = fmt.Sprintf("%5.1f%%", 100*min(el/d.Seconds(), 1))
		}
		return progressLine{
			text:  fmt.Sprintf("%s %d records, %.0f/s, %s", pct, n, float64(n)/el, sizeString(p.Bytes.Load())),
			attrs: []any{"records", n, "records_per_s", fmt.Sprintf("%.0f", float64(n)/el), "bytes", p.Bytes.Load(), "percent", strings.TrimSpace(pct)},
		}
	})
}

// cleanBench deletes the bench stream's segments from store targets.
func cleanBench(ctx context.Context, targets []shipper.Target, stream string, log interface {
	Warn(string, ...any)
}) {
	for _, t := range targets {
		if store.IsSegmentsOnly(t.Store) {
			continue
		}
		var names []string
		t.Store.List(ctx, batch.StreamDir(stream), "", func(o store.Object) error {
			names = append(names, o.Name)
			return nil
		})
		for _, n := range names {
			if err := t.Store.Delete(ctx, n); err != nil {
				log.Warn("could not delete a bench segment", "target", t.Name, "segment", n, "err", err)
			}
		}
	}
}
