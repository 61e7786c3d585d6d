package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A SIGHUP reload of health_max_lag changes what /healthz judges from the
// next check on: a shipper whose receiver is down turns healthy when the
// bound is raised past its lag, and unhealthy again when it is lowered.
func TestHealthMaxLagReload(t *testing.T) {
	t.Parallel()
	s := newStream(t, "healthreload")
	addr, maddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	log := filepath.Join(s.dir, "app.log")
	if err := os.WriteFile(log, logLines(44, 1, 50), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(s.dir, "ship.toml")
	writeCfg := func(lag string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("health_max_lag = %q\nmetrics_addr = %q\n", lag, maddr)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("1s")
	ship := startFerry(t, nil, "ship", "--config", cfg, "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--source", "tail:"+log, "--max-age", "50ms", "--shutdown-timeout", "1s")
	healthIs := func(what string, want int) {
		t.Helper()
		ferrytest.Eventually(t, 30*time.Second, what, func() (bool, string) {
			if ship.Exited() {
				t.Fatalf("shipper exited:\n%s", ship)
			}
			r := ferry(t, nil, "health", "--addr", maddr)
			return r.Code == want, r.String()
		})
	}
	reload := func(lag string) {
		t.Helper()
		before := strings.Count(ship.Stderr(), "reload: health_max_lag applied")
		writeCfg(lag)
		if err := ship.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		ferrytest.Eventually(t, 15*time.Second, "reload of health_max_lag="+lag+" logged", func() (bool, string) {
			return strings.Count(ship.Stderr(), "reload: health_max_lag applied") > before, ferrytest.Clip(ship.Stderr())
		})
	}
	healthIs("healthy with the receiver up", 0)

	recv.Kill9()
	f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(logLines(44, 51, 10))
	f.Close()
	healthIs("unhealthy with the receiver down past health_max_lag 1s", 1)

	reload("1h")
	healthIs("healthy again once a reload raised health_max_lag to 1h", 0)
	time.Sleep(2 * time.Second) // still within the hour
	if r := ferry(t, nil, "health", "--addr", maddr); r.Code != 0 {
		t.Fatalf("health_max_lag 1h, receiver down 2+ s: want healthy:\n%s", r)
	}

	reload("1s")
	healthIs("unhealthy again once a reload lowered health_max_lag to 1s", 1)
	ship.Terminate(30 * time.Second) // non-zero: records left in the spool
}
