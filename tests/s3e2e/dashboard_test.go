package s3e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/promtest"
)

// A live shipper and receiver on an S3 store export every lag series, the
// spool limit, ferry_build_info and every counter they later export (S3
// requests by kind among them) from their first scrape, each ferry_*
// series with the stream label; a real Prometheus scraping them answers every query of
// etc/grafana-ferry.json with data and evaluates the alert rules
// (tests/e2e does the same over a directory store and the direct link).
func TestDashboardQueriesReturnDataS3(t *testing.T) {
	h := newHarness(t)
	s := h.newStream("dash", "dash-s3")
	in := filepath.Join(t.TempDir(), "app.log")
	if err := os.WriteFile(in, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	shipAddr, recvAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	recv := h.start(nil, nil, s.receiveArgs("--metrics-addr", recvAddr, "--poll-min", "50ms", "--poll-max", "200ms")...)
	ship := h.start(nil, nil, s.shipArgs("--source", "tail:"+in, "--max-age", "100ms", "--spool-limit", "32MiB",
		"--metrics-addr", shipAddr)...)
	next := 1
	promtest.CheckLive(t, promtest.Live{
		Stream: s.name, Ship: ship, Recv: recv, ShipAddr: shipAddr, RecvAddr: recvAddr,
		Target: "store", SpoolLimit: 32 << 20,
		Dashboard: "../../etc/grafana-ferry.json", RulesFile: "../../etc/prometheus/ferry-rules.yml",
		Feed: func() {
			f, err := os.OpenFile(in, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				panic(fmt.Sprintf("append to %s: %v", in, err))
			}
			f.Write(numbered(next, 20))
			f.Close()
			next += 20
		},
	})
	fams, err := promtest.Scrape(shipAddr)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := fams.Get("ferry_s3_requests_total", "stream", s.name, "kind", "put"); v == 0 {
		t.Errorf("shipper counted no S3 puts")
	}
	if code := ship.Terminate(30 * time.Second); code != 0 {
		t.Errorf("shipper exit %d:\n%s", code, ship)
	}
	recv.Terminate(10 * time.Second)
}
