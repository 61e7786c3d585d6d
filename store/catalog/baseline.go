package catalog

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// maxBaselineMarker caps a marker read.
const maxBaselineMarker = 64 << 10

// BaselineMarker is a listed baseline marker object.
type BaselineMarker struct {
	Key  string
	Name string
	Gen  uint32
	// Begin and End are the seqs of the baseline-begin and -end records.
	Begin, End uint64
}

// ListBaselines lists the baseline markers of stream, oldest first. Only
// names are read; ReadBaseline reads one.
func ListBaselines(ctx context.Context, st store.Store, stream string) ([]BaselineMarker, error) {
	dir := batch.BaselineDir(stream)
	var out []BaselineMarker
	err := st.List(ctx, dir, "", func(o store.Object) error {
		name := strings.TrimPrefix(o.Name, dir)
		if gen, b, e, ok := batch.ParseBaselineName(name); ok {
			out = append(out, BaselineMarker{Key: o.Name, Name: name, Gen: gen, Begin: b, End: e})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list baselines %s: %w", dir, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ReadBaseline reads and checks a listed marker.
func ReadBaseline(ctx context.Context, st store.Store, m BaselineMarker) (batch.Baseline, error) {
	rc, err := st.Get(ctx, m.Key)
	if err != nil {
		return batch.Baseline{}, fmt.Errorf("read baseline marker %s: %w", m.Key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxBaselineMarker+1))
	if err != nil {
		return batch.Baseline{}, fmt.Errorf("read baseline marker %s: %w", m.Key, err)
	}
	if len(data) > maxBaselineMarker {
		return batch.Baseline{}, fmt.Errorf("baseline marker %s is larger than %d bytes: damaged", m.Key, maxBaselineMarker)
	}
	return batch.ParseBaseline(m.Name, data)
}
