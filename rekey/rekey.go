// Package rekey re-wraps the file keys of a stream's encrypted segments
// for a new set of age recipients without changing a stored byte of any
// segment: each new header is a create-only object of a key epoch
// (docs/FORMAT.md, "Rotation"; batch.KeyEpoch). Readers use a segment's
// header of the newest epoch that has one (catalog.KeyHeaders).
package rekey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Config says what to rekey.
type Config struct {
	Store  store.Store
	Stream string
	// Keyring opens the segments' current headers (the embedded one, or
	// that of the newest epoch holding one).
	Keyring *crypt.Keyring
	// Recipients are the new recipients.
	Recipients *crypt.Encrypter
	// MaxSegmentBytes refuses a stored segment over it (max_segment_bytes).
	MaxSegmentBytes int64
	Now             func() time.Time
}

// Report says what a run did.
type Report struct {
	Epoch     uint32 // the epoch written to
	Resumed   bool   // the epoch existed already, for the same recipients
	Segments  int    // segments of the stream
	Rekeyed   int    // headers written by this run
	Done      int    // headers the epoch held already (an earlier run)
	Plaintext int    // plaintext segments, left as they are
}

// Run re-wraps every encrypted segment of the stream for cfg.Recipients
// into a key epoch: the newest one if it is for the same recipients (a run
// that was stopped, or a second run: resumable and idempotent), else a
// new one. Each header is written only once its file key is checked to
// decrypt the whole segment. The first segment that cannot be rekeyed
// ends the run with an error naming it; what was written stays valid.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (Report, error) {
	var rep Report
	st, stream := cfg.Store, cfg.Stream
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	fps := cfg.Recipients.Recipients()
	epochs, err := catalog.ListKeyEpochs(ctx, st, stream)
	if err != nil {
		return rep, err
	}
	if n := len(epochs); n > 0 && epochs[n-1].SameRecipients(fps) {
		rep.Epoch, rep.Resumed = epochs[n-1].Epoch, true
	} else {
		rep.Epoch = 1
		if n > 0 {
			rep.Epoch = epochs[n-1].Epoch + 1
		}
		e := batch.KeyEpoch{Stream: stream, Epoch: rep.Epoch, Recipients: fps, CreatedAt: cfg.Now().UTC()}
		if err := catalog.CreateKeyEpoch(ctx, st, e); err != nil {
			return rep, fmt.Errorf("create key epoch %s: %w", batch.KeyEpochKey(stream, rep.Epoch), err)
		}
		log.Info("new key epoch", "stream", stream, "epoch", rep.Epoch, "recipients", strings.Join(fps, ","))
	}
	done, err := catalog.ListKeyHeaders(ctx, st, stream, rep.Epoch)
	if err != nil {
		return rep, err
	}
	dir := batch.StreamDir(stream)
	var objs []store.Object
	err = st.List(ctx, dir, "", func(o store.Object) error {
		if _, _, _, ok := batch.ParseSegmentName(strings.TrimPrefix(o.Name, dir)); ok {
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("list %s in %s: %w", dir, st, err)
	}
	rep.Segments = len(objs)
	// The current header of a segment: the newest epoch's before this
	// one (this one has none for a segment not yet done), else embedded.
	current := catalog.NewKeyHeaders(ctx, st, stream)
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		name := strings.TrimPrefix(o.Name, dir)
		if done[name] {
			rep.Done++
			continue
		}
		got, err := rekeySegment(ctx, cfg, current, o, rep.Epoch)
		switch {
		case err != nil:
			return rep, err
		case got == plaintext:
			rep.Plaintext++
		case got == already:
			rep.Done++
		default:
			rep.Rekeyed++
			log.Debug("segment rekeyed", "stream", stream, "segment", name, "epoch", rep.Epoch)
		}
	}
	return rep, nil
}

// outcome is what rekeySegment did.
type outcome int

const (
	wrote     outcome = iota
	plaintext         // nothing to rekey
	already           // the epoch had a header for it (another run, listed late)
)

// rekeySegment writes the header of the segment o in epoch.
func rekeySegment(ctx context.Context, cfg Config, current *catalog.KeyHeaders, o store.Object, epoch uint32) (outcome, error) {
	rc, err := cfg.Store.Get(ctx, o.Name)
	if err != nil {
		return wrote, fmt.Errorf("segment %s: %w", o.Name, err)
	}
	data, err := batch.ReadSegment(rc, nil, o.Size, cfg.MaxSegmentBytes)
	rc.Close()
	if err != nil {
		return wrote, fmt.Errorf("segment %s: %w", o.Name, err)
	}
	seg, err := batch.Open(data)
	if err != nil {
		return wrote, fmt.Errorf("segment %s: %w", o.Name, err)
	}
	m := &seg.Meta
	if !m.Encrypted() {
		return plaintext, nil
	}
	if m.Encryption != batch.EncryptionAge || m.Stream != cfg.Stream || batch.SegmentKey(m.Stream, m.Name()) != o.Name {
		return wrote, fmt.Errorf("segment %s: metadata says %s/%s encrypted with %q: not a segment of this stream this ferry can rekey",
			o.Name, m.Stream, m.Name(), m.Encryption)
	}
	hdr := seg.Payload
	h, err := current.Lookup(m, false)
	if err != nil {
		return wrote, fmt.Errorf("segment %s: %w", o.Name, err)
	}
	if h != nil && h.Epoch >= epoch {
		return wrote, fmt.Errorf("segment %s: has a header in key epoch %d, newer than the epoch %d being written", o.Name, h.Epoch, epoch)
	}
	if h != nil {
		hdr = h.Data
	} else if n, err := crypt.CheckHeader(seg.Payload); err != nil {
		return wrote, fmt.Errorf("segment %s: %v: %w", o.Name, err, batch.ErrCorrupt)
	} else {
		hdr = seg.Payload[:n]
	}
	nh, err := cfg.Keyring.Rewrap(m, hdr, seg.Payload, cfg.Recipients)
	if err != nil {
		if h != nil {
			err = fmt.Errorf("%w (its current header: %s, key epoch %d, for key %s)", err, h.Object, h.Epoch, strings.Join(h.Recipients, ", "))
		} else if errors.Is(err, batch.ErrNoKey) {
			err = fmt.Errorf("%w (its embedded header is for key %s)", err, strings.Join(m.Recipients, ", "))
		}
		return wrote, err
	}
	key := batch.KeyHeaderKey(cfg.Stream, epoch, m.Name())
	err = cfg.Store.Put(ctx, key, nh)
	switch {
	case errors.Is(err, store.ErrConflict):
		// Each wrap is fresh, so a header an earlier run stored (which a
		// listing missed) differs: it stays; readers check it.
		return already, nil
	case err != nil:
		return wrote, fmt.Errorf("store %s: %w", key, err)
	}
	return wrote, nil
}
