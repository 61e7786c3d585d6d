//go:build linux

package source

import (
	"slices"
	"time"

	"github.com/ferry-dr/ferry/dirtree"
)

// A file the source ships whole gets no block map in the index (most files
// of a mail store never change, and a map costs index space), so its first
// change goes whole too. But a file written recently is the one likely to
// change again soon (a draft saved, then saved again; a small index
// created, then updated): the source keeps the block maps of the files it
// shipped whole in the last dirRecentAge, in memory only, by content
// hash, up to dirRecentBudget bytes of block hashes. The first change of
// such a file is then made a delta against the content the index claims,
// whose hash is the map's key, so a map can only ever describe the base
// it is used with. A restart forgets them: the first change then goes
// whole, as before (docs/DIRTREE.md, "Block maps").

// dirRecentAge is how recently a file must have been modified when it is
// shipped whole for its block map to be kept: the files a scan of an old
// tree finds cost nothing.
const dirRecentAge = 10 * time.Minute

// dirRecentBudget bounds the block hashes kept: 16 MiB cover the last 1 GiB
// of files under 64 KiB shipped (1 KiB blocks), 4 GiB of larger ones.
const dirRecentBudget = 16 << 20

type dirRecentMap struct {
	size   int64
	bs     uint32
	blocks []byte
}

// dirRecentMaps is the cache; oldest evicted first. Not safe for
// concurrent use: the flusher side alone uses it.
type dirRecentMaps struct {
	budget int
	used   int
	maps   map[[32]byte]dirRecentMap
	order  [][32]byte // insertion order; may hold hashes already evicted
}

func newDirRecentMaps(budget int) *dirRecentMaps {
	return &dirRecentMaps{budget: budget, maps: map[[32]byte]dirRecentMap{}}
}

// add keeps the block map of the content of size bytes with SHA-256 sum,
// made with blocks of bs bytes.
func (c *dirRecentMaps) add(sum [32]byte, size int64, bs uint32, blocks []byte) {
	if c == nil || len(blocks) > c.budget {
		return
	}
	if _, ok := c.maps[sum]; ok {
		return
	}
	c.maps[sum] = dirRecentMap{size: size, bs: bs, blocks: blocks}
	c.order = append(c.order, sum)
	c.used += len(blocks)
	for c.used > c.budget && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		if m, ok := c.maps[old]; ok {
			c.used -= len(m.blocks)
			delete(c.maps, old)
		}
	}
	if len(c.order) > 2*len(c.maps)+64 { // let the slice's head go
		c.order = append([][32]byte(nil), c.order...)
	}
}

// get returns the block map of the content of size bytes with SHA-256 sum,
// if it is kept.
func (c *dirRecentMaps) get(sum [32]byte, size int64) (uint32, []byte, bool) {
	if c == nil {
		return 0, nil, false
	}
	m, ok := c.maps[sum]
	if !ok || m.size != size {
		return 0, nil, false
	}
	return m.bs, m.blocks, true
}

// keepRecentMap keeps the block map of content, which the source ships
// whole as a put, if the file (of mtime, Unix ns) changed recently and is
// large enough to get a map at all (dirtree.DeltaMinSize). Not under ferry
// sync, which ships whole files only.
func (r *dirRun) keepRecentMap(sum [32]byte, content []byte, mtime int64) {
	if r.recent == nil || r.src.Ledger != nil || len(content) < dirtree.DeltaMinSize ||
		time.Since(time.Unix(0, mtime)) > dirRecentAge {
		return
	}
	bs := dirtree.DeltaBlockSize(int64(len(content)))
	bh := dirtree.NewBlockHasher(bs)
	bh.Write(content)
	r.recent.add(sum, int64(len(content)), uint32(bs), slices.Clone(bh.Sums())) // no spare capacity held
}
