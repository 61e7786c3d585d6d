package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/internal/fsutil"
)

// A promoted site keeps STATE/promoted.json, written by ferry promote once
// the generation record is in the store: the site now writes the stream
// (generation Generation, from ForkSeq+1) and must not receive it. ferry
// receive refuses such a state dir; ferry rejoin removes the file when it
// turns the site back into a receiver.
const promotionName = "promoted.json"

// Promotion is the content of STATE/promoted.json.
type Promotion struct {
	Version    int       `json:"version"`
	Stream     string    `json:"stream"`
	Generation uint32    `json:"generation"` // the generation this site now writes
	ForkSeq    uint64    `json:"fork_seq"`
	ForkHash   string    `json:"fork_hash"`
	Time       time.Time `json:"time"`
	Site       string    `json:"site"`
	// ReplicaSize is the size of a file: applier's replica at the fork,
	// so a tail: source on the replica starts right after what was
	// applied; -1 when the applier is not file:.
	ReplicaSize int64 `json:"replica_size"`
}

// ErrPromoted marks a state dir that was promoted: the site is a primary.
var ErrPromoted = errors.New("site was promoted")

// SavePromotion writes STATE/promoted.json durably.
func SavePromotion(dir string, p Promotion) error {
	p.Version = 1
	p.Time = p.Time.UTC()
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, promotionName), append(data, '\n'), 0o644)
}

// LoadPromotion reads STATE/promoted.json; ok is false when the site was
// not promoted.
func LoadPromotion(dir string) (p Promotion, ok bool, err error) {
	path := filepath.Join(dir, promotionName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return p, false, nil // no state dir (yet): the receiver says what is wrong with it
	}
	if err != nil {
		return p, false, err
	}
	if err := json.Unmarshal(data, &p); err != nil || p.Version != 1 || p.Generation < 2 {
		return p, false, fmt.Errorf("%s is damaged (%v); it marks a promoted site: check the stream's generations before removing it", path, err)
	}
	return p, true, nil
}

// ClearPromotion removes STATE/promoted.json durably.
func ClearPromotion(dir string) error {
	err := os.Remove(filepath.Join(dir, promotionName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fsutil.SyncDir(dir)
}

// CheckNotPromoted returns an error wrapping ErrPromoted when the state dir
// was promoted.
func CheckNotPromoted(dir string) error {
	p, ok, err := LoadPromotion(dir)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("state %s: this site was promoted to write generation %d of stream %q (forked at seq %d, promoted on %s at %s); it cannot receive the stream it writes; run ferry rejoin to make it a receiver again: %w",
			dir, p.Generation, p.Stream, p.ForkSeq, p.Site, p.Time.Format(time.RFC3339), ErrPromoted)
	}
	return nil
}

// StartCheckpoint gives a state dir its first checkpoint: a receiver
// started on it continues after seq last of generation gen, chained to
// hash (the hash of the segment that ends at last), with the applier
// state given (nil for none). ferry rejoin uses it to turn a fenced
// primary into a receiver at the fork. It refuses a dir that already has
// a checkpoint, unless the dir was promoted to write generation gen of
// stream: that checkpoint is from before the promotion, and the site,
// fenced in gen, becomes a receiver again (its promoted.json is removed
// once the new checkpoint is durable). It takes the state lock while it
// writes.
func StartCheckpoint(dir, stream string, gen uint32, last uint64, hash string, applier json.RawMessage) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := fsutil.Lock(dir, "state")
	if err != nil {
		return err
	}
	defer lock.Close()
	p, promoted, err := LoadPromotion(dir)
	if err != nil {
		return err
	}
	promoted = promoted && p.Stream == stream && p.Generation == gen
	if _, ok, err := LoadCheckpoint(dir); err != nil || ok && !promoted {
		if err == nil {
			err = fmt.Errorf("state %s already has a checkpoint; use a new state dir", dir)
		}
		return err
	}
	cp := newCheckpoint(stream, gen)
	cp.LastSeq, cp.Applier = last, applier
	if last > 0 {
		cp.LastHash = hash
	}
	if err := saveCheckpoint(dir, cp); err != nil {
		return err
	}
	if promoted {
		return ClearPromotion(dir)
	}
	return nil
}
