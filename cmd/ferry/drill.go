package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

const drillExamples = `  # rehearse a disaster recovery: restore the newest state to a temp dir, verify, report RPO/RTO
  ferry drill --store s3://dr-bucket/ferry --stream app

  # keep the restored copy, and report for monitoring
  ferry drill --store /srv/ferry --stream app --scratch /srv/drill --keep --json
`

// drillReport is what ferry drill reports (--json prints it as is).
type drillReport struct {
	Stream           string    `json:"stream"`
	Store            string    `json:"store"`
	OK               bool      `json:"ok"`
	Segments         uint64    `json:"segments"`
	Records          uint64    `json:"records"`
	Bytes            int64     `json:"bytes"` // segment bytes read by the restore
	LastSeq          uint64    `json:"last_seq"`
	NewestSegment    string    `json:"newest_segment"`
	NewestRecordTime time.Time `json:"newest_record_time"`
	// RPO: how old the newest archived record was when the drill ended
	// (now - max_time of the newest segment): what a disaster now loses.
	RPOSeconds float64 `json:"rpo_seconds"`
	// RTO: how long the restore took (listing, fetching, verifying and
	// applying every segment), not counting the separate verify pass.
	RTOSeconds float64  `json:"rto_seconds"`
	Applier    string   `json:"applier"`
	Scratch    string   `json:"scratch,omitempty"` // kept with --keep
	Verify     string   `json:"verify,omitempty"`
	Defects    []string `json:"defects,omitempty"`
}

func runDrill(args []string, stdout, stderr io.Writer) error {
	c := newFlags("drill", "ferry drill --store URL --stream NAME [--scratch DIR] [--keep] [--apply file|dir|SPEC] [--json]", drillExamples, stderr)
	scratch := c.fs.String("scratch", "", "`dir` to make the drill's temp dir in (default: the system temp dir)")
	keep := c.fs.Bool("keep", false, "keep the restored copy and its state (the path is printed)")
	asJSON := c.fs.Bool("json", false, "print the report as JSON")
	applySpec := c.fs.String("apply", "", "file, dir, or an applier spec (default: dir for a dir-tree stream, file otherwise)")
	pf := c.fs.Int("prefetch", receiver.DefaultPrefetch, "segments read and verified ahead of the one being applied (0 for none)")
	gapTimeout := c.duration("gap-timeout", 2*time.Second, "how long a missing segment may stay missing before the restore fails")
	c.accept("max-segment-bytes")
	if err := c.parseNoArgs(args, ""); err != nil {
		return err
	}
	if c.cfg.Stream == "" || c.cfg.Store == "" {
		return usageError{errors.New("--store and --stream are required")}
	}
	if *pf < 0 || *pf > 64 {
		return usageError{fmt.Errorf("--prefetch %d is out of range 0 to 64", *pf)}
	}
	log := c.logger(stderr)
	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	st, err := openExistingStore(ctx, c.cfg, log)
	if err != nil {
		return err
	}
	segs, err := listSegments(ctx, st, c.cfg.Stream)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		return fmt.Errorf("stream %q has no segments in %s: nothing to restore", c.cfg.Stream, st)
	}
	rep := drillReport{Stream: c.cfg.Stream, Store: c.cfg.Store, NewestSegment: segs[len(segs)-1].Name}
	newestKey := segWhere(c.cfg.Stream, segs[len(segs)-1])
	if hdr, err := readStoredHeader(ctx, st, segs[len(segs)-1]); err != nil {
		rep.Defects = append(rep.Defects, fmt.Sprintf("segment %s: %v", newestKey, err))
	} else if m, _, err := batch.ParseMeta(hdr); err != nil {
		rep.Defects = append(rep.Defects, fmt.Sprintf("segment %s: %v", newestKey, err))
	} else {
		rep.NewestRecordTime = m.MaxTime
	}

	base, err := os.MkdirTemp(*scratch, "ferry-drill-")
	if err != nil {
		return fmt.Errorf("scratch dir: %w", err)
	}
	if *keep {
		rep.Scratch = base
	} else {
		defer os.RemoveAll(base)
	}
	spec := *applySpec
	if spec == "" {
		spec = "file"
		if isDirTreeStream(ctx, c.cfg, st, segs[0], c.segmentLimit()) {
			spec = "dir"
		}
	}
	switch spec {
	case "file":
		spec = "file:" + filepath.Join(base, "replica")
	case "dir":
		spec = "dir:" + filepath.Join(base, "tree")
	}
	ap, err := apply.Parse(spec, io.Discard)
	if err != nil {
		return usageError{err}
	}
	rep.Applier = ap.String()

	res, rerr := restoreStream(ctx, restoreJob{cfg: c.cfg, store: st, state: filepath.Join(base, "state"), applier: ap,
		prefetch: *pf, gapTimeout: *gapTimeout, progress: stderr}, log)
	rep.RTOSeconds = res.elapsed.Seconds()
	rep.Segments, rep.Records, rep.Bytes, rep.LastSeq = res.stats.Segments, res.stats.Records, res.stats.Bytes, res.cp.LastSeq
	if rerr != nil {
		rep.Defects = append(rep.Defects, "restore: "+rerr.Error())
	} else if _, _, last, _ := batch.ParseSegmentName(rep.NewestSegment); res.cp.LastSeq != last {
		rep.Defects = append(rep.Defects, fmt.Sprintf("restore ended at seq %d, but the newest segment %s ends at %d", res.cp.LastSeq, rep.NewestSegment, last))
	}

	// The checks of ferry verify, over every segment the store lists.
	vargs := []string{"--store", c.cfg.Store, "--stream", c.cfg.Stream}
	if c.configPath != "" {
		vargs = append(vargs, "--config", c.configPath)
	}
	var vout bytes.Buffer
	verr := runVerify(vargs, &vout, io.Discard)
	for sc := bufio.NewScanner(&vout); sc.Scan(); {
		if d, ok := strings.CutPrefix(sc.Text(), "DEFECT "); ok {
			rep.Defects = append(rep.Defects, "verify: "+d)
		} else if rep.Verify == "" || strings.Contains(sc.Text(), "hash chain ok") {
			// The verdict line; before it come the encryption and
			// signature lines, which are the verdict only when it is
			// missing.
			rep.Verify = sc.Text()
		}
	}
	if verr != nil && !slices.ContainsFunc(rep.Defects, func(d string) bool { return strings.HasPrefix(d, "verify: ") }) {
		rep.Defects = append(rep.Defects, "verify: "+verr.Error())
	}
	if !rep.NewestRecordTime.IsZero() {
		rep.RPOSeconds = time.Since(rep.NewestRecordTime).Seconds()
	}
	rep.OK = len(rep.Defects) == 0

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printDrill(stdout, &rep)
	}
	if !rep.OK {
		return fmt.Errorf("drill failed: %d problem(s); first: %s", len(rep.Defects), rep.Defects[0])
	}
	return nil
}

func printDrill(w io.Writer, r *drillReport) {
	verdict := "OK"
	if !r.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "ferry drill: stream %s from %s: %s\n", r.Stream, r.Store, verdict)
	fmt.Fprintf(w, "  RTO       %s to restore %d records in %d segments (%s read) through seq %d to %s\n",
		seconds(r.RTOSeconds), r.Records, r.Segments, sizeString(r.Bytes), r.LastSeq, r.Applier)
	if !r.NewestRecordTime.IsZero() {
		fmt.Fprintf(w, "  RPO       %s: newest archived record at %s (segment %s)\n",
			seconds(r.RPOSeconds), r.NewestRecordTime.Format(time.RFC3339Nano), r.NewestSegment)
	}
	if r.Verify != "" {
		fmt.Fprintf(w, "  verify    %s\n", r.Verify)
	}
	if r.Scratch != "" {
		fmt.Fprintf(w, "  kept      %s\n", r.Scratch)
	}
	for _, d := range r.Defects {
		fmt.Fprintf(w, "  DEFECT    %s\n", d)
	}
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

// isDirTreeStream tells a dir-tree stream by the op of its first record.
// An unreadable first segment says file: the restore reports the damage.
func isDirTreeStream(ctx context.Context, cfg *config.File, st store.Store, first catalog.Segment, limit int64) bool {
	data, err := readStored(ctx, st, first, limit)
	if err != nil {
		return false
	}
	seg, err := batch.Open(data)
	if err != nil {
		return false
	}
	if dec, err := decrypterFor(cfg); err != nil || seg.Decrypt(withKeyEpochs(ctx, dec, st, cfg.Stream)) != nil {
		return false
	}
	var op string
	stop := errors.New("first record read")
	err = seg.Scan(limit, func(r *batch.Record) error { op = r.Op; return stop })
	return err == stop && slices.Contains(dirtree.Ops, op)
}
