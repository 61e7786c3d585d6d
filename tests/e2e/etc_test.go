package e2e

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd units in etc/systemd parse as unit files and start ferry
// with a verb and flags the built binary accepts (it is run with them plus
// --help, which stops after flag parsing).
func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob("../../etc/systemd/*.service")
	if err != nil || len(units) < 2 {
		t.Fatalf("want the shipper and receiver units in etc/systemd, found %v (%v)", units, err)
	}
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
			args := strings.Fields(svc["ExecStart"])
			if len(args) < 2 || filepath.Base(args[0]) != "ferry" {
				t.Fatalf("%s: ExecStart %q does not run ferry", path, svc["ExecStart"])
			}
			r := ferry(t, nil, append(args[1:], "--help")...)
			if r.Code != 0 || !strings.Contains(r.Output(), "Usage: ferry "+args[1]) {
				t.Fatalf("%s: ferry does not accept ExecStart's arguments:\n%s", path, r)
			}
		})
	}
}
