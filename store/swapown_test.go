package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// meddler is a Swapper that writes other content right after each Load:
// the object changes again between SwapOwn's Load and its second Swap.
type meddler struct {
	*dir.Store
	other []byte
}

func (m meddler) Load(ctx context.Context, name string) ([]byte, string, error) {
	data, ver, err := m.Store.Load(ctx, name)
	if err == nil {
		if _, serr := m.Store.Swap(ctx, name, m.other, ver); serr != nil {
			return nil, "", serr
		}
	}
	return data, ver, err
}

// SwapOwn writes again over the writer's own change (an earlier Swap
// whose answer was lost), once; any other change, a deletion or a second
// change is ErrChanged with what it found, the object left as it is.
func TestSwapOwn(t *testing.T) {
	ctx := context.Background()
	mine := func(cur []byte) bool { return bytes.HasPrefix(cur, []byte("me ")) }
	setup := func(t *testing.T) (*dir.Store, string) {
		st, err := dir.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		v, err := st.Swap(ctx, "k", []byte("me 1"), "")
		if err != nil {
			t.Fatal(err)
		}
		return st, v
	}
	holds := func(t *testing.T, st *dir.Store, want string) {
		t.Helper()
		data, _, err := st.Load(ctx, "k")
		if err != nil || string(data) != want {
			t.Fatalf("object holds %q (%v), want %q", data, err, want)
		}
	}

	t.Run("unchanged", func(t *testing.T) {
		st, v := setup(t)
		if _, err := store.SwapOwn(ctx, st, "k", []byte("me 2"), v, mine); err != nil {
			t.Fatal(err)
		}
		holds(t, st, "me 2")
	})
	t.Run("own change adopted", func(t *testing.T) {
		st, v := setup(t)
		if _, err := st.Swap(ctx, "k", []byte("me 2"), v); err != nil { // landed, answer lost
			t.Fatal(err)
		}
		nv, err := store.SwapOwn(ctx, st, "k", []byte("me 3"), v, mine)
		if err != nil {
			t.Fatalf("own change not adopted: %v", err)
		}
		holds(t, st, "me 3")
		if _, cur, _ := st.Load(ctx, "k"); cur != nv {
			t.Fatalf("version %q returned, object at %q", nv, cur)
		}
	})
	t.Run("another's change", func(t *testing.T) {
		st, v := setup(t)
		if _, err := st.Swap(ctx, "k", []byte("other"), v); err != nil {
			t.Fatal(err)
		}
		_, err := store.SwapOwn(ctx, st, "k", []byte("me 2"), v, mine)
		var ce *store.ChangedError
		if !errors.Is(err, store.ErrChanged) || !errors.As(err, &ce) || string(ce.Current) != "other" || ce.LoadErr != nil {
			t.Fatalf("err %v (%#v), want ErrChanged with the other's content", err, ce)
		}
		holds(t, st, "other")
	})
	t.Run("deleted", func(t *testing.T) {
		st, v := setup(t)
		if err := st.Delete(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		_, err := store.SwapOwn(ctx, st, "k", []byte("me 2"), v, mine)
		var ce *store.ChangedError
		if !errors.Is(err, store.ErrChanged) || !errors.As(err, &ce) || !errors.Is(ce.LoadErr, store.ErrNotFound) {
			t.Fatalf("err %v, want ErrChanged with Load's ErrNotFound", err)
		}
		if _, _, err := st.Load(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a deleted object was written again: %v", err)
		}
	})
	t.Run("changed again after adopting", func(t *testing.T) {
		st, v := setup(t)
		if _, err := st.Swap(ctx, "k", []byte("me 2"), v); err != nil {
			t.Fatal(err)
		}
		m := meddler{Store: st, other: []byte("other")}
		_, err := store.SwapOwn(ctx, m, "k", []byte("me 3"), v, mine)
		if !errors.Is(err, store.ErrChanged) {
			t.Fatalf("err %v, want ErrChanged: adopted once only", err)
		}
		holds(t, st, "other")
	})
}
