package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// watermarksDir is the List dir of a stream's receiver registrations.
func watermarksDir(stream string) string { return stream + "/watermarks/" }

// WatermarkDir is the List dir of a receiver's watermark objects.
func WatermarkDir(stream, receiverID string) string {
	return watermarksDir(stream) + receiverID + "/"
}

// WatermarkKey is the object name of receiver's watermark at applied seq.
func WatermarkKey(stream, receiverID string, seq uint64) string {
	return fmt.Sprintf("%s%016x.json", WatermarkDir(stream, receiverID), seq)
}

// registrationKey is the object name of a receiver's registration marker.
func registrationKey(stream, receiverID string) string {
	return watermarksDir(stream) + receiverID + ".id"
}

// RegisterReceiver stores the marker that registers receiverID for
// stream: ReadWatermarks finds every receiver with one List of the parent
// of their watermark dirs, which does not report sub-"directories".
// Registering again is harmless.
func RegisterReceiver(ctx context.Context, st store.Store, stream, receiverID string) error {
	return st.Put(ctx, registrationKey(stream, receiverID), []byte(receiverID+"\n"))
}

// PutWatermark stores w under WatermarkKey and returns that key. A
// watermark already stored at the same seq (an earlier run's, with
// another published_at) is never overwritten; it stands, and that is no
// error.
func PutWatermark(ctx context.Context, st store.Store, w Watermark) (string, error) {
	body, _ := json.Marshal(w)
	key := WatermarkKey(w.Stream, w.Receiver, w.AppliedSeq)
	if err := st.Put(ctx, key, body); err != nil && !errors.Is(err, store.ErrConflict) {
		return key, err
	}
	return key, nil
}

// DeleteOtherWatermarks deletes every watermark of receiverID but the one
// stored under keep, higher ones too.
func DeleteOtherWatermarks(ctx context.Context, st store.Store, stream, receiverID, keep string) error {
	return st.List(ctx, WatermarkDir(stream, receiverID), "", func(o store.Object) error {
		if o.Name != keep {
			return st.Delete(ctx, o.Name)
		}
		return nil
	})
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
	err := st.List(ctx, watermarksDir(stream), "", func(o store.Object) error {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(o.Name, watermarksDir(stream)), ".id"); ok {
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

// UnregisterReceiver removes receiverID from stream: its registration
// marker first (so ReadWatermarks no longer waits on it), then its
// watermarks. A site promoted to primary no longer receives the stream,
// and a stale watermark would hold retention back for ever.
func UnregisterReceiver(ctx context.Context, st store.Store, stream, receiverID string) error {
	if err := st.Delete(ctx, registrationKey(stream, receiverID)); err != nil {
		return err
	}
	return DeleteOtherWatermarks(ctx, st, stream, receiverID, "")
}
