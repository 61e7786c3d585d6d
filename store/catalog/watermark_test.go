package catalog

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// A receiver that registered but has applied nothing holds everything back:
// ReadWatermarks returns it with AppliedSeq 0 instead of leaving it out.
// A watermark whose content names another receiver is refused.
func TestReadWatermarksRegisteredNothingApplied(t *testing.T) {
	ctx := context.Background()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if err := st.Put(ctx, name, b); err != nil {
			t.Fatal(err)
		}
	}
	put("app/watermarks/early.id", map[string]string{"receiver": "early"})
	put("app/watermarks/late.id", map[string]string{"receiver": "late"})
	put("app/watermarks/early/0000000000000007.json", Watermark{Format: 1, Receiver: "early", Stream: "app", Generation: 1, AppliedSeq: 7})
	wms, err := ReadWatermarks(ctx, st, "app")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, w := range wms {
		got[w.Receiver] = w.AppliedSeq
	}
	if len(got) != 2 || got["early"] != 7 || got["late"] != 0 {
		t.Fatalf("watermarks %v: want early at 7 and late (registered, nothing applied) at 0", got)
	}

	put("app/watermarks/late/0000000000000009.json", Watermark{Format: 1, Receiver: "someone-else", Stream: "app", AppliedSeq: 9})
	if _, err := ReadWatermarks(ctx, st, "app"); err == nil || !strings.Contains(err.Error(), "someone-else") {
		t.Fatalf("a watermark naming another receiver: %v", err)
	}
}

// A watermark that is not JSON, or is larger than any real one, stops
// ReadWatermarks with an error naming it.
func TestReadWatermarksRefusesDamaged(t *testing.T) {
	ctx := context.Background()
	const key = "app/watermarks/r/0000000000000007.json"
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"not json", []byte("{not json")},
		{"empty", nil},
		{"oversized", []byte(`{"receiver":"r","stream":"app","segment":"` + strings.Repeat("x", 64<<10) + `"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := dir.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := RegisterReceiver(ctx, st, "app", "r"); err != nil {
				t.Fatal(err)
			}
			if err := st.Put(ctx, key, tc.body); err != nil {
				t.Fatal(err)
			}
			_, err = ReadWatermarks(ctx, st, "app")
			if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("ReadWatermarks: %v; want an error calling %s damaged", err, key)
			}
		})
	}
}

// UnregisterReceiver removes the registration and every watermark of that
// receiver, and no other's; unregistering again is harmless.
func TestUnregisterReceiver(t *testing.T) {
	ctx := context.Background()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"gone", "stays"} {
		if err := RegisterReceiver(ctx, st, "app", id); err != nil {
			t.Fatal(err)
		}
		for _, seq := range []uint64{3, 9} {
			if _, err := PutWatermark(ctx, st, Watermark{Format: 1, Receiver: id, Stream: "app", AppliedSeq: seq}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 2 {
		if err := UnregisterReceiver(ctx, st, "app", "gone"); err != nil {
			t.Fatal(err)
		}
	}
	wms, err := ReadWatermarks(ctx, st, "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(wms) != 1 || wms[0].Receiver != "stays" || wms[0].AppliedSeq != 9 {
		t.Fatalf("after unregistering gone: %+v; want only stays at 9", wms)
	}
	var left []string
	if err := st.List(ctx, WatermarkDir("app", "gone"), "", func(o store.Object) error {
		left = append(left, o.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if left != nil {
		t.Errorf("watermarks of gone left behind: %q", left)
	}
}
