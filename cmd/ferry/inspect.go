package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/sign"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// readSegment reads the segment key of st, which the store lists at size
// bytes (0: not known), refusing one over limit (max_segment_bytes).
func readSegment(ctx context.Context, st store.Store, key string, size, limit int64) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return batch.ReadSegment(rc, nil, size, limit)
}

// segmentLimit is the max_segment_bytes of the verb's config.
func (c *common) segmentLimit() int64 { return int64(c.cfg.Receive.MaxSegmentBytes) }

const lsExamples = `  ferry ls --store /srv/ferry --stream app
  ferry ls --store s3://dr-bucket/ferry --stream app --json
`

func runLs(args []string, stdout, stderr io.Writer) error {
	c := newFlags("ls", "ferry ls --store URL --stream NAME [--json] [--config FILE]", lsExamples, stderr)
	asJSON := c.fs.Bool("json", false, "one JSON object per segment")
	if err := c.parse(args, ""); err != nil {
		return err
	}
	if c.cfg.Stream == "" {
		return usageError{errors.New("--stream is required")}
	}
	ctx := context.Background()
	st, err := openExistingStore(ctx, c.cfg, c.logger(stderr))
	if err != nil {
		return err
	}
	segs, err := listSegments(ctx, st, c.cfg.Stream)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		return noSuchStream(ctx, st, c.cfg.Stream)
	}
	h, err := catalog.ReadHistory(ctx, st, c.cfg.Stream)
	if err != nil {
		return fmt.Errorf("the history of stream %q in %s: %w", c.cfg.Stream, st, err)
	}
	var divergent int
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	if !*asJSON {
		fmt.Fprintln(tw, "GEN\tFIRST SEQ\tLAST SEQ\tRECORDS\tSIZE\tUNCOMPRESSED\tRATIO\tMIN TIME\tMAX TIME\tENCRYPTION\tSIGNED\tSEGMENT\t")
	}
	enc := json.NewEncoder(stdout)
	var total, totalU int64
	var recs uint64
	var crypt encryptionTally
	var sigs signatureTally
	for _, s := range segs {
		name, key := s.Name, segWhere(c.cfg.Stream, s)
		data, err := readStoredHeader(ctx, st, s)
		if err != nil {
			return fmt.Errorf("segment %s: %w", key, err)
		}
		m, _, err := batch.ParseMeta(data)
		if err != nil {
			return fmt.Errorf("segment %s: %w", key, err)
		}
		size := s.Size
		total += size
		totalU += m.UncompressedSize
		recs += m.Records
		crypt.add(&m)
		signed := sigs.add(&m)
		placement := "in history"
		if p, err := h.Place(m.Generation, m.FirstSeq, m.LastSeq); err != nil {
			placement = "straddles a fork"
		} else if p == batch.Divergent {
			placement = "divergent"
			divergent++
		}
		if *asJSON {
			enc.Encode(struct {
				Segment   string `json:"segment"`
				Size      int64  `json:"size"`
				Placement string `json:"placement"`
				// SignedBy: the key id of a valid signature, "unsigned",
				// or "BAD:..." (batch/sign.State).
				SignedBy string `json:"signed_by"`
				// Bundle is the store name of the bundle holding the
				// segment as a part; absent for a segment stored alone.
				Bundle string `json:"bundle,omitempty"`
				batch.Meta
			}{name, size, placement, signed, bundleOf(s), m})
			continue
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\t%s\t%.2fx\t%s\t%s\t%s\t%s\t%s\t\n", m.Generation, m.FirstSeq, m.LastSeq, m.Records,
			sizeString(size), sizeString(m.UncompressedSize), ratio(m.UncompressedSize, size),
			m.MinTime.Format(time.RFC3339), m.MaxTime.Format(time.RFC3339), m.EncryptionState(), signed, name)
	}
	if !*asJSON {
		tw.Flush()
		fmt.Fprintf(stdout, "%d segments, %d records, %s stored, %s uncompressed (ratio %.2fx)\n",
			len(segs), recs, sizeString(total), sizeString(totalU), ratio(totalU, total))
		hs, err := findHistoryStart(ctx, st, c.cfg.Stream, segs, h)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, hs)
		fmt.Fprintln(stdout, crypt.String())
		fmt.Fprintln(stdout, sigs.String())
		if newest := h.Newest(); newest.Generation > 1 {
			fmt.Fprintf(stdout, "history: generation %d is the newest, promoted at seq %d on %s at %s; %d divergent segments (past their generation's end, not part of the history)\n",
				newest.Generation, newest.ForkSeq, newest.Site, newest.Time.Format(time.RFC3339), divergent)
		}
		wms, err := catalog.ReadWatermarks(ctx, st, c.cfg.Stream)
		if err != nil {
			return fmt.Errorf("read receiver watermarks: %w", err)
		}
		for _, w := range wms {
			if w.PublishedAt.IsZero() {
				fmt.Fprintf(stdout, "receiver %s: registered, nothing applied yet\n", w.Receiver)
				continue
			}
			fmt.Fprintf(stdout, "receiver %s: applied through seq %d (segment %s), published %s\n",
				w.Receiver, w.AppliedSeq, w.Segment, w.PublishedAt.Format(time.RFC3339))
		}
	}
	return nil
}

// readHeader reads enough of a segment for its metadata.
func readHeader(ctx context.Context, st store.Store, key string) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf, err := io.ReadAll(io.LimitReader(rc, 8+batch.MaxMetaSize))
	if err != nil {
		return nil, err
	}
	return buf, nil
}

func ratio(u, c int64) float64 {
	if c == 0 {
		return 0
	}
	return float64(u) / float64(c)
}

const catExamples = `  ferry cat segment.seg.zst                      # records' data, as shipped
  ferry cat --json segment.seg.zst               # one JSON object per record
  ferry cat --store /srv/ferry --stream app --from 100 --to 200
  ferry cat --sum --store /srv/ferry --stream tree --from 2145   # bytes by op (docs/BENCHMARKS.md)
`

func runCat(args []string, stdout, stderr io.Writer) error {
	c := newFlags("cat", "ferry cat [--json] FILE... | ferry cat --store URL --stream NAME [--from SEQ] [--to SEQ] [--json] [--sum]", catExamples, stderr)
	asJSON := c.fs.Bool("json", false, "one JSON object per record (seq, time, key, op, data)")
	sum := c.fs.Bool("sum", false, "print no records: sum them by op (records, repeats, framing, keys, headers, content, zstd alone at --compression) and the segments' stored bytes")
	from := c.fs.Uint64("from", 1, "first seq to print (with --store)")
	to := c.fs.Uint64("to", 0, "last seq to print (with --store; 0 = to the end)")
	c.accept("max-segment-bytes", "compression")
	if err := c.parse(args, ""); err != nil {
		return err
	}
	limit := c.segmentLimit()
	out := newRecordPrinter(stdout, *asJSON)
	var err error
	if *sum {
		if out.sum, err = dirtree.NewSummary(batch.Level(c.cfg.Ship.Compression)); err != nil {
			return usageError{fmt.Errorf("--compression: %w", err)}
		}
	}
	if out.dec, err = decrypterFor(c.cfg); err != nil {
		return err
	}
	if out.trusted, err = verifierFor(c.cfg); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		for _, path := range c.fs.Args() {
			data, err := readFileCapped(path, limit)
			if err != nil {
				return err
			}
			if err := out.printSegment(data, path, limit, 0, 0); err != nil {
				return err
			}
		}
		return out.finish()
	}
	ctx := context.Background()
	st, segs, err := c.storeSegments(ctx, stderr, nil)
	if err != nil {
		return err
	}
	out.dec = withKeyEpochs(ctx, out.dec, st, c.cfg.Stream)
	for _, s := range segs {
		_, first, last, _ := batch.ParseSegmentName(s.Name)
		if last < *from || (*to != 0 && first > *to) {
			continue
		}
		key := segWhere(c.cfg.Stream, s)
		data, err := readStored(ctx, st, s, limit)
		if err != nil {
			return fmt.Errorf("segment %s: %w", key, err)
		}
		if err := out.printSegment(data, "segment "+key, limit, *from, *to); err != nil {
			return err
		}
	}
	return out.finish()
}

// storeSegments opens the store and lists the stream's segments, for cat
// and verify when they are given no segment files. With damaged set, a
// bundle whose index does not read is passed to it and over, not an
// error (listSegmentsReporting).
func (c *common) storeSegments(ctx context.Context, stderr io.Writer, damaged func(bundle string, err error)) (store.Store, []catalog.Segment, error) {
	if c.cfg.Stream == "" || c.cfg.Store == "" {
		return nil, nil, usageError{errors.New("give segment files, or --store and --stream")}
	}
	st, err := openExistingStore(ctx, c.cfg, c.logger(stderr))
	if err != nil {
		return nil, nil, err
	}
	segs, err := listSegmentsReporting(ctx, st, c.cfg.Stream, damaged)
	if err == nil && len(segs) == 0 {
		err = noSuchStream(ctx, st, c.cfg.Stream)
	}
	return st, segs, err
}

// readFileCapped reads the segment file path, refusing one over limit
// (max_segment_bytes).
func readFileCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var size int64
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	data, err := batch.ReadSegment(f, nil, size, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

type recordPrinter struct {
	dec     batch.Decrypter // nil: encrypted segments are refused
	trusted *sign.Trusted   // nil: signatures are not checked
	w       *bufio.Writer
	json    bool
	enc     *json.Encoder
	// sum, when set, sums the records instead of printing them (--sum):
	// segments and their stored and framed bytes here, by op in sum.
	sum                      *dirtree.Summary
	segments, stored, framed int64
}

func newRecordPrinter(w io.Writer, asJSON bool) *recordPrinter {
	bw := bufio.NewWriterSize(w, 256<<10)
	return &recordPrinter{w: bw, json: asJSON, enc: json.NewEncoder(bw)}
}

// printSegment prints the records from..to (to 0: to the end) of the
// segment data as they are decompressed, holding one at a time: a damaged
// segment's records before the damage are printed, then the error is
// returned. Its errors start with where (a file's path, or "segment KEY"),
// but for those of the signature and decryption of a segment stored
// under its own name, which name it already.
func (p *recordPrinter) printSegment(data []byte, where string, limit int64, from, to uint64) error {
	seg, err := batch.OpenPayload(data) // cat follows no hash chain: one hash pass, not two
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	named := func(err error) error {
		if where == "segment "+batch.SegmentKey(seg.Meta.Stream, seg.Meta.Name()) {
			return err
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	if err := checkSignature(p.trusted, &seg.Meta); err != nil {
		return named(err)
	}
	if err := seg.Decrypt(p.dec); err != nil {
		return named(err)
	}
	if p.sum != nil {
		p.segments++
		p.stored += int64(len(data))
	}
	err = seg.Scan(limit, func(r *batch.Record) error {
		if r.Seq < from || (to != 0 && r.Seq > to) {
			return nil
		}
		if p.sum != nil {
			p.framed += int64(r.FramedSize())
			return p.sum.Add(r)
		}
		return p.print(r)
	})
	if err != nil {
		p.flush() // what was printed before the damage
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

type jsonRecord struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Key        string    `json:"key,omitempty"`
	Op         string    `json:"op,omitempty"`
	Data       *string   `json:"data,omitempty"`
	DataBase64 *string   `json:"data_base64,omitempty"`
	// Delta describes an append or delta record of a dir: stream.
	Delta *dirtree.DeltaInfo `json:"delta,omitempty"`
}

func (p *recordPrinter) print(r *batch.Record) error {
	rename, isRename := catRename(r)
	if !p.json {
		if isRename {
			_, err := fmt.Fprintf(p.w, "rename %q %s\n", r.Key, rename)
			return err
		}
		_, err := p.w.Write(r.Data)
		return err
	}
	j := jsonRecord{Seq: r.Seq, Time: r.Time, Key: string(r.Key), Op: r.Op}
	if r.Op == dirtree.OpAppend || r.Op == dirtree.OpDelta {
		d := dirtree.Describe(r.Op, r.Data)
		j.Delta = &d
	}
	if isRename {
		j.Data = &rename
	} else if utf8.Valid(r.Data) {
		s := string(r.Data)
		j.Data = &s
	} else {
		s := base64.StdEncoding.EncodeToString(r.Data)
		j.DataBase64 = &s
	}
	return p.enc.Encode(j)
}

func (p *recordPrinter) flush() error { return p.w.Flush() }

// finish prints the sums (--sum) and flushes.
func (p *recordPrinter) finish() error {
	if p.sum == nil {
		return p.flush()
	}
	ops, err := p.sum.Ops()
	if err != nil {
		return err
	}
	if p.json {
		if err := p.enc.Encode(struct {
			Segments int64           `json:"segments"`
			Stored   int64           `json:"stored_bytes"`
			Framed   int64           `json:"framed_bytes"`
			Ops      []dirtree.OpSum `json:"ops"`
		}{p.segments, p.stored, p.framed, ops}); err != nil {
			return err
		}
		return p.flush()
	}
	ratio := 0.0
	if p.stored > 0 {
		ratio = float64(p.framed) / float64(p.stored)
	}
	fmt.Fprintf(p.w, "%d segments, %d bytes stored; records framed %d bytes (%.2fx); a segment holding records outside --from/--to counts whole\n",
		p.segments, p.stored, p.framed, ratio)
	if err := dirtree.WriteTable(p.w, ops); err != nil {
		return err
	}
	return p.flush()
}

// catRename describes a dir: stream's rename record readably (its data is
// binary): `from "OLD" (file, SIZE bytes, sha256 ..., mode ..., mtime ...)`.
func catRename(r *batch.Record) (string, bool) {
	if r.Op != dirtree.OpRename {
		return "", false
	}
	rn, err := dirtree.ParseRename(r.Data)
	if err != nil {
		return "", false
	}
	return rn.String(), true
}

const verifyExamples = `  ferry verify --store /srv/ferry --stream app
  ferry verify segment.seg.zst other.seg.zst
  ferry verify --store s3://dr-bucket/ferry --stream app --json | jq .ok
`

// verifyReport is what ferry verify --json prints on stdout, defects or
// not (the exit status is 1 with defects either way).
type verifyReport struct {
	Stream string   `json:"stream,omitempty"`
	Store  string   `json:"store,omitempty"`
	Files  []string `json:"files,omitempty"` // ferry verify FILE...
	OK     bool     `json:"ok"`
	// Segments and Records: of the history (the divergent segments left
	// out), or of the files.
	Segments uint64 `json:"segments"`
	Records  uint64 `json:"records"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
	// HistoryStart is the first seq of the history, and why it is there
	// (pruned, or a baseline) when that is past seq 1.
	HistoryStart    uint64   `json:"history_start,omitempty"`
	HistoryStartWhy string   `json:"history_start_why,omitempty"`
	Generation      uint32   `json:"generation,omitempty"` // the newest
	Divergent       []string `json:"divergent,omitempty"`  // segments past their generation's end
	// Signatures counts the segments by signature: valid ones by key id,
	// unsigned, and bad (not matching the metadata).
	Signatures signatureCounts `json:"signatures"`
	// TrustedKeys are the ids of [encryption] trusted_keys: when set, a
	// segment not signed by one of them is a defect.
	TrustedKeys []string `json:"trusted_keys,omitempty"`
	Defects     []string `json:"defects,omitempty"`
}

// runVerify checks every segment (checksum, decode, seq continuity inside
// and between segments, metadata vs name, stream) and the hash chain.
func runVerify(args []string, stdout, stderr io.Writer) error {
	c := newFlags("verify", "ferry verify --store URL --stream NAME [--json] [--config FILE] | ferry verify [--json] FILE...", verifyExamples, stderr)
	c.accept("max-segment-bytes")
	asJSON := c.fs.Bool("json", false, "print the result as JSON")
	if err := c.parse(args, ""); err != nil {
		return err
	}
	limit := c.segmentLimit()
	dec, err := decrypterFor(c.cfg)
	if err != nil {
		return err
	}
	trusted, err := verifierFor(c.cfg)
	if err != nil {
		return err
	}
	var defects []string
	var sigs signatureTally
	if c.fs.NArg() > 0 {
		rep := verifyReport{Files: c.fs.Args()}
		for _, path := range c.fs.Args() {
			data, err := readFileCapped(path, limit)
			var seg *batch.Segment
			if err == nil {
				seg, err = verifySegment(data, limit, dec)
			}
			if err != nil {
				defects = append(defects, fmt.Sprintf("%s: %v", path, err))
				continue
			}
			signed := sigs.add(&seg.Meta)
			if err := checkSignature(trusted, &seg.Meta); err != nil {
				defects = append(defects, fmt.Sprintf("%s: %v", path, err))
				continue
			}
			rep.Segments++
			rep.Records += seg.Meta.Records
			if !*asJSON {
				fmt.Fprintf(stdout, "%s: ok%s, %s\n", path, keylessNote(seg, dec), signatureNote(signed))
			}
		}
		if *asJSON {
			rep.Defects = defects
			rep.Signatures, rep.TrustedKeys = sigs.counts(), trustedIDs(trusted)
			return verdictJSON(stdout, rep, len(c.fs.Args()))
		}
		return verdict(stdout, defects, len(c.fs.Args()))
	}
	ctx := context.Background()
	st, segs, err := c.storeSegments(ctx, stderr, func(bundle string, err error) {
		defects = append(defects, fmt.Sprintf("bundle %s: %v (every part it holds is missing from this listing)", bundle, err))
	})
	if err != nil {
		return err
	}
	names := segNames(segs)
	dec = withKeyEpochs(ctx, dec, st, c.cfg.Stream)
	h, err := catalog.ReadHistory(ctx, st, c.cfg.Stream)
	if err != nil {
		return fmt.Errorf("the history of stream %q in %s: %w", c.cfg.Stream, st, err)
	}
	var prevHash, prevName string
	var prevLast uint64
	var prevGen uint32
	var records uint64
	var divergent []string
	var crypt encryptionTally
	lastOfGen := map[uint32]string{} // each generation's segment reaching furthest, for overlaps
	for _, s := range segs {
		name, key := s.Name, segWhere(c.cfg.Stream, s)
		gen, first, last, _ := batch.ParseSegmentName(name)
		if prior, ok := lastOfGen[gen]; ok {
			if _, _, priorLast, _ := batch.ParseSegmentName(prior); first <= priorLast {
				defects = append(defects, fmt.Sprintf("segment %s: seq %d..%d overlaps %s of the same generation: two writers on one stream", key, first, last, prior))
			}
		}
		if _, _, l, _ := batch.ParseSegmentName(lastOfGen[gen]); lastOfGen[gen] == "" || last > l {
			lastOfGen[gen] = name
		}
		place, perr := h.Place(gen, first, last)
		data, err := readStored(ctx, st, s, limit)
		var seg *batch.Segment
		if err == nil {
			seg, err = verifySegment(data, limit, dec)
		}
		if err != nil {
			// Unreadable: report it, and judge the next segment against its
			// name so one damaged segment is not also reported as a gap.
			defects = append(defects, fmt.Sprintf("segment %s: %v", key, err))
			if place == batch.InHistory {
				prevHash, prevName, prevLast, prevGen = "", name, last, gen
			}
			continue
		}
		m := &seg.Meta
		crypt.add(m)
		if c.cfg.Encryption.RequireEncryption && !m.Encrypted() {
			defects = append(defects, fmt.Sprintf("segment %s: not encrypted, and require_encryption is set", key))
		}
		sigs.add(m)
		if err := checkSignature(trusted, m); err != nil {
			defects = append(defects, err.Error())
		}
		if m.Name() != name {
			defects = append(defects, fmt.Sprintf("segment %s: metadata says it is %s", key, m.Name()))
		}
		if m.Stream != c.cfg.Stream {
			defects = append(defects, fmt.Sprintf("segment %s: belongs to stream %q", key, m.Stream))
		}
		switch {
		case perr != nil:
			defects = append(defects, fmt.Sprintf("segment %s: %v", key, perr))
			continue
		case place == batch.Divergent:
			divergent = append(divergent, name)
			continue
		}
		records += seg.Meta.Records
		rec, _ := h.Record(gen)
		switch {
		case prevName == "" || m.Generation != prevGen:
			// The first segment of the history, or of a generation: it
			// continues at its generation's fork, chained to the fork's hash.
			want, wantHash := rec.ForkSeq, rec.ForkHash
			if want == 0 {
				wantHash = batch.ZeroHash
			}
			// (The first segment listed may start later: retention pruned
			// what came before.)
			switch {
			case prevName != "" && m.FirstSeq != prevLast+1:
				defects = append(defects, fmt.Sprintf("gap: seq %d..%d missing between %s and %s", prevLast+1, m.FirstSeq-1, prevName, name))
			case m.FirstSeq == want+1 && m.PrevSHA256 != wantHash:
				defects = append(defects, fmt.Sprintf("segment %s: prev_sha256 %.16s does not match generation %d's fork hash %.16s: chain broken", key, m.PrevSHA256, gen, wantHash))
			case prevHash != "" && m.FirstSeq == prevLast+1 && m.PrevSHA256 != prevHash:
				defects = append(defects, fmt.Sprintf("segment %s: prev_sha256 %.16s does not match %s (%.16s): chain broken", key, m.PrevSHA256, prevName, prevHash))
			}
		case m.FirstSeq != prevLast+1:
			if m.FirstSeq > prevLast {
				defects = append(defects, fmt.Sprintf("gap: seq %d..%d missing between %s and %s", prevLast+1, m.FirstSeq-1, prevName, name))
			}
		case prevHash != "" && m.PrevSHA256 != prevHash:
			defects = append(defects, fmt.Sprintf("segment %s: prev_sha256 %.16s does not match %s (%.16s): chain broken", key, m.PrevSHA256, prevName, prevHash))
		}
		prevHash, prevName, prevLast, prevGen = seg.Hash, name, m.LastSeq, m.Generation
	}
	hs, err := findHistoryStart(ctx, st, c.cfg.Stream, segs, h)
	if err != nil {
		return err
	}
	if !hs.OK {
		defects = append(defects, hs.String())
	}
	if *asJSON {
		history := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(divergent, n) })
		rep := verifyReport{Stream: c.cfg.Stream, Store: redact.URL(c.cfg.Store), Segments: uint64(len(history)), Records: records,
			Generation: h.Newest().Generation, Divergent: divergent, Defects: defects,
			Signatures: sigs.counts(), TrustedKeys: trustedIDs(trusted)}
		if len(history) > 0 {
			_, rep.FirstSeq, _, _ = batch.ParseSegmentName(history[0])
			_, _, rep.LastSeq, _ = batch.ParseSegmentName(history[len(history)-1])
		}
		if hs.Seq > 1 {
			rep.HistoryStart, rep.HistoryStartWhy = hs.Seq, hs.Why
		}
		return verdictJSON(stdout, rep, len(names))
	}
	if len(defects) == 0 {
		fmt.Fprintf(stdout, "%d segments, %d records, seq %s: checksums, sequence and hash chain ok\n",
			len(names)-len(divergent), records, seqRange(slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(divergent, n) })))
		if hs.Seq > 1 {
			fmt.Fprintln(stdout, hs)
		}
	}
	fmt.Fprintln(stdout, crypt.String())
	fmt.Fprintln(stdout, sigs.verdict(trusted))
	if crypt.encrypted > 0 && dec == nil {
		fmt.Fprintln(stdout, "encrypted segments: checksums and hash chain checked; their records were not (no identity: set [encryption] identity_file or FERRY_AGE_IDENTITY_FILE)")
	}
	if newest := h.Newest(); newest.Generation > 1 {
		fmt.Fprintf(stdout, "history: %d generations; newest %d promoted at seq %d on %s at %s\n",
			newest.Generation, newest.Generation, newest.ForkSeq, newest.Site, newest.Time.Format(time.RFC3339))
	}
	for _, name := range divergent {
		gen, first, last, _ := batch.ParseSegmentName(name)
		end, _ := h.End(gen)
		fmt.Fprintf(stdout, "DIVERGENT %s: generation %d seq %d..%d is past that generation's end at seq %d; not part of the history (ferry rejoin reports such records)\n",
			name, gen, first, last, end)
	}
	return verdict(stdout, defects, len(names))
}

// verifySegment checks the segment data as Decode does, decompressing it
// as a stream rather than holding its records. An encrypted segment is
// decrypted with dec; with no identity (dec nil) only what needs no key is
// checked: its checksum here, its chain by the caller (keylessNote).
func verifySegment(data []byte, limit int64, dec batch.Decrypter) (*batch.Segment, error) {
	seg, err := batch.Open(data)
	if err != nil {
		return nil, err
	}
	if seg.Meta.Encrypted() && dec == nil {
		return seg, nil
	}
	if err := seg.Decrypt(dec); err != nil {
		return seg, err
	}
	return seg, seg.Scan(limit, func(*batch.Record) error { return nil })
}

// keylessNote says when verifySegment could not check seg's records.
func keylessNote(seg *batch.Segment, dec batch.Decrypter) string {
	if seg != nil && seg.Meta.Encrypted() && dec == nil {
		return " (encrypted; checksum checked, records not: no identity_file)"
	}
	return ""
}

func seqRange(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	_, first, _, _ := batch.ParseSegmentName(names[0])
	_, _, last, _ := batch.ParseSegmentName(names[len(names)-1])
	return strconv.FormatUint(first, 10) + ".." + strconv.FormatUint(last, 10)
}

// verdictJSON is verdict for --json: the report, then the same error.
func verdictJSON(stdout io.Writer, rep verifyReport, n int) error {
	rep.OK = len(rep.Defects) == 0
	if err := printJSON(stdout, rep); err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("%d defect(s) in %d segment(s)", len(rep.Defects), n)
	}
	return nil
}

func verdict(stdout io.Writer, defects []string, n int) error {
	if len(defects) == 0 {
		return nil
	}
	for _, d := range defects {
		fmt.Fprintln(stdout, "DEFECT", d)
	}
	return fmt.Errorf("%d defect(s) in %d segment(s)", len(defects), n)
}
