package catalog

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

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
