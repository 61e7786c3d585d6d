package receiver

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/ferry-dr/ferry/batch"
)

// Applier makes a verified segment's records take effect on the secondary.
// The kinds (file, exec, stdout, dir) are in package receiver/apply.
// Apply returns only once the effect is durable; the receiver advances its
// checkpoint after that. An error wrapping ErrFatal stops the receiver;
// any other error is retried with backoff and the checkpoint stays. The
// records and the bytes they point to are valid only until Apply returns:
// the receiver reuses their memory for later segments. meta describes the
// records given (exec: FERRY_FIRST_SEQ), which a restore boundary may make
// part of the segment.
type Applier interface {
	Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error
	Close() error
	String() string
}

// Stateful appliers keep state in the checkpoint so a crash between Apply
// and the checkpoint write is undone on restart: exactly-once.
type Stateful interface {
	// State is the applier's state after the last Apply.
	State() (json.RawMessage, error)
	// Restore is called once before the first Apply with the state saved
	// in the checkpoint (nil for a new checkpoint) and undoes anything
	// applied after it.
	Restore(state json.RawMessage) error
}

// SyncDeferrer is a Stateful applier whose Apply can leave making its
// writes durable to later: after DeferSync(true) Apply does not fsync, and
// Sync (or an Apply after DeferSync(false)) makes everything applied
// durable. When several segments are ready the receiver applies them as a
// group with one fsync and one checkpoint; a crash in between loses
// nothing, as Restore undoes what the checkpoint does not cover.
type SyncDeferrer interface {
	Stateful
	DeferSync(deferred bool)
	Sync() error
}

// CatchUpChecker is a Stateful applier that Restore may leave with
// something only the segments after the checkpoint can account for (the
// file: applier's bytes past the checkpointed size). The receiver calls
// CaughtUp whenever it has applied all the store holds after the
// checkpoint: a listing found nothing more to apply, or a restore reached
// its boundary. An error stops the receiver.
type CatchUpChecker interface {
	CaughtUp() error
}

// ErrFatal marks applier errors that retrying cannot fix.
var ErrFatal = errors.New("fatal apply error")
