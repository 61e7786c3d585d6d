package batch

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

var promoteTime = time.Date(2026, 3, 1, 4, 0, 0, 0, time.UTC)

// promotions returns the records of generations 2, 3, ... forked at forks,
// promoted on sites site2, site3, ...
func promotions(stream string, forks ...uint64) []Generation {
	var recs []Generation
	for i, f := range forks {
		g := uint32(i + 2)
		r := Generation{Version: GenerationVersion, Stream: stream, Generation: g, Parent: g - 1, ForkSeq: f,
			Time: promoteTime.Add(time.Duration(i) * time.Hour), Site: "site" + string(rune('0'+g)), Reason: "promote"}
		if f > 0 {
			r.ForkHash = forkHash
		}
		recs = append(recs, r)
	}
	return recs
}

func history(t *testing.T, forks ...uint64) History {
	t.Helper()
	h, err := NewHistory("app", promotions("app", forks...))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

const unbounded = math.MaxUint64

func TestHistoryOwnership(t *testing.T) {
	for _, tc := range []struct {
		name  string
		forks []uint64 // of generations 2, 3, ...
		ends  []uint64 // End of generations 1, 2, ...; the newest is unbounded
		owner map[uint64]uint32
	}{
		{"single generation", nil, []uint64{unbounded},
			map[uint64]uint32{1: 1, 1000: 1, math.MaxUint64: 1}},
		{"increasing forks", []uint64{100, 200}, []uint64{100, 200, unbounded},
			map[uint64]uint32{1: 1, 100: 1, 101: 2, 200: 2, 201: 3, math.MaxUint64: 3}},
		{"a later fork below an earlier one", []uint64{200, 150}, []uint64{150, 150, unbounded},
			map[uint64]uint32{150: 1, 151: 3, 200: 3, 201: 3}},
		{"a later fork cuts several", []uint64{100, 200, 50}, []uint64{50, 50, 50, unbounded},
			map[uint64]uint32{50: 1, 51: 4, 150: 4, 250: 4}},
		{"a cut generation keeps what is below the cut", []uint64{100, 200, 150}, []uint64{100, 150, 150, unbounded},
			map[uint64]uint32{100: 1, 101: 2, 150: 2, 151: 4, 201: 4}},
		{"equal forks", []uint64{100, 100, 100}, []uint64{100, 100, 100, unbounded},
			map[uint64]uint32{100: 1, 101: 4}},
		{"fork 0 restarts the stream", []uint64{100, 0}, []uint64{0, 0, unbounded},
			map[uint64]uint32{1: 3, 100: 3, 101: 3}},
		{"fork at the top of the seq range", []uint64{math.MaxUint64 - 1}, []uint64{math.MaxUint64 - 1, unbounded},
			map[uint64]uint32{math.MaxUint64 - 1: 1, math.MaxUint64: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := history(t, tc.forks...)
			if n := h.Newest().Generation; n != uint32(len(tc.forks)+1) {
				t.Fatalf("Newest = %d", n)
			}
			for i, want := range tc.ends {
				g := uint32(i + 1)
				end, bounded := h.End(g)
				if end != want || bounded != (i < len(tc.ends)-1) {
					t.Errorf("End(%d) = %d, %t, want %d", g, end, bounded, want)
				}
			}
			for seq, want := range tc.owner {
				if g, ok := h.Owner(seq); !ok || g != want {
					t.Errorf("Owner(%d) = %d, %t, want %d", seq, g, ok, want)
				}
			}
			// Every seq has one owner, and it owns it by the definition.
			for seq := uint64(1); seq < 300; seq++ {
				g, _ := h.Owner(seq)
				rec, _ := h.Record(g)
				if end, _ := h.End(g); seq <= rec.ForkSeq || seq > end {
					t.Fatalf("Owner(%d) = %d, which owns %d..%d", seq, g, rec.ForkSeq+1, end)
				}
			}
			if _, ok := h.Owner(0); ok {
				t.Error("Owner(0) found an owner")
			}
		})
	}
}

func TestHistoryOutside(t *testing.T) {
	h := history(t, 100, 200)
	for _, g := range []uint32{0, 4, 0x80000000, math.MaxUint32} {
		if _, ok := h.Record(g); ok {
			t.Errorf("Record(%d) found", g)
		}
		if end, bounded := h.End(g); end != 0 || !bounded {
			t.Errorf("End(%d) = %d, %t, want 0, true", g, end, bounded)
		}
		if _, err := h.Place(g, 1, 5); !errors.Is(err, ErrUnknownGeneration) {
			t.Errorf("Place(%d) = %v, want ErrUnknownGeneration", g, err)
		}
		if _, _, err := h.Next(g, 5); !errors.Is(err, ErrUnknownGeneration) {
			t.Errorf("Next(%d) = %v, want ErrUnknownGeneration", g, err)
		}
		if err := h.Fenced(g); !errors.Is(err, ErrUnknownGeneration) || errors.Is(err, ErrFenced) {
			t.Errorf("Fenced(%d) = %v, want ErrUnknownGeneration", g, err)
		}
	}
	one, ok := h.Record(1)
	if want := (Generation{Version: 1, Stream: "app", Generation: 1}); !ok || one != want {
		t.Errorf("Record(1) = %+v, %t, want %+v", one, ok, want)
	}
	if _, _, err := history(t).Next(1, math.MaxUint64); err == nil {
		t.Error("Next after seq MaxUint64 succeeded")
	}
}

func TestHistoryPlace(t *testing.T) {
	for _, tc := range []struct {
		name        string
		forks       []uint64
		gen         uint32
		first, last uint64
		want        Placement
		err         string // the error contains it; want is then ignored
	}{
		{"only generation", nil, 1, 1, 10, InHistory, ""},
		{"old generation below its end", []uint64{100, 200}, 1, 1, 100, InHistory, ""},
		{"middle generation", []uint64{100, 200}, 2, 101, 200, InHistory, ""},
		{"newest generation", []uint64{100, 200}, 3, 201, math.MaxUint64, InHistory, ""},
		{"old generation past its fork", []uint64{100, 200}, 1, 101, 150, Divergent, ""},
		{"middle generation past the next fork", []uint64{100, 200}, 2, 201, 300, Divergent, ""},
		{"below the generation's fork", []uint64{100, 200}, 2, 50, 60, Divergent, ""},
		{"starts at the generation's fork", []uint64{100, 200}, 3, 200, 250, Divergent, ""},
		{"cut by a lower later fork", []uint64{200, 150}, 1, 151, 200, Divergent, ""},
		{"generation owning nothing", []uint64{200, 150}, 2, 201, 300, Divergent, ""},
		{"old generation below a lower later fork", []uint64{200, 150}, 1, 101, 150, InHistory, ""},
		{"generation owning nothing, equal forks", []uint64{100, 100}, 2, 101, 110, Divergent, ""},
		{"straddles the next fork", []uint64{100, 200}, 1, 91, 110, 0, "straddles seq 100, where generation 2 was promoted at seq 100 on site2"},
		{"straddles a lower later fork", []uint64{200, 150}, 1, 141, 160, 0, "straddles seq 150, where generation 3"},
		{"straddles by one", []uint64{100}, 1, 100, 101, 0, "straddles"},
		{"first 0", nil, 1, 0, 5, 0, "impossible seq range"},
		{"last below first", nil, 1, 5, 4, 0, "impossible seq range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := history(t, tc.forks...).Place(tc.gen, tc.first, tc.last)
			name := SegmentName(tc.gen, tc.first, tc.last)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), name)):
				t.Errorf("Place = %v, %v; want an error naming %s containing %q", p, err, name, tc.err)
			case tc.err == "" && (err != nil || p != tc.want):
				t.Errorf("Place = %v, %v; want %v", p, err, tc.want)
			}
		})
	}
}

func TestHistoryNext(t *testing.T) {
	for _, tc := range []struct {
		name    string
		forks   []uint64
		gen     uint32 // checkpoint
		last    uint64
		wantGen uint32
		wantSeq uint64
		err     string // the error contains it
	}{
		{"fresh receiver", nil, 1, 0, 1, 1, ""},
		{"fresh receiver of a restarted stream", []uint64{100, 0}, 1, 0, 3, 1, ""},
		{"within a generation", []uint64{100, 200}, 1, 50, 1, 51, ""},
		{"at a fork", []uint64{100, 200}, 1, 100, 2, 101, ""},
		{"at the second fork", []uint64{100, 200}, 2, 200, 3, 201, ""},
		{"newest generation", []uint64{100, 200}, 3, 1000, 3, 1001, ""},
		{"skips a generation owning nothing", []uint64{100, 100, 100}, 1, 100, 4, 101, ""},
		{"skips a generation cut below its fork", []uint64{200, 150}, 1, 150, 3, 151, ""},
		{"checkpoint of a generation before its fork", []uint64{100, 200}, 3, 150, 2, 151, ""},
		{"checkpoint of a generation owning nothing", []uint64{100, 100}, 2, 100, 3, 101, ""},
		{"past the fork", []uint64{100, 200}, 1, 101, 0, 0,
			"diverged: this site's checkpoint is at generation 1 seq 101, but generation 2 was promoted at seq 100 on site2 at 2026-03-01T04:00:00Z"},
		{"past a lower later fork", []uint64{200, 150}, 2, 250, 0, 0,
			"generation 2 seq 250, but generation 3 was promoted at seq 150 on site3 at 2026-03-01T05:00:00Z"},
		{"past equal forks: the first names it", []uint64{100, 50, 50}, 1, 80, 0, 0, "generation 3 was promoted at seq 50"},
		{"past a lower fork two generations on", []uint64{100, 200, 50}, 2, 150, 0, 0, "generation 4 was promoted at seq 50"},
		{"the inherited part cut", []uint64{100, 200, 120}, 3, 150, 0, 0, "generation 4 was promoted at seq 120"},
		{"into a generation owning nothing", []uint64{100, 100}, 2, 101, 0, 0, "generation 3 was promoted at seq 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gen, seq, err := history(t, tc.forks...).Next(tc.gen, tc.last)
			if tc.err == "" {
				if err != nil || gen != tc.wantGen || seq != tc.wantSeq {
					t.Errorf("Next(%d, %d) = %d, %d, %v; want %d, %d", tc.gen, tc.last, gen, seq, err, tc.wantGen, tc.wantSeq)
				}
				return
			}
			var de *DivergedError
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasSuffix(err.Error(), "; run ferry rejoin") ||
				!errors.Is(err, ErrDiverged) || !errors.As(err, &de) || de.Generation != tc.gen || de.Seq != tc.last {
				t.Errorf("Next(%d, %d) = %d, %d, %v; want a *DivergedError containing %q", tc.gen, tc.last, gen, seq, err, tc.err)
			}
		})
	}
}

func TestHistoryFenced(t *testing.T) {
	h := history(t, 100, 50)
	if err := h.Fenced(3); err != nil {
		t.Errorf("Fenced(newest) = %v", err)
	}
	if err := history(t).Fenced(1); err != nil {
		t.Errorf("Fenced(1) of a stream never promoted = %v", err)
	}
	for gen, want := range map[uint32]string{
		1: "fenced: generation 2 was promoted at seq 100 on site2 at 2026-03-01T04:00:00Z; run ferry rejoin",
		2: "fenced: generation 3 was promoted at seq 50 on site3 at 2026-03-01T05:00:00Z; run ferry rejoin",
	} {
		err := h.Fenced(gen)
		var fe *FencedError
		if err == nil || err.Error() != want || !errors.Is(err, ErrFenced) || !errors.As(err, &fe) ||
			fe.Generation != gen || fe.Next.Generation != gen+1 {
			t.Errorf("Fenced(%d) = %v, want %q", gen, err, want)
		}
	}
}

func TestNewHistoryRefuses(t *testing.T) {
	chain := func(edit func([]Generation) []Generation) []Generation {
		return edit(promotions("app", 100, 200, 300))
	}
	for _, tc := range []struct {
		name string
		recs []Generation
		want string
	}{
		{"gap", chain(func(r []Generation) []Generation { return append(r[:1:1], r[2:]...) }),
			"generation record app/generations/00000004.json: the record of generation 3 is missing"},
		{"no generation 2", chain(func(r []Generation) []Generation { return r[1:] }),
			"app/generations/00000003.json: the record of generation 2 is missing"},
		{"far apart", []Generation{promotions("app", 100)[0], {Stream: "app", Generation: 0x80000000, Parent: 0x7fffffff}},
			"app/generations/80000000.json: the record of generation 3 is missing"},
		{"duplicate", chain(func(r []Generation) []Generation { return append(r, r[1]) }),
			"app/generations/00000003.json: generation 3 given twice"},
		{"wrong parent", chain(func(r []Generation) []Generation { r[1].Parent = 1; return r }),
			"app/generations/00000003.json: generation 3 has parent 1, want 2"},
		{"wrong stream", chain(func(r []Generation) []Generation { r[2].Stream = "other"; return r }),
			`app/generations/00000004.json: it says stream "other"`},
		{"generation 1", append(promotions("app", 100), Generation{Stream: "app", Generation: 1}),
			"app/generations/00000001.json: generation 1 has no record"},
		{"fork without hash", chain(func(r []Generation) []Generation { r[0].ForkHash = ""; return r }),
			"app/generations/00000002.json: fork_hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewHistory("app", tc.recs); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewHistory: %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := NewHistory("../app", nil); err == nil {
		t.Error("NewHistory accepted a bad stream name")
	}
	// Records come in any order; a listing sorts them, a caller may not.
	recs := promotions("app", 100, 200, 300)
	recs[0], recs[2] = recs[2], recs[0]
	h, err := NewHistory("app", recs)
	if err != nil || h.Newest().Generation != 4 || h.Stream() != "app" {
		t.Fatalf("unsorted records: %+v, %v", h.Newest(), err)
	}
	if recs[0].Generation != 4 {
		t.Error("NewHistory sorted its argument")
	}
}

// Records gives back what NewHistory was built from; EndedBy names the
// generation whose fork ended another, the oldest at the lowest fork.
func TestHistoryRecordsAndEndedBy(t *testing.T) {
	if got := history(t).Records(); len(got) != 0 {
		t.Fatalf("Records of generation 1 alone: %v; want none", got)
	}
	h := history(t, 100, 200, 50) // generation 4 forked at 50 ends 1, 2 and 3
	recs := h.Records()
	if len(recs) != 3 || recs[0].Generation != 2 || recs[2].ForkSeq != 50 {
		t.Fatalf("Records: %+v", recs)
	}
	recs[0].Site = "changed"
	if r, _ := h.Record(2); r.Site == "changed" {
		t.Fatal("Records returned the history's own slice")
	}
	for _, tc := range []struct {
		g    uint32
		want uint32 // 0: none
	}{{1, 4}, {2, 4}, {3, 4}, {4, 0}, {5, 0}, {0, 0}} {
		r, ok := h.EndedBy(tc.g)
		if ok != (tc.want != 0) || (ok && r.Generation != tc.want) {
			t.Errorf("EndedBy(%d) = generation %d, %v; want %d", tc.g, r.Generation, ok, tc.want)
		}
	}
	if r, ok := history(t, 100, 200).EndedBy(1); !ok || r.Generation != 2 {
		t.Errorf("EndedBy(1) with forks 100, 200: generation %d, %v; want 2", r.Generation, ok)
	}
}
