package shipper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
// Builder. The sealer finishes the compression, writes the segment and
// state.json, then makes the segment visible (Pending) and removes the
// journal file the batch was written to. Seal waits for all of it.

// sealJob is a batch handed to the sealer.
type sealJob struct {
	b      *batch.Builder
	reason string
	cursor []byte // source position after its last record, for state.json
	size   int64  // uncompressed bytes, counted by size() until sealed
	// syncTo, when set, is a journal position that must be durable before
	// state.json names cursor: the end of the leftover of an entry the seal
	// point split, when that entry moved the cursor.
	syncTo uint64
	old    *journalFile // the journal file the batch was written to
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
// then state.json's cursor covers the leftover, which the sealer makes
// durable first. in and mu held.
func (s *Spool) handOff(reason string, cursor []byte, leftover []batch.Record, callerCursor bool) error {
	if err := s.waitSealLocked(); err != nil {
		return err
	}
	old := s.journals[len(s.journals)-1]
	j, err := s.createJournal(s.builder.LastSeq()+1, os.O_EXCL)
	if err != nil {
		return s.fail(err)
	}
	s.journals = append(s.journals, j)
	job := &sealJob{reason: reason, cursor: append([]byte(nil), cursor...), old: old}
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
	go s.seal(job)
}

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
	data  []byte
}

// seal runs on the sealer goroutine: it writes job's batch as a sealed
// segment recorded in state.json, then retires the journal files that held
// it. A failure fails the spool, which wakes every waiter.
func (s *Spool) seal(job *sealJob) {
	res, err := s.writeSealed(job)
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
		// After state.json: what the files hold is sealed, or copied to
		// the live file (a leftover). If a crash brings them back,
		// recovery skips those records by seq.
		if job.old != nil {
			job.old.f.Close()
			job.obsolete = append(job.obsolete, job.old.name)
		}
		if err := s.removeJournals(job.obsolete); err != nil {
			s.log.Warn("cannot remove a journal file the seal made obsolete; recovery will skip it", "err", err)
		}
	}
	close(job.done)
}

// writeSealed writes job's segment. Order: the segment under a temp name
// (fsynced, directory fsynced), then state.json naming it with the cursor
// after its records, then the rename. A crash before state.json leaves a
// temp file recovery deletes (the journal still has the records, or lost
// them together with their cursor); after it, recovery finishes the
// rename. So a sealed segment never exists without the cursor that goes
// with it. The journal is left alone: records it still holds are
// recognised as sealed by their seq on recovery, and entries lost unsynced
// held only sealed records whose cursor state.json now carries.
func (s *Spool) writeSealed(job *sealJob) (sealResult, error) {
	if job.syncTo > 0 {
		if err := s.waitDurable(context.Background(), job.syncTo, false); err != nil {
			return sealResult{}, err
		}
	}
	data, meta, err := job.b.Seal(s.cfg.Now())
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
		res, err := s.writeSegment(job, data, meta)
		if err == nil || !isNoSpace(err) {
			return res, err
		}
		// The temp files are rewritten (truncated) by the next attempt;
		// never removed here: state.json may already name the segment.
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

// writeSegment writes a sealed segment and the state.json naming it (see
// writeSealed).
func (s *Spool) writeSegment(job *sealJob, data []byte, meta batch.Meta) (sealResult, error) {
	name := meta.Name()
	final := s.path("sealed", name)
	tmp := s.path("sealed", "."+name+".tmp")
	if err := s.writeSegmentTemp(tmp, data); err != nil {
		return sealResult{}, err
	}
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	st.SealedSeq, st.LastHash, st.Cursor, st.Segment = meta.LastSeq, batch.Hash(data), job.cursor, name
	if err := s.writeState(st); err != nil {
		return sealResult{}, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return sealResult{}, fmt.Errorf("publish sealed/%s: %w", name, err)
	}
	seg := SealedSegment{Name: name, FirstSeq: meta.FirstSeq, LastSeq: meta.LastSeq, Size: int64(len(data))}
	s.log.Debug("sealed segment", "segment", name, "records", meta.Records, "bytes", len(data), "reason", job.reason)
	return sealResult{state: st, seg: seg, meta: meta, data: data}, nil
}

// commitLocked makes a written seal visible: Pending lists the segment,
// the next segment chains to it, and the journal file of its batch is no
// longer needed. mu held.
func (s *Spool) commitLocked(job *sealJob, res sealResult) {
	s.state = res.state
	s.sealed = append(s.sealed, res.seg)
	s.newest, s.newestData = res.seg, res.data
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
	// The live file was created before the seal began, so state.json's
	// directory fsync made its entry durable.
	for _, j := range s.journals {
		j.dirSynced = true
	}
}

// writeSegmentTemp writes data to tmp durably: file and directory entry.
func (s *Spool) writeSegmentTemp(tmp string, data []byte) error {
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := s.cfg.WriteFile(f, data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := s.cfg.SyncFile(f); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return fsutil.SyncDir(filepath.Dir(tmp))
}

// writeState replaces state.json with st durably: temp file fsynced with
// SyncFile, rename, directory fsync. It does not touch s.state.
func (s *Spool) writeState(st spoolState) error {
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
	if err := s.cfg.SyncFile(f); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.path("state.json")); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return fsutil.SyncDir(s.cfg.Dir)
}

// scanSealed loads the sealed/ listing and adopts a segment sealed after
// the last state.json write (a crash between the two).
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
					// Crashed between state.json and the rename: finish it.
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
	sort.Slice(s.sealed, func(i, j int) bool { return s.sealed[i].FirstSeq < s.sealed[j].FirstSeq })
	if n := len(s.sealed); n > 0 && s.sealed[n-1].LastSeq > s.state.SealedSeq {
		seg := s.sealed[n-1]
		data, err := os.ReadFile(s.path("sealed", seg.Name))
		if err != nil {
			return err
		}
		sg, err := batch.Open(data)
		if err != nil {
			return fmt.Errorf("sealed/%s: %w", seg.Name, err)
		}
		st := s.state
		st.SealedSeq, st.LastHash = seg.LastSeq, sg.Hash
		if err := s.writeState(st); err != nil {
			return err
		}
		s.state = st
		s.log.Info("adopted segment sealed before a crash", "segment", seg.Name)
	}
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
