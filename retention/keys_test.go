package retention

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// keyObjects lists every object under the stream's keys/ dir, epochs and
// their headers.
func keyObjects(t *testing.T, st store.Store) []string {
	t.Helper()
	var out []string
	var walk func(dir string)
	walk = func(dir string) {
		err := st.List(context.Background(), dir, "", func(o store.Object) error {
			out = append(out, o.Name)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	walk(batch.KeysDir("app"))
	for e := uint32(1); e <= 2; e++ {
		walk(batch.KeyHeaderDir("app", e))
	}
	slices.Sort(out)
	return out
}

// Pruning a rekeyed stream deletes the key epoch headers of the segments
// it deletes, after them, and those of older segments deleted before
// (an earlier prune that stopped), but neither a kept segment's headers
// nor the epochs.
func TestPruneDeletesKeyHeaders(t *testing.T) {
	ctx := context.Background()
	st, _ := archive(t, 10, now, daysOld)
	p, err := Compute(ctx, st, "app", Policy{KeepMin: 4}, now)
	if err != nil {
		t.Fatal(err)
	}
	for e := uint32(1); e <= 2; e++ {
		if err := catalog.CreateKeyEpoch(ctx, st, batch.KeyEpoch{Stream: "app", Epoch: e, Recipients: []string{"0123456789abcdef"},
			CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Segments {
			if err := st.Put(ctx, batch.KeyHeaderKey("app", e, s.Name), []byte("age-encryption.org/v1\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The oldest segment went before its headers did.
	if err := st.Delete(ctx, p.Segments[0].Key); err != nil {
		t.Fatal(err)
	}
	if p, err = Compute(ctx, st, "app", Policy{KeepMin: 4}, now); err != nil {
		t.Fatal(err)
	}
	if p.Delete != 5 {
		t.Fatalf("delete %d segments, want 5", p.Delete)
	}
	var want, kept []string
	for _, s := range p.Segments[p.Delete:] {
		kept = append(kept, batch.KeyHeaderKey("app", 1, s.Name), batch.KeyHeaderKey("app", 2, s.Name))
	}
	for _, k := range keyObjects(t, st) {
		if strings.HasSuffix(k, batch.KeyHeaderSuffix) && !slices.Contains(kept, k) {
			want = append(want, k)
		}
	}
	if len(want) != 12 || !slices.Equal(p.DeleteKeyHeaders, want) {
		t.Fatalf("plan deletes key headers %q, want the 12 of the 6 segments not kept", p.DeleteKeyHeaders)
	}
	if sum := p.Summary(true); !strings.Contains(sum, "would delete 12 key epoch header(s)") {
		t.Fatalf("summary:\n%s", sum)
	}
	if _, err := p.Apply(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	wantLeft := append([]string{batch.KeyEpochKey("app", 1), batch.KeyEpochKey("app", 2)}, kept...)
	slices.Sort(wantLeft)
	if got := keyObjects(t, st); !slices.Equal(got, wantLeft) {
		t.Fatalf("left under keys/: %q\nwant %q", got, wantLeft)
	}
}
