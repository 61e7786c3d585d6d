package storetest

import (
	"context"
	"io"

	"github.com/ferry-dr/ferry/store"
)

// Faulty wraps a store for fault injection. Each method calls its Fn field
// if that is non-nil and the embedded Store's method otherwise; an Fn can
// reach the real store through the Store field to fail only some calls. Set
// the fields before use: they are read without locking, so concurrent calls
// are safe only if the Fns themselves are.
type Faulty struct {
	store.Store

	PutFn    func(ctx context.Context, name string, data []byte) error
	GetFn    func(ctx context.Context, name string) (io.ReadCloser, error)
	ListFn   func(ctx context.Context, dir, after string, fn func(store.Object) error) error
	DeleteFn func(ctx context.Context, name string) error
}

var _ store.Store = (*Faulty)(nil)

func (f *Faulty) Put(ctx context.Context, name string, data []byte) error {
	if f.PutFn != nil {
		return f.PutFn(ctx, name, data)
	}
	return f.Store.Put(ctx, name, data)
}

func (f *Faulty) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if f.GetFn != nil {
		return f.GetFn(ctx, name)
	}
	return f.Store.Get(ctx, name)
}

func (f *Faulty) List(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	if f.ListFn != nil {
		return f.ListFn(ctx, dir, after, fn)
	}
	return f.Store.List(ctx, dir, after, fn)
}

func (f *Faulty) Delete(ctx context.Context, name string) error {
	if f.DeleteFn != nil {
		return f.DeleteFn(ctx, name)
	}
	return f.Store.Delete(ctx, name)
}

// String returns "faulty:" and the wrapped store's description, or just
// "faulty" if there is none.
func (f *Faulty) String() string {
	if f.Store == nil {
		return "faulty"
	}
	return "faulty:" + f.Store.String()
}
