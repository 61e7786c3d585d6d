package shipper

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// Baselines of a dir: source (docs/DIRTREE.md, "Baselines"). The source
// (package shipper/source) brackets a full copy of the tree with
// baseline-begin and baseline-end records; BaselineMarkers then records
// each completed baseline in a marker object (batch.BaselineKey) on every target that holds arbitrary objects,
// once that target has stored the segment holding the end record. A marker
// therefore never names a baseline the target cannot serve; a crash before
// it is written leaves a baseline nobody uses.

// BaselineMarkers writes baseline markers to the shipper's targets. Add
// queues a completed baseline; Run writes each queued marker to each
// target as soon as that target's SentSeq reaches the baseline's end, and
// retries failed writes. A marker is never overwritten: a store that holds
// different content under the name (ErrConflict) is logged and skipped.
type BaselineMarkers struct {
	Shipper *Shipper
	// Targets get the markers: every target that holds arbitrary objects
	// (directory and S3 stores, not tcp:// links).
	Targets []Target
	Log     *slog.Logger
	// Poll is how often Run looks at the targets' progress. Default 500ms.
	Poll time.Duration

	mu      sync.Mutex
	pending map[string][]batch.Baseline // target name -> markers to write
	logged  map[string]time.Time        // rate limit of failure logs, per target
	kick    chan struct{}
	once    sync.Once
}

func (m *BaselineMarkers) init() {
	m.once.Do(func() {
		m.pending = map[string][]batch.Baseline{}
		m.logged = map[string]time.Time{}
		m.kick = make(chan struct{}, 1)
		if m.Log == nil {
			m.Log = slog.Default()
		}
		if m.Poll <= 0 {
			m.Poll = 500 * time.Millisecond
		}
	})
}

// Add queues the marker of a completed baseline for every target. Stream
// and generation are the shipper's.
func (m *BaselineMarkers) Add(b batch.Baseline) {
	m.init()
	b.Stream, b.Generation = m.Shipper.cfg.Spool.Stream, m.Shipper.spool.Config().Generation
	m.mu.Lock()
	for _, t := range m.Targets {
		m.pending[t.Name] = append(m.pending[t.Name], b)
	}
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run writes queued markers until ctx ends.
func (m *BaselineMarkers) Run(ctx context.Context) {
	m.init()
	t := time.NewTicker(m.Poll)
	defer t.Stop()
	for {
		m.Flush(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
	}
}

// Flush writes every queued marker whose target has stored the baseline's
// end, once. It returns how many markers are still queued.
func (m *BaselineMarkers) Flush(ctx context.Context) int {
	m.init()
	sent := map[string]uint64{}
	for _, st := range m.Shipper.Targets() {
		sent[st.Name] = st.SentSeq
	}
	left := 0
	for _, t := range m.Targets {
		m.mu.Lock()
		todo := append([]batch.Baseline(nil), m.pending[t.Name]...)
		m.mu.Unlock()
		var keep []batch.Baseline
		for _, b := range todo {
			if sent[t.Name] < b.EndSeq || ctx.Err() != nil {
				keep = append(keep, b)
				continue
			}
			key := batch.BaselineKey(b.Stream, b)
			err := t.Store.Put(ctx, key, batch.MarshalBaseline(b))
			switch {
			case err == nil:
				m.Log.Info("baseline marker written", "target", t.Name, "key", key, "begin_seq", b.BeginSeq, "end_seq", b.EndSeq)
			case errors.Is(err, store.ErrConflict):
				m.Log.Error("baseline marker exists with other content; left as it is", "target", t.Name, "key", key)
			default:
				keep = append(keep, b)
				if time.Since(m.logged[t.Name]) > time.Minute {
					m.logged[t.Name] = time.Now()
					m.Log.Warn("baseline marker not written yet; retrying", "target", t.Name, "key", key, "err", err)
				}
			}
		}
		m.mu.Lock()
		// Add may have queued more meanwhile: they follow todo.
		m.pending[t.Name] = append(keep, m.pending[t.Name][len(todo):]...)
		left += len(m.pending[t.Name])
		m.mu.Unlock()
	}
	return left
}
