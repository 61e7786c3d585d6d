package fleet

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkClaimDuringHandover is the CPU of one poll's Claim by a member
// holding 10,000 running streams, half of them to be handed over (a member
// joined): the Multi calls it on every listing.
func BenchmarkClaimDuringHandover(b *testing.B) {
	m, err := New(Config{Name: "f", Member: "a", TTL: 3 * time.Second, Store: nil}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	all := streams(10000)
	for i, s := range all {
		m.held[s] = &held{handover: i%2 == 0}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m.Claim(ctx, all, all)
	}
}
