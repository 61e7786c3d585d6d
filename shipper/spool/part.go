package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// Parts: a spool's segments that live in a bundle file instead of its own
// sealed/ (docs/STREAMS.md, "The wiring plan"). A Bundler of many streams
// asks each spool to seal its open batch into segment bytes (SealPart),
// writes every stream's part into one bundle file, and once that file is
// durable under its name (the commit point of every part in it) records
// each part as its spool's newest sealed segment (CommitPart). Between the
// two the part is the spool's seal in flight: the next seal waits for it,
// appends fill the other Builder, and the journal keeps the part's records
// until CommitPart drops them, as after a seal.
//
// A committed part is a sealed segment like any other (Pending, Confirm,
// the chain, state.json) except that its bytes are a section of the
// bundle file (SealedSegment.Bundle, Offset) and that the spool never
// removes that file: its Bundler does, once every target holds the bundle
// and every spool in it saved a state.json past its part (StateSealedSeq).
// At Open, Config.Parts hands the spool the parts the Bundler found in its
// committed bundles; recovery adopts them as it adopts segment files.

// PartRef locates a committed part in a bundle file.
type PartRef struct {
	Bundle   string // path of the bundle file
	Offset   int64
	Length   int64
	Name     string // the part's segment name (batch.SegmentName)
	FirstSeq uint64
	LastSeq  uint64
}

// Part is a segment sealed for a bundle by SealPart: Data is exactly the
// segment its spool would have written alone (chained, encrypted and
// signed as such), Hash its batch.Hash. It must end in CommitPart or
// FailPart.
type Part struct {
	Data []byte
	Meta batch.Meta
	Hash string
	s    *Spool
	job  *sealJob
}

// ErrPartTooLarge is SealPart's answer for an open batch over its
// maxBytes: it seals alone (SealOpen).
var ErrPartTooLarge = errors.New("open batch larger than a bundle part may be")

// SealPart seals the open batch into a part when it holds records and at
// most maxBytes framed bytes (no limit if maxBytes <= 0). It returns nil
// when there is nothing to seal, ErrPartTooLarge when the batch is
// larger, and nil when a seal is in flight
// (the batch goes into a later bundle, or seals alone), or the spool is
// held. It compresses on the caller's goroutine, without holding the
// spool: appends go on into the next batch meanwhile.
func (s *Spool) SealPart(maxBytes int64) (*Part, error) {
	s.in.Lock()
	s.mu.Lock()
	if err := s.usable(); err != nil {
		s.mu.Unlock()
		s.in.Unlock()
		return nil, err
	}
	n, size := s.builder.Records(), s.builder.Size()
	if s.provisional || s.sealing != nil || n == 0 {
		s.mu.Unlock()
		s.in.Unlock()
		return nil, nil
	}
	if maxBytes > 0 && size > maxBytes {
		s.mu.Unlock()
		s.in.Unlock()
		return nil, ErrPartTooLarge
	}
	job := &sealJob{reason: "bundle", cursor: append([]byte(nil), s.cursor...)}
	if cur := s.journals[len(s.journals)-1]; s.journalRotates(cur, false) {
		j, err := s.createJournal(s.builder.LastSeq()+1, os.O_EXCL)
		if err != nil {
			err = s.fail(err)
			s.mu.Unlock()
			s.in.Unlock()
			return nil, err
		}
		s.journals = append(s.journals, j)
		job.old = cur
	}
	job.b = s.builder
	job.b.SetPrev(s.state.LastHash)
	job.size = size
	job.done = make(chan struct{})
	s.builder, s.spare = s.spare, nil
	s.builder.Reset(s.cfg.Stream, s.cfg.Generation, "")
	s.sealing = job
	s.sealers.Add(1) // Done once Commit, Fail or Alone ends it: Close waits
	s.mu.Unlock()
	s.in.Unlock()

	job.b.SetSourceCursor(job.cursor)
	data, meta, err := job.b.Seal(s.cfg.Now())
	p := &Part{Data: data, Meta: meta, s: s, job: job}
	if err != nil {
		p.Fail(fmt.Errorf("seal part %s: %w", meta.Name(), err))
		return nil, s.Err()
	}
	p.Hash = job.b.Hash()
	return p, nil
}

// Fail abandons p: its bundle could not be made durable. The spool fails
// (as after a failed seal): what p held stays in the journal, or, for a
// replayable source, after the cursor of the spool's newest segment, and
// the next start seals it again.
func (p *Part) Fail(err error) {
	s, job := p.s, p.job
	s.mu.Lock()
	s.fail(err)
	s.sealing = nil
	s.spare = job.b
	s.notify()
	s.mu.Unlock()
	close(job.done)
	s.sealers.Done()
}

// IsNoSpace reports whether err is a full disk or quota (ENOSPC, EDQUOT).
func IsNoSpace(err error) bool { return isNoSpace(err) }

// Alone seals p on its own after all: as a segment file in the spool's
// sealed/, the seal the spool makes without a Bundler, in the background,
// waiting out a full disk as a seal does (writeSealed). For a bundle that
// could not be written for lack of room; its bytes and place in the chain
// are unchanged.
func (p *Part) Alone() {
	s, job := p.s, p.job
	s.sealers.Go(func() {
		wait := 100 * time.Millisecond
		var res sealResult
		var err error
		for {
			res, err = s.writeSegment(job, [][]byte{p.Data}, p.Meta, p.Hash, true)
			if err == nil || !isNoSpace(err) {
				break
			}
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				err = fmt.Errorf("seal %s: %w (%w); its records stay in the journal", p.Meta.Name(), ErrNoSpace, err)
				break
			}
			time.Sleep(wait)
			wait = min(wait*2, 5*time.Second)
		}
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
		if err == nil && job.old != nil {
			job.old.f.Close()
			if err := s.removeJournals([]string{job.old.name}); err != nil {
				s.log.Warn("cannot remove a journal file the seal made obsolete; recovery will skip it", "err", err)
			}
		}
		close(job.done)
	})
	s.sealers.Done() // the goroutine above holds its own count
}

// Commit records p as the spool's newest sealed segment, at offset in the
// bundle file path, which is durable under that name. The journal entries
// it covers are dropped, as after a seal.
func (p *Part) Commit(path string, offset int64) {
	s, job := p.s, p.job
	name := p.Meta.Name()
	seg := SealedSegment{Name: name, FirstSeq: p.Meta.FirstSeq, LastSeq: p.Meta.LastSeq, Size: int64(len(p.Data)),
		Bundle: path, Offset: offset}
	s.mu.Lock()
	st := s.state
	st.SealedSeq, st.LastHash, st.Cursor, st.Segment = p.Meta.LastSeq, p.Hash, job.cursor, name
	s.commitLocked(job, sealResult{state: st, seg: seg, meta: p.Meta})
	s.sealing = nil
	s.spare = job.b
	s.notify()
	s.mu.Unlock()
	s.log.Debug("sealed segment into a bundle", "segment", name, "records", p.Meta.Records, "bytes", len(p.Data), "bundle", path)
	defer s.sealers.Done()
	if job.old != nil {
		if testHookBeforeJournalRemoval != nil {
			testHookBeforeJournalRemoval()
		}
		job.old.f.Close()
		if err := s.removeJournals([]string{job.old.name}); err != nil {
			s.log.Warn("cannot remove a journal file the seal made obsolete; recovery will skip it", "err", err)
		}
	}
	close(job.done)
}

// StateSealedSeq is the last seq state.json on disk covers: a bundle file
// may go once every spool with a part in it has saved past its part.
func (s *Spool) StateSealedSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateSealed
}

// Confirmed is the seq through which target holds the stream, as
// confirmed to the spool (Confirm).
func (s *Spool) Confirmed(target string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.confirmed[target]
}

// IsPart reports whether seg lies in a bundle file.
func (seg SealedSegment) IsPart() bool { return seg.Bundle != "" }

// readSealedFile reads seg's bytes: its file in sealed/, or its section of
// its bundle file.
func (s *Spool) readSealedFile(seg SealedSegment) ([]byte, error) {
	if !seg.IsPart() {
		return os.ReadFile(s.path("sealed", seg.Name))
	}
	return readPart(seg.Bundle, seg.Offset, seg.Size)
}

// SealedMeta reads the metadata of seg, a sealed segment the spool
// listed (a file in sealed/ or a part), no more of it than that can be.
func (s *Spool) SealedMeta(seg SealedSegment) (batch.Meta, error) { return s.readSealedMeta(seg) }

// readSealedMeta reads seg's metadata, no more of it than that can be.
func (s *Spool) readSealedMeta(seg SealedSegment) (batch.Meta, error) {
	path, off := s.path("sealed", seg.Name), int64(0)
	if seg.IsPart() {
		path, off = seg.Bundle, seg.Offset
	}
	f, err := os.Open(path)
	if err != nil {
		return batch.Meta{}, err
	}
	defer f.Close()
	head := make([]byte, min(seg.Size, 8+batch.MaxMetaSize))
	n, err := f.ReadAt(head, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return batch.Meta{}, err
	}
	m, _, err := batch.ParseMeta(head[:n])
	return m, err
}

// readPart reads length bytes at offset of the bundle file path.
func readPart(path string, offset, length int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, length)
	if _, err := f.ReadAt(buf, offset); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("bundle %s ends before its part at %d (%d bytes): %w", path, offset, length, batch.ErrCorrupt)
		}
		return nil, err
	}
	return buf, nil
}

// partLocked returns the sealed part named name, if there is one. mu held.
// It runs for every segment a sender reads: s.sealed is in seq order, which
// is name order, so a binary search finds it; the scan is for safety.
func (s *Spool) partLocked(name string) (SealedSegment, bool) {
	if i, ok := slices.BinarySearchFunc(s.sealed, name, func(seg SealedSegment, n string) int { return strings.Compare(seg.Name, n) }); ok {
		return s.sealed[i], s.sealed[i].IsPart()
	}
	for _, seg := range s.sealed {
		if seg.Name == name {
			return seg, seg.IsPart()
		}
	}
	return SealedSegment{}, false
}

// addParts lists Config.Parts among the sealed segments (recovery).
func (s *Spool) addParts() error {
	for _, p := range s.cfg.Parts {
		gen, first, last, ok := batch.ParseSegmentName(p.Name)
		if !ok || gen != s.cfg.Generation || first != p.FirstSeq || last != p.LastSeq {
			return fmt.Errorf("bundle %s holds part %s, not a segment of this spool's generation %d", p.Bundle, p.Name, s.cfg.Generation)
		}
		for _, seg := range s.sealed {
			if seg.FirstSeq <= p.LastSeq && p.FirstSeq <= seg.LastSeq {
				return fmt.Errorf("bundle %s holds part %s, which overlaps %s in the spool; the spool is damaged", p.Bundle, p.Name, seg.Name)
			}
		}
		s.sealed = append(s.sealed, SealedSegment{Name: p.Name, FirstSeq: p.FirstSeq, LastSeq: p.LastSeq, Size: p.Length,
			Bundle: p.Bundle, Offset: p.Offset})
		s.sealedBytes += p.Length
	}
	return nil
}

// SealOpen hands the open batch, if it holds records, to the sealer to be
// sealed alone, without waiting for that seal (only for one still in
// flight before it): a Bundler's tick found it too large for a bundle.
func (s *Spool) SealOpen(reason string) error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if s.provisional || s.builder.Records() == 0 {
		return nil
	}
	return s.handOff(reason, s.cursor, nil, false)
}
