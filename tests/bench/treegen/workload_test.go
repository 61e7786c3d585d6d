//go:build linux

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// play plans both phases on a fresh tree under dir and plays them, and
// returns the workload and the model's files after phase 1.
func play(t *testing.T, dir string, seed uint64, files int) (*workload, map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := &workload{
		t:     &tree{root: dir, files: map[string]*modelFile{}, dirs: map[string]bool{}},
		g:     newContentGen(seed),
		users: max(1, files/500),
	}
	var after1 map[string][]byte
	for i, plan := range []func(int) (int, []step){w.phase1, w.phase2} {
		_, steps := plan(files)
		for _, s := range steps {
			if err := s(); err != nil {
				t.Fatalf("phase %d: %v", i+1, err)
			}
		}
		if i == 0 {
			after1 = map[string][]byte{}
			for p, m := range w.t.files {
				after1[p] = m.data
			}
		}
	}
	return w, after1
}

// TestChurnChangesMboxAndIndexInPlace: phase 2 appends messages to the
// users' mboxes and rewrites index records in place (the size stays or
// grows by whole records, the head of the file stays), the disk ends as the
// model says, and a seed gives the same tree twice.
func TestChurnChangesMboxAndIndexInPlace(t *testing.T) {
	dir := t.TempDir()
	w, after1 := play(t, filepath.Join(dir, "a"), 7, 1000)
	for _, e := range w.t.expected() {
		if e.dir {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "a", e.path))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != e.size || sha256.Sum256(b) != e.sum {
			t.Fatalf("%s on disk differs from the model", e.path)
		}
	}
	for u := range w.users {
		mbox, index := mboxPath(u), indexPath(u)
		old, cur := after1[mbox], w.t.files[mbox].data
		if len(cur) <= len(old) || !bytes.Equal(cur[:len(old)], old) || !bytes.HasPrefix(cur[len(old):], []byte("From ")) {
			t.Errorf("%s: phase 2 did not append messages (%d -> %d bytes)", mbox, len(old), len(cur))
		}
		old, cur = after1[index], w.t.files[index].data
		if (len(cur)-indexHeader)%indexRecord != 0 || len(cur) < len(old) {
			t.Errorf("%s: %d bytes, not whole records after a %d-byte one", index, len(cur), len(old))
		}
		if binary.LittleEndian.Uint64(cur[8:]) == 0 {
			t.Errorf("%s: the header's change counter was never rewritten", index)
		}
		changed := 0
		for r := 0; indexHeader+(r+1)*indexRecord <= len(old); r++ {
			at := indexHeader + r*indexRecord
			if !bytes.Equal(old[at:at+indexRecord], cur[at:at+indexRecord]) {
				changed++
			}
		}
		if changed == 0 {
			t.Errorf("%s: no record was rewritten in place", index)
		}
	}
	w2, _ := play(t, filepath.Join(dir, "b"), 7, 1000)
	e1, e2 := w.t.expected(), w2.t.expected()
	if len(e1) != len(e2) {
		t.Fatalf("seed 7 gave %d paths, then %d", len(e1), len(e2))
	}
	for i := range e1 {
		if e1[i] != e2[i] {
			t.Fatalf("seed 7 gave %+v, then %+v", e1[i], e2[i])
		}
	}
}
