package batch

import (
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestSegmentName(t *testing.T) {
	cases := []struct {
		gen         uint32
		first, last uint64
		want        string
	}{
		{0, 0, 0, "00000000-0000000000000000-0000000000000000.seg.zst"},
		{1, 1, 4, "00000001-0000000000000001-0000000000000004.seg.zst"},
		{0xdeadbeef, 0xabc, 0xabcdef, "deadbeef-0000000000000abc-0000000000abcdef.seg.zst"},
		{math.MaxUint32, math.MaxUint64, math.MaxUint64, "ffffffff-ffffffffffffffff-ffffffffffffffff.seg.zst"},
	}
	for _, c := range cases {
		got := SegmentName(c.gen, c.first, c.last)
		if got != c.want {
			t.Errorf("SegmentName(%d, %d, %d) = %s, want %s", c.gen, c.first, c.last, got, c.want)
		}
		g, f, l, ok := ParseSegmentName(got)
		if !ok || g != c.gen || f != c.first || l != c.last {
			t.Errorf("ParseSegmentName(%s) = %d, %d, %d, %t", got, g, f, l, ok)
		}
	}
	m := Meta{Generation: 2, FirstSeq: 10, LastSeq: 19}
	if m.Name() != SegmentName(2, 10, 19) {
		t.Errorf("Meta.Name = %s", m.Name())
	}
	if SegmentKey("app", m.Name()) != "app/00000002-000000000000000a-0000000000000013.seg.zst" || StreamDir("app") != "app/" {
		t.Errorf("SegmentKey/StreamDir: %s %s", SegmentKey("app", m.Name()), StreamDir("app"))
	}
}

func TestParseSegmentNameRefuses(t *testing.T) {
	good := "00000001-0000000000000001-0000000000000004.seg.zst"
	for _, name := range []string{
		"",
		good + ".tmp",
		"." + good,
		"app/" + good,
		"0000000A-0000000000000001-0000000000000004.seg.zst",  // upper-case hex is not canonical
		"0000001-0000000000000001-0000000000000004.seg.zst",   // short generation
		"000000001-0000000000000001-0000000000000004.seg.zst", // long generation
		"00000001-000000000000001-0000000000000004.seg.zst",
		"00000001-0000000000000001-0000000000000004.seg",
		"00000001_0000000000000001_0000000000000004.seg.zst",
		"0000000g-0000000000000001-0000000000000004.seg.zst",
		"00000001-0000000000000005-0000000000000004.seg.zst", // last < first
		good + "\n",
	} {
		if g, f, l, ok := ParseSegmentName(name); ok {
			t.Errorf("ParseSegmentName(%q) = %d, %d, %d, true", name, g, f, l)
		}
	}
}

// Lexical order of names is (generation, first, last) order, which is what
// lets a store List return segments in stream order.
func TestSegmentNameOrder(t *testing.T) {
	type key struct {
		gen         uint32
		first, last uint64
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var keys []key
	for range 5000 {
		k := key{gen: rng.Uint32N(4), first: rng.Uint64()}
		switch rng.IntN(3) { // cover small, large and boundary values
		case 0:
			k.gen, k.first = rng.Uint32(), rng.Uint64N(1<<20)
		case 1:
			k.first = math.MaxUint64 - rng.Uint64N(3)
		}
		if span := math.MaxUint64 - k.first; span == math.MaxUint64 {
			k.last = rng.Uint64()
		} else {
			k.last = k.first + rng.Uint64N(span+1)
		}
		keys = append(keys, k)
	}
	cmp := func(a, b key) int {
		if a.gen != b.gen {
			return compare(a.gen, b.gen)
		}
		if a.first != b.first {
			return compare(a.first, b.first)
		}
		return compare(a.last, b.last)
	}
	for i := 1; i < len(keys); i++ {
		a, b := keys[i-1], keys[i]
		na, nb := SegmentName(a.gen, a.first, a.last), SegmentName(b.gen, b.first, b.last)
		if got, want := strings.Compare(na, nb), cmp(a, b); got != want {
			t.Fatalf("%s vs %s: lexical %d, numeric %d", na, nb, got, want)
		}
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = SegmentName(k.gen, k.first, k.last)
	}
	slices.Sort(names)
	slices.SortFunc(keys, cmp)
	for i, k := range keys {
		g, f, l, ok := ParseSegmentName(names[i])
		if !ok || g != k.gen || f != k.first || l != k.last {
			t.Fatalf("sorted name %d is %s, want %+v", i, names[i], k)
		}
	}
}

func compare[T uint32 | uint64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestNameAfter(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		gen := rng.Uint32N(3) + 1
		seq := rng.Uint64N(1000) + 1
		after := NameAfter(gen, seq)
		for range 20 {
			g := gen - 1 + rng.Uint32N(3) // gen-1, gen or gen+1
			first := rng.Uint64N(1100) + 1
			last := first + rng.Uint64N(100)
			name := SegmentName(g, first, last)
			var wantBefore bool // name sorts before after: List(after) skips it
			switch {
			case g < gen:
				wantBefore = true
			case g > gen:
				wantBefore = false
			default:
				wantBefore = first <= seq
			}
			if (name < after) != wantBefore || name == after {
				t.Fatalf("NameAfter(%d, %d) = %s; segment %s sorts before it: %t, want %t", gen, seq, after, name, name < after, wantBefore)
			}
		}
	}
	// The extremes: the only name equal to NameAfter is a segment that ends
	// at the largest seq, which no real stream reaches.
	if NameAfter(1, 5) != SegmentName(1, 5, math.MaxUint64) {
		t.Fatal("NameAfter is not the last possible name with that first seq")
	}
	if !(NameAfter(1, 0) < SegmentName(1, 1, 1)) || !(NameAfter(1, math.MaxUint64) < SegmentName(2, 0, 0)) {
		t.Fatal("NameAfter at the seq extremes crosses into the next seq or generation")
	}
}

func TestCheckStream(t *testing.T) {
	for _, s := range []string{"a", "app", "A-b_c.d", "0", "a..b", "a.", "app@site-b", strings.Repeat("x", 128)} {
		if err := CheckStream(s); err != nil {
			t.Errorf("CheckStream(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", ".", "..", ".hidden", "-x", "_x", "a/b", "/a", "a\\b", "a b", "a\n", "a\x00", "é", "@x", strings.Repeat("x", 129)} {
		err := CheckStream(s)
		if err == nil {
			t.Errorf("CheckStream(%q) accepted", s)
			continue
		}
		if !strings.Contains(err.Error(), "1-128") {
			t.Errorf("CheckStream(%q): error %q does not say what is allowed", s, err)
		}
	}
}

// FuzzParseSegmentName holds the hand-written parser to the definition: a
// name parses exactly when it matches the segment name pattern with last
// >= first, and then SegmentName gives it back.
func FuzzParseSegmentName(f *testing.F) {
	f.Add("00000001-0000000000000001-0000000000000004.seg.zst")
	f.Add("ffffffff-ffffffffffffffff-ffffffffffffffff.seg.zst")
	f.Add("0000000A-0000000000000001-0000000000000004.seg.zst")
	f.Add("00000001-0000000000000005-0000000000000004.seg.zst")
	pattern := regexp.MustCompile(`^[0-9a-f]{8}-([0-9a-f]{16})-([0-9a-f]{16})\.seg\.zst$`)
	f.Fuzz(func(t *testing.T, name string) {
		g, first, last, ok := ParseSegmentName(name)
		m := pattern.FindStringSubmatch(name)
		want := m != nil && m[2] >= m[1] // fixed-width hex: string order is numeric order
		if ok != want {
			t.Fatalf("ParseSegmentName(%q) ok = %t, want %t", name, ok, want)
		}
		if ok && SegmentName(g, first, last) != name {
			t.Fatalf("ParseSegmentName(%q) = %d, %d, %d; SegmentName gives %s", name, g, first, last, SegmentName(g, first, last))
		}
	})
}
