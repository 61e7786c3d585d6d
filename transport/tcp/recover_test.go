package tcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/store"
)

// countingInbox records the keys Get and Delete were called with.
type countingInbox struct {
	store.Store
	mu      sync.Mutex
	got     []string
	deleted []string
}

func (c *countingInbox) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	c.mu.Lock()
	c.got = append(c.got, name)
	c.mu.Unlock()
	return c.Store.Get(ctx, name)
}

func (c *countingInbox) Delete(ctx context.Context, name string) error {
	c.mu.Lock()
	c.deleted = append(c.deleted, name)
	c.mu.Unlock()
	return c.Store.Delete(ctx, name)
}

// recoverFixture is an inbox holding n consecutive segments of stream "app"
// generation 1, 10 records each, whose files tests then damage.
type recoverFixture struct {
	inbox *countingInbox
	root  string
	segs  []testSegment
	log   ferrytest.LockedBuffer
}

func newRecoverFixture(t *testing.T, n int) *recoverFixture {
	t.Helper()
	st, root := newInbox(t)
	f := &recoverFixture{inbox: &countingInbox{Store: st}, root: root}
	for i := range n {
		seg := makeSegment(t, "app", 1, uint64(10*i+1), 10, "r")
		if err := st.Put(t.Context(), batch.SegmentKey("app", seg.name), seg.data); err != nil {
			t.Fatal(err)
		}
		f.segs = append(f.segs, seg)
	}
	return f
}

// tear overwrites segment i's file with its first keep bytes, as a power
// loss before its fsync may leave it.
func (f *recoverFixture) tear(t *testing.T, i, keep int) {
	t.Helper()
	path := filepath.Join(f.root, "app", f.segs[i].name)
	if err := os.WriteFile(path, f.segs[i].data[:keep], 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *recoverFixture) recover(t *testing.T) error {
	t.Helper()
	return RecoverInbox(t.Context(), f.inbox, "app", 1, f.log.Logger(slog.LevelDebug))
}

func (f *recoverFixture) names(idx ...int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, f.segs[i].name)
	}
	return out
}

func (f *recoverFixture) key(i int) string { return batch.SegmentKey("app", f.segs[i].name) }

func TestRecoverInboxRemovesTornNewest(t *testing.T) {
	for _, tc := range []struct {
		what string
		keep func(size int) int
	}{
		{"truncated", func(size int) int { return size / 2 }},
		{"one byte short", func(size int) int { return size - 1 }},
		{"empty", func(int) int { return 0 }},
	} {
		t.Run(tc.what, func(t *testing.T) {
			f := newRecoverFixture(t, 3)
			f.tear(t, 2, tc.keep(len(f.segs[2].data)))
			if err := f.recover(t); err != nil {
				t.Fatalf("RecoverInbox: %v", err)
			}
			wantInbox(t, f.inbox, f.names(0, 1)...)
			if !slices.Equal(f.inbox.deleted, []string{f.key(2)}) {
				t.Errorf("deleted %q, want only %s", f.inbox.deleted, f.key(2))
			}
			if !slices.Equal(f.inbox.got, []string{f.key(2), f.key(1)}) {
				t.Errorf("read %q, want the torn newest and the one before it", f.inbox.got)
			}
			log := f.log.String()
			if !strings.Contains(log, "level=WARN") || !strings.Contains(log, f.key(2)) ||
				!strings.Contains(log, "before it was acknowledged") {
				t.Errorf("log does not warn about the removed segment:\n%s", log)
			}
		})
	}
}

func TestRecoverInboxLeavesValidNewest(t *testing.T) {
	f := newRecoverFixture(t, 3)
	f.tear(t, 0, 10) // damage further back is the applier's to report
	if err := f.recover(t); err != nil {
		t.Fatalf("RecoverInbox: %v", err)
	}
	wantInbox(t, f.inbox, f.names(0, 1, 2)...)
	if !slices.Equal(f.inbox.got, []string{f.key(2)}) {
		t.Errorf("read %q, want only the newest", f.inbox.got)
	}
	if f.inbox.deleted != nil || f.log.String() != "" {
		t.Errorf("deleted %q, logged %q; want nothing", f.inbox.deleted, f.log.String())
	}
}

func TestRecoverInboxEmpty(t *testing.T) {
	f := newRecoverFixture(t, 0)
	if err := f.recover(t); err != nil {
		t.Fatalf("RecoverInbox on an empty inbox: %v", err)
	}
}

// Up to MaxTornSegments torn in a row are removed, down to the first that
// verifies, even if that leaves the stream empty.
func TestRecoverInboxRemovesSeveralTorn(t *testing.T) {
	f := newRecoverFixture(t, MaxTornSegments)
	for i := range MaxTornSegments {
		f.tear(t, i, i) // lengths 0, 1, 2, ...
	}
	if err := f.recover(t); err != nil {
		t.Fatalf("RecoverInbox: %v", err)
	}
	wantInbox(t, f.inbox)
	if n := strings.Count(f.log.String(), "level=WARN"); n != MaxTornSegments {
		t.Errorf("%d warnings, want %d:\n%s", n, MaxTornSegments, f.log.String())
	}
}

// More torn in a row than a crash can tear is damage: nothing is removed
// and the error names every segment it found damaged.
func TestRecoverInboxTooManyTorn(t *testing.T) {
	f := newRecoverFixture(t, MaxTornSegments+3)
	for i := 1; i < len(f.segs); i++ {
		f.tear(t, i, len(f.segs[i].data)/2)
	}
	err := f.recover(t)
	if !errors.Is(err, batch.ErrCorrupt) {
		t.Fatalf("RecoverInbox: %v, want ErrCorrupt", err)
	}
	for i := len(f.segs) - 1; i >= len(f.segs)-MaxTornSegments-1; i-- {
		if !strings.Contains(err.Error(), f.key(i)) {
			t.Errorf("error does not name %s: %v", f.key(i), err)
		}
	}
	if !strings.Contains(err.Error(), f.inbox.String()) {
		t.Errorf("error does not name the inbox %s: %v", f.inbox, err)
	}
	if f.inbox.deleted != nil {
		t.Errorf("deleted %q; want nothing", f.inbox.deleted)
	}
	if len(f.inbox.got) != MaxTornSegments+1 {
		t.Errorf("read %d segments, want %d: %q", len(f.inbox.got), MaxTornSegments+1, f.inbox.got)
	}
	if got := inboxObjects(t, f.inbox, "app"); len(got) != len(f.segs) {
		t.Errorf("inbox holds %d segments, want all %d", len(got), len(f.segs))
	}
}

// Only the given generation is looked at: a newer generation's torn
// segment, and an older one's, are left alone.
func TestRecoverInboxOtherGenerations(t *testing.T) {
	f := newRecoverFixture(t, 2)
	st := f.inbox.Store
	older := makeSegment(t, "app", 0, 1, 5, "old")
	newer := makeSegment(t, "app", 2, 1, 5, "new")
	for _, seg := range []testSegment{older, newer} {
		if err := st.Put(t.Context(), batch.SegmentKey("app", seg.name), seg.data[:len(seg.data)/2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.recover(t); err != nil {
		t.Fatalf("RecoverInbox: %v", err)
	}
	wantInbox(t, f.inbox, older.name, f.segs[0].name, f.segs[1].name, newer.name)
	if !slices.Equal(f.inbox.got, []string{f.key(1)}) {
		t.Errorf("read %q, want only generation 1's newest", f.inbox.got)
	}

	// Generation 2's torn segment is generation 2's to recover.
	if err := RecoverInbox(t.Context(), f.inbox, "app", 2, quiet); err != nil {
		t.Fatal(err)
	}
	wantInbox(t, f.inbox, older.name, f.segs[0].name, f.segs[1].name)
}

// A read failure, or a segment ferry cannot read but that is not torn (a
// newer format), stops recovery without removing anything.
func TestRecoverInboxOtherErrorsRemoveNothing(t *testing.T) {
	f := newRecoverFixture(t, 2)
	f.tear(t, 1, 0)
	failing := &faultyInbox{Store: f.inbox, get: func() error { return errors.New("disk on fire") }}
	err := RecoverInbox(t.Context(), failing, "app", 1, quiet)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), f.key(1)) {
		t.Fatalf("RecoverInbox with a failing read: %v", err)
	}
	wantInbox(t, f.inbox, f.names(0, 1)...)

	written := fmt.Sprintf(`"format":%d`, batch.FormatVersion)
	future := bytes.Replace(f.segs[1].data, []byte(written), []byte(`"format":9`), 1)
	if bytes.Equal(future, f.segs[1].data) {
		t.Fatalf("no %s in the segment's metadata", written)
	}
	path := filepath.Join(f.root, "app", f.segs[1].name)
	if err := os.WriteFile(path, future, 0o644); err != nil {
		t.Fatal(err)
	}
	err = f.recover(t)
	if err == nil || errors.Is(err, batch.ErrCorrupt) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("RecoverInbox on a newer-format segment: %v, want the format error", err)
	}
	wantInbox(t, f.inbox, f.names(0, 1)...)
}

// The server started on a recovered inbox tells the shipper the newest
// intact segment, and takes the torn one back when it is resent.
func TestRecoverInboxThenResend(t *testing.T) {
	f := newRecoverFixture(t, 3)
	f.tear(t, 2, 7)
	if err := f.recover(t); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Token: testToken, Insecure: true, Inbox: f.inbox.Store, Log: quiet}
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	var newest []string
	err := c.List(t.Context(), "app/", "", func(o store.Object) error {
		newest = append(newest, o.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(newest, []string{f.key(1)}) {
		t.Fatalf("WELCOME's newest segment %q, want %s", newest, f.key(1))
	}
	if err := c.Put(t.Context(), f.key(2), f.segs[2].data); err != nil {
		t.Fatalf("resend of the torn segment: %v", err)
	}
	if got := mustGet(t, f.inbox, f.key(2)); string(got) != string(f.segs[2].data) {
		t.Fatal("resent segment differs from the original")
	}
}

// A segment being streamed into the inbox when the receiver died is left
// in a temp file, which RecoverInbox removes (and logs); the segments and
// the lock file stay.
func TestRecoverInboxRemovesUnfinishedStream(t *testing.T) {
	st, root := newInbox(t)
	seg := makeSegment(t, "app", 1, 1, 10, "r")
	if err := st.Put(t.Context(), batch.SegmentKey("app", seg.name), seg.data); err != nil {
		t.Fatal(err)
	}
	next := makeBigSegment(t, "app", 1, 11, 200<<10)
	staged, err := st.Stage(t.Context(), batch.SegmentKey("app", next.name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := staged.Write(next.data[:len(next.data)/2]); err != nil { // and then the process died
		t.Fatal(err)
	}
	var logs ferrytest.LockedBuffer
	if err := RecoverInbox(t.Context(), st, "app", 1, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(root, "app"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{".segments-lock.tmp", seg.name}; !slices.Equal(names, want) {
		t.Errorf("inbox holds %q after RecoverInbox, want %q", names, want)
	}
	if !strings.Contains(logs.String(), "left unfinished") || !strings.Contains(logs.String(), next.name) {
		t.Errorf("log does not name the file removed:\n%s", logs.String())
	}
}
