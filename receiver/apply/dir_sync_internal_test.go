//go:build linux

package apply

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
)

// An append's file is not fsynced on its own: it is noted for the fsync
// at the end of Apply, with the segment's other appended files and its
// directories (flushSyncs, 16 at a time). Every appended file must be in
// that set when the records are through; finish fsyncs and forgets them.
func TestDirAppendFilesFsyncedAtTheEnd(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := &Dir{Root: root}
	if err := a.Restore(nil); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	base := "a mailbox with a few messages in it\n"
	var seq uint64
	rec := func(op, key string, data []byte) batch.Record {
		seq++
		return batch.Record{Seq: seq, Op: op, Key: []byte(key), Data: data}
	}
	keys := []string{"u1/mbox", "u2/mbox", "u3/mbox"}
	var puts, appends []batch.Record
	for _, k := range keys {
		sum := sha256.Sum256([]byte(base))
		puts = append(puts, rec(dirtree.OpPut, k, append(dirtree.AppendHeader(nil, 0o600, 1e18, int64(len(base)), 0, &sum), base...)))
		h := dirtree.DeltaHeader{Mode: 0o600, Mtime: 2e18, BaseSize: int64(len(base)), BaseSHA256: sum,
			Size: int64(len(base)) + 4, SHA256: sha256.Sum256([]byte(base + "more"))}
		appends = append(appends, rec(dirtree.OpAppend, k, dirtree.AppendAppendRecord(nil, h, []byte("more"))))
	}
	meta := func(rs []batch.Record) *batch.Meta {
		return &batch.Meta{Stream: "tree", Generation: 1, Records: uint64(len(rs)), FirstSeq: rs[0].Seq, LastSeq: rs[len(rs)-1].Seq}
	}
	if err := a.Apply(context.Background(), meta(puts), batch.RecordsOf(puts)); err != nil {
		t.Fatal(err)
	}

	a.syncs = map[[2]uint64]*os.File{}
	a.touched = dirTouched{}
	if err := a.applyAll(context.Background(), meta(appends), batch.RecordsOf(appends)); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(root, k), &st); err != nil {
			t.Fatal(err)
		}
		if _, ok := a.syncs[[2]uint64{uint64(st.Dev), st.Ino}]; !ok {
			t.Errorf("%s was appended to and is not among the files fsynced before Apply returns", k)
		}
	}
	if err := a.finish(); err != nil {
		t.Fatal(err)
	}
	if len(a.syncs) != 0 {
		t.Errorf("%d files still to fsync after finish", len(a.syncs))
	}
	for _, k := range keys {
		if b, _ := os.ReadFile(filepath.Join(root, k)); string(b) != base+"more" {
			t.Errorf("%s holds %q", k, b)
		}
	}
}
