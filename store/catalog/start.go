package catalog

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// maxStartMarker caps a start marker read.
const maxStartMarker = 64 << 10

// StartMarker is a listed start marker object.
type StartMarker struct {
	Key  string
	Name string
	Gen  uint32
	Seq  uint64 // the first seq the store holds on purpose
}

// ListStarts lists the start markers of stream, oldest first. Only names
// are read; ReadStart reads one.
func ListStarts(ctx context.Context, st store.Store, stream string) ([]StartMarker, error) {
	dir := batch.StartDir(stream)
	var out []StartMarker
	err := st.List(ctx, dir, "", func(o store.Object) error {
		name := strings.TrimPrefix(o.Name, dir)
		if gen, seq, ok := batch.ParseStartName(name); ok {
			out = append(out, StartMarker{Key: o.Name, Name: name, Gen: gen, Seq: seq})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list start markers %s: %w", dir, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// ReadStart reads and checks a listed marker.
func ReadStart(ctx context.Context, st store.Store, m StartMarker) (batch.Start, error) {
	rc, err := st.Get(ctx, m.Key)
	if err != nil {
		return batch.Start{}, fmt.Errorf("read start marker %s: %w", m.Key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxStartMarker+1))
	if err != nil {
		return batch.Start{}, fmt.Errorf("read start marker %s: %w", m.Key, err)
	}
	if len(data) > maxStartMarker {
		return batch.Start{}, fmt.Errorf("start marker %s is larger than %d bytes: damaged", m.Key, maxStartMarker)
	}
	return batch.ParseStart(m.Name, data)
}

// WriteStart stores a start marker unless one for the same generation and
// seq is there already (the first decision stands; markers are never
// overwritten).
func WriteStart(ctx context.Context, st store.Store, s batch.Start) error {
	key := batch.StartKey(s.Stream, s)
	rc, err := st.Get(ctx, key)
	if err == nil {
		rc.Close()
		return nil
	}
	if err := st.Put(ctx, key, batch.MarshalStart(s)); err != nil {
		return fmt.Errorf("write start marker %s: %w", key, err)
	}
	return nil
}

// MarkPruned writes the start marker of a stream whose segments before
// the segment name are about to be deleted (reason "pruned"), reading
// that segment's header for the hash it chains to.
func MarkPruned(ctx context.Context, st store.Store, stream, name string) error {
	return MarkPrunedAt(ctx, st, stream, Segment{Name: name, Key: batch.SegmentKey(stream, name)})
}

// MarkPrunedAt is MarkPruned at seg, a segment stored alone or a bundle
// part (its header read by range from its bundle).
func MarkPrunedAt(ctx context.Context, st store.Store, stream string, seg Segment) error {
	name := seg.Name
	gen, first, _, ok := batch.ParseSegmentName(name)
	if !ok {
		return fmt.Errorf("mark the start of pruned stream %q: %s is not a segment name", stream, name)
	}
	key := batch.SegmentKey(stream, name)
	var head []byte
	var err error
	if p := seg.Part; p != nil {
		key = p.Bundle + " part " + key
		head = make([]byte, min(p.Length, 8+batch.MaxMetaSize))
		err = store.GetRange(ctx, st, p.Bundle, p.Offset, head)
	} else {
		var rc io.ReadCloser
		if rc, err = st.Get(ctx, key); err == nil {
			head, err = io.ReadAll(io.LimitReader(rc, 8+batch.MaxMetaSize))
			rc.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("read %s to mark where the pruned stream starts: %w", key, err)
	}
	m, _, err := batch.ParseMeta(head)
	if err != nil {
		return fmt.Errorf("segment %s: %w; nothing pruned", key, err)
	}
	host, _ := os.Hostname()
	return WriteStart(ctx, st, batch.Start{Stream: stream, Generation: gen, Seq: first,
		PrevSHA256: m.PrevSHA256, Reason: batch.StartPruned, Host: host, Time: time.Now()})
}
