package receiver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A promoted state dir is refused by name; a damaged or forged marker is
// refused too (never taken as "not promoted"), and a missing one is not a
// promotion.
func TestPromotionMarker(t *testing.T) {
	dir := t.TempDir()
	if err := CheckNotPromoted(dir); err != nil {
		t.Fatalf("no marker: %v", err)
	}
	p := Promotion{Stream: "app", Generation: 2, ForkSeq: 10, Site: "dr", Time: time.Unix(1_700_000_000, 0)}
	if err := SavePromotion(dir, p); err != nil {
		t.Fatal(err)
	}
	err := CheckNotPromoted(dir)
	if !errors.Is(err, ErrPromoted) || !strings.Contains(err.Error(), "generation 2") || !strings.Contains(err.Error(), "dr") {
		t.Fatalf("promoted dir: %v; want ErrPromoted naming generation and site", err)
	}
	for _, bad := range []string{"{bad", `{"version":1,"generation":1}`, `{"version":9,"generation":2}`} {
		if err := os.WriteFile(filepath.Join(dir, promotionName), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := CheckNotPromoted(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("marker %q: %v; want it refused as damaged", bad, err)
		}
	}
	if err := ClearPromotion(dir); err != nil {
		t.Fatal(err)
	}
	if err := CheckNotPromoted(dir); err != nil {
		t.Fatalf("after ClearPromotion: %v", err)
	}
}
