//go:build linux

package apply

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
)

// Limits of a run of puts applied together.
const (
	dirRunRecords = 256
	dirRunBytes   = 16 << 20
)

// dirPutRunEnd returns the end of the run of put, mkdir, del and rmdir
// records starting at i, or i+1 if it holds fewer than two puts.
func dirPutRunEnd(recs batch.Records, i int) int {
	j, n, puts := i, 0, 0
	for ; j < recs.Len() && j-i < dirRunRecords && n < dirRunBytes; j++ {
		r := recs.At(j)
		switch r.Op {
		case dirtree.OpPut:
			puts++
		case dirtree.OpMkdir, dirtree.OpDel, dirtree.OpRmdir:
		default:
			goto end
		}
		n += len(r.Data)
	}
end:
	if puts < 2 {
		return i + 1
	}
	return j
}

// dirStagedPut is a put whose temp file is written but not yet in place.
type dirStagedPut struct {
	i         int
	dir       *os.File
	base, tmp string
	f         *os.File
}

// putRun applies the puts recs[i:j] as a group: it writes every temp
// file, fsyncs them in parallel, then renames them into place in record
// order and puts back the mtimes of the directories it touched. Each file
// is still durable before its rename; the fsyncs merely overlap. A mkdir,
// del or rmdir among them is applied at once (so the puts below a new
// directory find it), unless the order against a staged put matters: the
// run ends before a mkdir or delete of a path that a staged put will
// replace or lies below, a delete of a directory holding one, or a mkdir
// of its directory (its time would be put back to the old one). It
// returns the index of the record after the run, or of the record that
// failed.
func (a *Dir) putRun(recs batch.Records, i, j int) (int, error) {
	if a.partial != nil {
		if err := a.dropPartial(); err != nil {
			return i, err
		}
	}
	var staged []*dirStagedPut
	mtimes := map[[2]uint64]unix.Timespec{}
	dirs := map[[2]uint64]*os.File{}
	defer func() {
		for _, s := range staged {
			if s.f != nil {
				s.f.Close()
				unix.Unlinkat(int(s.dir.Fd()), s.tmp, 0)
			}
			s.dir.Close()
		}
	}()
	restored := false
	defer func() {
		if !restored { // an error midway: still put the directories' times back
			for id, d := range dirs {
				dirSetMtime(int(d.Fd()), mtimes[id])
			}
		}
	}()
	keys, parents, above := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for k := i; k < j; k++ {
		rec := recs.At(k)
		key := string(rec.Key)
		if rec.Op != dirtree.OpPut {
			if dirClashes(keys, key) || (rec.Op == dirtree.OpMkdir && parents[key]) || (rec.Op != dirtree.OpMkdir && above[key]) {
				j = k
				break
			}
			if err := a.applyRecord(recs, k); err != nil {
				return k, err
			}
			continue
		}
		if err := dirtree.CheckKey(key, rec.Op); err != nil {
			return k, fmt.Errorf("refused: %v: %w", err, receiver.ErrFatal)
		}
		keys[key] = true
		parents[dirOfKey(key)] = true
		for d := dirOfKey(key); d != "."; d = dirOfKey(d) {
			above[d] = true
		}
		h, payload, err := dirtree.ParseHeader(rec.Data)
		if err == nil {
			err = dirtree.CheckPayload(rec.Op, h, payload)
		}
		if err != nil {
			return k, fmt.Errorf("%v: %w", err, receiver.ErrFatal)
		}
		dir, base, skip, err := a.parent(recs, k, key, true)
		if err != nil {
			return k, err
		}
		if skip {
			continue
		}
		s := &dirStagedPut{i: k, dir: dir, base: base, tmp: dirtree.TempName(rec.Seq)}
		staged = append(staged, s)
		var st unix.Stat_t
		if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
			return k, err
		}
		id := [2]uint64{uint64(st.Dev), st.Ino}
		if _, ok := mtimes[id]; !ok {
			mtimes[id], dirs[id] = st.Mtim, dir
		}
		if s.f, err = a.createTemp(dir, s.tmp); err != nil {
			return k, err
		}
		if err := dirWriteMeta(s.f, payload, h); err != nil {
			return k, err
		}
	}
	files := make([]*os.File, len(staged))
	for n, s := range staged {
		files[n] = s.f
	}
	for n, err := range fsyncAll(files) {
		if err != nil {
			return staged[n].i, fmt.Errorf("fsync %s: %v: %w", staged[n].tmp, err, receiver.ErrFatal)
		}
	}
	for _, s := range staged {
		s.f.Close()
		s.f = nil
		if err := dirReplace(int(s.dir.Fd()), s.tmp, int(s.dir.Fd()), s.base); err != nil {
			return s.i, err
		}
	}
	restored = true
	for id, d := range dirs {
		if err := dirSetMtime(int(d.Fd()), mtimes[id]); err != nil {
			return j - 1, err
		}
		if err := a.syncLater(d); err != nil {
			return j - 1, err
		}
	}
	return j, nil
}

// dirOfKey is the directory of a key ("." for a top-level name).
func dirOfKey(key string) string {
	if d := strings.LastIndexByte(key, '/'); d >= 0 {
		return key[:d]
	}
	return "."
}

// dirClashes reports whether key or one of its ancestors is in keys.
func dirClashes(keys map[string]bool, key string) bool {
	for p := key; ; {
		if keys[p] {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}
