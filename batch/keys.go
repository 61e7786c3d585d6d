package batch

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Key epochs (docs/FORMAT.md, "Rotation"). A rekey re-wraps the file key
// of every encrypted segment of a stream for a new set of recipients and
// stores each new age header apart from its segment, which stays as it
// was stored:
//
//	<stream>/keys/<epoch>.json             the epoch: its recipients (KeyEpoch)
//	<stream>/keys/<epoch>/<segment>.hdr    a segment's age header for them
//
// with the epoch in 8 lower-case hex digits (1, 2, ...). Both are created
// once and never overwritten. A reader decrypts a segment with its header
// of the newest epoch that has one, or else with the header embedded in
// the segment.

// KeyHeaderSuffix ends the name of a segment's header in a key epoch.
const KeyHeaderSuffix = ".hdr"

// MaxHeaderSize caps an age header a reader parses, embedded or from a
// key epoch: far above what MaxRecipients X25519 stanzas take (about 7
// KiB), far below what the age package would read (2 MiB).
const MaxHeaderSize = 16 << 10

// MaxKeyEpoch caps the size of an epoch object a reader reads.
const MaxKeyEpoch = 64 << 10

// KeysDir is the List dir of a stream's key epochs.
func KeysDir(stream string) string { return stream + "/keys/" }

// KeyEpochKey is the store object name of epoch's KeyEpoch.
func KeyEpochKey(stream string, epoch uint32) string {
	return fmt.Sprintf("%s%08x.json", KeysDir(stream), epoch)
}

// ParseKeyEpochName parses "<epoch>.json", a name listed in KeysDir.
func ParseKeyEpochName(name string) (uint32, bool) {
	hex, ok := strings.CutSuffix(name, ".json")
	if !ok || len(hex) != 8 {
		return 0, false
	}
	e, ok := parseHex(hex)
	return uint32(e), ok && e > 0
}

// KeyHeaderDir is the List dir of epoch's segment headers.
func KeyHeaderDir(stream string, epoch uint32) string {
	return fmt.Sprintf("%s%08x/", KeysDir(stream), epoch)
}

// KeyHeaderKey is the store object name of segment's header in epoch.
func KeyHeaderKey(stream string, epoch uint32, segment string) string {
	return KeyHeaderDir(stream, epoch) + segment + KeyHeaderSuffix
}

// KeyEpoch describes one key epoch: the recipients its headers wrap the
// file keys for.
type KeyEpoch struct {
	Stream string `json:"stream"`
	Epoch  uint32 `json:"epoch"`
	// Recipients are the fingerprints of the recipients, as Meta lists them.
	Recipients []string  `json:"recipients"`
	CreatedAt  time.Time `json:"created_at"`
}

// Marshal encodes e as its object holds it.
func (e KeyEpoch) Marshal() ([]byte, error) { return json.Marshal(e) }

// ParseKeyEpoch decodes and checks an epoch object of stream named key.
func ParseKeyEpoch(stream string, epoch uint32, data []byte) (KeyEpoch, error) {
	var e KeyEpoch
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("key epoch: %v: %w", err, ErrCorrupt)
	}
	switch {
	case e.Stream != stream:
		return e, fmt.Errorf("key epoch is of stream %q, not %q: %w", e.Stream, stream, ErrCorrupt)
	case e.Epoch != epoch:
		return e, fmt.Errorf("key epoch says epoch %d, its name %d: %w", e.Epoch, epoch, ErrCorrupt)
	case len(e.Recipients) == 0 || len(e.Recipients) > MaxRecipients:
		return e, fmt.Errorf("key epoch lists %d recipients (1 to %d): %w", len(e.Recipients), MaxRecipients, ErrCorrupt)
	}
	return e, nil
}

// SameRecipients reports whether e wraps for exactly the fingerprints fps,
// in any order.
func (e KeyEpoch) SameRecipients(fps []string) bool {
	a, b := slices.Clone(e.Recipients), slices.Clone(fps)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// A KeyHeader is a segment's age header from a key epoch, which a
// Decrypter uses instead of the header embedded in the segment.
type KeyHeader struct {
	Object     string   // the store object it was read from, for errors
	Epoch      uint32   // its epoch
	Recipients []string // the fingerprints the epoch wraps for
	Data       []byte   // the age header, up to and including the MAC line
}

// KeyHeaderLookup finds the header of the segment m in the newest key
// epoch that has one; nil, nil when none has. With fresh, it lists the
// epochs again rather than trust what it listed before (a rekey may have
// run since).
type KeyHeaderLookup func(m *Meta, fresh bool) (*KeyHeader, error)
