//go:build linux

package source

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
)

// hookSink is a dirSink that calls first (once) when the source hands it
// its first batch: the source is then in the middle of its first flush.
type hookSink struct {
	*dirSink
	once  sync.Once
	first func()
}

func (s *hookSink) AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error {
	s.once.Do(s.first)
	return s.dirSink.AppendBatch(ctx, recs, cursor)
}

func (s *hookSink) AppendDurable(ctx context.Context, recs []batch.Record, cursor []byte) error {
	s.once.Do(s.first)
	return s.dirSink.AppendDurable(ctx, recs, cursor)
}

// A file deleted on a site after its first scan listed it and before the
// source read it (docs/SYNC.md "Limits" used to say it came back): the
// source ships its removal, with the listed stat as the delete's base,
// marked unread; a peer whose first scan put the same file (a copy of the
// tree with its times) meets the delete as made on top of its version, and
// applies it; so does this site meet the peer's put, and keeps the delete.
func TestDirSyncDeleteBeforeFirstReadShipsUnreadBase(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	big := strings.Repeat("x", 700<<10) // two fill the first batch: it is sent before z/p is read
	dirWrite(t, filepath.Join(root, "a/big1"), big, 0o644)
	dirWrite(t, filepath.Join(root, "a/big2"), big, 0o644)
	p := filepath.Join(root, "z/p")
	dirWrite(t, p, "a message both sites hold\n", 0o600)
	listed := statState(t, p)
	l, err := dirsync.Open(state, "a", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sink := &hookSink{dirSink: &dirSink{}, first: func() {
		if err := os.Remove(p); err != nil {
			t.Error(err)
		}
	}}
	src := &Dir{Root: root, SpoolDir: spoolDir, Ledger: l, Debounce: 30 * time.Millisecond, Log: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sink) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for len(recordsOf(sink.views(), "z/p")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the removal of z/p, listed and deleted before it was read, was not shipped: %v", sink.views())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var ver dirsync.Version
	for _, r := range sink.records() {
		if string(r.Key) == "z/p" && r.Op == dirtree.OpVersion {
			if ver, err = dirsync.ParseVersion(r.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := recordsOf(sink.views(), "z/p"); got[len(got)-1] != string(dirtree.OpDel) {
		t.Fatalf("records of z/p: %v; want version, del", got)
	}
	if b := ver.Base; b == nil || !b.Unread || b.Kind != dirsync.KindFile || b.Size != listed.Size || b.Mtime != listed.Mtime || b.Mode != listed.Mode {
		t.Fatalf("the delete's base is %+v; want the listed stat %+v, unread", b, listed)
	}

	// Site b's first scan of its copy of the tree put z/p: the delete
	// wins at b, and b's put is dropped at a.
	h := sha256.Sum256([]byte("a message both sites hold\n"))
	put := listed.WithHash(h[:])
	lb, err := dirsync.Open(t.TempDir(), "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	lb.Lock()
	bver, ship, err := lb.Local("z/p", put)
	if err != nil || !ship {
		t.Fatalf("b's first scan of z/p: %v, %v", ship, err)
	}
	bv, _ := dirsync.ParseVersion(bver)
	d, err := lb.Decide(dirsync.Incoming{Peer: "a", Seq: 9, Key: "z/p", Ver: ver, State: dirsync.Absent, Disk: put, CheckDisk: true})
	lb.Unlock()
	if err != nil || d.Act != dirsync.ActApply {
		t.Fatalf("b meeting a's delete of z/p: %+v, %v; want it applied (made on top of b's version)", d, err)
	}
	l.Lock()
	d, err = l.Decide(dirsync.Incoming{Peer: "b", Seq: 1, Key: "z/p", Ver: bv, State: put, Disk: dirsync.Absent, CheckDisk: true})
	l.Unlock()
	if err != nil || d.Act != dirsync.ActSkip {
		t.Fatalf("a meeting b's first-scan put of z/p: %+v, %v; want it dropped (a's delete was made on top of it)", d, err)
	}
}
