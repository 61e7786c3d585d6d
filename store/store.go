// Package store defines the interface every segment store implements (the
// local directory store, S3, and the receiving end of a TCP link) and the
// naming rules shared by all of them.
//
// A store holds immutable objects under slash-separated names. Segments of a
// stream live directly under "<stream>/"; other per-stream objects (receiver
// watermarks, for example) live in sub-"directories" such as
// "<stream>/watermarks/" (package catalog names and reads them). Names
// never start with "/" and never contain "..", "." or empty elements. The only mutable objects are those a Swapper
// replaces by compare-and-swap (a writer lease), kept apart from segments.
//
// # Split brain
//
// Two writers on one stream show in the store as two segments of one
// generation whose seq ranges overlap: the same names with different
// content, or different boundaries. Every store refuses the first kind
// (ErrConflict). The second is refused as far as each store can:
//
//   - dir: exactly. Segment Puts into one directory are serialised by a
//     lock, and a Put is refused if any stored segment of its generation
//     shares a seq with it, whether it starts below, inside or above.
//   - s3: partly, with one LIST before the PUT. A stored segment that
//     starts inside the new one's range is found; one that starts below it
//     and reaches into it is not (S3 cannot list backwards), nor is one
//     stored by a writer racing between the LIST and the PUT.
//   - tcp:// links: the receiver refuses a segment overlapping its inbox's
//     newest, and its inbox is a dir store.
//
// What a store lets through, the writer lease (one writer at a time, by
// Swap) is there to prevent, and readers cope with: the receiver applies a
// single chain, each segment starting right after the last one it applied
// and naming that one's hash, and passes over segments that start inside
// what it applied, so no record applies twice and another writer's segment
// that does continue the seqs breaks the chain (receiver.ErrChain). `ferry
// verify` reports every overlap.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrNotFound: the named object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: an object of that name exists with different content,
	// or (for a segment) a stored segment of the same generation overlaps
	// its seq range. For segments either means two writers produced data
	// for the same sequence numbers (split brain); it is never resolved by
	// overwriting.
	ErrConflict = errors.New("object exists with different content")
	// ErrPermanent marks errors that retrying cannot fix (bad credentials,
	// missing bucket, unwritable directory). Retry loops give up on them.
	ErrPermanent = errors.New("permanent store error")
	// ErrChanged: a Swapper's Swap found the object not at the version it
	// was told (replaced, created or deleted since it was read) and left
	// it untouched. Retrying the same Swap cannot help; Load again and
	// decide afresh.
	ErrChanged = errors.New("object changed since it was read")
)

// DirLister is implemented by stores that can name the sub-"directories"
// List skips: ferry uses it to name the streams a store holds when one
// asked for is not there.
type DirLister interface {
	// ListDirs calls fn with the name (ending in "/") of each
	// sub-"directory" directly under dir ("" or ending in "/"), in
	// ascending lexical order. A missing dir lists nothing and returns nil.
	ListDirs(ctx context.Context, dir string, fn func(name string) error) error
}

// Object describes one stored object as returned by List.
type Object struct {
	Name    string    // full name, e.g. "app/00000001-0000000000000001-0000000000000010.seg.zst"
	Size    int64     // bytes
	ModTime time.Time // when the store last wrote it; zero if unknown
}

// Store is implemented by every backend. All methods are safe for concurrent
// use and honour ctx cancellation.
type Store interface {
	// Put stores data under name durably and returns only once it is
	// durable (for a directory: written to a temp file, fsynced, renamed,
	// directory fsynced). If an object of that name already exists with
	// identical content, Put returns nil (an idempotent retry). If it exists
	// with different content, Put returns an error wrapping ErrConflict and
	// leaves the stored object untouched. Put never overwrites.
	//
	// If name is a segment (ParseSegmentObject) and no object of that name
	// exists, Put also refuses it, with an error wrapping ErrConflict
	// (OverlapError), when a stored segment of the same generation in the
	// same directory overlaps its seq range. How completely a store
	// enforces this differs; see the package comment.
	Put(ctx context.Context, name string, data []byte) error

	// Get opens the named object for reading. A missing object gives an
	// error wrapping ErrNotFound.
	Get(ctx context.Context, name string) (io.ReadCloser, error)

	// List calls fn for each object directly under dir (no recursion; dir
	// is "" or ends with "/") whose name sorts strictly after after (a full
	// name, or "" for everything), in ascending lexical order of name. Names
	// of sub-"directories" are not reported. If fn returns an error, List
	// stops and returns it. A missing dir lists nothing and returns nil.
	List(ctx context.Context, dir, after string, fn func(Object) error) error

	// Delete removes the named object. Deleting a missing object returns nil.
	Delete(ctx context.Context, name string) error

	// String describes the store for logs and status output. It never
	// contains secrets.
	String() string
}

// Pipeliner is a Store that can have several Puts on their way at once,
// such as a tcp:// link, where waiting for each answer before sending the
// next would leave the link idle for a round trip per object.
type Pipeliner interface {
	Store
	// PutAsync starts a Put and returns a function that waits for its
	// outcome, which means what Put's would. Puts started one after
	// another from one goroutine arrive in that order. PutAsync itself
	// waits while MaxInFlight Puts are outstanding.
	PutAsync(ctx context.Context, name string, data []byte) (wait func() error)
	// MaxInFlight is how many started Puts may be outstanding (>= 1).
	MaxInFlight() int
}

// Stager is a Store that can take an object as its bytes arrive rather
// than whole in memory: they are written to a temp file (or the like),
// where nothing reads them under the object's name, and named only when
// the writer has checked them and publishes them. A link receiver streams
// a large segment into its inbox this way, holding a fixed buffer instead
// of the segment.
type Stager interface {
	Store
	// Stage starts an object to be stored under name; nothing is stored
	// under name until Publish. An invalid name is refused as Put refuses
	// it.
	Stage(ctx context.Context, name string) (Staged, error)
}

// Staged is an object a Stager is writing. It is used by one goroutine.
type Staged interface {
	// Write appends to the object.
	io.Writer
	// ReadAt reads back what was written, to compare it with another
	// copy.
	io.ReaderAt
	// Size is how many bytes were written.
	Size() int64
	// Publish stores what was written under the name, with Put's
	// contract and errors: it returns nil only once the object is
	// durable, nil also if an identical object is there, ErrConflict
	// (and leaves the stored object untouched) if a different one is or
	// a segment overlaps, and never overwrites. Whatever it returns, the
	// Staged is done with.
	Publish(ctx context.Context) error
	// Discard drops what was written without storing it. It may be
	// called after Publish and more than once; it then does nothing.
	Discard()
}

// SegmentsOnly is implemented by a Store that carries nothing but its
// stream's segments into storage that another party owns, such as a
// tcp:// link into a receiver's inbox: it refuses any other object, lists
// only what the segment protocol needs, and cannot delete; the receiving
// side prunes it. SegmentsOnly reports whether that holds (a wrapper may
// forward its inner store's answer). Those writing to a store skip one
// that is segments-only for everything but segments: baseline and push
// markers, receiver watermarks, retention, clean-up.
//
// A Store that does not implement SegmentsOnly, or returns false, holds
// any object named under the rules above, and whoever writes to it may
// also list, prune and delete there.
type SegmentsOnly interface {
	SegmentsOnly() bool
}

// IsSegmentsOnly reports whether st is a SegmentsOnly store that says so.
func IsSegmentsOnly(st Store) bool {
	so, ok := st.(SegmentsOnly)
	return ok && so.SegmentsOnly()
}

// Swapper is a Store that can also replace an object atomically on the
// condition that it has not changed since it was read: compare-and-swap, for
// the few objects that several writers contend for, such as a stream's
// writer lease. Swapped objects are mutable, so they live apart from
// segments (under "<stream>/claims/", say) and are written only with Swap;
// Put keeps its never-overwrite contract, Get and List see swapped objects
// like any other, and Delete removes them unconditionally (to give one up
// without racing a Swap, Swap it to a released state instead).
//
// A Store that does not implement Swapper (a tcp:// link, or a wrapper that
// hides it) cannot hold a lease; a caller that needs one refuses such a
// store (AsSwapper) rather than imitate Swap with Get and Put, which is not
// atomic.
type Swapper interface {
	Store

	// Load returns the object's content and its version, an opaque,
	// non-empty string that changes whenever the content does. A version
	// identifies content, not a write: a store may give identical content
	// the same version, so an object that must never be mistaken for an
	// earlier state of itself carries a counter or a time (a lease carries
	// its renewal time). A missing object gives an error wrapping
	// ErrNotFound. Load reads the whole object into memory; it is meant
	// for small objects, and refuses one larger than MaxSwapSize (damaged,
	// or not written by Swap) with an error wrapping ErrPermanent, nil data
	// and, when the store can tell it without reading the object whole,
	// its version: a Swap from that version replaces the damaged object
	// only if nobody replaced it meanwhile.
	Load(ctx context.Context, name string) (data []byte, version string, err error)

	// Swap stores data under name if the object is at version old ("" for
	// an object that does not exist yet) and returns the version it now
	// has. If the object is at any other version, or missing while old is
	// not "", Swap returns an error wrapping ErrChanged and leaves it
	// untouched. Of several Swaps from one version, at most one succeeds.
	// Like Put, Swap returns only once the new content is durable.
	//
	// If the object already holds exactly data, Swap returns its version
	// and nil whatever old is, without writing. That makes a retry of a
	// Swap whose answer was lost succeed; data should therefore identify
	// its writer and the attempt (a lease names its holder and a renewal
	// counter), so that no other writer can produce the same bytes.
	//
	// Data larger than MaxSwapSize is refused with an error wrapping
	// ErrPermanent, before anything is written.
	Swap(ctx context.Context, name string, data []byte, old string) (version string, err error)
}

// MaxSwapSize is the largest object a Swapper's Load reads and its Swap
// writes: swapped objects (a lease) are a few hundred bytes, and a larger
// one is damaged or hostile, so no reader must take it into memory whole.
const MaxSwapSize = 64 << 10

// CheckSwapSize refuses size above MaxSwapSize with an error wrapping
// ErrPermanent; what names the object (and operation) in it.
func CheckSwapSize(what string, size int64) error {
	if size > MaxSwapSize {
		return fmt.Errorf("%s: %d bytes, larger than the %d a swapped object may hold: damaged or not a swapped object: %w",
			what, size, MaxSwapSize, ErrPermanent)
	}
	return nil
}

// AsSwapper returns s as a Swapper, or an error wrapping ErrPermanent that
// names the store and says why it is needed: what, e.g. "writer lease".
func AsSwapper(s Store, what string) (Swapper, error) {
	if sw, ok := s.(Swapper); ok {
		return sw, nil
	}
	return nil, fmt.Errorf("%s needs a store that can compare-and-swap objects, which %s cannot; use a dir or s3 store: %w",
		what, s, ErrPermanent)
}

// CheckName validates an object name against the rules in the package
// comment. Stores call it before touching anything.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("object name is empty")
	}
	if strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
		return fmt.Errorf("object name %q must not start or end with /", name)
	}
	if strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("object name %q contains a backslash or NUL", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("object name %q has an empty, . or .. element", name)
		}
	}
	return nil
}

// CheckDir validates a List dir argument: "" or a valid name followed by "/".
func CheckDir(dir string) error {
	if dir == "" {
		return nil
	}
	if !strings.HasSuffix(dir, "/") {
		return fmt.Errorf("list dir %q must end with /", dir)
	}
	return CheckName(strings.TrimSuffix(dir, "/"))
}
