package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The Grafana dashboard in etc/ loads as JSON and queries only metrics
// ferry exports, so a renamed metric cannot silently blank a panel.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("../etc/grafana-ferry.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("etc/grafana-ferry.json: %v", err)
	}
	known := map[string]bool{}
	descs := make(chan *prometheus.Desc, 100)
	r := New(Build{})
	(&shipCollector{}).Describe(descs)
	(&recvCollector{}).Describe(descs)
	r.sendSeconds.Describe(descs)
	r.retries.Describe(descs)
	r.s3Requests.Describe(descs)
	close(descs)
	fams, err := r.reg.Gather() // ferry_build_info and the other always-present series
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		known[f.GetName()] = true
	}
	nameRE := regexp.MustCompile(`fqName: "([a-z0-9_]+)"`)
	for d := range descs {
		if m := nameRE.FindStringSubmatch(d.String()); m != nil {
			known[m[1]] = true
		}
	}
	used := regexp.MustCompile(`ferry_[a-z0-9_]+`)
	count := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range used.FindAllString(tg.Expr, -1) {
				count++
				if !known[name] && !known[strings.TrimSuffix(name, "_bucket")] {
					t.Errorf("panel %q queries %s, which ferry does not export", p.Title, name)
				}
			}
		}
	}
	if len(dash.Panels) < 10 || count < 15 {
		t.Fatalf("dashboard has %d panels and %d metric references; expected a real dashboard", len(dash.Panels), count)
	}
}
