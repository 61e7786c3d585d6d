package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
)

// unitWants are the [Service] settings every unit must have.
var unitWants = map[string]string{
	"Type":                     "notify",
	"NotifyAccess":             "main",
	"RestartPreventExitStatus": "2",
	"Restart":                  "on-failure",
	"UMask":                    "0077",
	"CapabilityBoundingSet":    "",
	"NoNewPrivileges":          "yes",
	"ProtectSystem":            "strict",
	"ProtectHome":              "yes",
	"PrivateTmp":               "yes",
	"PrivateDevices":           "yes",
	"ProtectKernelTunables":    "yes",
	"ProtectKernelModules":     "yes",
	"ProtectKernelLogs":        "yes",
	"ProtectControlGroups":     "yes",
	"ProtectClock":             "yes",
	"ProtectHostname":          "yes",
	"RestrictNamespaces":       "yes",
	"RestrictRealtime":         "yes",
	"RestrictSUIDSGID":         "yes",
	"LockPersonality":          "yes",
	"MemoryDenyWriteExecute":   "yes",
	"RestrictAddressFamilies":  "AF_INET AF_INET6 AF_UNIX",
	"SystemCallFilter":         "@system-service",
	"SystemCallArchitectures":  "native",
	"DevicePolicy":             "closed",
	"User":                     "ferry",
	"Group":                    "ferry",
}

// maxExposure is the highest systemd-analyze security exposure a unit may
// have: 2.5 and below is "OK".
const maxExposure = 2.5

// systemdAnalyze returns the path of systemd-analyze, or "" where it is
// not installed; under CI (CI set, as .ci/run runs) a missing one fails.
func systemdAnalyze(t *testing.T) string {
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("systemd-analyze is not installed (Debian package systemd; .ci/run installs it): %v", err)
		}
		t.Logf("systemd-analyze not installed: units not verified nor scored")
		return ""
	}
	return path
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) `)

// checkWithSystemdAnalyze verifies the unit (any complaint fails: verify
// exits 0 on unknown keys and bad values, saying so on stderr) with
// ExecStart pointed at the built binary, and scores its exposure offline
// (no systemd needed as PID 1).
func checkWithSystemdAnalyze(t *testing.T, analyze, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), filepath.Base(path))
	os.WriteFile(unit, []byte(strings.ReplaceAll(string(raw), "/usr/bin/ferry", ferryBin)), 0o644)
	out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", path, err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security %s: %v\n%s", path, err, out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > maxExposure {
		t.Errorf("%s: exposure %.1f, want at most %.1f:\n%s", path, score, maxExposure, out)
	}
}

// The systemd units in etc/systemd parse as unit files and start ferry
// with a verb and flags the built binary accepts (it is run with them plus
// --help, which stops after flag parsing). They are Type=notify with a
// watchdog, do not restart on a config error (exit 2), and are hardened to
// an exposure of at most 2.5 ("OK") by systemd-analyze security, which
// also verifies them where it is installed (CI installs it).
func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob("../../etc/systemd/*.service")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range units {
		names = append(names, filepath.Base(u))
	}
	for _, want := range []string{"ferry-ship.service", "ferry-receive.service", "ferry-ship@.service", "ferry-receive@.service",
		"ferry-sync.service", "ferry-sync@.service"} {
		if !slices.Contains(names, want) {
			t.Errorf("etc/systemd has no %s (it has %v)", want, names)
		}
	}
	analyze := systemdAnalyze(t)
	for _, path := range units {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sections := map[string]map[string]string{}
			var cur string
			sc := bufio.NewScanner(f)
			for n := 1; sc.Scan(); n++ {
				line := strings.TrimSpace(sc.Text())
				switch {
				case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
				case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
					cur = line[1 : len(line)-1]
					sections[cur] = map[string]string{}
				default:
					k, v, ok := strings.Cut(line, "=")
					if !ok || cur == "" {
						t.Fatalf("%s:%d: not a section or key=value: %q", path, n, line)
					}
					sections[cur][strings.TrimSpace(k)] = strings.TrimSpace(v)
				}
			}
			for _, s := range []string{"Unit", "Service", "Install"} {
				if sections[s] == nil {
					t.Fatalf("%s has no [%s] section", path, s)
				}
			}
			svc := sections["Service"]
			if svc["User"] == "" || svc["User"] == "root" {
				t.Errorf("%s: the service should run as its own user, not %q", path, svc["User"])
			}
			// A flood or a runaway must not take the host down with ferry.
			for _, key := range []string{"LimitNOFILE", "MemoryMax"} {
				if svc[key] == "" || svc[key] == "infinity" {
					t.Errorf("%s: %s is not set", path, key)
				}
			}
			for key, want := range unitWants {
				if svc[key] != want {
					t.Errorf("%s: %s=%s, want %s=%s", path, key, svc[key], key, want)
				}
			}
			if _, err := time.ParseDuration(svc["WatchdogSec"] + "s"); err != nil {
				t.Errorf("%s: WatchdogSec=%q, want seconds (ferry pings at half of it)", path, svc["WatchdogSec"])
			}
			args := strings.Fields(svc["ExecStart"])
			if len(args) < 2 || args[0] != "/usr/bin/ferry" {
				t.Fatalf("%s: ExecStart %q does not run /usr/bin/ferry (where the package installs it)", path, svc["ExecStart"])
			}
			if strings.Contains(path, "@") && !strings.Contains(svc["ExecStart"], "--config /etc/ferry/%i.toml") {
				t.Errorf("%s: a template's ExecStart %q should read /etc/ferry/%%i.toml (one instance per stream)", path, svc["ExecStart"])
			}
			if args[1] == "sync" {
				checkSyncWritable(t, path, svc["ReadWritePaths"])
			}
			if analyze != "" {
				checkWithSystemdAnalyze(t, analyze, path)
			}
			r := ferry(t, nil, append(args[1:], "--help")...)
			if r.Code != 0 || !strings.Contains(r.Output(), "Usage: ferry "+args[1]) {
				t.Fatalf("%s: ferry does not accept ExecStart's arguments:\n%s", path, r)
			}
		})
	}
}

// checkSyncWritable checks that a sync unit lets ferry write what the
// sample sync configs name: the tree (sync.data), a directory store, the
// spool and state (under /var/lib/ferry). ProtectSystem=strict makes
// everything else read-only.
func checkSyncWritable(t *testing.T, unit, rw string) {
	t.Helper()
	var paths []string
	for _, p := range strings.Fields(rw) {
		paths = append(paths, strings.TrimPrefix(p, "-"))
	}
	covered := func(dir string) bool {
		return slices.ContainsFunc(paths, func(p string) bool { return dir == p || strings.HasPrefix(dir, p+"/") })
	}
	for _, sample := range []string{"../../etc/ferry-sync-a.toml", "../../etc/ferry-sync-b.toml"} {
		cfg, err := config.Load(sample)
		if err != nil {
			t.Fatal(err)
		}
		for key, dir := range map[string]string{"sync.data": strings.TrimPrefix(cfg.Sync.Data, "dir:"), "store": cfg.Store,
			"sync.spool": cfg.Sync.Spool, "sync.state": cfg.Sync.State} {
			if !covered(dir) {
				t.Errorf("%s: ReadWritePaths=%s does not cover %s = %q of %s", unit, rw, key, dir, sample)
			}
		}
	}
}
