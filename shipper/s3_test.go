package shipper

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/s3"
)

// The history and the lease against a real S3 server (versitygw, which
// checks If-Match and If-None-Match): a history recorded in a dir target
// is copied to the S3 one and followed; the S3 lease keeps a second
// shipper out until the first releases it; and a promotion recorded in S3
// fences the running shipper.
func TestHistoryAndLeaseS3(t *testing.T) {
	t.Parallel()
	srv := versitygw.Start(t)
	srv.CreateBucket(t, "ferry")
	bucket, err := s3.New(t.Context(), s3.Config{Bucket: "ferry", Prefix: "fence", Endpoint: srv.Endpoint, Region: "us-east-1",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	local := newDirStore(t)
	targets := func() []Target { return []Target{{Name: "local", Store: local}, {Name: "s3", Store: bucket}} }

	shipAndClose(t, shipperConfig(t, targets()...), "g1-", 20)
	seg := storeSegments(t, bucket, "app")[0]
	rec := promote(t, local, 2, &seg, "dr-b") // only the dir store knows

	first := startShipper(t, shipperConfig(t, targets()...))
	if first.Generation() != 2 {
		t.Fatalf("generation %d, want 2", first.Generation())
	}
	h, err := catalog.ReadHistory(t.Context(), bucket, "app")
	if got, _ := h.Record(2); err != nil || !sameRecord(got, rec) {
		t.Fatalf("S3 history: %+v, %v; want generation 2's record copied", h.Newest(), err)
	}
	if _, err := New(context.Background(), shipperConfig(t, targets()...), quiet); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second shipper: %v, want ErrLeaseHeld", err)
	}
	if seq, err := first.Append(context.Background(), batch.Record{Data: []byte("g2\n")}); err != nil || seq != 11 {
		t.Fatalf("append: seq %d, %v; want 11", seq, err)
	}
	drain(t, first.Shipper)
	first.stop(t)
	first.Close()

	second := startShipper(t, shipperConfig(t, targets()...))
	promote(t, bucket, 3, &seg, "dr-c")
	if err := second.AppendBatch(context.Background(), batchtest.Records("late", 10), nil); err != nil {
		t.Fatal(err)
	}
	if err := second.wait(t); !errors.Is(err, batch.ErrFenced) || !strings.Contains(err.Error(), "dr-c") {
		t.Fatalf("Run: %v, want fenced by generation 3", err)
	}
	var g2 []string
	for _, s := range storeSegments(t, bucket, "app") {
		if s.Meta.Generation == 2 {
			g2 = append(g2, s.Name)
		}
	}
	if len(g2) != 1 {
		t.Fatalf("generation 2 in S3: %v, want only the first shipper's segment", g2)
	}
}
