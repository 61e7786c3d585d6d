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
// First it removes the temp files of the stream's directory (if the
// inbox can: dir.Store.RemoveTemps), where a segment that was being
// streamed in when the process died was left, up to its size.
//
// Newest first, it verifies each segment as batch.Open would, reading it
// as a stream that it does not hold, and removes it (with a WARN log
// naming it and why) while verification fails with batch.ErrCorrupt, and
// stops at the first that verifies. If the newest
// MaxTornSegments+1 all fail, it removes nothing and returns an error
// wrapping batch.ErrCorrupt that names them. Damage further back is left to
// the receiver, which reports it when it gets there. Any other error
// (listing, reading, a segment of a newer format) is returned as is, also
// with nothing removed.
func RecoverInbox(ctx context.Context, inbox store.Store, stream string, gen uint32, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A segment being streamed in (receiveStream) when the process died
	// is left in a temp file of up to its size, which no listing shows.
	if rt, ok := inbox.(tempRemover); ok {
		removed, err := rt.RemoveTemps(batch.StreamDir(stream))
		for _, name := range removed {
			log.Warn("removed a segment left unfinished in the inbox when the receiver stopped; the shipper resends it", "file", name, "store", inbox.String())
		}
		if err != nil {
			return fmt.Errorf("recover inbox %s: %w", inbox, err)
		}
	}
	names, err := newestNames(ctx, inbox, stream, gen, MaxTornSegments+1)
	if err != nil {
		return fmt.Errorf("recover inbox %s: %w", inbox, err)
	}
	var torn []string
	var reasons []error
	buf := make([]byte, streamBuffer)
	for _, name := range names {
		key := batch.SegmentKey(stream, name)
		err := verifyObject(ctx, inbox, key, buf)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted since listed
		}
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

// tempRemover is an inbox that can remove what unfinished writes left
// (dir.Store.RemoveTemps).
type tempRemover interface {
	RemoveTemps(dir string) ([]string, error)
}

// verifyObject reads segment key from st through buf and makes
// batch.Open's checks on it. Damage is an error wrapping batch.ErrCorrupt
// (a segment claiming more than DefaultMaxSegment too); a segment
// missing is one wrapping store.ErrNotFound.
func verifyObject(ctx context.Context, st store.Store, key string, buf []byte) error {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	sr, err := batch.NewSegmentReader(rc, 0, DefaultMaxSegment)
	if err == nil {
		_, err = sr.Verify(buf)
	}
	if errors.Is(err, batch.ErrSegmentTooLarge) {
		err = fmt.Errorf("%w: %w", batch.ErrCorrupt, err)
	}
	return err
}
