package tcp

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// On the direct link the receiver is the authority on its stream's
// history: its generation records live in Server.Records (by default the
// inbox), where a promotion of this site writes them too. A shipper
// carries the records it knows in GENERATION frames after its HELLO; the
// server stores those it lacks (create-only), refuses a record that
// differs from its own, then admits only a shipper of the newest
// generation.

// refusal is why a handshake is refused: the REFUSE's code and message.
type refusal struct{ code, msg string }

func (r *refusal) Error() string { return r.msg }

func refuseWith(code, format string, args ...any) *refusal {
	return &refusal{code: code, msg: fmt.Sprintf(format, args...)}
}

// streamState is what the server knows of one stream across its links.
type streamState struct {
	// admit serialises the stream's handshakes: storing records, reading
	// the history and taking the writer slot.
	admit sync.Mutex
	hist  *catalog.Histories // records cached; each Read lists them again

	// Under Server.mu:
	history batch.History // the newest read at a handshake; zero until then
	writer  *session      // the established link that writes the stream
}

// newest is the newest generation of ss.history, 0 before one is read.
// Server.mu must be held.
func (ss *streamState) newest() uint32 {
	if ss.history.Stream() == "" {
		return 0
	}
	return ss.history.Newest().Generation
}

// stream returns the state of stream, creating it on first use.
func (s *Server) stream(stream string) *streamState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams = map[string]*streamState{}
	}
	ss := s.streams[stream]
	if ss == nil {
		ss = &streamState{hist: catalog.NewHistories(s.records(), stream)}
		s.streams[stream] = ss
	}
	return ss
}

// records is the store holding the generation records.
func (s *Server) records() store.Store {
	if s.Records != nil {
		return s.Records
	}
	return s.Inbox
}

// readGenerations reads the n GENERATION frames that follow a HELLO of
// stream and parses each record. A record that is malformed or of another
// stream is a *refusal; so is a frame that is not a GENERATION or breaks
// the framing (over MaxGenerationRecord, say). Any other error is a
// broken link.
func readGenerations(l *link, stream string, n int) ([]batch.Generation, error) {
	var recs []batch.Generation
	for i := range n {
		f, err := l.read()
		if errors.Is(err, ErrProtocol) {
			return nil, refuseWith(codeProtocol, "generation record %d of %d: %v", i+1, n, err)
		}
		if err != nil {
			return nil, fmt.Errorf("read generation record %d of %d: %w", i+1, n, err)
		}
		if f.typ != frameGeneration {
			return nil, refuseWith(codeProtocol, "HELLO announced %d generation records, but frame %d after it is a %s", n, i+1, typeName(f.typ))
		}
		rec, err := parseRecord(f.payload)
		if err != nil {
			return nil, refuseWith(codeHistory, "the shipper's %v", err)
		}
		if rec.Stream != stream {
			return nil, refuseWith(codeHistory, "the shipper's generation record %s is of stream %q, but this link carries %q",
				batch.GenerationName(rec.Generation), rec.Stream, stream)
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// parseRecord parses a GENERATION payload as batch.ParseGeneration does a
// stored record; the payload names its own generation.
func parseRecord(p []byte) (batch.Generation, error) {
	var probe struct {
		Generation uint32 `json:"generation"`
	}
	if err := json.Unmarshal(p, &probe); err != nil {
		return batch.Generation{}, fmt.Errorf("generation record is damaged: %v", err)
	}
	return batch.ParseGeneration(batch.GenerationName(probe.Generation), p)
}

// acceptHistory stores the records a shipper sent that the stream's
// history lacks, and returns the history then. A record that differs from
// the receiver's own of that generation is refused (code history,
// "conflicting histories"), as are records that would not continue the
// history (a gap, for one: the receiver could no longer read it). Records
// are created oldest first, so an interrupted handshake leaves a history
// without a gap.
func (s *Server) acceptHistory(ctx context.Context, ss *streamState, stream string, sent []batch.Generation, log *slog.Logger) (batch.History, error) {
	hist, err := ss.hist.Read(ctx)
	if err != nil {
		return batch.History{}, refuseWith(codeUnavailable, "receiver could not read the history of stream %q from %s: %v", stream, s.records(), err)
	}
	slices.SortStableFunc(sent, func(a, b batch.Generation) int { return cmp.Compare(a.Generation, b.Generation) })
	var add []batch.Generation
	for i, rec := range sent {
		if i > 0 && sent[i-1].Generation == rec.Generation {
			if !sameRecord(sent[i-1], rec) {
				return batch.History{}, refuseWith(codeHistory, "the shipper sent two different records of generation %d", rec.Generation)
			}
			continue
		}
		if have, ok := hist.Record(rec.Generation); ok {
			if !sameRecord(have, rec) {
				return batch.History{}, refuseWith(codeHistory, "%s", conflictingHistories(rec, have))
			}
			continue
		}
		add = append(add, rec)
	}
	if len(add) == 0 {
		return hist, nil
	}
	all := slices.Clone(add)
	for g := hist.Newest().Generation; g >= 2; g-- {
		rec, _ := hist.Record(g)
		all = append(all, rec)
	}
	if _, err := batch.NewHistory(stream, all); err != nil {
		return batch.History{}, refuseWith(codeHistory, "the shipper's generation records do not continue this receiver's history of stream %q (generations 1 to %d): %v",
			stream, hist.Newest().Generation, err)
	}
	for _, rec := range add {
		err := catalog.CreateGeneration(ctx, s.records(), rec)
		switch {
		case err == nil:
			log.Info("stored the shipper's generation record", "generation", rec.Generation,
				"fork_seq", rec.ForkSeq, "site", rec.Site, "store", s.records().String())
			continue
		case errors.Is(err, catalog.ErrPromoted):
			// Promoted here since the history was read.
			if now, rerr := ss.hist.Read(ctx); rerr == nil {
				if have, ok := now.Record(rec.Generation); ok {
					return batch.History{}, refuseWith(codeHistory, "%s", conflictingHistories(rec, have))
				}
			}
			return batch.History{}, refuseWith(codeHistory, "conflicting histories: %v", err)
		case errors.Is(err, store.ErrPermanent):
			return batch.History{}, refuseWith(codePermanent, "receiver could not store generation record: %v", err)
		}
		return batch.History{}, refuseWith(codeUnavailable, "receiver could not store generation record: %v", err)
	}
	hist, err = ss.hist.Read(ctx)
	if err != nil {
		return batch.History{}, refuseWith(codeUnavailable, "receiver could not read the history of stream %q from %s: %v", stream, s.records(), err)
	}
	return hist, nil
}

// sameRecord reports whether two valid records are the same record: they
// would be stored as the same bytes.
func sameRecord(a, b batch.Generation) bool {
	x, errA := batch.MarshalGeneration(a)
	y, errB := batch.MarshalGeneration(b)
	return errA == nil && errB == nil && bytes.Equal(x, y)
}

// conflictingHistories describes two different records of one generation.
func conflictingHistories(theirs, ours batch.Generation) string {
	return fmt.Sprintf("conflicting histories of stream %q: the shipper's record says %s, but this receiver's history says %s: "+
		"two sites were promoted from generation %d (split brain); this receiver follows its own history: stop the shipper of the other and run ferry rejoin on it",
		theirs.Stream, promotion(theirs), promotion(ours), ours.Parent)
}

// promotion describes a record: "generation G was promoted at seq F on
// SITE (host H) at TIME".
func promotion(r batch.Generation) string {
	site := r.Site
	if site == "" {
		site = "an unnamed site"
	}
	if r.Host != "" {
		site += " (host " + r.Host + ")"
	}
	return fmt.Sprintf("generation %d was promoted at seq %d on %s at %s", r.Generation, r.ForkSeq, site, r.Time.UTC().Format(time.RFC3339))
}

// admitGeneration checks that gen, a shipper's generation, is the newest
// of hist (code fenced, with the batch.FencedError message, when it is
// older; code generation when hist does not hold it), and records hist as
// the stream's newest known history.
func (s *Server) admitGeneration(ss *streamState, hist batch.History, gen uint32) error {
	s.mu.Lock()
	// Another handshake may have read a newer history meanwhile; records
	// are create-only, so the newer one holds all of this one.
	if ss.newest() < hist.Newest().Generation {
		ss.history = hist
	}
	hist = ss.history
	s.mu.Unlock()
	err := hist.Fenced(gen)
	var fe *batch.FencedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return refuseWith(codeFenced, "%s", fe.Error())
	case errors.Is(err, batch.ErrUnknownGeneration):
		return refuseWith(codeGeneration, "unknown generation %d: the shipper did not send its generation record (stream %q has generations 1 to %d here)",
			gen, hist.Stream(), hist.Newest().Generation)
	}
	return refuseWith(codeGeneration, "%v", err)
}

// fenced returns the *batch.FencedError of a session whose generation is
// no longer the newest this server knows of its stream, nil otherwise. It
// is cheap: a map look-up and a compare.
func (s *Server) fenced(sess *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.streams[sess.stream]; ss != nil && ss.newest() > sess.gen {
		return ss.history.Fenced(sess.gen)
	}
	return nil
}
