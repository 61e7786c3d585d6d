//go:build linux

package shipper

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/store"
)

// failingStore refuses puts while fail is set.
type failingStore struct {
	store.Store
	fail bool
}

func (s *failingStore) Put(ctx context.Context, name string, data []byte) error {
	if s.fail {
		return fmt.Errorf("put %s: disk on fire: %w", name, store.ErrPermanent)
	}
	return s.Store.Put(ctx, name, data)
}

// The marker rules: markers only after the records are accepted; the same
// content again ships nothing; other content is refused before anything
// is shipped; a marker store that missed a marker gets it without the
// file being shipped again; a failed marker write ships the file again on
// the retry (records twice, harmless).
func TestPusherMarkers(t *testing.T) {
	st := newDirStore(t)
	idx := &failingStore{Store: newDirStore(t)}
	r := startShipper(t, shipperConfig(t, Target{Name: "store", Store: st}))
	p := &Pusher{Shipper: r.Shipper, Retry: store.RetryPolicy{Min: 1, Max: 1}, Log: quiet, Markers: []MarkerStore{
		{Name: "index", Store: idx, Key: func(n string) string { return n }},
		{Name: "store", Store: st, Key: func(n string) string { return PushMarkerKey("app", n) }},
	}}
	ctx := context.Background()
	lastSeq := func() uint64 { return r.Spool().Stats().LastSeq }
	big := bytes.Repeat([]byte("w"), 2<<20+3)
	res, err := p.Push(ctx, PushFile{Name: "000000010000000000000001", Content: big, Mode: 0o600})
	if err != nil || res.Already || res.Marker.FirstSeq != 1 || res.Marker.LastSeq != 3 {
		t.Fatalf("first push: %+v, %v; want records 1-3", res, err)
	}
	for _, k := range []string{"000000010000000000000001"} {
		m, err := ReadPushMarker(ctx, st, PushMarkerKey("app", k))
		if err != nil || m.Size != int64(len(big)) || m.LastSeq != 3 {
			t.Fatalf("store marker %+v, %v", m, err)
		}
	}

	res, err = p.Push(ctx, PushFile{Name: "000000010000000000000001", Content: big})
	if err != nil || !res.Already || lastSeq() != 3 {
		t.Fatalf("identical push: %+v, %v, last seq %d; want already, nothing shipped", res, err, lastSeq())
	}
	_, err = p.Push(ctx, PushFile{Name: "000000010000000000000001", Content: []byte("other")})
	if !errors.Is(err, ErrPushConflict) || !strings.Contains(err.Error(), "000000010000000000000001") || lastSeq() != 3 {
		t.Fatalf("conflicting push: %v, last seq %d; want ErrPushConflict naming the file, nothing shipped", err, lastSeq())
	}

	// The index lost the marker (a new spool): it gets it back, nothing shipped.
	if err := idx.Delete(ctx, "000000010000000000000001"); err != nil {
		t.Fatal(err)
	}
	res, err = p.Push(ctx, PushFile{Name: "000000010000000000000001", Content: big})
	if err != nil || res.Already || lastSeq() != 3 {
		t.Fatalf("push with the index marker missing: %+v, %v, last seq %d; want the marker restored, nothing shipped", res, err, lastSeq())
	}
	if _, err := ReadPushMarker(ctx, idx, "000000010000000000000001"); err != nil {
		t.Fatalf("index marker not restored: %v", err)
	}

	// A marker write fails after the records were accepted: no marker
	// anywhere claims the file, and the retry ships it again.
	idx.fail = true
	if _, err := p.Push(ctx, PushFile{Name: "00000002.history", Content: []byte("1\t0/3000090\tbefore\n")}); err == nil {
		t.Fatal("push with a failing marker store succeeded")
	}
	if lastSeq() != 4 {
		t.Fatalf("last seq %d, want 4: the records go first", lastSeq())
	}
	if _, err := ReadPushMarker(ctx, st, PushMarkerKey("app", "00000002.history")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("store marker after a failed push: %v, want none", err)
	}
	idx.fail = false
	res, err = p.Push(ctx, PushFile{Name: "00000002.history", Content: []byte("1\t0/3000090\tbefore\n")})
	if err != nil || res.Marker.FirstSeq != 5 {
		t.Fatalf("retry: %+v, %v; want shipped again as seq 5", res, err)
	}
	drain(t, r.Shipper)
	var keys []string
	for _, s := range storeSegments(t, st, "app") {
		for _, rec := range s.Records {
			keys = append(keys, rec.Op+" "+string(rec.Key))
		}
	}
	want := "chunk 000000010000000000000001,chunk 000000010000000000000001,chunk 000000010000000000000001,put 00000002.history,put 00000002.history"
	if got := strings.Join(keys, ","); got != want {
		t.Fatalf("records in the store:\n%s\nwant\n%s", got, want)
	}

	for _, bad := range []string{"", ".", "..", "../x", "/abs", "a/b", ".hidden", "nul\x00", strings.Repeat("x", 256)} {
		if _, err := p.Push(ctx, PushFile{Name: bad, Content: []byte("x")}); err == nil {
			t.Errorf("push as %q succeeded", bad)
		}
	}
}

// A marker that is not one (too large, not JSON) is refused at once,
// naming it: reading it again gives the same bytes, so retrying it would
// hold archive_command (and the read-ahead, and every push of that name
// waiting for it) until its timeout.
func TestPusherDamagedMarker(t *testing.T) {
	st := newDirStore(t)
	r := startShipper(t, shipperConfig(t, Target{Name: "store", Store: st}))
	p := &Pusher{Shipper: r.Shipper, Retry: store.RetryPolicy{Min: 1, Max: 1}, Log: quiet, Markers: []MarkerStore{
		{Name: "store", Store: st, Key: func(n string) string { return PushMarkerKey("app", n) }},
	}}
	for _, c := range []struct {
		why  string
		data []byte
		want string
	}{
		{"garbage", []byte("\x00\x01garbage{"), "damaged"},
		{"oversize", bytes.Repeat([]byte(" "), maxMarkerSize+1), "larger than"},
		{"no sha256", []byte(`{"name":"x","size":3}`), "damaged"},
	} {
		name := "00000001000000000000000" + c.why[:1]
		if err := st.Put(t.Context(), PushMarkerKey("app", name), c.data); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := p.Push(ctx, PushFile{Name: name, Content: []byte("wal")})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "pushed/"+name) || ctx.Err() != nil {
			t.Errorf("push over a %s marker: %v; want at once an error naming the marker, with %q", c.why, err, c.want)
		}
		_, _, err = p.Marked(ctx, name)
		if err == nil || ctx.Err() != nil {
			t.Errorf("Marked over a %s marker: %v; want an error at once", c.why, err)
		}
		cancel()
		if err := st.Delete(t.Context(), PushMarkerKey("app", name)); err != nil {
			t.Fatal(err)
		}
	}
}

// getCounter counts its store's Gets.
type getCounter struct {
	store.Store
	gets int
}

func (s *getCounter) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	s.gets++
	return s.Store.Get(ctx, name)
}

// Shipped, asked by push.sock before every push, stops at the first
// marker store without the marker (the spool's index, on disk): a new
// file costs the targets no marker read before Push makes its own.
func TestPusherShipped(t *testing.T) {
	st := &getCounter{Store: newDirStore(t)}
	idx := &getCounter{Store: newDirStore(t)}
	r := startShipper(t, shipperConfig(t, Target{Name: "store", Store: st}))
	p := &Pusher{Shipper: r.Shipper, Retry: store.RetryPolicy{Min: 1, Max: 1}, Log: quiet, Markers: []MarkerStore{
		{Name: "index", Store: idx, Key: func(n string) string { return n }},
		{Name: "store", Store: st, Key: func(n string) string { return PushMarkerKey("app", n) }},
	}}
	ctx := t.Context()
	const name = "000000010000000000000001"
	content := []byte("wal")
	sum := sha256.Sum256(content)
	hash := hex.EncodeToString(sum[:])
	if _, ok, err := p.Shipped(ctx, name, hash, 3); ok || err != nil || idx.gets != 1 || st.gets != 0 {
		t.Fatalf("Shipped of a new file: %v, %v; marker reads: index %d, store %d; want false, 1 and 0", ok, err, idx.gets, st.gets)
	}
	if _, err := p.Push(ctx, PushFile{Name: name, Content: content}); err != nil {
		t.Fatal(err)
	}
	m, ok, err := p.Shipped(ctx, name, hash, 3)
	if !ok || err != nil || m.Size != 3 {
		t.Fatalf("Shipped after the push: %+v, %v, %v", m, ok, err)
	}
	if _, ok, err := p.Shipped(ctx, name, strings.Repeat("0", 64), 3); ok || !errors.Is(err, ErrPushConflict) {
		t.Fatalf("Shipped with another hash: %v, %v; want ErrPushConflict", ok, err)
	}
	// A store that lacks it: not shipped (Push completes it).
	if err := st.Delete(ctx, PushMarkerKey("app", name)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := p.Shipped(ctx, name, hash, 3); ok || err != nil {
		t.Fatalf("Shipped with the store's marker gone: %v, %v; want false", ok, err)
	}
}
