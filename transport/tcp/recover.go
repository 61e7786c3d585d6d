package tcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// MaxTornSegments is how many segments at the newest end of an inbox
// RecoverInbox removes at most. A crash tears only the segments whose Put
// was in flight, one per link; more than this in a row is damage.
const MaxTornSegments = 4

// RecoverInbox removes, from the newest end of a link receiver's inbox,
// the segments of stream and generation gen that a crash tore before they
// were acknowledged. Call it before anything reads the inbox or a Server
// answers a handshake from it: WELCOME tells the shipper the newest segment
// stored, and the shipper resumes after it.
//
// It is needed, and safe, because the inbox is a dir store with
// PublishBeforeSync: after a power loss the segments whose Put was in
// flight may be torn under their final names, but the server acknowledges a
// segment only after its Put returned, so the shipper still has every torn
// one and resends it.
//
// Newest first, it reads each segment and verifies it with batch.Open,
// removing it (with a WARN log naming it and why) while verification fails
// with batch.ErrCorrupt, and stops at the first that verifies. If the newest
// MaxTornSegments+1 all fail, it removes nothing and returns an error
// wrapping batch.ErrCorrupt that names them. Damage further back is left to
// the receiver, which reports it when it gets there. Any other error
// (listing, reading, a segment of a newer format) is returned as is, also
// with nothing removed.
func RecoverInbox(ctx context.Context, inbox store.Store, stream string, gen uint32, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	names, err := newestNames(ctx, inbox, stream, gen, MaxTornSegments+1)
	if err != nil {
		return err
	}
	var torn []string
	var reasons []error
	for _, name := range names {
		key := batch.SegmentKey(stream, name)
		data, err := readObject(ctx, inbox, key, DefaultMaxSegment)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			return fmt.Errorf("recover inbox %s: read %s: %w", inbox, key, err)
		}
		_, err = batch.Open(data)
		if err == nil {
			break
		}
		if !errors.Is(err, batch.ErrCorrupt) {
			return fmt.Errorf("recover inbox %s: segment %s: %w", inbox, key, err)
		}
		torn = append(torn, key)
		reasons = append(reasons, err)
	}
	if len(torn) > MaxTornSegments {
		details := make([]string, len(torn))
		for i, key := range torn {
			details[i] = fmt.Sprintf("%s: %v", key, reasons[i])
		}
		return fmt.Errorf("recover inbox %s: %w in each of the newest %d segments of stream %q generation %d (%s): "+
			"more than a crash can tear, so nothing was removed; check them with ferry verify --store %s --stream %s, "+
			"move the damaged ones out of the inbox and restart",
			inbox, batch.ErrCorrupt, len(torn), stream, gen, strings.Join(details, "; "),
			strings.TrimPrefix(inbox.String(), "dir:"), stream)
	}
	for i, key := range torn {
		if err := inbox.Delete(ctx, key); err != nil {
			return fmt.Errorf("recover inbox %s: remove torn segment %s: %w", inbox, key, err)
		}
		log.Warn("removed a torn segment from the inbox: torn by a crash before it was acknowledged; the shipper resends it",
			"segment", key, "store", inbox.String(), "reason", reasons[i].Error())
	}
	return nil
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
		return nil, fmt.Errorf("recover inbox %s: list %s: %w", inbox, dir, err)
	}
	names := make([]string, 0, len(ring))
	for i := range ring {
		names = append(names, ring[(next+len(ring)-1-i)%len(ring)])
	}
	return names, nil
}
