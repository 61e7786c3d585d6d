package tcp

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// DefaultRecentSegments is Server.RecentSegments' default.
const DefaultRecentSegments = 4096

// segMemory is what the server remembers of the segments of one stream
// and generation in its inbox: those it stored, and the newest it found
// there at a handshake, ascending by name. Names of one generation sort by
// first seq, and receive refuses overlaps, so the memory is ascending by
// seq too, without overlaps.
type segMemory struct {
	segs []storedSegment
}

func (m *segMemory) newest() storedSegment {
	if len(m.segs) == 0 {
		return storedSegment{}
	}
	return m.segs[len(m.segs)-1]
}

// add remembers n unless a segment of its name is remembered. It keeps
// at least the newest keep segments (and fewer than twice that). Nearly
// always n is the newest; one below is a hole filled (see checkResend).
func (m *segMemory) add(n storedSegment, keep int) {
	i, found := slices.BinarySearchFunc(m.segs, n.name, func(s storedSegment, name string) int { return strings.Compare(s.name, name) })
	if found {
		return
	}
	m.segs = slices.Insert(m.segs, i, n)
	if len(m.segs) >= 2*keep {
		m.segs = slices.Clone(m.segs[len(m.segs)-keep:])
	}
}

// overlapping returns the remembered segment whose seqs overlap
// first..last; a segment of the same name is such a one. ok is false if
// none does.
func (m *segMemory) overlapping(first, last uint64) (seg storedSegment, ok bool) {
	// The only candidate is the last one starting at or before last: the
	// ones before it end before it starts.
	i := sort.Search(len(m.segs), func(i int) bool { return m.segs[i].firstSeq > last })
	if i > 0 && m.segs[i-1].lastSeq >= first {
		return m.segs[i-1], true
	}
	return storedSegment{}, false
}

// recentOverlap is segMemory.overlapping for the memory of k.
func (s *Server) recentOverlap(k streamGen, first, last uint64) (storedSegment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.recent[k]; m != nil {
		return m.overlapping(first, last)
	}
	return storedSegment{}, false
}

// checkResend decides on a segment that does not sort after the newest of
// its generation in the inbox: it starts at or below the received
// watermark. It is acceptable as a resend of a segment the inbox has (or
// had), byte for byte: the shipper resending what it could not confirm.
// A segment overlapping a different one the receiver has or had is
// refused (code conflict): storing it under its new name would have it
// acknowledged and then skipped by the receiver; that is two writers on
// one stream. So is one that starts at or below the receiver's applied
// watermark and is not in the inbox to compare with: the segments that
// carried those seqs were pruned. What remains is a segment that overlaps
// nothing and that the receiver still waits for: it fills a hole (the
// first of several pipelined segments into an empty inbox failed, and the
// ones behind it, which had no newest to continue, landed). It returns
// the code and message to refuse with, or "" to go on and store the
// segment (an identical Put is a no-op).
func (s *Server) checkResend(ctx context.Context, sess *session, seg storedSegment, content io.ReaderAt, size int64) (code, msg string) {
	key := batch.SegmentKey(sess.stream, seg.name)
	if old, ok := s.recentOverlap(sess.streamGen, seg.firstSeq, seg.lastSeq); ok {
		if old.name == seg.name && old.hash == seg.hash {
			return "", ""
		}
		return codeConflict, overlapMessage(sess.stream, seg, old)
	}
	// Older than what the server remembers: the inbox decides.
	same, err := sameObject(ctx, s.Inbox, key, content, size)
	switch {
	case err == nil && same:
		return "", ""
	case err == nil:
		return codeConflict, fmt.Sprintf("a different segment %s is already in the receiver's inbox: two writers on stream %q; stop the other shipper, or run ferry rejoin on this one",
			key, sess.stream)
	case !errors.Is(err, store.ErrNotFound):
		return codeUnavailable, fmt.Sprintf("receiver could not check %s against its inbox: %v", key, err)
	}
	other, err := s.inboxOverlap(ctx, sess.streamGen, seg.firstSeq, seg.lastSeq)
	if err != nil {
		return codeUnavailable, fmt.Sprintf("receiver could not check %s against its inbox: %v", key, err)
	}
	if other.name != "" {
		return codeConflict, overlapMessage(sess.stream, seg, other)
	}
	if s.Applied != nil {
		if applied := s.Applied(sess.stream); seg.firstSeq <= applied {
			return codeConflict, fmt.Sprintf("segment %s overlaps seqs the receiver already applied (up to %d), and the segments that carried them are no longer in its inbox to compare with; "+
				"it was not among the last %d the receiver stored: two writers on stream %q; stop the other shipper, or run ferry rejoin on this one",
				describe(sess.stream, seg), applied, s.recentSegments(), sess.stream)
		}
	}
	return "", ""
}

func (s *Server) recentSegments() int { return cmp.Or(s.RecentSegments, DefaultRecentSegments) }

// overlapMessage refuses seg, which overlaps old, a different segment the
// receiver has.
func overlapMessage(stream string, seg, old storedSegment) string {
	what := "overlaps"
	if old.name == seg.name {
		what = "has other content than"
	}
	return fmt.Sprintf("segment %s %s %s, already in the receiver's inbox: two writers on stream %q; stop the other shipper, or run ferry rejoin on this one",
		describe(stream, seg), what, describe(stream, old), stream)
}

// describe names a segment and its seqs for messages.
func describe(stream string, seg storedSegment) string {
	return fmt.Sprintf("%s (seq %d-%d)", batch.SegmentKey(stream, seg.name), seg.firstSeq, seg.lastSeq)
}

// inboxOverlap lists k's segments in the inbox for one whose seqs overlap
// first..last; its name is "" if there is none. Only refusals call it.
func (s *Server) inboxOverlap(ctx context.Context, k streamGen, first, last uint64) (storedSegment, error) {
	dir := batch.StreamDir(k.stream)
	var found storedSegment
	err := s.Inbox.List(ctx, dir, dir+batch.SegmentName(k.gen, 0, 0), func(o store.Object) error {
		name := strings.TrimPrefix(o.Name, dir)
		g, f, l, ok := batch.ParseSegmentName(name)
		switch {
		case !ok:
			return nil
		case g != k.gen, f > last:
			return errStopList
		case l >= first:
			found = storedSegment{name: name, firstSeq: f, lastSeq: l}
			return errStopList
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopList) {
		return storedSegment{}, fmt.Errorf("list %s in %s: %w", dir, s.Inbox, err)
	}
	return found, nil
}

// compareChunk is how much sameObject reads of each side at a time.
const compareChunk = 256 << 10

// sameObject reports whether st holds exactly the size bytes of content
// under key, reading both in chunks: a segment is never held whole to
// compare it. A missing object is an error wrapping store.ErrNotFound.
func sameObject(ctx context.Context, st store.Store, key string, content io.ReaderAt, size int64) (bool, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	n := min(size, compareChunk)
	stored, want := make([]byte, n+1), make([]byte, n)
	for off := int64(0); off < size; {
		k := min(n, size-off)
		if _, err := io.ReadFull(rc, stored[:k]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return false, nil // shorter
			}
			return false, err
		}
		if got, err := content.ReadAt(want[:k], off); int64(got) < k {
			return false, fmt.Errorf("read back segment %s: %w", key, cmp.Or(err, io.ErrUnexpectedEOF))
		}
		if !bytes.Equal(stored[:k], want[:k]) {
			return false, nil
		}
		off += k
	}
	k, err := io.ReadFull(rc, stored[:1])
	if k > 0 {
		return false, nil // longer
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return true, nil
}
