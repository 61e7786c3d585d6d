package dir

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/store"
)

var _ store.TreeLister = (*Store)(nil)

// ListTree lists every object under dir at any depth: what List of dir
// reports, then the same for each sub-directory ListDirs names, depth
// first.
//
// A many-stream receiver lists the whole store every poll (issue 23: the
// listing was 54% of a 100-stream receiver's CPU), so ListTree remembers
// what it read (treeCache) and reads again only what may have changed:
//
//   - a directory whose stat (device, inode, mtime, size, link count) is
//     unchanged since it was read is not read again, if its mtime was at
//     least treeSettle older than the read (a name added in the same
//     clock tick as the read would leave the mtime as it was), and the
//     read is no older than treeRecheck (a filesystem whose clock or
//     attribute cache cannot be trusted, such as NFS, is still read
//     that often);
//   - in a directory read again, a segment name (store.ParseSegmentObject)
//     seen in the last read is not stat'ed again: segments are immutable
//     once named, so its size and time are what they were.
//
// Other names are stat'ed at every read: swapped objects change in place
// of their name. A sub-directory descend refuses is not stat'ed at all.
func (s *Store) ListTree(ctx context.Context, dir string, descend func(sub string) bool, fn func(store.Object) error) error {
	if err := store.CheckDir(dir); err != nil {
		return fmt.Errorf("list: %w: %w", store.ErrPermanent, err)
	}
	gen := s.tree.begin()
	if err := s.listTree(ctx, dir, gen, descend, fn); err != nil {
		return err
	}
	s.tree.end(dir, gen)
	return nil
}

func (s *Store) listTree(ctx context.Context, dir string, gen uint64, descend func(string) bool, fn func(store.Object) error) error {
	d, err := s.readTreeDir(ctx, dir, gen)
	if err != nil {
		return err
	}
	for _, o := range d.files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	for _, sub := range d.subdirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if descend != nil && !descend(sub) {
			continue
		}
		if err := s.listTree(ctx, sub, gen, descend, fn); err != nil {
			return err
		}
	}
	return nil
}

// treeSettle is how much older than a read a directory's mtime must be
// for an unchanged mtime to mean an unchanged directory later. Linux
// stamps directories from a clock that advances every 1-10 ms.
const treeSettle = 100 * time.Millisecond

// treeRecheck is how long a read of a directory that looks unchanged
// stands before the directory is read again anyway.
const treeRecheck = 2 * time.Second

// treeCache is what ListTree read of each directory.
type treeCache struct {
	mu   sync.Mutex
	gen  uint64
	dirs map[string]*treeDir // by store directory ("" for the root)
}

// treeDir is one directory as ListTree last read it.
type treeDir struct {
	id      dirID
	readAt  time.Time
	settled bool           // id.mtime was treeSettle older than the read
	files   []store.Object // in name order
	subdirs []string       // in name order, each ending in "/"
	seen    uint64         // the ListTree that last visited it (treeCache.mu)
}

// dirID is what changes in a directory's stat when an entry is added,
// removed or renamed in it, or it is replaced.
type dirID struct {
	dev, ino, nlink uint64
	size            int64
	mtime           time.Time
}

func (c *treeCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	return c.gen
}

// get returns what was read of dir, marking it visited by the listing
// gen.
func (c *treeCache) get(dir string, gen uint64) *treeDir {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.dirs[dir]
	if d != nil {
		d.seen = gen
	}
	return d
}

func (c *treeCache) put(dir string, d *treeDir) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dirs == nil {
		c.dirs = map[string]*treeDir{}
	}
	c.dirs[dir] = d
}

// end forgets the directories under dir that the listing gen did not
// visit: gone since.
func (c *treeCache) end(dir string, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, d := range c.dirs {
		if d.seen != gen && len(name) >= len(dir) && name[:len(dir)] == dir {
			delete(c.dirs, name)
		}
	}
}

// readTreeDir returns dir's objects and sub-directories: as last read if
// the directory cannot have changed since, else read again.
func (s *Store) readTreeDir(ctx context.Context, dir string, gen uint64) (*treeDir, error) {
	label := dir
	if label == "" {
		label = "/"
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	fi, err := os.Stat(filepath.Join(s.root, filepath.FromSlash(dir)))
	if isMissing(err) {
		return &treeDir{}, nil
	}
	if err != nil {
		return nil, fail("list", label, err)
	}
	id := statDirID(fi)
	last := s.tree.get(dir, gen)
	if last != nil && last.settled && last.id == id && start.Sub(last.readAt) < treeRecheck {
		return last, nil
	}
	_, entries, err := s.listDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	d := &treeDir{id: id, readAt: start, settled: id.mtime.Before(start.Add(-treeSettle)), seen: gen}
	var known map[string]store.Object
	if last != nil {
		known = make(map[string]store.Object, len(last.files))
		for _, o := range last.files {
			known[o.Name] = o
		}
	}
	err = listFiles(ctx, dir, label, "", entries, func(name string) (store.Object, bool) {
		o, ok := known[name]
		if ok {
			_, ok = store.ParseSegmentObject(name)
		}
		return o, ok
	}, func(o store.Object) error {
		d.files = append(d.files, o)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := listDirs(ctx, dir, entries, func(sub string) error {
		d.subdirs = append(d.subdirs, sub)
		return nil
	}); err != nil {
		return nil, err
	}
	s.tree.put(dir, d)
	return d, nil
}

func statDirID(fi os.FileInfo) dirID {
	id := dirID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino, id.nlink = uint64(st.Dev), uint64(st.Ino), uint64(st.Nlink)
	}
	return id
}
