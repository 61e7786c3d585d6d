package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// The journal holds the records of the open batch and of the batch being
// sealed, in one or two files (see journal files below). It is append-only
// and made of entries; one entry is the unit of atomicity: a group of records
// together with the source cursor reached after them, so a restart neither
// loses nor repeats input. Entry layout (big-endian):
//
//	u32 body length | u32 CRC-32C of body | body
//	body: u8 kind (1) | u32 cursor length | cursor | record frames (batch.AppendFrame)
//
// A torn or damaged tail (short entry, bad CRC) marks the end of the journal:
// those bytes were never fsynced, so the records in them were never accepted.
const (
	entryHeader     = 8
	entryKindRecord = 1
	maxEntryBody    = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var errTornEntry = errors.New("torn journal entry")

// appendEntry appends one journal entry holding recs and cursor to dst.
func appendEntry(dst []byte, recs []batch.Record, cursor []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, entryHeader)...)
	dst = append(dst, entryKindRecord)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(cursor)))
	dst = append(dst, cursor...)
	for i := range recs {
		dst = batch.AppendFrame(dst, &recs[i])
	}
	body := dst[start+entryHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(body, crcTable))
	return dst
}

// parseEntry decodes the entry at the front of b. It returns the records
// (aliasing b), the cursor, and the entry's total length. A short or
// damaged entry yields errTornEntry.
func parseEntry(b []byte) ([]batch.Record, []byte, int, error) {
	if len(b) < entryHeader {
		return nil, nil, 0, errTornEntry
	}
	n := binary.BigEndian.Uint32(b)
	if n > maxEntryBody || n < 5 || uint64(len(b)-entryHeader) < uint64(n) {
		return nil, nil, 0, errTornEntry
	}
	body := b[entryHeader : entryHeader+n]
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(b[4:]) {
		return nil, nil, 0, errTornEntry
	}
	if body[0] != entryKindRecord {
		return nil, nil, 0, fmt.Errorf("journal entry kind %d unknown", body[0])
	}
	cl := binary.BigEndian.Uint32(body[1:])
	if uint64(cl) > uint64(len(body)-5) {
		return nil, nil, 0, errTornEntry
	}
	cursor := body[5 : 5+cl]
	rest := body[5+cl:]
	var recs []batch.Record
	for len(rest) > 0 {
		r, k, err := batch.ParseFrame(rest)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("journal record: %w", err)
		}
		recs = append(recs, r)
		rest = rest[k:]
	}
	return recs, cursor, entryHeader + int(n), nil
}

// Journal files. The journal is a series of files DIR/journal-<seq>, each
// named after the seq of its first record in 16 hex digits (so names sort
// in seq order). Appends go to the newest. When a batch is handed to the
// sealer, a new file starts, named after the seq that follows the batch;
// the records of the entry the seal point split (the leftover) are written
// again at its start, with that entry's cursor. The older file is removed
// once the batch's segment is durable, so at most two files are live: the
// sealing batch's and the open batch's.
//
// With Config.JournalRotate set (the shipper sets it when appends
// wait for targets' acks, and nothing commits the journal), a hand-off
// keeps the current file until it holds JournalRotate bytes, unless an
// entry was split: then its batches' records stay in it after they are
// sealed, and recovery skips them by seq as it skips any sealed record.
//
// A newer file is made durable only after every older live one is durable
// or its batch is sealed. Recovery relies on that: it replays the files in
// name order (a file named "journal", the single journal of ferry versions
// before the rotation, first), skipping records already sealed or already
// replayed from an older file (a leftover is in both). Within a file a
// torn entry ends the file and a jump in seq is a gap (an error). A file
// that starts past the records recovered so far follows an older file that
// lost its unsynced tail in a crash: nothing in it was acknowledged, so it
// and any later file are dropped.
const (
	journalPrefix = "journal-"
	legacyJournal = "journal"
)

func journalName(first uint64) string { return fmt.Sprintf("%s%016x", journalPrefix, first) }

// parseJournalName returns the seq a journal file's name says its first
// record has.
func parseJournalName(name string) (uint64, bool) {
	hex, ok := strings.CutPrefix(name, journalPrefix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	first, err := strconv.ParseUint(hex, 16, 64)
	return first, err == nil
}

// journalFile is one live journal file. Positions are logical: bytes ever
// written to the journal, over all its files.
type journalFile struct {
	f         *os.File
	name      string
	start     uint64 // position of its first byte
	end       uint64 // position after its last byte
	synced    uint64 // position up to which its bytes are durable
	dirSynced bool   // its directory entry is durable
}

// listJournals returns the journal files in dir in replay order.
func listJournals(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	legacy := false
	for _, e := range ents {
		switch _, ok := parseJournalName(e.Name()); {
		case e.Name() == legacyJournal:
			legacy = true
		case ok:
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if legacy {
		names = append([]string{legacyJournal}, names...)
	}
	return names, nil
}

// replayJournals adds the records of the journal files names (in replay
// order) that no sealed segment holds to the open batch, following the
// rules above, and returns how many it added. The cursor becomes that of
// the last entry that added any.
func (s *Spool) replayJournals(names []string) (int, error) {
	replayed := 0
	for k, name := range names {
		first, numbered := parseJournalName(name)
		if numbered && first > s.lastSeq+1 && k > 0 {
			s.log.Warn("journal file starts past the records recovered from the one before, which lost its unsynced tail in a crash; "+
				"dropping it and any later file (nothing in them was acknowledged)",
				"journal", name, "seq", first, "recovered_seq", s.lastSeq)
			break
		}
		data, err := os.ReadFile(s.path(name))
		if err != nil {
			return 0, fmt.Errorf("read journal: %w", err)
		}
		base := s.lastSeq // sealed, or replayed from an older file
		off := 0
		for off < len(data) {
			recs, cursor, n, err := parseEntry(data[off:])
			if errors.Is(err, errTornEntry) {
				s.log.Warn("journal has a torn tail from an interrupted write; dropping it",
					"journal", name, "offset", off, "bytes", len(data)-off)
				break
			}
			if err != nil {
				return 0, fmt.Errorf("journal %s offset %d: %w", name, off, err)
			}
			contributes := false
			for i := range recs {
				r := &recs[i]
				if r.Seq <= base {
					continue
				}
				if r.Seq != s.lastSeq+1 {
					return 0, fmt.Errorf("journal %s: record seq %d follows %d (gap)", name, r.Seq, s.lastSeq)
				}
				if s.builder.Records() == 0 {
					s.firstAt = s.cfg.Now()
				}
				if err := s.builder.Add(r); err != nil {
					return 0, err
				}
				s.lastSeq = r.Seq
				contributes = true
				replayed++
			}
			// An entry whose records are all sealed is older than
			// state.json's cursor (a seal records the cursor after its
			// records), and newer entries may have been lost unsynced; an
			// entry whose records were all replayed from an older file is
			// a leftover copy with the same cursor. So only entries adding
			// records move the cursor.
			if contributes {
				s.cursor = bytes.Clone(cursor)
			}
			off += n
		}
	}
	return replayed, nil
}

// createJournal creates the journal file whose first record will have seq
// first; flag is os.O_EXCL or os.O_TRUNC. The file starts at the current
// journal position.
func (s *Spool) createJournal(first uint64, flag int) (*journalFile, error) {
	name := journalName(first)
	f, err := os.OpenFile(s.path(name), os.O_WRONLY|os.O_CREATE|flag, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create journal: %w", err)
	}
	return &journalFile{f: f, name: name, start: s.written, end: s.written, synced: s.written}, nil
}

// removeJournals removes the journal files names, which hold nothing
// recovery needs.
func (s *Spool) removeJournals(names []string) error {
	for _, n := range names {
		if err := os.Remove(s.path(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove old journal: %w", err)
		}
	}
	return nil
}

// writeJournal appends buf to the newest journal file. mu held.
func (s *Spool) writeJournal(buf []byte) error {
	j := s.journals[len(s.journals)-1]
	if n, err := s.cfg.WriteFile(j.f, buf); err != nil {
		if isNoSpace(err) && s.unwrite(j, n) == nil {
			// The journal ends at an entry boundary again and nothing was
			// accepted: the caller may retry once there is room.
			return fmt.Errorf("write journal %s: %w (%w)", s.path(j.name), ErrNoSpace, err)
		}
		return s.fail(fmt.Errorf("write journal %s: %w", j.name, err))
	}
	s.written += uint64(len(buf))
	j.end = s.written
	return nil
}

// journalSync is an fsync a commit needs: file j up to end, and first its
// directory entry when dir is set.
type journalSync struct {
	j   *journalFile
	end uint64
	dir bool
}

// pendingSyncsLocked lists the fsyncs that make everything written to the
// journal so far durable, oldest file first. mu held.
func (s *Spool) pendingSyncsLocked() []journalSync {
	var todo []journalSync
	for _, j := range s.journals {
		if j.synced < j.end {
			todo = append(todo, journalSync{j: j, end: j.end, dir: !j.dirSynced})
		}
	}
	return todo
}

// syncJournals performs todo in order and stops at the first failure,
// returning how many succeeded. An older file is durable before a newer
// one, so no durable record follows records a crash could still lose.
func (s *Spool) syncJournals(todo []journalSync) (int, error) {
	for i, t := range todo {
		if t.dir {
			if err := fsutil.SyncDir(s.cfg.Dir); err != nil {
				return i, err
			}
		}
		if err := s.cfg.SyncFile(t.j.f); err != nil {
			return i, fmt.Errorf("fsync journal %s: %w", t.j.name, err)
		}
	}
	return len(todo), nil
}

// finishSyncsLocked records the first n fsyncs of todo as done and, when
// all were, the journal as durable up to target. A failure on a file the
// sealer retired meanwhile (its batch is sealed) only means trying again
// without it; any other fails the spool. mu held.
func (s *Spool) finishSyncsLocked(todo []journalSync, n int, err error, target uint64) {
	for _, t := range todo[:n] {
		t.j.synced = max(t.j.synced, t.end)
		if t.dir {
			t.j.dirSynced = true
		}
	}
	if err != nil {
		if slices.Contains(s.journals, todo[n].j) {
			s.fail(err)
		}
		return
	}
	s.synced = max(s.synced, target)
}

// syncLocked makes the whole journal durable with mu held (fsync "always",
// Close).
func (s *Spool) syncLocked() error {
	target, todo := s.written, s.pendingSyncsLocked()
	n, err := s.syncJournals(todo)
	s.finishSyncsLocked(todo, n, err, target)
	if err != nil {
		return s.fail(err)
	}
	return nil
}

// ErrNoSpace is returned by Append when the spool's file system is full:
// nothing of the call was accepted, the spool is intact, and the call may
// be retried once there is room (Shipper's appends wait and retry).
var ErrNoSpace = errors.New("no space left for the spool")

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// unwrite takes back the n bytes a failed write left at the end of j.
func (s *Spool) unwrite(j *journalFile, n int) error {
	off, err := j.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if err := j.f.Truncate(off - int64(n)); err != nil {
		return err
	}
	_, err = j.f.Seek(off-int64(n), io.SeekStart)
	return err
}
