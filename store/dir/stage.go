package dir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/store"
)

var _ store.Stager = (*Store)(nil)

// Stage starts an object whose bytes are written to a temp file beside
// its final name as they arrive; Publish then does what the rest of Put
// does (fsyncs, links, compares with an object found under the name), in
// the order the Options say. See store.Stager.
func (s *Store) Stage(ctx context.Context, name string) (store.Staged, error) {
	final, f, err := s.create(ctx, "stage", name)
	if err != nil {
		return nil, err
	}
	return &staged{s: s, name: name, final: final, f: f}, nil
}

// staged is an object being written to the temp file f.
type staged struct {
	s           *Store
	name, final string
	f           *os.File
	n           int64
	done        bool // published or discarded: f is closed, the temp gone
}

// errStagedDone is the error of a staged object used after Publish or
// Discard.
var errStagedDone = errors.New("staged object already published or discarded")

func (p *staged) Write(b []byte) (int, error) {
	if p.done {
		return 0, errStagedDone
	}
	k, err := p.f.Write(b)
	p.n += int64(k)
	if err != nil {
		return k, fail("stage", p.name, err)
	}
	return k, nil
}

func (p *staged) ReadAt(b []byte, off int64) (int, error) {
	if p.done {
		return 0, errStagedDone
	}
	return p.f.ReadAt(b, off)
}

func (p *staged) Size() int64 { return p.n }

func (p *staged) Publish(ctx context.Context) error {
	if p.done {
		return fail("put", p.name, errStagedDone)
	}
	p.done = true
	return p.s.publish(ctx, p.name, p.final, p.f, p.f, p.n)
}

func (p *staged) Discard() {
	if p.done {
		return
	}
	p.done = true
	p.f.Close()
	os.Remove(p.f.Name())
}

// RemoveTemps removes from dir (a directory of the store, "app/" say) the
// temp files that Puts and staged objects left there when their process
// died before publishing them; lock files stay. A staged segment can be
// as large as the segment, so an owner that streams objects in calls it
// at start, when no other process writes to dir. It returns the names
// of the files removed.
func (s *Store) RemoveTemps(dir string) ([]string, error) {
	if err := store.CheckDir(dir); err != nil {
		return nil, fmt.Errorf("remove temps: %w: %w", store.ErrPermanent, err)
	}
	path := filepath.Join(s.root, filepath.FromSlash(dir))
	ents, err := os.ReadDir(path)
	if isMissing(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fail("remove temps in", dir, err)
	}
	var removed []string
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !isTemp(name) || strings.HasSuffix(name, "-lock.tmp") {
			continue
		}
		if err := os.Remove(filepath.Join(path, name)); err != nil && !isMissing(err) {
			return removed, fail("remove temps in", dir, err)
		}
		removed = append(removed, dir+name)
	}
	if len(removed) > 0 {
		if err := fsutil.SyncPath(path); err != nil {
			return removed, fail("remove temps in", dir, err)
		}
	}
	return removed, nil
}
