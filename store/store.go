// Package store defines the interface every segment store implements (the
// local directory store, S3, and the receiving end of a TCP link) and the
// naming rules shared by all of them.
//
// A store holds immutable objects under slash-separated names. Segments of a
// stream live directly under "<stream>/"; other per-stream objects (receiver
// watermarks, for example) live in sub-"directories" such as
// "<stream>/watermarks/" (package catalog names and reads them). Names
// never start with "/" and never contain "..", "." or empty elements.
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
	// ErrConflict: an object of that name exists with different content.
	// For segments this means two writers produced different data for the
	// same sequence range (split brain); it is never resolved by overwriting.
	ErrConflict = errors.New("object exists with different content")
	// ErrPermanent marks errors that retrying cannot fix (bad credentials,
	// missing bucket, unwritable directory). Retry loops give up on them.
	ErrPermanent = errors.New("permanent store error")
)

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
