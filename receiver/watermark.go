package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/store"
)

// Watermark is what a receiver publishes in the store so the primary side
// and operators can see how far it has applied; retention must not delete
// segments a registered receiver has not applied. It is stored as
// "<stream>/watermarks/<receiver id>/<16 hex digits of applied seq>.json"
// (objects are never overwritten; each one published replaces the others,
// which are then deleted).
type Watermark struct {
	Format      int       `json:"format"`
	Receiver    string    `json:"receiver"`
	Stream      string    `json:"stream"`
	Generation  uint32    `json:"generation"`
	AppliedSeq  uint64    `json:"applied_seq"`
	AppliedHash string    `json:"applied_hash"`
	Segment     string    `json:"segment,omitempty"`
	AppliedAt   time.Time `json:"applied_at,omitzero"`
	PublishedAt time.Time `json:"published_at"`
}

// WatermarkDir is the List dir of a receiver's watermark objects.
func WatermarkDir(stream, receiverID string) string {
	return stream + "/watermarks/" + receiverID + "/"
}

var idSanitize = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// DefaultReceiverID is the host name made safe as a name element.
func DefaultReceiverID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "receiver"
	}
	h = strings.Trim(idSanitize.ReplaceAllString(h, "-"), "-.")
	if h == "" {
		return "receiver"
	}
	return h
}

// ReadWatermarks returns the newest watermark of every receiver registered
// for stream in st; a receiver that registered but has applied nothing yet
// is returned with AppliedSeq 0 (it holds everything back). A watermark that
// cannot be listed, read or decoded is an error naming it, never skipped:
// retention and ack "applied" decide by these.
func ReadWatermarks(ctx context.Context, st store.Store, stream string) ([]Watermark, error) {
	var ids []string
	// Receivers are sub-"directories" of <stream>/watermarks/, which List
	// does not report; each receiver's newest object is found per id, so
	// ids are discovered from a marker listing of the parent.
	err := st.List(ctx, stream+"/watermarks/", "", func(o store.Object) error {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(o.Name, stream+"/watermarks/"), ".id"); ok {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Watermark
	for _, id := range ids {
		w, err := readNewestWatermark(ctx, st, stream, id)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// publish writes the current watermark if it moved, then deletes the
// older ones. Failures are logged, never fatal: applying matters more.
func (r *Receiver) publish(ctx context.Context) {
	if r.cfg.ReceiverID == "" {
		return
	}
	cp := r.Checkpoint()
	if cp.LastSeq == 0 || cp.LastSeq == r.published {
		return
	}
	w := Watermark{Format: 1, Receiver: r.cfg.ReceiverID, Stream: r.cfg.Stream, Generation: cp.Generation,
		AppliedSeq: cp.LastSeq, AppliedHash: cp.LastHash, Segment: cp.Segment, AppliedAt: cp.AppliedAt,
		PublishedAt: r.cfg.Now().UTC()}
	body, _ := json.Marshal(w)
	dir := WatermarkDir(r.cfg.Stream, r.cfg.ReceiverID)
	name := fmt.Sprintf("%s%016x.json", dir, cp.LastSeq)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !r.registered {
		// A marker naming the receiver lets ReadWatermarks find every
		// receiver with one List of the parent.
		marker := r.cfg.Stream + "/watermarks/" + r.cfg.ReceiverID + ".id"
		if err := r.cfg.Store.Put(ctx, marker, []byte(r.cfg.ReceiverID+"\n")); err != nil {
			r.log.Warn("cannot register receiver watermark", "store", r.cfg.Store.String(), "err", err)
			return
		}
		r.registered = true
	}
	// ErrConflict: an earlier run published this seq (with another
	// published_at) and the object is never overwritten; it stands.
	if err := r.cfg.Store.Put(ctx, name, body); err != nil && !errors.Is(err, store.ErrConflict) {
		r.log.Warn("cannot publish applied watermark", "store", r.cfg.Store.String(), "seq", cp.LastSeq, "err", err)
		return
	}
	r.published, r.publishedAt = cp.LastSeq, r.cfg.Now()
	// Delete every other watermark, higher ones too: they were left by an
	// earlier receiver under this id (its state since rebuilt), and a
	// watermark above what is applied would let retention delete segments
	// this receiver still needs.
	err := r.cfg.Store.List(ctx, dir, "", func(o store.Object) error {
		if o.Name != name {
			return r.cfg.Store.Delete(ctx, o.Name)
		}
		return nil
	})
	if err != nil {
		r.log.Warn("cannot delete old watermarks", "store", r.cfg.Store.String(), "err", err)
	}
}

// maybePublish publishes at most every PublishEvery.
func (r *Receiver) maybePublish(ctx context.Context) {
	if r.cfg.Now().Sub(r.publishedAt) >= r.cfg.PublishEvery {
		r.publish(ctx)
	}
}

// readNewestWatermark reads receiver id's newest watermark. A receiver
// publishing at the same moment may delete the object between the listing
// and the read; the listing is then retried.
func readNewestWatermark(ctx context.Context, st store.Store, stream, id string) (Watermark, error) {
	for attempt := 0; ; attempt++ {
		var newest string
		err := st.List(ctx, WatermarkDir(stream, id), "", func(o store.Object) error {
			if strings.HasSuffix(o.Name, ".json") {
				newest = o.Name
			}
			return nil
		})
		if err != nil {
			return Watermark{}, fmt.Errorf("list watermarks of receiver %s: %w", id, err)
		}
		if newest == "" {
			return Watermark{Receiver: id, Stream: stream}, nil // registered, nothing applied yet
		}
		rc, err := st.Get(ctx, newest)
		if errors.Is(err, store.ErrNotFound) && attempt < 5 {
			continue // replaced by a newer one since the listing
		}
		if err != nil {
			return Watermark{}, fmt.Errorf("read watermark %s: %w", newest, err)
		}
		var w Watermark
		err = json.NewDecoder(io.LimitReader(rc, 64<<10)).Decode(&w)
		rc.Close()
		if err != nil {
			return Watermark{}, fmt.Errorf("watermark %s is damaged: %v", newest, err)
		}
		if w.Receiver != id || w.Stream != stream {
			return Watermark{}, fmt.Errorf("watermark %s names receiver %q of stream %q: damaged or misplaced", newest, w.Receiver, w.Stream)
		}
		return w, nil
	}
}
