package source

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/syncrec"
)

// OwnRecords is the Sink a ferry sync record stream's Tail appends to
// (docs/SYNC.md, "Record streams"): it passes on the site's own lines and
// drops the lines a SyncLog applier wrote (those carrying an origin,
// syncrec), with the cursor all the same, so a site never ships a record
// whose origin is another site, across restarts too. A line that is not
// one JSON object is an error (the peers could not apply it); a blank
// line is skipped.
//
// A line an applier's crash cut short, with the next line appended to it
// (syncrec.Split), is taken apart: the cut part is dropped (the applier
// writes its record again) and the line after it is judged on its own,
// so an event the application appended after the crash is still shipped.
type OwnRecords struct {
	Sink shipper.Sink
	Path string // the tailed file, for messages
	Log  *slog.Logger
	// Dropped counts the lines dropped as another site's; Torn the
	// cut-short parts dropped.
	Dropped, Torn atomic.Int64
}

var _ shipper.Sink = (*OwnRecords)(nil)

// AppendBatch filters recs in place and appends the rest with cursor.
func (o *OwnRecords) AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error {
	keep := recs[:0]
	for _, r := range recs {
		if len(bytes.TrimSpace(r.Data)) == 0 {
			continue // a blank line is nobody's record
		}
		notObject := syncrec.CheckObject(r.Data)
		if notObject != nil {
			if torn, rest, ok := syncrec.Split(r.Data); ok {
				o.Torn.Add(1)
				if o.Log != nil {
					o.Log.Warn("a line of the sync log was cut short by a crash of its writer and the next line appended to it: dropping the cut part (ferry writes its record again), reading the line after it",
						"log", o.Path, "cut_bytes", len(torn))
				}
				r.Data, notObject = rest, nil
			}
		}
		_, marked, err := syncrec.Parse(r.Data)
		if err != nil {
			return fmt.Errorf("sync log %s: %v: a line that starts like one ferry applied must carry a readable origin", o.Path, err)
		}
		if marked {
			o.Dropped.Add(1)
			continue
		}
		if notObject != nil {
			return fmt.Errorf("sync log %s: line %v: the peers could not apply it (a sync record stream is one JSON object per line); fix the writer, and blank the line in place (spaces, same length) to go on", o.Path, notObject)
		}
		keep = append(keep, r)
	}
	return o.Sink.AppendBatch(ctx, keep, cursor)
}
