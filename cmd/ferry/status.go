package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/shipper/spool"
)

const statusExamples = `  # a shipper: per target the received and applied seq, lag, spool use
  ferry status --spool /var/lib/ferry/spool

  # a receiver: the checkpoint and how old it is
  ferry status --state /var/lib/ferry/state

  # for scripts and monitoring
  ferry status --spool /var/lib/ferry/spool --json
`

// statusFile is where a running shipper publishes its status, in its
// spool, once a second and when it stops. Not fsynced: it is a report,
// not state.
const statusFile = "status.json"

// statusEvery is how often the shipper rewrites status.json.
const statusEvery = time.Second

// shipStatus is the content of status.json and of `status --json` for a
// shipper.
type shipStatus struct {
	Role string `json:"role"` // "shipper"
	// SiteRole is "primary", or "fenced" once a newer generation stopped
	// the shipper (Fenced says by whom; run ferry rejoin).
	SiteRole   string    `json:"site_role"`
	Fenced     string    `json:"fenced,omitempty"`
	Running    bool      `json:"running"`
	PID        int       `json:"pid,omitempty"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
	Stream     string    `json:"stream"`
	Generation uint32    `json:"generation"`
	Ack        string    `json:"ack"`
	LastSeq    uint64    `json:"last_seq"` // newest seq accepted into the spool
	Spool      spoolUse  `json:"spool"`
	// Window is present when sending windows are configured.
	Window  *windowStatus  `json:"window,omitempty"`
	Targets []targetStatus `json:"targets"`
	// Unreachable says why a running shipper sends nothing yet: a target
	// it must hear from first does not answer (the spool takes records).
	Unreachable string `json:"unreachable,omitempty"`
	// Encryption is what the shipper seals its segments with (absent in
	// the status of a shipper older than this field).
	Encryption *shipEncryption `json:"encryption,omitempty"`
	// Tail is how far a tail: source has read its file (absent for other
	// sources, while the file does not exist, and in the status of a
	// shipper older than this field).
	Tail *tailStatus `json:"tail,omitempty"`
}

// tailStatus is how far a tail: source has read its file, by the cursor
// of the last record the spool accepted.
type tailStatus struct {
	Path string `json:"path"`
	Size int64  `json:"size"` // of the file now at Path
	// ReadBytes is the cursor's offset; in another file than the one now
	// at Path when OtherFile (it was rotated).
	ReadBytes int64 `json:"read_bytes"`
	OtherFile bool  `json:"other_file,omitempty"`
	// AtEnd: every complete line of the file now at Path is in the spool.
	AtEnd bool `json:"at_end"`
}

// tailProgress reads how far a tail: source with the spool cursor cursor
// has read the file at path.
func tailProgress(path string, cursor []byte) (*tailStatus, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tail %s: %w", path, err)
	}
	t := &tailStatus{Path: path, Size: fi.Size()}
	if len(cursor) == 0 {
		t.AtEnd = fi.Size() == 0
		return t, nil
	}
	// By device, inode and offset: a cursor of an older ferry has no sum.
	off, ok, err := source.TailCursorOffset(path, cursor)
	if err != nil {
		return nil, err
	}
	var c struct {
		Off int64 `json:"off"`
	}
	json.Unmarshal(cursor, &c)
	t.ReadBytes, t.OtherFile, t.AtEnd = c.Off, !ok, ok && off == fi.Size()
	return t, nil
}

// tailPath is the file of a tail: source ("" for another source).
func tailPath(source string) string {
	path, _ := strings.CutPrefix(source, "tail:")
	if path == source {
		return ""
	}
	return path
}

// shipEncryption says whether a shipper encrypts the segments it seals,
// and for which keys (fingerprints; never a key).
type shipEncryption struct {
	Encrypting bool     `json:"encrypting"`
	Scheme     string   `json:"scheme,omitempty"` // "age"
	Recipients []string `json:"recipients,omitempty"`
}

// encryptionOf is the shipEncryption of enc (nil: plaintext).
func encryptionOf(enc batch.Encrypter) *shipEncryption {
	if enc == nil {
		return &shipEncryption{}
	}
	return &shipEncryption{Encrypting: true, Scheme: enc.Scheme(), Recipients: enc.Recipients()}
}

type windowStatus struct {
	Open     bool      `json:"open"`
	Until    time.Time `json:"until,omitzero"`     // open: when it closes
	NextOpen time.Time `json:"next_open,omitzero"` // closed: when the next opens
	// BandwidthLimit is the cap in bytes per second of the open window(s)
	// on what each target is sent; absent when none applies.
	BandwidthLimit int64 `json:"bandwidth_limit,omitempty"`
}

type spoolUse struct {
	Dir            string `json:"dir"`
	SealedSegments int    `json:"sealed_segments"` // waiting for a target
	Bytes          int64  `json:"bytes"`
	// HeldRecords wait for their seqs: the spool started while no target
	// said where the stream stands.
	HeldRecords uint64 `json:"held_records,omitempty"`
}

type targetStatus struct {
	Name        string `json:"name"`
	Store       string `json:"store"`
	Async       bool   `json:"async,omitempty"`
	ReceivedSeq uint64 `json:"received_seq"`
	// AppliedSeq is present when the shipper knows it (a direct link, or
	// ack "applied").
	AppliedSeq *uint64 `json:"applied_seq,omitempty"`
	LagRecords uint64  `json:"lag_records"` // accepted but not yet applied (or not received, if applied is unknown)
	// LagBytes is the size of the sealed segments in the spool the target
	// has not confirmed yet.
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is the age of the oldest record the target has not
	// applied (absent when unknown or nothing is outstanding).
	LagSeconds *float64  `json:"lag_seconds,omitempty"`
	BytesSent  int64     `json:"bytes_sent"`
	LastSent   time.Time `json:"last_sent,omitzero"`
	LastError  string    `json:"last_error,omitempty"`
}

// snapshotShip builds the status of a running shipper; tail is the file
// of its tail: source ("" for another source).
func snapshotShip(sh *shipper.Shipper, stream string, gen uint32, ack, spoolDir, tail string, enc batch.Encrypter, now time.Time) shipStatus {
	st := sh.Spool().Stats()
	out := shipStatus{Role: "shipper", Running: true, PID: os.Getpid(), UpdatedAt: now.UTC(), Stream: stream,
		Generation: gen, Ack: ack, LastSeq: st.LastSeq, Encryption: encryptionOf(enc),
		Spool: spoolUse{Dir: spoolDir, SealedSegments: st.SealedPending, Bytes: st.SpoolBytes, HeldRecords: st.Held}, SiteRole: "primary"}
	if err := sh.Unreachable(); err != nil {
		out.Unreachable = err.Error()
	}
	if tail != "" {
		out.Tail, _ = tailProgress(tail, sh.Spool().Cursor()) // absent while the file is
	}
	if err := sh.Failed(); errors.Is(err, batch.ErrFenced) {
		out.SiteRole, out.Fenced = "fenced", err.Error()
	}
	if ws := sh.Window(); ws.Restricted {
		out.Window = &windowStatus{Open: ws.Open, Until: ws.Until, NextOpen: ws.NextOpen, BandwidthLimit: ws.BandwidthLimit}
	}
	for _, t := range sh.Targets() {
		ts := targetStatus{Name: t.Name, Store: t.Store, Async: t.Async, ReceivedSeq: max(t.SentSeq, t.ReceivedSeq),
			BytesSent: t.BytesSent, LastSent: t.LastSent, LastError: t.LastError}
		done := ts.ReceivedSeq
		if t.AppliedKnown {
			applied := t.AppliedSeq
			ts.AppliedSeq = &applied
			done = applied
		}
		if st.LastSeq > done {
			ts.LagRecords = st.LastSeq - done
		}
		for _, seg := range sh.Spool().Pending(t.SentSeq) {
			ts.LagBytes += seg.Size
		}
		if !t.OldestUnapplied.IsZero() {
			age := max(now.Sub(t.OldestUnapplied).Seconds(), 0)
			ts.LagSeconds = &age
		}
		out.Targets = append(out.Targets, ts)
	}
	return out
}

// writeShipStatus publishes s in spoolDir (temp file and rename, so a
// reader never sees half of it).
func writeShipStatus(spoolDir string, s shipStatus) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(spoolDir, "."+statusFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(spoolDir, statusFile))
}

// statusLoop rewrites status.json every statusEvery, or every when it is
// positive (keep it under 10 x statusEvery, after which ferry status calls
// the file stale), until ctx ends, then once more (marked not running) so
// a stopped shipper leaves its last word.
func statusLoop(ctx context.Context, sh *shipper.Shipper, stream string, gen uint32, ack, spoolDir, tail string, enc batch.Encrypter,
	every time.Duration) {
	if every <= 0 {
		every = statusEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		writeShipStatus(spoolDir, snapshotShip(sh, stream, gen, ack, spoolDir, tail, enc, time.Now()))
		select {
		case <-ctx.Done():
			s := snapshotShip(sh, stream, gen, ack, spoolDir, tail, enc, time.Now())
			s.Running = false
			writeShipStatus(spoolDir, s)
			return
		case <-t.C:
		}
	}
}

// recvStatus is `status --json` for a receiver.
type recvStatus struct {
	Role string `json:"role"` // "receiver"
	// SiteRole is "secondary", or "primary" once ferry promote made the
	// site the writer (Promoted says of which generation, from where).
	SiteRole   string    `json:"site_role"`
	Promoted   string    `json:"promoted,omitempty"`
	Running    bool      `json:"running"`
	PID        int       `json:"pid,omitempty"`
	State      string    `json:"state"`
	Stream     string    `json:"stream"`
	Generation uint32    `json:"generation"`
	AppliedSeq uint64    `json:"applied_seq"`
	Segment    string    `json:"segment,omitempty"`
	AppliedAt  time.Time `json:"applied_at,omitzero"`
	// CheckpointAge is how long ago the checkpoint last moved.
	CheckpointAgeSeconds *float64 `json:"checkpoint_age_seconds,omitempty"`

	// What a running receiver published (status_recv.go); absent when it
	// is not running or has published nothing lately.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Waiting says why a running receiver has applied nothing yet: its
	// store has not answered since the start (the error it gets).
	Waiting string `json:"waiting,omitempty"`
	// LastError is the error an operation (a read, an apply) keeps
	// failing with, and FailingSince since when; absent once one succeeds.
	LastError    string    `json:"last_error,omitempty"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	// GapSince: a running receiver has waited on a missing segment since.
	GapSince time.Time `json:"gap_since,omitzero"`
	// Of a stream of a receiver of many streams, while it runs: the
	// newest seq the store showed it, the records it has not applied of
	// those, and how long ago the store wrote the oldest segment it has
	// not applied (0 when none).
	StoredSeq  *uint64  `json:"stored_seq,omitempty"`
	LagRecords *uint64  `json:"lag_records,omitempty"`
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// Encryption is how the receiver last started decrypts (absent if it
	// has not run with this version).
	Encryption *recvEncryption `json:"encryption,omitempty"`
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	c := newVerbFlags("status", "ferry status --spool DIR | --state DIR | --fleet NAME --store URL [--json]", statusExamples, stderr)
	spool := c.fs.String("spool", "", "a shipper's spool `dir`")
	state := c.fs.String("state", "", "a receiver's state `dir`")
	asJSON := c.fs.Bool("json", false, "print JSON instead of a table")
	fleetName := c.fs.String("fleet", "", "a receiver fleet `NAME`: members, owners and lag per stream, read from --store")
	storeURL := c.fs.String("store", "", "with --fleet: the store `URL`")
	if err := c.parseArgs(args); err != nil {
		return err
	}
	switch {
	case *fleetName != "":
		if *storeURL == "" || *spool != "" || *state != "" {
			return usageError{errors.New("--fleet NAME takes --store URL, not --spool or --state")}
		}
		s, err := readFleetStatus(context.Background(), *storeURL, *fleetName)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, s)
		}
		printFleetStatus(stdout, s)
		return nil
	case c.fs.NArg() > 0:
		return usageError{fmt.Errorf("unexpected arguments %q", c.fs.Args())}
	case (*spool == "") == (*state == ""):
		return usageError{errors.New("give one of --spool DIR (a shipper) or --state DIR (a receiver)")}
	case *spool != "":
		s, err := readShipStatus(*spool, time.Now())
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, s)
		}
		printShipStatus(stdout, s, time.Now())
		return nil
	case isSyncState(*state):
		return printSyncStatus(stdout, *state, *asJSON)
	case isMultiRecvState(*state):
		return printMultiRecvStatus(stdout, *state, time.Now(), *asJSON)
	default:
		s, err := readRecvStatus(*state, time.Now())
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, s)
		}
		printRecvStatus(stdout, s)
		return nil
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// lockHolder returns the pid in dir/LOCK if that process is alive and
// holds the lock (0 otherwise).
func lockHolder(dir string) int {
	b, err := readStateFile(filepath.Join(dir, "LOCK"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0
	}
	return pid
}

// readShipStatus reads a spool: the status the shipper last published and,
// from the spool itself, what is waiting in it.
func readShipStatus(dir string, now time.Time) (shipStatus, error) {
	var s shipStatus
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		return s, fmt.Errorf("%s is not a ferry spool (no state.json): %w", dir, err)
	}
	raw, err := readStateFile(filepath.Join(dir, statusFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(raw, &s); err != nil {
			return s, fmt.Errorf("%s: %v", filepath.Join(dir, statusFile), err)
		}
	case errors.Is(err, os.ErrNotExist):
		s.Role = "shipper"
	default:
		return s, err
	}
	// A stream of a ship with [[streams]] publishes in the spool root's
	// streams-status.json while it runs, and in its own status.json when
	// it stops: the newer says how it stands.
	if shared, ok, err := readStreamsEntry(dir); err != nil {
		return s, err
	} else if ok && shared.UpdatedAt.After(s.UpdatedAt) {
		s = shared
	}
	var st struct {
		Stream     string `json:"stream"`
		Generation uint32 `json:"generation"`
		SealedSeq  uint64 `json:"sealed_seq"`
	}
	raw, err = readStateFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return s, fmt.Errorf("%s: %v", filepath.Join(dir, "state.json"), err)
	}
	s.Stream, s.Generation = st.Stream, st.Generation
	if st.SealedSeq > s.LastSeq {
		s.LastSeq = st.SealedSeq
	}
	// What is waiting in the spool, read from the spool itself.
	ents, err := os.ReadDir(filepath.Join(dir, "sealed"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, err
	}
	s.Spool = spoolUse{Dir: dir}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			s.Spool.SealedSegments++
			s.Spool.Bytes += fi.Size()
		}
		// Seals do not rewrite state.json: the newest segment may be
		// ahead of it.
		if _, _, last, ok := batch.ParseSegmentName(e.Name()); ok && last > s.LastSeq {
			s.LastSeq = last
		}
	}
	if held, size, err := spool.Held(dir); err == nil && held > 0 {
		s.Spool.HeldRecords, s.Spool.Bytes = held, s.Spool.Bytes+size
	}
	pid := lockHolder(dir)
	s.Running = pid != 0 && s.PID == pid && s.Running && now.Sub(s.UpdatedAt) < 10*statusEvery
	if !s.Running {
		s.PID = 0
	}
	return s, nil
}

func printShipStatus(w io.Writer, s shipStatus, now time.Time) {
	state := "not running"
	if s.Running {
		state = fmt.Sprintf("running (pid %d)", s.PID)
		if s.Unreachable != "" {
			state += ", " + s.Unreachable
		}
	}
	fmt.Fprintf(w, "shipper  stream %s (generation %d)  %s\n", s.Stream, s.Generation, state)
	if s.SiteRole != "" {
		fmt.Fprintf(w, "role     %s\n", s.SiteRole)
	}
	if s.Fenced != "" {
		fmt.Fprintf(w, "fenced   %s\n", s.Fenced)
	}
	if t := s.Tail; t != nil {
		switch {
		case t.AtEnd:
			fmt.Fprintf(w, "tail     %s: read to its end (%d bytes)\n", t.Path, t.Size)
		case t.OtherFile:
			fmt.Fprintf(w, "tail     %s: reading a rotated file (byte %d); the file now there has %d bytes\n", t.Path, t.ReadBytes, t.Size)
		default:
			fmt.Fprintf(w, "tail     %s: read %d of %d bytes\n", t.Path, t.ReadBytes, t.Size)
		}
	}
	if !s.UpdatedAt.IsZero() {
		fmt.Fprintf(w, "status   as of %s (%s ago)  ack %s\n", s.UpdatedAt.Local().Format(time.RFC3339), now.Sub(s.UpdatedAt).Round(time.Second), s.Ack)
	} else {
		fmt.Fprintf(w, "status   none published yet (the shipper has not run with this version)\n")
	}
	if win := s.Window; win != nil {
		if win.Open {
			bw := ""
			if win.BandwidthLimit > 0 {
				bw = fmt.Sprintf("; sending capped at %s/s per target", sizeString(win.BandwidthLimit))
			}
			fmt.Fprintf(w, "window   open until %s%s\n", win.Until.Local().Format(time.RFC3339), bw)
		} else {
			fmt.Fprintf(w, "window   closed; next opens %s\n", win.NextOpen.Local().Format(time.RFC3339))
		}
	}
	held := ""
	if s.Spool.HeldRecords > 0 {
		held = fmt.Sprintf(", %d record(s) held until a target says where the stream stands", s.Spool.HeldRecords)
	}
	switch e := s.Encryption; {
	case e == nil:
	case e.Encrypting:
		fmt.Fprintf(w, "encrypt  yes: %s for key %s\n", e.Scheme, strings.Join(e.Recipients, ", "))
	default:
		fmt.Fprintf(w, "encrypt  no: segments are sealed in plaintext\n")
	}
	fmt.Fprintf(w, "spool    %s: last seq %d, %d sealed segment(s) waiting%s, %s\n\n", s.Spool.Dir, s.LastSeq, s.Spool.SealedSegments, held, sizeString(s.Spool.Bytes))
	if len(s.Targets) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tSTORE\tRECEIVED\tAPPLIED\tLAG RECORDS\tLAG BYTES\tLAG\tLAST ERROR")
	for _, t := range s.Targets {
		name := t.Name
		if t.Async {
			name += " (async)"
		}
		applied, lag := "?", "-"
		if t.AppliedSeq != nil {
			applied = strconv.FormatUint(*t.AppliedSeq, 10)
		}
		if t.LagSeconds != nil {
			lag = (time.Duration(*t.LagSeconds * float64(time.Second))).Round(time.Millisecond).String()
		}
		errText := t.LastError
		if errText == "" {
			errText = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", name, t.Store, t.ReceivedSeq, applied, t.LagRecords, sizeString(t.LagBytes), lag, errText)
	}
	tw.Flush()
}

func readRecvStatus(dir string, now time.Time) (recvStatus, error) {
	// A stream of a receiver of many streams publishes in the shared
	// files of the state dir above while it runs.
	shared, err := readSharedRecvStatus(filepath.Dir(filepath.Clean(dir)))
	if err != nil {
		return recvStatus{Role: "receiver", State: dir}, err
	}
	return readRecvStatusShared(dir, now, shared)
}

// readRecvStatusShared is readRecvStatus with the shared files' entries
// of the state dir above, by stream.
func readRecvStatusShared(dir string, now time.Time, shared map[string]recvPublished) (recvStatus, error) {
	s := recvStatus{Role: "receiver", State: dir, SiteRole: "secondary"}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return s, fmt.Errorf("state dir %s: not found", dir)
	}
	if p, ok, err := receiver.LoadPromotion(dir); err != nil {
		return s, err
	} else if ok {
		s.SiteRole = "primary"
		s.Promoted = fmt.Sprintf("writes generation %d from seq %d (promoted on %s at %s)", p.Generation, p.ForkSeq+1, p.Site, p.Time.Format(time.RFC3339))
	}
	cp, ok, err := receiver.LoadCheckpoint(dir)
	if err != nil {
		return s, err
	}
	if ok {
		s.Stream, s.Generation, s.AppliedSeq, s.Segment, s.AppliedAt = cp.Stream, cp.Generation, cp.LastSeq, cp.Segment, cp.AppliedAt
		if !cp.AppliedAt.IsZero() {
			age := max(now.Sub(cp.AppliedAt).Seconds(), 0)
			s.CheckpointAgeSeconds = &age
		}
	}
	if pid := lockHolder(dir); pid != 0 {
		s.Running, s.PID = true, pid
		if pub, ok := readRecvPublished(dir, pid, now, shared); ok {
			s.UpdatedAt, s.Waiting, s.LastError, s.FailingSince, s.GapSince = pub.UpdatedAt, pub.Waiting, pub.LastError, pub.FailingSince, pub.GapSince
			if pub.StoredSeq != nil {
				lag := uint64(0)
				if *pub.StoredSeq > s.AppliedSeq {
					lag = *pub.StoredSeq - s.AppliedSeq
				}
				s.StoredSeq, s.LagRecords, s.LagSeconds = pub.StoredSeq, &lag, pub.LagSeconds
			}
		}
	}
	if s.Encryption, err = readRecvEncryption(dir); err != nil {
		return s, err
	}
	return s, nil
}

func printRecvStatus(w io.Writer, s recvStatus) {
	state := "not running"
	if s.Running {
		state = fmt.Sprintf("running (pid %d)", s.PID)
		if s.Waiting != "" {
			state += ", waiting for its store: " + s.Waiting
		}
	}
	fmt.Fprintf(w, "receiver  state %s  %s\n", s.State, state)
	if s.LastError != "" && s.Waiting == "" {
		fmt.Fprintf(w, "failing   since %s: %s\n", s.FailingSince.Local().Format(time.RFC3339), s.LastError)
	}
	if !s.GapSince.IsZero() {
		fmt.Fprintf(w, "gap       waiting on a missing segment since %s\n", s.GapSince.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "role      %s\n", s.SiteRole)
	if s.Promoted != "" {
		fmt.Fprintf(w, "promoted  %s\n", s.Promoted)
	}
	if s.Encryption != nil {
		fmt.Fprintf(w, "decrypt   %s\n", s.Encryption)
	}
	if s.Stream == "" {
		fmt.Fprintf(w, "checkpoint  none yet: nothing applied\n")
		return
	}
	fmt.Fprintf(w, "stream    %s (generation %d)\n", s.Stream, s.Generation)
	fmt.Fprintf(w, "applied   seq %d", s.AppliedSeq)
	if s.Segment != "" {
		fmt.Fprintf(w, " (segment %s)", s.Segment)
	}
	fmt.Fprintln(w)
	if s.CheckpointAgeSeconds != nil {
		fmt.Fprintf(w, "checkpoint moved %s ago, at %s\n", (time.Duration(*s.CheckpointAgeSeconds * float64(time.Second))).Round(time.Millisecond), s.AppliedAt.Local().Format(time.RFC3339))
	}
}
