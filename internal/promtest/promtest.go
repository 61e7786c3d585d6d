// Package promtest checks what a running ferry exports to Prometheus: it
// parses /metrics with the Prometheus text parser (prometheus/common's
// expfmt), checks the series every process must export from its first
// scrape, and runs a real Prometheus server (the Debian package's
// prometheus binary) that scrapes live shippers and receivers so a test
// can evaluate the dashboard's queries and the alert rules against them.
package promtest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// RequireTool returns the path of the program name, installed by the
// Debian package pkg. Missing, it fails the test when FERRY_REQUIRE_TOOLS=1
// or CI is set (tests/run.sh sets the first: CI installs pkg), else skips.
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found (%v): apt-get install %s", name, err, pkg)
	if os.Getenv("FERRY_REQUIRE_TOOLS") == "1" || os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Families is one scrape: metric families by name.
type Families map[string]*dto.MetricFamily

// Scrape reads http://addr/metrics.
func Scrape(addr string) (Families, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	return Families(fams), err
}

// FirstScrape polls addr until /metrics answers and returns that first
// scrape, failing the test if it does not within a minute or p exits.
func FirstScrape(t testing.TB, addr string, p *ferrytest.Process) Families {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		fams, err := Scrape(addr)
		if err == nil {
			return fams
		}
		if p.Exited() {
			t.Fatalf("exited before serving /metrics:\n%s", p)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /metrics on %s within a minute: %v\n%s", addr, err, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Series is one sample's name{labels} with sorted labels, as a key.
func Series(name string, m *dto.Metric) string {
	var ls []string
	for _, l := range m.GetLabel() {
		ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	sort.Strings(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}

// Label is the value of label name on m ("" if it has none).
func Label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Value is a counter's or gauge's value, or a histogram's sample count.
func Value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return math.NaN()
}

// Get returns the value of name with the given labels (all of them
// matching, others ignored) and whether it is there.
func (f Families) Get(name string, labels ...string) (float64, bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if Label(m, labels[i]) != labels[i+1] {
				continue next
			}
		}
		return Value(m), true
	}
	return 0, false
}

// Counters lists the counter and histogram series of ferry_* families.
func (f Families) Counters() []string {
	var out []string
	for name, fam := range f {
		if !strings.HasPrefix(name, "ferry_") {
			continue
		}
		if fam.GetType() != dto.MetricType_COUNTER && fam.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range fam.GetMetric() {
			out = append(out, Series(name, m))
		}
	}
	sort.Strings(out)
	return out
}

// CheckFerrySeries checks what every ferry process exports: one
// ferry_build_info with version, commit and go_version, and a stream
// label from streams on every other ferry_* series.
func CheckFerrySeries(t testing.TB, what string, f Families, streams ...string) {
	t.Helper()
	bi := f["ferry_build_info"]
	if bi == nil || len(bi.GetMetric()) != 1 {
		t.Errorf("%s: want one ferry_build_info, got %v", what, bi)
	} else {
		m := bi.GetMetric()[0]
		for _, l := range []string{"version", "commit", "go_version"} {
			if Label(m, l) == "" {
				t.Errorf("%s: ferry_build_info has no %s label: %s", what, l, Series("ferry_build_info", m))
			}
		}
		if Value(m) != 1 {
			t.Errorf("%s: ferry_build_info is %v, want 1", what, Value(m))
		}
	}
	n := 0
	for name, fam := range f {
		if !strings.HasPrefix(name, "ferry_") || name == "ferry_build_info" {
			continue
		}
		for _, m := range fam.GetMetric() {
			n++
			if !slices.Contains(streams, Label(m, "stream")) {
				t.Errorf("%s: %s has no stream label of %v", what, Series(name, m), streams)
			}
		}
	}
	if n < 10 {
		t.Errorf("%s: only %d ferry_* series", what, n)
	}
}

// CheckCountersEarly wants every counter series of a later scrape
// already in the first: a counter that appears late loses its first
// increments to rate() and increase().
func CheckCountersEarly(t testing.TB, what string, first, later Families) {
	t.Helper()
	had := map[string]bool{}
	for _, s := range first.Counters() {
		had[s] = true
	}
	for _, s := range later.Counters() {
		if !had[s] {
			t.Errorf("%s: counter %s missing from the first scrape", what, s)
		}
	}
	if len(had) < 5 {
		t.Errorf("%s: only %d counter series in the first scrape: %v", what, len(had), first.Counters())
	}
}

// CheckZero wants each of name's series with labels (pairs) in f, at 0.
func CheckZero(t testing.TB, what string, f Families, name string, labels ...string) {
	t.Helper()
	if v, ok := f.Get(name, labels...); !ok || v != 0 {
		t.Errorf("%s: %s%v is %v (present %v), want 0", what, name, labels, v, ok)
	}
}

// DashboardExprs returns every query of the Grafana dashboard at path,
// with $stream set to stream.
func DashboardExprs(t testing.TB, path, stream string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if tg.Expr != "" {
				out = append(out, strings.ReplaceAll(tg.Expr, "$stream", regexp.QuoteMeta(stream)))
			}
		}
	}
	if len(out) < 15 {
		t.Fatalf("%s has %d queries; expected a real dashboard", path, len(out))
	}
	return out
}

// Prometheus is a running Prometheus server.
type Prometheus struct {
	URL string
	p   *exec.Cmd
	log string
}

// StartPrometheus runs prometheus scraping each job's targets every
// second and evaluating rules (files, may be none) every second. It is
// stopped when the test ends.
func StartPrometheus(t testing.TB, jobs map[string][]string, rules ...string) *Prometheus {
	t.Helper()
	bin := RequireTool(t, "prometheus", "prometheus")
	dir := t.TempDir()
	cfg := "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
	if len(rules) > 0 {
		cfg += "rule_files:\n"
		for _, r := range rules {
			abs, err := filepath.Abs(r)
			if err != nil {
				t.Fatal(err)
			}
			cfg += fmt.Sprintf("  - %q\n", abs)
		}
	}
	cfg += "scrape_configs:\n"
	for job, targets := range jobs {
		cfg += fmt.Sprintf("  - job_name: %q\n    static_configs:\n      - targets: [%s]\n", job, quoteAll(targets))
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := ferrytest.FreeAddr(t)
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	p := &Prometheus{URL: "http://" + addr, p: cmd, log: logPath}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", p.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within a minute:\n%s", p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// Log is the server's output so far.
func (p *Prometheus) Log() string {
	b, _ := os.ReadFile(p.log)
	return ferrytest.Clip(string(b))
}

// apiGet calls the HTTP API and decodes data into out.
func (p *Prometheus) apiGet(path string, q url.Values, out any) error {
	resp, err := http.Get(p.URL + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string
		Error  string
		Data   json.RawMessage
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s: %v: %s", path, err, body)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s", path, r.Error)
	}
	return json.Unmarshal(r.Data, out)
}

// Query evaluates expr now and returns its samples' values.
func (p *Prometheus) Query(expr string) ([]float64, error) {
	var data struct {
		ResultType string
		Result     []struct {
			Value [2]any
		}
	}
	if err := p.apiGet("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", data.ResultType)
	}
	var vs []float64
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		var v float64
		if _, err := fmt.Sscan(s, &v); err != nil {
			v = math.NaN() // "NaN", "+Inf" parse; anything else is not a number
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// Data reports whether expr returns at least one sample that is a number:
// what a Grafana panel draws (NaN, e.g. a quantile of no requests, draws
// nothing).
func (p *Prometheus) Data(expr string) (bool, string) {
	vs, err := p.Query(expr)
	if err != nil {
		return false, err.Error()
	}
	for _, v := range vs {
		if !math.IsNaN(v) {
			return true, fmt.Sprint(vs)
		}
	}
	return false, fmt.Sprintf("%v", vs)
}

// RuleHealth returns every rule whose last evaluation failed, as
// "name: error", and how many rules were evaluated at least once.
func (p *Prometheus) RuleHealth() (bad []string, evaluated int, err error) {
	var data struct {
		Groups []struct {
			Rules []struct {
				Name      string
				Health    string
				LastError string
			}
		}
	}
	if err := p.apiGet("/api/v1/rules", nil, &data); err != nil {
		return nil, 0, err
	}
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			switch r.Health {
			case "ok":
				evaluated++
			case "err":
				bad = append(bad, r.Name+": "+r.LastError)
			}
		}
	}
	return bad, evaluated, nil
}

// Live is a running shipper and receiver of one stream, each serving
// metrics, for CheckLive.
type Live struct {
	Stream               string
	Ship, Recv           *ferrytest.Process
	ShipAddr, RecvAddr   string  // their metrics addresses
	Target               string  // the shipper's target name
	SpoolLimit           float64 // the shipper's spool limit, bytes
	Dashboard, RulesFile string  // etc/grafana-ferry.json, etc/prometheus/ferry-rules.yml
	// Feed appends records to the shipper's input; CheckLive calls it
	// every 200ms once the first scrapes are taken.
	Feed func()
}

// CheckLive checks a live shipper and receiver: their first scrapes
// hold the target's lag series, the spool limit, ferry_build_info and
// every counter they later export (those of what has not happened yet
// at 0), each ferry_* series with the stream label; then a
// real Prometheus scraping both answers every query of the dashboard
// with data and evaluates every alert rule without error.
func CheckLive(t testing.TB, l Live) {
	t.Helper()
	shipFirst := FirstScrape(t, l.ShipAddr, l.Ship)
	recvFirst := FirstScrape(t, l.RecvAddr, l.Recv)
	CheckFerrySeries(t, "shipper's first scrape", shipFirst, l.Stream)
	CheckFerrySeries(t, "receiver's first scrape", recvFirst, l.Stream)
	for _, name := range []string{"ferry_ship_target_lag_seconds", "ferry_ship_target_lag_records", "ferry_ship_target_up"} {
		if _, ok := shipFirst.Get(name, "stream", l.Stream, "target", l.Target); !ok {
			t.Errorf("shipper's first scrape lacks %s{target=%q}", name, l.Target)
		}
	}
	if v, ok := shipFirst.Get("ferry_ship_spool_limit_bytes", "stream", l.Stream); v != l.SpoolLimit {
		t.Errorf("shipper's first scrape: ferry_ship_spool_limit_bytes %v (present %v), want %v", v, ok, l.SpoolLimit)
	}
	for _, name := range []string{"ferry_receive_checkpoint_age_seconds", "ferry_receive_applied_seq", "ferry_receive_failing_seconds"} {
		if _, ok := recvFirst.Get(name, "stream", l.Stream); !ok {
			t.Errorf("receiver's first scrape lacks %s", name)
		}
	}
	// Counters of what has not happened yet are there, at 0.
	for _, reason := range []string{"timeout", "refused", "reset", "throttled", "server_error", "other"} {
		CheckZero(t, "shipper's first scrape", shipFirst, "ferry_retries_total", "stream", l.Stream, "reason", reason)
	}
	for _, kind := range []string{"list", "get", "head", "put", "delete"} {
		for what, f := range map[string]Families{"shipper's first scrape": shipFirst, "receiver's first scrape": recvFirst} {
			if _, ok := f.Get("ferry_s3_requests_total", "stream", l.Stream, "kind", kind); !ok {
				t.Errorf("%s lacks ferry_s3_requests_total{kind=%q}", what, kind)
			}
		}
	}
	CheckZero(t, "shipper's first scrape", shipFirst, "ferry_ship_target_send_failures_total", "stream", l.Stream, "target", l.Target)
	CheckZero(t, "shipper's first scrape", shipFirst, "ferry_ship_records_in_total", "stream", l.Stream)
	CheckZero(t, "receiver's first scrape", recvFirst, "ferry_receive_divergent_segments_total", "stream", l.Stream)
	for _, reason := range []string{"corrupt", "format", "chain", "history", "gap", "apply", "other"} {
		CheckZero(t, "receiver's first scrape", recvFirst, "ferry_receive_stopped", "stream", l.Stream, "reason", reason)
	}
	if _, ok := shipFirst.Get("ferry_ship_send_seconds", "stream", l.Stream, "target", l.Target); !ok {
		t.Errorf("shipper's first scrape lacks ferry_ship_send_seconds{target=%q}", l.Target)
	}

	prom := StartPrometheus(t, map[string][]string{"ferry-ship": {l.ShipAddr}, "ferry-receive": {l.RecvAddr}}, l.RulesFile)
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			l.Feed()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); <-fed }()
	exprs := DashboardExprs(t, l.Dashboard, l.Stream)
	ferrytest.Eventually(t, 90*time.Second, "every dashboard query returns data and every rule evaluates", func() (bool, string) {
		for _, p := range []*ferrytest.Process{l.Ship, l.Recv} {
			if p.Exited() {
				t.Fatalf("exited:\n%s", p)
			}
		}
		var missing []string
		for _, e := range exprs {
			if ok, got := prom.Data(e); !ok {
				missing = append(missing, fmt.Sprintf("%s -> %s", e, got))
			}
		}
		bad, evaluated, err := prom.RuleHealth()
		if err != nil {
			return false, err.Error()
		}
		if len(bad) > 0 {
			t.Fatalf("alert rules fail to evaluate: %v", bad)
		}
		return len(missing) == 0 && evaluated > 0, fmt.Sprintf("%d rules evaluated; no data from:\n%s", evaluated, strings.Join(missing, "\n"))
	})
	shipLater, err := Scrape(l.ShipAddr)
	if err != nil {
		t.Fatal(err)
	}
	recvLater, err := Scrape(l.RecvAddr)
	if err != nil {
		t.Fatal(err)
	}
	CheckFerrySeries(t, "shipper", shipLater, l.Stream)
	CheckFerrySeries(t, "receiver", recvLater, l.Stream)
	CheckCountersEarly(t, "shipper", shipFirst, shipLater)
	CheckCountersEarly(t, "receiver", recvFirst, recvLater)
	if v, _ := recvLater.Get("ferry_receive_records_applied_total", "stream", l.Stream); v == 0 {
		t.Errorf("receiver applied no records")
	}
}
