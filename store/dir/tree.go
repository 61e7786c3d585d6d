package dir

import (
	"context"

	"github.com/ferry-dr/ferry/store"
)

var _ store.TreeLister = (*Store)(nil)

// ListTree lists every object under dir at any depth: what List of dir
// reports, then the same for each sub-directory ListDirs names, depth
// first. Each directory is read once (a many-stream receiver lists the
// whole store every poll).
func (s *Store) ListTree(ctx context.Context, dir string, fn func(store.Object) error) error {
	label, entries, err := s.listDir(ctx, dir)
	if err != nil {
		return err
	}
	if err := listFiles(ctx, dir, label, "", entries, fn); err != nil {
		return err
	}
	return listDirs(ctx, dir, entries, func(sub string) error { return s.ListTree(ctx, sub, fn) })
}
