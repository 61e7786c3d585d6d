package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// ferry health (a container's HEALTHCHECK: distroless has no curl) exits 0
// while a running shipper's /healthz says ok, 1 with the endpoint's reason
// on one stderr line while it says 503, and 1 once nothing listens.
func TestHealthVerb(t *testing.T) {
	t.Parallel()
	s := newStream(t, "health")
	addr, maddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	log := filepath.Join(s.dir, "app.log")
	if err := os.WriteFile(log, logLines(43, 1, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(s.dir, "ship.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("health_max_lag = \"1s\"\nmetrics_addr = %q\n", maddr)), 0o644)
	ship := startFerry(t, nil, "ship", "--config", cfg, "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--source", "tail:"+log, "--max-age", "50ms", "--shutdown-timeout", "1s")

	ferrytest.Eventually(t, 30*time.Second, "ferry health exits 0", func() (bool, string) {
		if ship.Exited() {
			t.Fatalf("shipper exited:\n%s", ship)
		}
		r := ferry(t, nil, "health", "--addr", maddr)
		return r.Code == 0, r.String()
	})
	r := ferry(t, nil, "health", "--config", cfg)
	if r.Code != 0 || r.Stdout != maddr+": ok\n" {
		t.Fatalf("health --config with metrics_addr: want exit 0 and %q:\n%s", maddr+": ok", r)
	}

	recv.Kill9()
	f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(logLines(43, 101, 10))
	f.Close()
	ferrytest.Eventually(t, 30*time.Second, "ferry health exits 1 with the receiver down", func() (bool, string) {
		r = ferry(t, nil, "health", "--addr", maddr)
		return r.Code == 1, r.String()
	})
	if !strings.Contains(r.Stderr, "503") || !strings.Contains(r.Stderr, "target store") ||
		strings.Count(r.Stderr, "\n") != 1 || r.Stdout != "" {
		t.Errorf("unhealthy: want the 503 and its reason on one stderr line:\n%s", r)
	}

	ship.Terminate(30 * time.Second) // non-zero: records left in the spool
	r = ferry(t, nil, "health", "--addr", maddr, "--timeout", "5s")
	if r.Code != 1 || !strings.Contains(r.Stderr, "connection refused") {
		t.Errorf("no shipper: want exit 1, connection refused:\n%s", r)
	}
	failFerry(t, nil, []string{"--addr is required"}, "health")
}
