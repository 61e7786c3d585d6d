package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// A fresh spool cannot number records before the shipper knows where the
// stream stands in its targets: seq 1 beside existing segments would fork
// the stream. When no target answers at start, the shipper Holds the
// spool instead of waiting: records are then journaled, durable as usual,
// in DIR/provisional with provisional seqs from 1, nothing is sealed, and
// state.json says "unplaced". Continue places them: it writes them again,
// renumbered after the stream's newest seq, as the journal file named
// after their first real seq, fsyncs it, commits state.json (placed, at
// the stream's seq and hash: the commit point), removes the provisional
// file and seals the records by the flush policy.
//
// Recovery follows state.json: an unplaced spool replays only the
// provisional file (journal files there are what an interrupted placement
// left before it committed: removed); a placed one removes a provisional
// file that is left (its records are in the journal).

const provisionalName = "provisional"

// Hold makes a fresh spool take records before it knows where the stream
// stands: they get provisional seqs and wait, unsealed, for Continue. It
// rewrites state.json. Call it before anything else uses the spool.
func (s *Spool) Hold() error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if s.provisional {
		return nil
	}
	if s.lastSeq != 0 || len(s.sealed) != 0 || s.state.SealedSeq != 0 {
		return fmt.Errorf("spool is not fresh")
	}
	st := s.state
	st.Unplaced = true
	if err := s.writeState(st); err != nil {
		return s.fail(err)
	}
	s.state = st
	// The run's journal file is empty: the provisional file replaces it.
	for _, j := range s.journals {
		j.f.Close()
		os.Remove(s.path(j.name))
	}
	s.journals = nil
	f, err := os.OpenFile(s.path(provisionalName), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return s.fail(fmt.Errorf("create %s: %w", provisionalName, err))
	}
	s.journals = []*journalFile{{f: f, name: provisionalName, start: s.written, end: s.written, synced: s.written}}
	s.provisional = true
	return nil
}

// Held reports whether the spool holds records (or takes them) with
// provisional seqs, waiting for Continue.
func (s *Spool) Held() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.provisional
}

// recoverProvisional is recovery of an unplaced spool: it replays the
// provisional file up to a torn tail, which it cuts off, and removes
// journal files an interrupted placement left.
func (s *Spool) recoverProvisional() error {
	names, err := listJournals(s.cfg.Dir)
	if err != nil {
		return err
	}
	if err := s.removeJournals(names); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path(provisionalName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", provisionalName, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("read %s: %w", provisionalName, err)
	}
	off := 0
	for off < len(data) {
		recs, cursor, n, err := parseEntry(data[off:])
		if errors.Is(err, errTornEntry) {
			s.log.Warn("provisional journal has a torn tail from an interrupted write; dropping it",
				"journal", provisionalName, "offset", off, "bytes", len(data)-off)
			break
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("%s offset %d: %w", provisionalName, off, err)
		}
		for i := range recs {
			if recs[i].Seq != s.lastSeq+1 {
				f.Close()
				return fmt.Errorf("%s: record seq %d follows %d (gap)", provisionalName, recs[i].Seq, s.lastSeq)
			}
			s.lastSeq = recs[i].Seq
			s.provBytes += int64(recs[i].FramedSize())
		}
		if len(recs) > 0 {
			s.cursor = bytes.Clone(cursor)
		}
		off += n
	}
	if err := f.Truncate(int64(off)); err != nil {
		f.Close()
		return fmt.Errorf("truncate %s: %w", provisionalName, err)
	}
	if _, err := f.Seek(int64(off), io.SeekStart); err != nil {
		f.Close()
		return err
	}
	if err := s.cfg.SyncFile(f); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", provisionalName, err)
	}
	s.written, s.synced = uint64(off), uint64(off)
	s.journals = []*journalFile{{f: f, name: provisionalName, start: 0, end: s.written, synced: s.written, dirSynced: true}}
	s.provisional = true
	if s.lastSeq > 0 {
		s.log.Info("spool holds records not yet numbered: they are sent once a target says where the stream stands",
			"records", s.lastSeq, "spool", s.cfg.Dir)
	}
	return nil
}

// place is Continue for a held spool (see the top of this file). in and
// mu held.
func (s *Spool) place(gen uint32, lastSeq uint64, lastHash string) error {
	if err := s.syncLocked(); err != nil {
		return err
	}
	prov := s.journals[len(s.journals)-1]
	data, err := os.ReadFile(s.path(provisionalName))
	if err != nil {
		return fmt.Errorf("read %s: %w", provisionalName, err)
	}
	type entry struct {
		recs   []batch.Record
		cursor []byte
	}
	var entries []entry
	var buf []byte
	for off := 0; off < len(data); {
		recs, cursor, n, err := parseEntry(data[off:])
		if err != nil {
			return fmt.Errorf("%s offset %d: %w", provisionalName, off, err)
		}
		for i := range recs {
			recs[i].Seq += lastSeq
		}
		buf = appendEntry(buf, recs, cursor)
		entries = append(entries, entry{recs, cursor})
		off += n
	}
	name := journalName(lastSeq + 1)
	f, err := os.OpenFile(s.path(name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create journal: %w", err)
	}
	if _, err := s.cfg.WriteFile(f, buf); err != nil {
		f.Close()
		os.Remove(s.path(name))
		return fmt.Errorf("write journal %s: %w", name, err)
	}
	fileErr, dirErr := fsutil.SyncWithDir(func() error { return s.cfg.SyncFile(f) }, s.cfg.Dir)
	if err := errors.Join(fileErr, dirErr); err != nil {
		f.Close()
		return s.fail(fmt.Errorf("fsync journal %s: %w", name, err))
	}
	st := s.state
	st.Generation, st.SealedSeq, st.LastHash, st.Unplaced = gen, lastSeq, lastHash, false
	if err := s.writeState(st); err != nil {
		f.Close()
		return s.fail(err)
	}
	// Committed: the records are the stream's from here on.
	prov.f.Close()
	if err := os.Remove(s.path(provisionalName)); err != nil {
		s.log.Warn("cannot remove the provisional journal; the next start will", "err", err)
	}
	s.state, s.stateSealed, s.stateAt = st, st.SealedSeq, time.Now()
	s.cfg.Generation = gen
	s.provisional, s.provBytes = false, 0
	s.written += uint64(len(buf))
	s.synced = s.written
	s.journals = []*journalFile{{f: f, name: name, start: s.written - uint64(len(buf)), end: s.written, synced: s.written, dirSynced: true}}
	s.lastSeq = lastSeq
	s.builder.Reset(s.cfg.Stream, gen, lastHash)
	// Seal by size and count as the appends would have; the journal file
	// keeps every record until the next hand-off, and recovery skips the
	// sealed ones by seq.
	now := s.cfg.Now()
	for _, e := range entries {
		for i := range e.recs {
			if s.builder.Records() == 0 {
				s.firstAt = now
			}
			if err := s.builder.Add(&e.recs[i]); err != nil {
				return s.fail(err)
			}
			s.lastSeq = e.recs[i].Seq
			if due, why := s.cfg.Policy.Due(s.builder.Size(), s.builder.Records(), s.firstAt, now); due {
				if err := s.waitSealLocked(); err != nil {
					return err
				}
				s.startSeal(&sealJob{reason: why, cursor: bytes.Clone(e.cursor)})
			}
		}
		s.cursor = bytes.Clone(e.cursor)
	}
	s.stats.LastSeq = s.lastSeq
	s.log.Info("spool numbered the records it held: the stream continues", "generation", gen,
		"first_seq", lastSeq+1, "last_seq", s.lastSeq)
	s.notify()
	return nil
}
