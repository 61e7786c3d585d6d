package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// Sealing runs off the append path. When the open batch is due, handOff
// waits for the seal before it (at most one is in flight, so the previous
// segment's hash is known for the chain), starts a new journal file, gives
// the Builder to a sealer goroutine and opens the next batch in the spare
// Builder. The sealer finishes the compression, writes the segment
// (state.json follows in the background: SaveState), then makes the
// segment visible (Pending) and removes the journal file the batch was
// written to. Seal waits for all of it.

// sealJob is a batch handed to the sealer.
type sealJob struct {
	b      *batch.Builder
	reason string
	cursor []byte // source position after its last record, for the segment and state.json
	size   int64  // uncompressed bytes, counted by size() until sealed
	// syncTo, when set, is a journal position that must be durable before
	// the segment, whose metadata carries cursor, is written: the end of the
	// leftover of an entry the seal point split, when that entry moved the
	// cursor.
	syncTo uint64
	// old is the journal file the batch ends in when the hand-off started
	// a new one; nil when the batch's records stay in the current file
	// (JournalRotate), where recovery skips them by seq once sealed.
	old *journalFile
	// obsolete names more journal files that hold nothing once the batch
	// is sealed (the files a restart replayed).
	obsolete []string
	done     chan struct{} // closed when the seal is over, done or failed
}

// handOff hands the open batch to the sealer, due for reason with cursor
// the source position after its last record, and opens the next batch: it
// waits for the seal in flight, starts a new journal file and writes
// leftover there, the records of the current entry after the seal point,
// as an entry with cursor. callerCursor says that entry moved the cursor:
// then the segment's cursor covers the leftover, which the sealer makes
// durable first. in and mu held.
func (s *Spool) handOff(reason string, cursor []byte, leftover []batch.Record, callerCursor bool) error {
	if err := s.waitSealLocked(); err != nil {
		return err
	}
	job := &sealJob{reason: reason, cursor: append([]byte(nil), cursor...)}
	if cur := s.journals[len(s.journals)-1]; s.journalRotates(cur, len(leftover) > 0) {
		j, err := s.createJournal(s.builder.LastSeq()+1, os.O_EXCL)
		if err != nil {
			return s.fail(err)
		}
		s.journals = append(s.journals, j)
		job.old = cur
	}
	if len(leftover) > 0 {
		s.jbuf = appendEntry(s.jbuf[:0], leftover, cursor)
		if err := s.writeLeftover(s.jbuf); err != nil {
			return err
		}
		if callerCursor && s.cfg.Fsync != FsyncOff {
			job.syncTo = s.written
		}
	}
	s.startSeal(job)
	return nil
}

// journalRotates says whether a hand-off starts a new journal file after
// cur: always with a leftover, never while appends skip the journal
// (SetReplayable: cur holds nothing after the records it had before), else
// unless JournalRotate lets cur grow on. in and mu held.
func (s *Spool) journalRotates(cur *journalFile, leftover bool) bool {
	switch {
	case leftover:
		return true
	case s.replayable && !s.provisional:
		return false
	}
	return s.cfg.JournalRotate <= 0 || int64(cur.end-cur.start) >= s.cfg.JournalRotate
}

// writeLeftover writes a hand-off's leftover entry. Part of the caller's
// entry is already in the batch being handed off, so Append cannot refuse
// the call any more: a full disk is waited out here, with mu released so
// senders can confirm segments and free room (in stays held: no other
// append interleaves). Only a closing or failed spool gives up. in and mu
// held.
func (s *Spool) writeLeftover(buf []byte) error {
	wait := 50 * time.Millisecond
	var logged time.Time
	for {
		err := s.writeJournal(buf)
		if !errors.Is(err, ErrNoSpace) {
			return err
		}
		if s.closing || s.fatal != nil {
			return s.fail(err)
		}
		if time.Since(logged) > 30*time.Second {
			s.log.Warn("spool disk full: waiting for room to continue the journal", "dir", s.cfg.Dir, "err", err)
			logged = time.Now()
		}
		s.mu.Unlock()
		time.Sleep(wait)
		s.mu.Lock()
		wait = min(wait*2, 2*time.Second)
	}
}

// startSeal gives the open batch to a sealer goroutine as job and opens an
// empty batch in the spare Builder. No seal may be in flight: the hash of
// the last sealed segment is the new segment's predecessor. in and mu held.
func (s *Spool) startSeal(job *sealJob) {
	job.b = s.builder
	job.b.SetPrev(s.state.LastHash)
	job.size = job.b.Size()
	job.done = make(chan struct{})
	s.builder, s.spare = s.spare, nil
	s.builder.Reset(s.cfg.Stream, s.cfg.Generation, "") // its predecessor is being sealed
	s.sealing = job
	s.sealers.Go(func() { s.seal(job) })
}

// testHookBeforeJournalRemoval, if set, runs on the sealer goroutine after
// a seal is marked done and before it removes the journal files the seal
// made obsolete (tests stretch that window).
var testHookBeforeJournalRemoval func()

// waitSealLocked waits until no seal is in flight and returns the fatal
// error, if any. mu held, released while waiting.
func (s *Spool) waitSealLocked() error {
	for s.sealing != nil {
		done := s.sealing.done
		s.mu.Unlock()
		<-done
		s.mu.Lock()
	}
	return s.fatal
}

// sealResult is what a seal wrote.
type sealResult struct {
	state spoolState
	seg   SealedSegment
	meta  batch.Meta
}

// seal runs on the sealer goroutine: it writes job's batch as a sealed
// segment, then retires the journal files that held it. A failure fails
// the spool, which wakes every waiter.
func (s *Spool) seal(job *sealJob) {
	res, err := s.writeSealed(job)
	// The segment was written from the Builder's buffers: give them back
	// for the next batch's chunks now, not at the next hand-off.
	job.b.Reset(s.cfg.Stream, s.cfg.Generation, "")
	s.mu.Lock()
	if err != nil {
		s.fail(err)
	} else {
		s.commitLocked(job, res)
	}
	s.sealing = nil
	s.spare = job.b
	s.notify()
	s.mu.Unlock()
	if err == nil {
		// The segment is durable: what the files hold is sealed, or
		// copied to the live file (a leftover). If a crash brings them
		// back, recovery skips those records by seq.
		if job.old != nil {
			job.old.f.Close()
			job.obsolete = append(job.obsolete, job.old.name)
		}
		if testHookBeforeJournalRemoval != nil {
			testHookBeforeJournalRemoval()
		}
		if err := s.removeJournals(job.obsolete); err != nil {
			s.log.Warn("cannot remove a journal file the seal made obsolete; recovery will skip it", "err", err)
		}
	}
	close(job.done)
}

// writeSealed writes job's segment: straight under its final name,
// fsynced with its directory entry, one journal commit. Its metadata
// carries the source cursor after its records (SourceCursor), so the
// segment alone tells recovery where the stream and the source stand:
// state.json is not rewritten per seal (SaveState writes it in the
// background so confirmed segments can leave the spool). A crash before
// the fsync leaves a torn file, or none, that recovery removes: the
// journal still has the records, or lost them together with their
// cursor, and no target was sent it. The journal is left alone: records
// it still holds are recognised as sealed by their seq on recovery, and
// entries lost unsynced held only sealed records whose cursor the segment
// now carries.
func (s *Spool) writeSealed(job *sealJob) (sealResult, error) {
	if job.syncTo > 0 {
		if err := s.waitDurable(context.Background(), job.syncTo, false); err != nil {
			return sealResult{}, err
		}
	}
	job.b.SetSourceCursor(job.cursor)
	// The segment is written from the Builder's own buffers, not copied
	// into one fresh slice first (batch.Builder.SealPieces); they stay
	// the Builder's until its next Reset, after this seal.
	pieces, meta, err := job.b.SealPieces(s.cfg.Now())
	if err != nil {
		return sealResult{}, err
	}
	// A full disk is waited out: the batch stays in the journal and in
	// memory, appends go on until the next hand-off waits for this seal
	// (backpressure), and the seal is written again once there is room.
	// Only closing the spool gives up; the journal still has the records.
	wait := 100 * time.Millisecond
	var lastLog time.Time
	for {
		res, err := s.writeSegment(job, pieces, meta, job.b.Hash(), job.b.PiecesFresh())
		if err == nil || !isNoSpace(err) {
			return res, err
		}
		// writeSegmentFile removed what this attempt wrote.
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if closing {
			return sealResult{}, fmt.Errorf("seal %s: %w (%w); its records stay in the journal", meta.Name(), ErrNoSpace, err)
		}
		if time.Since(lastLog) > 30*time.Second {
			s.log.Warn("spool disk full: waiting for room to seal", "segment", meta.Name(), "dir", s.cfg.Dir, "err", err)
			lastLog = time.Now()
		}
		time.Sleep(wait)
		wait = min(wait*2, 5*time.Second)
	}
}

// writeSegment writes a sealed segment, the concatenation of pieces,
// durably (see writeSealed). hash is its batch.Hash, which the Builder
// computed while sealing it. fresh says the pieces are freshly allocated
// memory (writeSegmentFile).
func (s *Spool) writeSegment(job *sealJob, pieces [][]byte, meta batch.Meta, hash string, fresh bool) (sealResult, error) {
	name := meta.Name()
	if err := s.writeSegmentFile(s.path("sealed", name), pieces, fresh); err != nil {
		return sealResult{}, err
	}
	var size int64
	for _, p := range pieces {
		size += int64(len(p))
	}
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	st.SealedSeq, st.LastHash, st.Cursor, st.Segment = meta.LastSeq, hash, job.cursor, name
	seg := SealedSegment{Name: name, FirstSeq: meta.FirstSeq, LastSeq: meta.LastSeq, Size: size}
	s.log.Debug("sealed segment", "segment", name, "records", meta.Records, "bytes", size, "reason", job.reason)
	return sealResult{state: st, seg: seg, meta: meta}, nil
}

// commitLocked makes a written seal visible: Pending lists the segment,
// the next segment chains to it, and the journal file of its batch is no
// longer needed. mu held.
func (s *Spool) commitLocked(job *sealJob, res sealResult) {
	s.state = res.state
	s.sealed = append(s.sealed, res.seg)
	s.sealedBytes += res.seg.Size
	s.stats.SegmentsOut++
	s.stats.BytesSealed += res.seg.Size
	s.stats.UncompSealed += res.meta.UncompressedSize
	if old := job.old; old != nil {
		s.journals = slices.DeleteFunc(s.journals, func(j *journalFile) bool { return j == old })
		// Every record in the old file is sealed now or, past the seal
		// point, in the newer file, where Append returned its position.
		s.synced = max(s.synced, old.end)
	}
}

// writeSegmentFile writes the concatenation of pieces to path durably:
// file and directory entry
// (with a Committer, through its group sync: Committer).
// The name must be new (O_EXCL: a segment name is never overwritten). On
// failure the file it created is removed: a full disk is retried from
// scratch, and a failed fsync leaves nothing recovery could take for a
// sealed segment.
func (s *Spool) writeSegmentFile(path string, pieces [][]byte, fresh bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("seal: %s exists already; a segment name is never overwritten (is another process using this spool?): %w", path, err)
	}
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(path)
		return err
	}
	// Fresh memory goes through a long-lived buffer (fsutil.WriteBounced);
	// a Builder's chunk buffers are long-lived already (batch's outPool).
	for _, p := range pieces {
		var err error
		if fresh {
			_, err = fsutil.WriteBounced(func(p []byte) (int, error) { return s.cfg.WriteFile(f, p) }, p)
		} else {
			err = writeFull(s.cfg.WriteFile, f, p)
		}
		if err != nil {
			return fail(fmt.Errorf("write %s: %w", path, err))
		}
	}
	// The file and its directory entry are made durable together: by the
	// Committer's next group sync, shared with the other spools' seals
	// and journals, or else by an fsync of each.
	if s.cfg.Committer != nil && s.cfg.Fsync == FsyncBatch {
		if shared, err := s.cfg.Committer.syncShared(s, f); shared {
			if err != nil {
				return fail(fmt.Errorf("sync %s: %w", path, err))
			}
			if err := f.Close(); err != nil {
				os.Remove(path)
				return err
			}
			return nil
		}
	}
	fileErr, dirErr := fsutil.SyncWithDir(func() error { return s.cfg.SyncFile(f) }, filepath.Dir(path))
	if fileErr != nil {
		return fail(fmt.Errorf("fsync %s: %w", path, fileErr))
	}
	if dirErr != nil {
		return fail(dirErr)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// writeState replaces state.json with st durably: temp file fsynced with
// SyncFile, rename, directory fsync. It does not touch s.state.
func (s *Spool) writeState(st spoolState) error { return s.replaceState(st, false) }

// replaceState is writeState; with group set and a Committer that takes
// seals, its group syncs stand in for the fsyncs: one covers the temp file
// before the rename, the next the rename before replaceState returns.
// SaveState, the rewrite every stream repeats, shares them; the rarer
// writes (Open, Continue, Hold) fsync on their own.
func (s *Spool) replaceState(st spoolState, group bool) error {
	b, _ := json.Marshal(st)
	tmp := s.path(".state.json.tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write state.json: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	shared := false
	if c := s.cfg.Committer; group && c != nil && s.cfg.Fsync == FsyncBatch {
		if shared, err = c.syncShared(s, f); shared && err != nil {
			f.Close()
			return fmt.Errorf("sync %s: %w", tmp, err)
		}
	}
	if !shared {
		if err := s.cfg.SyncFile(f); err != nil {
			f.Close()
			return fmt.Errorf("fsync %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.path("state.json")); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	if shared {
		// The rename's directory entry: the Committer's next sync, or
		// (it stopped meanwhile) DIR's fsync below.
		if shared, err = s.cfg.Committer.syncShared(s, nil); shared {
			if err != nil {
				return fmt.Errorf("sync the rename of %s to %s: %w", tmp, s.path("state.json"), err)
			}
			return nil
		}
	}
	return fsutil.SyncDir(s.cfg.Dir)
}

// scanSealed loads the sealed/ listing and adopts the segments sealed
// after the last state.json write (adoptSealed).
func (s *Spool) scanSealed() error {
	ents, err := os.ReadDir(s.path("sealed"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			if base := strings.TrimSuffix(strings.TrimPrefix(name, "."), ".tmp"); base == s.state.Segment && base != "" {
				if _, err := os.Stat(s.path("sealed", base)); errors.Is(err, os.ErrNotExist) {
					// Crashed between state.json and the rename (ferry
					// versions that sealed through a temp file): finish it.
					if err := s.adoptTemp(name, base); err != nil {
						return err
					}
					name = base
					goto segment
				}
			}
			os.Remove(s.path("sealed", name)) // temp file of an interrupted seal
			continue
		}
	segment:
		gen, first, last, ok := batch.ParseSegmentName(name)
		if !ok || gen != s.cfg.Generation {
			return fmt.Errorf("unexpected file sealed/%s; move it away", name)
		}
		fi, err := os.Stat(s.path("sealed", name))
		if err != nil {
			return err
		}
		s.sealed = append(s.sealed, SealedSegment{Name: name, FirstSeq: first, LastSeq: last, Size: fi.Size()})
		s.sealedBytes += fi.Size()
	}
	if err := s.addParts(); err != nil {
		return err
	}
	sort.Slice(s.sealed, func(i, j int) bool { return s.sealed[i].FirstSeq < s.sealed[j].FirstSeq })
	return s.adoptSealed()
}

// adoptSealed brings state.json up to the segments sealed since it was
// last written (seals do not rewrite it): each must continue the chain
// from it, and its metadata carries the source cursor after its records.
// Only the newest may be damaged, by a crash during its seal, before its
// fsync: it is removed, as no target was sent it and the journal replays
// its records (or lost them with their cursor).
func (s *Spool) adoptSealed() error {
	st := s.state
	adopted := 0
	for i := 0; i < len(s.sealed); i++ {
		seg := s.sealed[i]
		if seg.LastSeq <= st.SealedSeq {
			continue
		}
		data, err := s.readSealedFile(seg)
		if err != nil {
			return err
		}
		sg, err := batch.Open(data)
		if err != nil && i == len(s.sealed)-1 && !seg.IsPart() {
			s.log.Warn("removing a segment whose seal a crash interrupted; its records are replayed from the journal",
				"segment", seg.Name, "err", err)
			if err := os.Remove(s.path("sealed", seg.Name)); err != nil {
				return err
			}
			if err := fsutil.SyncDir(s.path("sealed")); err != nil {
				return err
			}
			s.sealedBytes -= seg.Size
			s.sealed = s.sealed[:i]
			break
		}
		if err != nil {
			return fmt.Errorf("sealed/%s: %w; the spool is damaged", seg.Name, err)
		}
		if seg.FirstSeq != st.SealedSeq+1 || sg.Meta.PrevSHA256 != st.LastHash {
			return fmt.Errorf("sealed/%s does not continue the spool's chain after seq %d (state.json); the spool is damaged",
				seg.Name, st.SealedSeq)
		}
		st.SealedSeq, st.LastHash, st.Segment = seg.LastSeq, sg.Hash, seg.Name
		if sg.Meta.SourceCursor != nil {
			st.Cursor = sg.Meta.SourceCursor
		}
		adopted++
	}
	if adopted == 0 {
		return nil
	}
	if err := s.writeState(st); err != nil {
		return err
	}
	s.state = st
	s.log.Info("state.json brought up to the sealed segments", "segments", adopted, "seq", st.SealedSeq)
	return nil
}

// adoptTemp publishes the temp file of the segment state.json names, after
// checking it is the segment state.json describes.
func (s *Spool) adoptTemp(tmpName, name string) error {
	data, err := os.ReadFile(s.path("sealed", tmpName))
	if err != nil {
		return err
	}
	seg, err := batch.Open(data)
	if err != nil || seg.Hash != s.state.LastHash {
		return fmt.Errorf("sealed/%s does not match state.json (%v); the spool is damaged", tmpName, err)
	}
	if err := os.Rename(s.path("sealed", tmpName), s.path("sealed", name)); err != nil {
		return err
	}
	s.log.Info("finished publishing a segment sealed before a crash", "segment", name)
	return fsutil.SyncDir(s.path("sealed"))
}

// writeFull writes p to f with write, as os.File.Write does: all of it,
// or an error (a short write without one is io.ErrShortWrite).
func writeFull(write func(*os.File, []byte) (int, error), f *os.File, p []byte) error {
	n, err := write(f, p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return err
}
