package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/store/storetest"
)

func newDir(t *testing.T) *dir.Store {
	t.Helper()
	s, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// With no Fn set, Faulty must be a transparent store.
func TestFaultyPassesThrough(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return &storetest.Faulty{Store: newDir(t)}
	})
}

func TestFaultyInjects(t *testing.T) {
	ctx := t.Context()
	inner := newDir(t)
	errInjected := errors.New("injected")
	puts := 0
	var deleted []string
	f := &storetest.Faulty{
		Store: inner,
		PutFn: func(ctx context.Context, name string, data []byte) error {
			if puts++; puts == 1 {
				return errInjected
			}
			return inner.Put(ctx, name, data)
		},
		GetFn: func(ctx context.Context, name string) (io.ReadCloser, error) {
			return nil, fmt.Errorf("get %s: %w", name, store.ErrNotFound)
		},
		ListFn: func(ctx context.Context, dir, after string, fn func(store.Object) error) error {
			return errInjected
		},
		DeleteFn: func(ctx context.Context, name string) error {
			deleted = append(deleted, name)
			return nil
		},
	}

	if err := f.Put(ctx, "s/a", []byte("a")); !errors.Is(err, errInjected) {
		t.Fatalf("first Put: %v, want the injected error", err)
	}
	if rc, err := inner.Get(ctx, "s/a"); err == nil {
		rc.Close()
		t.Fatal("failed Put reached the inner store")
	}
	if err := f.Put(ctx, "s/a", []byte("a")); err != nil {
		t.Fatalf("second Put: %v", err)
	}
	if _, err := f.Get(ctx, "s/a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get: %v, want the injected ErrNotFound", err)
	}
	if err := f.List(ctx, "s/", "", func(store.Object) error { return nil }); !errors.Is(err, errInjected) {
		t.Errorf("List: %v, want the injected error", err)
	}
	if err := f.Delete(ctx, "s/a"); err != nil || len(deleted) != 1 || deleted[0] != "s/a" {
		t.Errorf("Delete: err %v, DeleteFn saw %q", err, deleted)
	}
	rc, err := inner.Get(ctx, "s/a")
	if err != nil {
		t.Fatalf("object written through the second Put: %v", err)
	}
	rc.Close()
	if got, want := f.String(), "faulty:"+inner.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
