package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// maxGenerationRecord caps a generation record read: real ones are a few
// hundred bytes, so anything larger is damaged or hostile.
const maxGenerationRecord = 64 << 10

// Histories reads the history of one stream from a store and keeps the
// records it has read: they are create-only, so a record read once never
// changes, and a later Read lists the records and fetches only new ones.
// Histories is safe for concurrent use.
type Histories struct {
	store  store.Store
	stream string

	mu   sync.Mutex
	recs map[string]batch.Generation // by object name
}

// NewHistories returns a reader of stream's history in st.
func NewHistories(st store.Store, stream string) *Histories {
	return &Histories{store: st, stream: stream, recs: map[string]batch.Generation{}}
}

// Read lists the stream's generation records, reads those not read
// before, and returns the history. A damaged record, or a chain with a
// missing or inconsistent record, is an error naming the object and
// wrapping store.ErrPermanent: retrying cannot mend it. A stream
// without records has the history of generation 1 alone.
func (h *Histories) Read(ctx context.Context) (batch.History, error) {
	dir := batch.GenerationDir(h.stream)
	var names []string
	err := h.store.List(ctx, dir, "", func(o store.Object) error {
		name := strings.TrimPrefix(o.Name, dir)
		if _, ok := batch.ParseGenerationName(name); ok {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return batch.History{}, fmt.Errorf("list generation records %s: %w", dir, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	recs := make([]batch.Generation, 0, len(names))
	for _, name := range names {
		rec, ok := h.recs[name]
		if !ok {
			if rec, err = readGeneration(ctx, h.store, dir+name, name); err != nil {
				return batch.History{}, err
			}
			h.recs[name] = rec
		}
		recs = append(recs, rec)
	}
	hist, err := batch.NewHistory(h.stream, recs)
	if err != nil {
		return hist, fmt.Errorf("%w: %w", store.ErrPermanent, err) // no retry mends a broken chain
	}
	return hist, nil
}

// ReadHistory reads the history of stream in st once.
func ReadHistory(ctx context.Context, st store.Store, stream string) (batch.History, error) {
	return NewHistories(st, stream).Read(ctx)
}

func readGeneration(ctx context.Context, st store.Store, key, name string) (batch.Generation, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return batch.Generation{}, fmt.Errorf("read generation record %s: %w", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxGenerationRecord+1))
	if err != nil {
		return batch.Generation{}, fmt.Errorf("read generation record %s: %w", key, err)
	}
	// A damaged record is permanent: records are create-only, so no
	// retry can mend it, and every reader must stop rather than guess.
	if len(data) > maxGenerationRecord {
		return batch.Generation{}, fmt.Errorf("generation record %s is larger than %d bytes: damaged: %w", key, maxGenerationRecord, store.ErrPermanent)
	}
	rec, err := batch.ParseGeneration(name, data)
	if err != nil {
		return batch.Generation{}, fmt.Errorf("%s: %w: %w", key, err, store.ErrPermanent)
	}
	return rec, nil
}

// ErrPromoted is CreateGeneration's error when the record it would create
// exists already: another promotion of the same number won.
var ErrPromoted = errors.New("generation already promoted")

// CreateGeneration stores rec as a create-only object. Stores never
// overwrite, so of two promotions of the same generation exactly one
// succeeds; the other gets an error wrapping ErrPromoted that names the
// winner. Writing the same bytes again (a retry) succeeds.
func CreateGeneration(ctx context.Context, st store.Store, rec batch.Generation) error {
	data, err := batch.MarshalGeneration(rec)
	if err != nil {
		return err
	}
	key := batch.GenerationKey(rec.Stream, rec.Generation)
	err = st.Put(ctx, key, data)
	if errors.Is(err, store.ErrConflict) {
		won, rerr := readGeneration(ctx, st, key, batch.GenerationName(rec.Generation))
		if rerr != nil {
			return fmt.Errorf("create %s: %w (and reading the winner failed: %v)", key, ErrPromoted, rerr)
		}
		return fmt.Errorf("create %s: %w: generation %d was promoted at seq %d on %s (host %s) at %s",
			key, ErrPromoted, won.Generation, won.ForkSeq, won.Site, won.Host, won.Time.Format("2006-01-02T15:04:05Z"))
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", key, err)
	}
	return nil
}
