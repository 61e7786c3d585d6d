package s3

import (
	"context"
	"fmt"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/store"
)

var _ store.TreeLister = (*Store)(nil)

// ListTree lists every object under dir at any depth: one ListObjectsV2
// request per 1,000 keys. It lists the prefix flat, so descend saves no
// request: objects under a directory it refuses are reported too.
func (s *Store) ListTree(ctx context.Context, dir string, _ func(sub string) bool, fn func(store.Object) error) error {
	if err := store.CheckDir(dir); err != nil {
		return fmt.Errorf("s3 list: %w: %w", err, store.ErrPermanent)
	}
	opts := minio.ListObjectsOptions{Prefix: s.key(dir), Recursive: true, FetchOwner: new(bool)}
	return s.listObjects(ctx, opts, func(obj minio.ObjectInfo) error {
		name := s.name(obj.Key)
		if strings.HasSuffix(obj.Key, "/") || !strings.HasPrefix(name, dir) || store.CheckName(name) != nil {
			return nil // a "directory" marker some tools write, or a key ferry cannot name
		}
		return fn(store.Object{Name: name, Size: obj.Size, ModTime: obj.LastModified})
	})
}
