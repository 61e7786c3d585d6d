package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

const rejoinExamples = `  # the old primary came back fenced: report what it had past the fork,
  # cut its file back to the fork point and make it a receiver of the new primary
  ferry rejoin --store s3://dr-bucket/ferry --stream app --spool /var/lib/ferry/spool \
      --state /var/lib/ferry/state --apply file:/var/log/app.log --report /root/app-divergence.ndjson
  ferry receive --store s3://dr-bucket/ferry --stream app --state /var/lib/ferry/state --apply file:/var/log/app.log
`

// divergence is the first line of a rejoin report.
type divergence struct {
	Report     string           `json:"report"` // "ferry divergence"
	Stream     string           `json:"stream"`
	Generation uint32           `json:"generation"` // the fenced generation
	ForkSeq    uint64           `json:"fork_seq"`
	Promoted   batch.Generation `json:"promoted"` // the record that fenced it
	Records    int              `json:"records"`  // accepted here past the fork, never in the history
	FirstSeq   uint64           `json:"first_seq,omitempty"`
	LastSeq    uint64           `json:"last_seq,omitempty"`
	FirstTime  time.Time        `json:"first_time,omitzero"`
	LastTime   time.Time        `json:"last_time,omitzero"`
	InStore    int              `json:"in_store"` // of them, shipped into divergent segments before the fence
	InSpool    int              `json:"in_spool"` // of them, never shipped
	CutFile    string           `json:"cut_file,omitempty"`
	CutOffset  int64            `json:"cut_offset,omitempty"`
	CutBytes   int64            `json:"cut_bytes"`
}

// cutRecord is the last line of a report when a file was cut: the bytes cut.
type cutRecord struct {
	Cut        string  `json:"cut"` // the file
	Offset     int64   `json:"offset"`
	Data       *string `json:"data,omitempty"`
	DataBase64 *string `json:"data_base64,omitempty"`
}

func runRejoin(args []string, stdout, stderr io.Writer) error {
	c := newFlags("rejoin", "ferry rejoin --store URL --stream NAME --spool DIR --state DIR --apply SPEC --report FILE [--config FILE]", rejoinExamples, stderr)
	c.accept("spool", "state", "apply", "max-segment-bytes")
	report := c.fs.String("report", "", "write the divergence report (ndjson) to this `file`; required")
	if err := c.parseNoArgs(args, ""); err != nil {
		return err
	}
	cfg := c.cfg
	if err := needStreamStore(cfg, "rejoin reads the history from a store (a directory or s3://); over a direct link, rejoin against the new primary's archive store"); err != nil {
		return err
	}
	switch {
	case cfg.Ship.Spool == "":
		return usageError{errors.New("--spool is required: the spool of this site's fenced shipper")}
	case cfg.Receive.State == "":
		return usageError{errors.New("--state is required: where this site's receiver keeps its checkpoint")}
	case *report == "":
		return usageError{errors.New("--report is required")}
	}
	log := c.logger(stderr)
	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	st, err := openExistingStore(ctx, cfg, nil)
	if err != nil {
		return err
	}
	dec, err := decrypterFor(cfg)
	if err != nil {
		return err
	}
	dec = withKeyEpochs(ctx, dec, st, cfg.Stream)
	d, err := rejoin(ctx, st, cfg.Stream, cfg.Ship.Spool, cfg.Receive.State, cfg.Receive.Apply, *report, c.segmentLimit(), dec, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rejoined %s: generation %d was fenced at seq %d by generation %d (promoted on %s)\n",
		d.Stream, d.Generation, d.ForkSeq, d.Promoted.Generation, d.Promoted.Site)
	if d.Records == 0 {
		fmt.Fprintf(stdout, "divergence: none; report %s\n", *report)
	} else {
		fmt.Fprintf(stdout, "divergence: %d records, seq %d..%d (%s .. %s), %d shipped before the fence, %d only in the spool; report %s\n",
			d.Records, d.FirstSeq, d.LastSeq, d.FirstTime.Format(time.RFC3339), d.LastTime.Format(time.RFC3339), d.InStore, d.InSpool, *report)
	}
	switch {
	case d.CutFile != "" && d.CutBytes > 0:
		fmt.Fprintf(stdout, "cut %s back to %d bytes (%d bytes cut, kept in the report)\n", d.CutFile, d.CutOffset, d.CutBytes)
	case d.CutFile != "":
		fmt.Fprintf(stdout, "%s ends at the fork (%d bytes): nothing cut\n", d.CutFile, d.CutOffset)
	}
	fmt.Fprintf(stdout, "this site is now a receiver at seq %d: start ferry receive with --state %s\n", d.ForkSeq, cfg.Receive.State)
	return nil
}

// rejoin writes the divergence report of a fenced spool, cuts a file:
// target back to the fork, gives state a checkpoint at the fork and moves
// the spool aside. The report is durable before anything is changed. A
// segment of st over limit bytes (max_segment_bytes), stored or
// decompressed, is refused; the spool's own are read whatever their size.
// Encrypted segments, stored or spooled, are decrypted with dec.
func rejoin(ctx context.Context, st store.Store, stream, spoolDir, state, applySpec, reportPath string, limit int64, dec batch.Decrypter, log *slog.Logger) (divergence, error) {
	gen, err := spool.Generation(spoolDir, stream)
	if err != nil {
		return divergence{}, err
	}
	h, err := catalog.ReadHistory(ctx, st, stream)
	if err != nil {
		return divergence{}, fmt.Errorf("read the history of %s in %s: %w", stream, st, err)
	}
	if err := h.Fenced(gen); !errors.Is(err, batch.ErrFenced) {
		if err == nil {
			return divergence{}, fmt.Errorf("spool %s writes generation %d, the newest of stream %q: this site is not fenced, nothing to rejoin", spoolDir, gen, stream)
		}
		return divergence{}, err
	}
	fork, _ := h.End(gen)
	cutter, _ := h.EndedBy(gen) // fenced: a newer generation exists
	d := divergence{Report: "ferry divergence", Stream: stream, Generation: gen, ForkSeq: fork, Promoted: cutter}

	recs := map[uint64]batch.Record{}
	if err := divergentInStore(ctx, st, stream, gen, fork, limit, dec, recs); err != nil {
		return d, err
	}
	d.InStore = len(recs)
	sp, err := spool.Open(spool.Config{Dir: spoolDir, Stream: stream, Generation: gen}, nil, log)
	if err != nil {
		return d, fmt.Errorf("open the fenced spool: %w", err)
	}
	for _, s := range sp.Unconfirmed() {
		if s.LastSeq <= fork {
			continue
		}
		data, err := sp.ReadSealed(s.Name)
		if err == nil {
			err = addRecords(data, fork, batch.DefaultMaxUncompressed, dec, recs)
		}
		if err != nil {
			sp.Close()
			return d, fmt.Errorf("spool %s: sealed/%s: %w", spoolDir, s.Name, err)
		}
	}
	// Where the site's tail: source stands: after the last record it
	// sealed. Lines read after it were never sealed (with no journal,
	// they were only in memory) nor shipped, so they are past the fork
	// too: the cut takes them with the rest.
	cursor := sp.Cursor()
	if err := sp.Close(); err != nil {
		return d, err
	}
	d.InSpool = len(recs) - d.InStore
	seqs := slices.Sorted(maps.Keys(recs))
	var tail []byte
	for _, s := range seqs {
		tail = append(tail, recs[s].Data...)
	}
	if d.Records = len(seqs); d.Records > 0 {
		d.FirstSeq, d.LastSeq = seqs[0], seqs[len(seqs)-1]
		d.FirstTime, d.LastTime = recs[d.FirstSeq].Time, recs[d.LastSeq].Time
	}

	var applierState json.RawMessage
	var cut []byte
	if path, ok := strings.CutPrefix(applySpec, "file:"); ok {
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return d, err
		}
		at, err := forkOffset(path, data, tail, cursor)
		if err != nil {
			return d, fmt.Errorf("%w (the %d divergent records are seq %d..%d); cut it back to seq %d by hand, then run rejoin with another --apply",
				err, d.Records, d.FirstSeq, d.LastSeq, fork)
		}
		cut = data[at:]
		d.CutFile, d.CutOffset, d.CutBytes = path, at, int64(len(cut))
		applierState = apply.FileState(at)
	}
	if err := writeReport(reportPath, d, seqs, recs, cut); err != nil {
		return d, err
	}
	if d.CutFile != "" && d.CutBytes > 0 {
		if err := truncateDurably(d.CutFile, d.CutOffset); err != nil {
			return d, err
		}
	}
	if err := receiver.StartCheckpoint(state, stream, gen, fork, cutter.ForkHash, applierState); err != nil {
		return d, fmt.Errorf("start the receiver checkpoint: %w", err)
	}
	aside := fmt.Sprintf("%s.fenced-gen%d-%s", filepath.Clean(spoolDir), gen, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(spoolDir, aside); err != nil {
		return d, fmt.Errorf("move the fenced spool aside: %w", err)
	}
	if err := fsutil.SyncDir(filepath.Dir(aside)); err != nil {
		return d, err
	}
	log.Info("fenced spool moved aside; a later ferry ship starts a fresh spool", "spool", aside)
	return d, nil
}

// forkOffset is where the fork falls in data, the content of the file:
// target at path: the divergent records (tail: those past the fork, in
// seq order) start there. When the spool's cursor is a tail: source's
// position in this very file, the records end at it, and every byte
// after it was read but never sealed, or never read: none was shipped,
// so the fork is len(tail) before the cursor. Otherwise the fork is
// where tail last occurs, or the end of the file when there is no tail.
func forkOffset(path string, data, tail, cursor []byte) (int64, error) {
	end, ok, err := source.TailCursorOffset(path, cursor)
	if err != nil {
		return 0, err
	}
	if ok {
		at := end - int64(len(tail))
		switch {
		case end > int64(len(data)):
			return 0, fmt.Errorf("file %s has %d bytes, fewer than the %d its shipper had read", path, len(data), end)
		case at < 0 || !bytes.Equal(data[at:end], tail):
			return 0, fmt.Errorf("file %s does not hold the divergent records right before byte %d, where its shipper stopped sealing", path, end)
		}
		return at, nil
	}
	if len(tail) == 0 {
		return int64(len(data)), nil
	}
	i := bytes.LastIndex(data, tail)
	if i < 0 {
		return 0, fmt.Errorf("file %s does not hold the divergent records", path)
	}
	return int64(i), nil
}

// divergentInStore adds the records past fork of gen's segments in st,
// refusing a segment over limit bytes.
func divergentInStore(ctx context.Context, st store.Store, stream string, gen uint32, fork uint64, limit int64, dec batch.Decrypter, recs map[uint64]batch.Record) error {
	// Every segment of gen starts at seq 1 or later, so it sorts after
	// this; alone and in bundles.
	segs, err := catalog.Segments(ctx, st, stream, batch.SegmentName(gen, 0, 0))
	if err != nil {
		return fmt.Errorf("list the segments of stream %q in %s: %w", stream, st, err)
	}
	for _, o := range segs {
		if g, _, last, _ := batch.ParseSegmentName(o.Name); g != gen || last <= fork {
			continue
		}
		data, err := readStored(ctx, st, o, limit)
		if err == nil {
			err = addRecords(data, fork, limit, dec, recs)
		}
		if err != nil {
			return fmt.Errorf("divergent segment %s: %w", segWhere(stream, o), err)
		}
	}
	return nil
}

// addRecords adds a segment's records past fork to recs, decrypted with
// dec, refusing a segment that claims to decompress to over limit bytes.
func addRecords(data []byte, fork uint64, limit int64, dec batch.Decrypter, recs map[uint64]batch.Record) error {
	seg, err := batch.Open(data)
	if err != nil {
		return err
	}
	if err := seg.Decrypt(dec); err != nil {
		return err
	}
	return seg.Scan(limit, func(r *batch.Record) error {
		if r.Seq > fork {
			rec := *r
			rec.Key, rec.Data = bytes.Clone(r.Key), bytes.Clone(r.Data)
			recs[r.Seq] = rec
		}
		return nil
	})
}

// writeReport writes the report durably: the summary, each record as
// ferry cat --json prints it, and the bytes cut from a file.
func writeReport(path string, d divergence, seqs []uint64, recs map[uint64]batch.Record, cut []byte) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(d); err != nil {
		return err
	}
	p := newRecordPrinter(&buf, true)
	for _, s := range seqs {
		r := recs[s]
		if err := p.print(&r); err != nil {
			return err
		}
	}
	if err := p.flush(); err != nil {
		return err
	}
	if d.CutFile != "" {
		cr := cutRecord{Cut: d.CutFile, Offset: d.CutOffset}
		if utf8.Valid(cut) {
			s := string(cut)
			cr.Data = &s
		} else {
			s := base64.StdEncoding.EncodeToString(cut)
			cr.DataBase64 = &s
		}
		if err := enc.Encode(cr); err != nil {
			return err
		}
	}
	if err := fsutil.WriteFileAtomic(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	return nil
}

func truncateDurably(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cut %s back to %d bytes: %w", path, size, err)
	}
	return nil
}
