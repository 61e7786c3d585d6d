package main

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// limitSegments stores in a dir store two segments of stream app,
// generation 1: seq 1..n of random data that does not compress (over
// 1 MiB stored), and after it a small one that claims 3 MiB decompressed
// (its records say what they take: a forged size would be damage).
func limitSegments(t *testing.T) (*dir.Store, string, string) {
	t.Helper()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.NewChaCha8([32]byte{7})
	put := func(first uint64, n int, prev string, data func() []byte) ([]byte, batch.Meta) {
		b.Reset("app", 1, prev)
		for i := range n {
			if err := b.Add(&batch.Record{Seq: first + uint64(i), Time: at, Data: data()}); err != nil {
				t.Fatal(err)
			}
		}
		seg, m, err := b.Seal(at)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(context.Background(), batch.SegmentKey("app", m.Name()), seg); err != nil {
			t.Fatal(err)
		}
		return seg, m
	}
	big, bm := put(1, 24, batch.ZeroHash, func() []byte {
		d := make([]byte, 64<<10)
		rng.Read(d)
		return d
	})
	_, zm := put(25, 48, batch.Hash(big), func() []byte { return make([]byte, 64<<10) })
	if bm.PayloadSize < 1<<20 || zm.UncompressedSize < 3<<20 || zm.PayloadSize > 1<<20 {
		t.Fatalf("segments of %d bytes stored and %d decompressed, want over 1 MiB and 3 MiB", bm.PayloadSize, zm.UncompressedSize)
	}
	return st, bm.Name(), zm.Name()
}

// rejoin reads the divergent segments of the store within
// max_segment_bytes, stored and decompressed, naming the one over it.
func TestRejoinSegmentLimit(t *testing.T) {
	st, big, zeros := limitSegments(t)
	ctx := t.Context()
	recs := map[uint64]batch.Record{}
	err := divergentInStore(ctx, st, "app", 1, 0, 1<<20, nil, recs)
	if !errors.Is(err, batch.ErrSegmentTooLarge) || !strings.Contains(err.Error(), big) {
		t.Fatalf("store segment over 1 MiB: %v", err)
	}
	err = divergentInStore(ctx, st, "app", 1, 24, 2<<20, nil, recs)
	if !errors.Is(err, batch.ErrSegmentTooLarge) || !strings.Contains(err.Error(), zeros) || !strings.Contains(err.Error(), "uncompressed") {
		t.Fatalf("store segment claiming 3 MiB: %v", err)
	}
	clear(recs)
	if err := divergentInStore(ctx, st, "app", 1, 0, 4<<20, nil, recs); err != nil || len(recs) != 72 {
		t.Fatalf("within the limit: %d records, %v", len(recs), err)
	}
}

// unread is a store whose objects must not be read, only listed.
type unread struct{ store.Store }

func (u unread) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return io.NopCloser(errReader{}), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) {
	return 0, errors.New("read a segment listed over the limit")
}

// fetch refuses a segment the store lists over max_segment_bytes without
// reading it, and one claiming more decompressed.
func TestFetchSegmentLimit(t *testing.T) {
	st, big, zeros := limitSegments(t)
	ctx := t.Context()
	segs, err := listSegments(ctx, st, "app")
	if err != nil {
		t.Fatal(err)
	}
	names := segNames(segs)
	var sizes []int64
	for _, s := range segs {
		sizes = append(sizes, s.Size)
	}
	f := fetcher{ctx: ctx, st: unread{st}, stream: "app", names: names, sizes: sizes, limit: 1 << 20}
	if _, err := f.records(big); !errors.Is(err, batch.ErrSegmentTooLarge) || !strings.Contains(err.Error(), big) {
		t.Fatalf("listed over 1 MiB: %v", err)
	}
	f.st, f.limit = st, 2<<20
	if _, err := f.records(zeros); !errors.Is(err, batch.ErrSegmentTooLarge) || !strings.Contains(err.Error(), zeros) {
		t.Fatalf("claiming 3 MiB: %v", err)
	}
	f.limit = 4 << 20
	for _, name := range names {
		if recs, err := f.records(name); err != nil || recs.Len() != 24 && recs.Len() != 48 {
			t.Fatalf("%s within the limit: %d records, %v", name, recs.Len(), err)
		}
	}
}
