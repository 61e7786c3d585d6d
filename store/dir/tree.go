package dir

import (
	"context"
	"fmt"

	"github.com/ferry-dr/ferry/store"
)

var _ store.TreeLister = (*Store)(nil)

// ListTree lists every object under dir at any depth: List of dir, then
// of each sub-directory ListDirs names, depth first.
func (s *Store) ListTree(ctx context.Context, dir string, fn func(store.Object) error) error {
	if err := store.CheckDir(dir); err != nil {
		return fmt.Errorf("list: %w: %w", store.ErrPermanent, err)
	}
	if err := s.List(ctx, dir, "", fn); err != nil {
		return err
	}
	return s.ListDirs(ctx, dir, func(sub string) error { return s.ListTree(ctx, sub, fn) })
}
