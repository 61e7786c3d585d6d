package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// ListKeyEpochs reads the key epochs of stream (batch.KeyEpoch), oldest
// first. A stream never rekeyed has none.
func ListKeyEpochs(ctx context.Context, st store.Store, stream string) ([]batch.KeyEpoch, error) {
	dir := batch.KeysDir(stream)
	var keys []string
	var epochs []uint32
	err := st.List(ctx, dir, "", func(o store.Object) error {
		if e, ok := batch.ParseKeyEpochName(strings.TrimPrefix(o.Name, dir)); ok {
			keys, epochs = append(keys, o.Name), append(epochs, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list key epochs %s: %w", dir, err)
	}
	out := make([]batch.KeyEpoch, 0, len(keys))
	for i, key := range keys {
		data, err := readCapped(ctx, st, key, batch.MaxKeyEpoch)
		if err != nil {
			return nil, fmt.Errorf("key epoch %s: %w", key, err)
		}
		e, err := batch.ParseKeyEpoch(stream, epochs[i], data)
		if err != nil {
			return nil, fmt.Errorf("key epoch %s: %w", key, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// CreateKeyEpoch stores e, refusing (ErrConflict) a different epoch of
// that number.
func CreateKeyEpoch(ctx context.Context, st store.Store, e batch.KeyEpoch) error {
	data, err := e.Marshal()
	if err != nil {
		return err
	}
	return st.Put(ctx, batch.KeyEpochKey(e.Stream, e.Epoch), data)
}

// ListKeyHeaders returns the names of the segments that have a header in
// epoch of stream.
func ListKeyHeaders(ctx context.Context, st store.Store, stream string, epoch uint32) (map[string]bool, error) {
	dir := batch.KeyHeaderDir(stream, epoch)
	out := map[string]bool{}
	err := st.List(ctx, dir, "", func(o store.Object) error {
		name, ok := strings.CutSuffix(strings.TrimPrefix(o.Name, dir), batch.KeyHeaderSuffix)
		if _, _, _, seg := batch.ParseSegmentName(name); ok && seg {
			out[name] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list key headers %s: %w", dir, err)
	}
	return out, nil
}

// ListKeyHeaderObjects returns the header objects of every key epoch of
// stream, by the name of the segment each is for. Epochs are found by the
// names of their objects, none of which is read: a damaged epoch object
// does not hide its headers.
func ListKeyHeaderObjects(ctx context.Context, st store.Store, stream string) (map[string][]string, error) {
	dir := batch.KeysDir(stream)
	var epochs []uint32
	err := st.List(ctx, dir, "", func(o store.Object) error {
		if e, ok := batch.ParseKeyEpochName(strings.TrimPrefix(o.Name, dir)); ok {
			epochs = append(epochs, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list key epochs %s: %w", dir, err)
	}
	out := map[string][]string{}
	for _, e := range epochs {
		names, err := ListKeyHeaders(ctx, st, stream, e)
		if err != nil {
			return nil, err
		}
		for name := range names {
			out[name] = append(out[name], batch.KeyHeaderKey(stream, e, name))
		}
	}
	return out, nil
}

// readCapped reads the object key, refusing one over limit bytes before
// holding it.
func readCapped(ctx context.Context, st store.Store, key string, limit int64) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes: %w", limit, batch.ErrCorrupt)
	}
	return data, nil
}

// KeyHeaders finds segments' headers in a stream's key epochs for a
// reader (batch.KeyHeaderLookup). It lists the epochs once and again when
// asked for a fresh answer, at most once a second.
type KeyHeaders struct {
	ctx    context.Context
	st     store.Store
	stream string

	mu       sync.Mutex
	epochs   []batch.KeyEpoch           // newest first
	headers  map[uint32]map[string]bool // each epoch's segments
	listed   bool
	listedAt time.Time
}

// NewKeyHeaders returns the KeyHeaders of stream in st; ctx bounds the
// store requests of its Lookups.
func NewKeyHeaders(ctx context.Context, st store.Store, stream string) *KeyHeaders {
	return &KeyHeaders{ctx: ctx, st: st, stream: stream}
}

// Lookup is a batch.KeyHeaderLookup.
func (k *KeyHeaders) Lookup(m *batch.Meta, fresh bool) (*batch.KeyHeader, error) {
	if m.Stream != k.stream {
		return nil, nil
	}
	k.mu.Lock()
	if !k.listed || fresh && time.Since(k.listedAt) > time.Second {
		if err := k.list(); err != nil {
			k.mu.Unlock()
			return nil, err
		}
	}
	name := m.Name()
	var found *batch.KeyEpoch
	for i, e := range k.epochs {
		if k.headers[e.Epoch][name] {
			found = &k.epochs[i]
			break
		}
	}
	k.mu.Unlock()
	if found == nil {
		return nil, nil
	}
	key := batch.KeyHeaderKey(k.stream, found.Epoch, name)
	data, err := readCapped(k.ctx, k.st, key, batch.MaxHeaderSize)
	if errors.Is(err, store.ErrNotFound) {
		// Listed, then deleted (pruned with its segment): none.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key epoch header %s: %w", key, err)
	}
	return &batch.KeyHeader{Object: key, Epoch: found.Epoch, Recipients: found.Recipients, Data: data}, nil
}

func (k *KeyHeaders) list() error {
	epochs, err := ListKeyEpochs(k.ctx, k.st, k.stream)
	if err != nil {
		return err
	}
	headers := map[uint32]map[string]bool{}
	for _, e := range epochs {
		if headers[e.Epoch], err = ListKeyHeaders(k.ctx, k.st, k.stream, e.Epoch); err != nil {
			return err
		}
	}
	slices.Reverse(epochs)
	k.epochs, k.headers, k.listed, k.listedAt = epochs, headers, true, time.Now()
	return nil
}
