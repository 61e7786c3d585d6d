package tcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// streamGen is the scope of a link: one stream and generation.
type streamGen struct {
	stream string
	gen    uint32
}

// storedSegment is a segment of a stream and generation in the inbox.
// The newest one is reported in WELCOME; its lastSeq is the received
// watermark of ACKs and heartbeats.
type storedSegment struct {
	name              string
	firstSeq, lastSeq uint64
	hash              string
}

// errStopList ends an Inbox.List early.
var errStopList = errors.New("stop listing")

// findNewest finds the newest segment of k in the inbox. What it finds is
// remembered, so the segment is read at most once per process (and not at
// all once this server stored it).
func (s *Server) findNewest(ctx context.Context, st serverSettings, k streamGen) (storedSegment, error) {
	names, err := newestNames(ctx, s.Inbox, k.stream, k.gen, 1)
	if err != nil {
		return storedSegment{}, fmt.Errorf("receiver's inbox: %w", err)
	}
	if len(names) == 0 {
		return storedSegment{}, nil
	}
	name := names[0]
	if known := s.newestOf(k); known.name >= name {
		return known, nil
	}
	key := batch.SegmentKey(k.stream, name)
	data, err := readObject(ctx, s.Inbox, key, st.maxSegment)
	if err != nil {
		return storedSegment{}, fmt.Errorf("read newest segment %s from the receiver's inbox: %w", key, err)
	}
	seg, err := batch.Open(data)
	if err != nil {
		return storedSegment{}, fmt.Errorf("newest segment %s in the receiver's inbox %s: %w", key, s.Inbox, err)
	}
	// Its Put may still be on its way on another link, before its fsync
	// (an inbox that publishes first, dir.Options.PublishBeforeSync). A
	// shipper told of it may build on it, so make it durable first: Put of
	// identical bytes returns once it is.
	if err := s.Inbox.Put(ctx, key, data); err != nil {
		return storedSegment{}, fmt.Errorf("make newest segment %s in the receiver's inbox durable: %w", key, err)
	}
	return s.remember(k, storedSegment{name: name, firstSeq: seg.Meta.FirstSeq, lastSeq: seg.Meta.LastSeq, hash: seg.Hash}), nil
}

// remember records n, a segment now in the inbox, in the memory of k's
// recent segments, and returns the newest.
func (s *Server) remember(k streamGen, n storedSegment) storedSegment {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recent == nil {
		s.recent = map[streamGen]*segMemory{}
	}
	m := s.recent[k]
	if m == nil {
		m = &segMemory{}
		s.recent[k] = m
	}
	m.add(n, s.recentSegments())
	return m.newest()
}

// newestOf returns the newest segment of k this server knows of.
func (s *Server) newestOf(k streamGen) storedSegment {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.recent[k]; m != nil {
		return m.newest()
	}
	return storedSegment{}
}

// watermarks is the payload of the server's heartbeats.
func (s *Server) watermarks(k streamGen) []byte {
	received := s.newestOf(k).lastSeq
	js, _ := json.Marshal(watermarkMsg{ReceivedSeq: received, AppliedSeq: s.applied(k.stream, received)})
	return js
}

// applied is the applied watermark the server reports: the receiver's, but
// never beyond received, the newest segment durable in the inbox. The
// receiver may apply a segment whose Put has not returned yet (it is
// visible early, dir.Options.PublishBeforeSync) and, with a checkpoint
// delay, before its own checkpoint is durable; "applied" must still mean
// the record survives the loss of the primary.
func (s *Server) applied(stream string, received uint64) uint64 {
	if s.Applied == nil {
		return 0
	}
	return min(s.Applied(stream), received)
}

// readObject reads a whole object from st, refusing more than limit bytes.
func readObject(ctx context.Context, st store.Store, key string, limit int64) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return batch.ReadAll(rc, limit)
}

// newestNames returns the names (without the stream) of the newest n
// segments of stream and generation gen in inbox, newest first.
func newestNames(ctx context.Context, inbox store.Store, stream string, gen uint32, n int) ([]string, error) {
	dir := batch.StreamDir(stream)
	ring := make([]string, 0, n)
	next := 0 // where the next name goes once ring is full
	err := inbox.List(ctx, dir, dir+batch.SegmentName(gen, 0, 0), func(o store.Object) error {
		name := strings.TrimPrefix(o.Name, dir)
		g, _, _, ok := batch.ParseSegmentName(name)
		if !ok {
			return nil
		}
		if g != gen {
			return errStopList
		}
		if len(ring) < n {
			ring = append(ring, name)
		} else {
			ring[next] = name
			next = (next + 1) % n
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopList) {
		return nil, fmt.Errorf("list %s in %s: %w", dir, inbox, err)
	}
	names := make([]string, 0, len(ring))
	for i := range ring {
		names = append(names, ring[(next+len(ring)-1-i)%len(ring)])
	}
	return names, nil
}
