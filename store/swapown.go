package store

import (
	"context"
	"errors"
	"fmt"
)

// ChangedError is SwapOwn's error when the object changed and is not the
// writer's own: it wraps ErrChanged and says what the object holds now,
// for the caller's report.
type ChangedError struct {
	// Current is the object's content as Load found it after the failed
	// Swap; nil if LoadErr is set.
	Current []byte
	// LoadErr is Load's error, if reading the changed object failed
	// (wrapping ErrNotFound if it was deleted).
	LoadErr error
}

func (e *ChangedError) Error() string {
	if e.LoadErr != nil {
		return fmt.Sprintf("%v, and reading it failed: %v", ErrChanged, e.LoadErr)
	}
	return ErrChanged.Error()
}

func (e *ChangedError) Unwrap() error { return ErrChanged }

// SwapOwn writes data under name by Swap from version old, for a writer
// whose objects identify it (a lease's token): if the object changed
// meanwhile and mine says what it holds now is still the writer's own (an
// earlier Swap of the writer's landed and its answer was lost), it is
// written again, once, from its current version. It returns the version
// written; an error wrapping ErrChanged (a *ChangedError) if the object
// changed and is not the writer's, or changed again; Swap's other errors
// as they are. (A retry of this very Swap that finds it landed succeeds
// in Swap itself: the object holds exactly data.)
func SwapOwn(ctx context.Context, sw Swapper, name string, data []byte, old string, mine func(current []byte) bool) (string, error) {
	for adopted := false; ; adopted = true {
		v, err := sw.Swap(ctx, name, data, old)
		if !errors.Is(err, ErrChanged) {
			return v, err
		}
		cur, ver, lerr := sw.Load(ctx, name)
		if lerr != nil {
			return "", &ChangedError{LoadErr: lerr}
		}
		if adopted || !mine(cur) {
			return "", &ChangedError{Current: cur}
		}
		old = ver
	}
}
