package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/promtest"
)

// A live shipper and receiver over each target kind, a directory store
// and the direct link (tests/s3e2e has S3), export every lag series, the
// spool limit, ferry_build_info and every counter they later export (at 0
// what has not happened) from their first scrape, each ferry_* series
// with the stream label; a real Prometheus
// scraping them answers every query of etc/grafana-ferry.json with data
// and evaluates etc/prometheus/ferry-rules.yml without error.
func TestDashboardQueriesReturnData(t *testing.T) {
	for _, kind := range []string{"dir", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newStream(t, "dash-"+kind)
			in := filepath.Join(s.dir, "app.log")
			if err := os.WriteFile(in, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			shipAddr, recvAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
			shipArgs := []string{"--stream", s.name, "--spool", s.spool, "--source", "tail:" + in, "--max-age", "100ms",
				"--spool-limit", "64MiB", "--metrics-addr", shipAddr}
			var recv, ship *ferrytest.Process
			switch kind {
			case "dir":
				recv = startFerry(t, nil, s.receiveArgs("--metrics-addr", recvAddr, "--poll-min", "20ms", "--poll-max", "100ms")...)
				ship = startFerry(t, nil, append([]string{"ship", "--store", s.store}, shipArgs...)...)
			case "tcp":
				link := ferrytest.FreeAddr(t)
				recv = startReceiver(t, s, link, "--insecure", "--token", linkToken, "--metrics-addr", recvAddr)
				ship = startFerry(t, nil, append([]string{"ship", "--store", "tcp://" + link, "--insecure", "--token", linkToken}, shipArgs...)...)
			}
			next := 1
			promtest.CheckLive(t, promtest.Live{
				Stream: s.name, Ship: ship, Recv: recv, ShipAddr: shipAddr, RecvAddr: recvAddr,
				Target: "store", SpoolLimit: 64 << 20,
				Dashboard: "../../etc/grafana-ferry.json", RulesFile: "../../etc/prometheus/ferry-rules.yml",
				Feed: func() {
					f, err := os.OpenFile(in, os.O_APPEND|os.O_WRONLY, 0)
					if err != nil {
						panic(fmt.Sprintf("append to %s: %v", in, err))
					}
					f.Write(logLines(7, next, 20))
					f.Close()
					next += 20
				},
			})
			if code := ship.Terminate(30 * time.Second); code != 0 {
				t.Errorf("shipper exit %d:\n%s", code, ship)
			}
			recv.Terminate(10 * time.Second)
		})
	}
}

// etc/prometheus/ferry-rules.yml passes promtool check rules, and the
// unit tests in tests/prometheus (series in, alerts out) pass.
func TestPrometheusRules(t *testing.T) {
	promtool := promtest.RequireTool(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "../../etc/prometheus/ferry-rules.yml"},
		{"test", "rules", "../prometheus/ferry-rules.test.yml"},
	} {
		r := ferrytest.Cmd{Bin: promtool}.Run(t, nil, args...)
		if r.Code != 0 {
			t.Errorf("promtool %v: exit %d\n%s", args, r.Code, r.Output())
		}
	}
}

// A receiver that stops on a damaged segment keeps serving /metrics until
// a scrape has seen ferry_receive_stopped{reason="corrupt"} 1 (the alert
// FerryReceiverCorruptSegment reads it), then exits non-zero.
func TestReceiverStoppedOnCorruptSegmentIsScraped(t *testing.T) {
	t.Parallel()
	s, _, bad, _ := damagedStream(t, "stopmetrics", func(seg []byte) []byte {
		off := payloadOffset(t, seg)
		seg[off+(len(seg)-off)/2] ^= 0x01
		return seg
	})
	maddr := ferrytest.FreeAddr(t)
	recv := startFerry(t, nil, s.receiveArgs("--metrics-addr", maddr, "--poll-min", "20ms")...)
	first := promtest.FirstScrape(t, maddr, recv)
	if v, ok := first.Get("ferry_receive_stopped", "stream", s.name, "reason", "corrupt"); ok && v == 1 {
		t.Logf("stopped already at the first scrape")
	} else {
		ferrytest.Eventually(t, 30*time.Second, "ferry_receive_stopped{reason=corrupt} 1", func() (bool, string) {
			fams, err := promtest.Scrape(maddr)
			if err != nil {
				t.Fatalf("scrape while the receiver should wait for it: %v\n%s", err, recv)
			}
			v, _ := fams.Get("ferry_receive_stopped", "stream", s.name, "reason", "corrupt")
			return v == 1, fmt.Sprint(v)
		})
	}
	code := waitExit(t, recv, 15*time.Second, "receiver after its stop was scraped")
	if code == 0 || !strings.Contains(recv.Stderr(), bad) {
		t.Fatalf("receiver exit %d, want non-zero naming %s:\n%s", code, bad, recv)
	}
}
