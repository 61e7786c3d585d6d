package receiver

import (
	"context"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/store/catalog"
)

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

// publish writes the current watermark (catalog.Watermark) if it moved,
// then deletes the older ones. Failures are logged, never fatal: applying
// matters more.
func (r *Receiver) publish(ctx context.Context) {
	if r.cfg.ReceiverID == "" {
		return
	}
	cp := r.Checkpoint()
	if cp.LastSeq == 0 || cp.LastSeq == r.published {
		return
	}
	w := catalog.Watermark{Format: 1, Receiver: r.cfg.ReceiverID, Stream: r.cfg.Stream, Generation: cp.Generation,
		AppliedSeq: cp.LastSeq, AppliedHash: cp.LastHash, Segment: cp.Segment, AppliedAt: cp.AppliedAt,
		PublishedAt: r.cfg.Now().UTC()}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !r.registered {
		if err := catalog.RegisterReceiver(ctx, r.cfg.Store, r.cfg.Stream, r.cfg.ReceiverID); err != nil {
			r.log.Warn("cannot register receiver watermark", "store", r.cfg.Store.String(), "err", err)
			return
		}
		r.registered = true
	}
	name, err := catalog.PutWatermark(ctx, r.cfg.Store, w)
	if err != nil {
		r.log.Warn("cannot publish applied watermark", "store", r.cfg.Store.String(), "seq", cp.LastSeq, "err", err)
		return
	}
	r.published, r.publishedAt = cp.LastSeq, r.cfg.Now()
	prev := r.publishedKey
	r.publishedKey = ""
	if prev != "" && prev != name {
		// The only other watermark is the one this receiver put last:
		// deleted by its name, without listing the dir (a LIST per
		// stream per publish, a third of a many-stream receiver's
		// watermark requests).
		err = r.cfg.Store.Delete(ctx, prev)
	} else if prev == "" {
		// Delete every other watermark, higher ones too: they were
		// left by an earlier receiver under this id (its state since
		// rebuilt), and a watermark above what is applied would let
		// retention delete segments this receiver still needs. Once
		// per run, and again after a delete failed.
		err = catalog.DeleteOtherWatermarks(ctx, r.cfg.Store, r.cfg.Stream, r.cfg.ReceiverID, name)
	}
	if err != nil {
		r.log.Warn("cannot delete old watermarks", "store", r.cfg.Store.String(), "err", err)
		return
	}
	r.publishedKey = name
}

// maybePublish publishes at most every PublishEvery.
func (r *Receiver) maybePublish(ctx context.Context) {
	if r.cfg.Now().Sub(r.publishedAt) >= r.cfg.PublishEvery {
		r.publish(ctx)
	}
}
