// Package metrics exposes a shipper's and a receiver's state to Prometheus
// (client_golang) and serves /metrics and a health endpoint, /healthz.
//
// Most values are read from the shipper and receiver when Prometheus
// scrapes (collectors over their Stats), so the data path carries no
// instrumentation beyond a few hooks: the send latency histogram, retries
// by reason and S3 requests by type.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/shipper"
)

// Registry holds ferry's metrics for one process.
type Registry struct {
	reg *prometheus.Registry

	sendSeconds *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	s3Requests  *prometheus.CounterVec

	mu        sync.Mutex
	health    []func() error // each returns why the process is unhealthy, or nil
	receivers *recvCollector // registered with the first WatchReceiver
}

// New returns a registry with the Go runtime and process collectors.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.sendSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ferry_ship_send_seconds",
		Help:    "Time to deliver one segment to a target, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 18), // 1 ms .. 131 s
	}, []string{"target"})
	r.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_retries_total",
		Help: "Store operations retried after a transient failure, by reason.",
	}, []string{"reason"})
	r.s3Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_s3_requests_total",
		Help: "HTTP requests made to S3, by kind (list, get, head, put, delete).",
	}, []string{"kind"})
	r.reg.MustRegister(r.sendSeconds, r.retries, r.s3Requests)
	return r
}

// OnSent is a shipper.Config.OnSent hook.
func (r *Registry) OnSent(target string, _ int, took time.Duration) {
	r.sendSeconds.WithLabelValues(target).Observe(took.Seconds())
}

// OnRetry is a store.RetryPolicy.OnRetry hook.
func (r *Registry) OnRetry(err error) { r.retries.WithLabelValues(Reason(err)).Inc() }

// OnS3Request is an s3 Config.OnRequest hook.
func (r *Registry) OnS3Request(kind string) { r.s3Requests.WithLabelValues(kind).Inc() }

// Reason classifies a retried error for ferry_retries_total.
func Reason(err error) string {
	var ne net.Error
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || strings.Contains(msg, "timeout"):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(msg, "connection refused"):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET) || strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "eof"):
		return "reset"
	case strings.Contains(msg, "slowdown") || strings.Contains(msg, "429") || strings.Contains(msg, "too many requests"):
		return "throttled"
	case strings.Contains(msg, " 5") && (strings.Contains(msg, "500") || strings.Contains(msg, "502") || strings.Contains(msg, "503") || strings.Contains(msg, "504")):
		return "server_error"
	}
	return "other"
}

// Health is what the health endpoint checks against.
type Health struct {
	// MaxLag: a shipper is unhealthy when a target (not async) has a
	// record it has not applied (or, when applied is unknown, not
	// received) older than this, or has failed without success for this
	// long. 0: 5 minutes.
	MaxLag time.Duration
}

func (h Health) maxLag() time.Duration {
	if h.MaxLag <= 0 {
		return 5 * time.Minute
	}
	return h.MaxLag
}

// WatchShipper registers the shipper's metrics and health checks.
func (r *Registry) WatchShipper(sh *shipper.Shipper, stream string, h Health) {
	r.reg.MustRegister(&shipCollector{sh: sh, stream: stream})
	started := time.Now()
	r.addHealth(func() error {
		if err := sh.Failed(); err != nil {
			return fmt.Errorf("shipper stopped: %v", err)
		}
		if err := sh.Unreachable(); err != nil {
			return err
		}
		now := time.Now()
		var problems []string
		oldest := sh.OldestUnsent()
		for _, t := range sh.Targets() {
			if t.Async {
				continue
			}
			switch {
			case !t.OldestUnapplied.IsZero() && now.Sub(t.OldestUnapplied) > h.maxLag():
				problems = append(problems, fmt.Sprintf("target %s has not applied records from %s ago", t.Name, now.Sub(t.OldestUnapplied).Round(time.Second)))
			case t.LastError != "" && now.Sub(lastOK(t, started)) > h.maxLag():
				problems = append(problems, fmt.Sprintf("target %s failing for %s: %s", t.Name, now.Sub(lastOK(t, started)).Round(time.Second), t.LastError))
			case !oldest.IsZero() && now.Sub(oldest) > h.maxLag() && t.SentSeq < sh.Spool().Stats().LastSeq:
				problems = append(problems, fmt.Sprintf("target %s has not received records from %s ago", t.Name, now.Sub(oldest).Round(time.Second)))
			}
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	})
}

func lastOK(t shipper.TargetStatus, started time.Time) time.Time {
	if t.LastSent.IsZero() {
		return started
	}
	return t.LastSent
}

// WatchReceiver registers the receiver's metrics and health checks: it is
// unhealthy once Run has failed (failed() returns non-nil), while an
// operation (a read, an apply) has kept failing for longer than MaxLag, or
// while it has waited on a gap that long. A process may watch several
// receivers (ferry sync: one per peer), each of its own stream: their
// metrics are told apart by the stream label. Watching two receivers of
// one stream panics, as a duplicate registration does.
func (r *Registry) WatchReceiver(rc *receiver.Receiver, stream string, failed func() error, h Health) {
	r.mu.Lock()
	first := r.receivers == nil
	if first {
		r.receivers = &recvCollector{}
	}
	c := r.receivers
	r.mu.Unlock()
	c.add(rc, stream)
	if first {
		r.reg.MustRegister(c)
	}
	r.addHealth(func() error {
		if err := failed(); err != nil {
			return fmt.Errorf("receiver of %s stopped: %v", stream, err)
		}
		hs, now := rc.Health(), time.Now()
		switch {
		case hs.Waiting:
			return fmt.Errorf("receiver of %s waiting for its store, which has not answered since the start: %s", stream, hs.Retrying)
		case hs.Retrying != "" && now.Sub(hs.RetryingSince) > h.maxLag():
			return fmt.Errorf("receiver of %s failing for %s: %s", stream, now.Sub(hs.RetryingSince).Round(time.Second), hs.Retrying)
		case !hs.GapSince.IsZero() && now.Sub(hs.GapSince) > h.maxLag():
			return fmt.Errorf("receiver of %s waiting on a gap for %s", stream, now.Sub(hs.GapSince).Round(time.Second))
		}
		return nil
	})
}

func (r *Registry) addHealth(f func() error) {
	r.mu.Lock()
	r.health = append(r.health, f)
	r.mu.Unlock()
}

// Check runs the health checks: nil when healthy.
func (r *Registry) Check() error {
	r.mu.Lock()
	checks := append([]func() error(nil), r.health...)
	r.mu.Unlock()
	var errs []error
	for _, c := range checks {
		if err := c(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Handler serves /metrics and /healthz (200 "ok", or 503 with the reasons).
func (r *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := r.Check(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve listens on addr and serves Handler until ctx ends. The listener is
// bound before Serve returns its first error, so a port in use fails at
// start, not silently later.
func (r *Registry) Serve(ctx context.Context, addr string, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
	}
	go func() {
		<-ctx.Done()
		stop()
	}()
	return stop, nil
}

var (
	descRecordsIn    = prometheus.NewDesc("ferry_ship_records_in_total", "Records accepted into the spool.", []string{"stream"}, nil)
	descBytesIn      = prometheus.NewDesc("ferry_ship_bytes_in_total", "Framed record bytes accepted into the spool.", []string{"stream"}, nil)
	descSegSealed    = prometheus.NewDesc("ferry_ship_segments_sealed_total", "Segments sealed.", []string{"stream"}, nil)
	descSealedBytes  = prometheus.NewDesc("ferry_ship_sealed_bytes_total", "Bytes of sealed segments.", []string{"stream"}, nil)
	descRatio        = prometheus.NewDesc("ferry_ship_compression_ratio", "Uncompressed over compressed bytes of the segments sealed by this process.", []string{"stream"}, nil)
	descSpoolBytes   = prometheus.NewDesc("ferry_ship_spool_bytes", "Bytes in the spool: sealed segments waiting for a target and the open batch.", []string{"stream"}, nil)
	descSpoolSegs    = prometheus.NewDesc("ferry_ship_spool_segments", "Sealed segments waiting in the spool for at least one target.", []string{"stream"}, nil)
	descLastSeq      = prometheus.NewDesc("ferry_ship_last_seq", "Newest sequence number accepted.", []string{"stream"}, nil)
	descOldestUnsent = prometheus.NewDesc("ferry_ship_oldest_unsent_age_seconds", "Age of the oldest record in the spool that some target has not confirmed (0 if none).", []string{"stream"}, nil)
	descTgtBytes     = prometheus.NewDesc("ferry_ship_target_bytes_sent_total", "Segment bytes a target confirmed.", []string{"stream", "target"}, nil)
	descTgtSegs      = prometheus.NewDesc("ferry_ship_target_segments_sent_total", "Segments a target confirmed.", []string{"stream", "target"}, nil)
	descTgtFailed    = prometheus.NewDesc("ferry_ship_target_send_failures_total", "Failed attempts to deliver a segment to a target (each retried).", []string{"stream", "target"}, nil)
	descTgtReceived  = prometheus.NewDesc("ferry_ship_target_received_seq", "Newest seq the target has stored durably.", []string{"stream", "target"}, nil)
	descTgtApplied   = prometheus.NewDesc("ferry_ship_target_applied_seq", "Newest seq applied behind the target (only when known).", []string{"stream", "target"}, nil)
	descTgtLagRecs   = prometheus.NewDesc("ferry_ship_target_lag_records", "Records accepted but not yet applied behind the target (not received, when applied is unknown).", []string{"stream", "target"}, nil)
	descTgtLagSecs   = prometheus.NewDesc("ferry_ship_target_lag_seconds", "Age of the oldest record sent but not applied behind the target (only when known).", []string{"stream", "target"}, nil)
	descTgtUp        = prometheus.NewDesc("ferry_ship_target_up", "1 if the target's last attempt succeeded, 0 if it failed.", []string{"stream", "target"}, nil)
	descWindowOpen   = prometheus.NewDesc("ferry_ship_window_open", "1 while sending is allowed by the sending windows (always 1 without windows).", []string{"stream"}, nil)
	descGeneration   = prometheus.NewDesc("ferry_ship_generation", "The generation of the stream this shipper writes (docs/FAILOVER.md).", []string{"stream"}, nil)
	descFenced       = prometheus.NewDesc("ferry_ship_fenced", "1 once a newer generation fenced this shipper (it ships nothing more; run ferry rejoin), else 0.", []string{"stream"}, nil)
	descWindowCap    = prometheus.NewDesc("ferry_ship_window_bandwidth_limit_bytes", "Bytes per second each target may be sent under the open sending windows' bandwidth_limit (0: no cap).", []string{"stream"}, nil)
)

type shipCollector struct {
	sh     *shipper.Shipper
	stream string
}

func (c *shipCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecordsIn, descBytesIn, descSegSealed, descSealedBytes, descRatio, descSpoolBytes,
		descSpoolSegs, descLastSeq, descOldestUnsent, descTgtBytes, descTgtSegs, descTgtFailed, descTgtReceived, descTgtApplied,
		descTgtLagRecs, descTgtLagSecs, descTgtUp, descWindowOpen, descWindowCap, descGeneration, descFenced} {
		ch <- d
	}
}

func (c *shipCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sh.Spool().Stats()
	now := time.Now()
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, append([]string{c.stream}, labels...)...)
	}
	m(descRecordsIn, prometheus.CounterValue, float64(st.RecordsIn))
	m(descBytesIn, prometheus.CounterValue, float64(st.BytesIn))
	m(descSegSealed, prometheus.CounterValue, float64(st.SegmentsOut))
	m(descSealedBytes, prometheus.CounterValue, float64(st.BytesSealed))
	ratio := 0.0
	if st.BytesSealed > 0 {
		ratio = float64(st.UncompSealed) / float64(st.BytesSealed)
	}
	m(descRatio, prometheus.GaugeValue, ratio)
	m(descSpoolBytes, prometheus.GaugeValue, float64(st.SpoolBytes))
	m(descSpoolSegs, prometheus.GaugeValue, float64(st.SealedPending))
	m(descLastSeq, prometheus.GaugeValue, float64(st.LastSeq))
	age := 0.0
	if o := c.sh.OldestUnsent(); !o.IsZero() {
		age = max(now.Sub(o).Seconds(), 0)
	}
	m(descOldestUnsent, prometheus.GaugeValue, age)
	ws := c.sh.Window()
	open := 1.0
	if !ws.Open {
		open = 0
	}
	m(descWindowOpen, prometheus.GaugeValue, open)
	m(descWindowCap, prometheus.GaugeValue, float64(ws.BandwidthLimit))
	m(descGeneration, prometheus.GaugeValue, float64(c.sh.Generation()))
	fenced := 0.0
	if errors.Is(c.sh.Failed(), batch.ErrFenced) {
		fenced = 1
	}
	m(descFenced, prometheus.GaugeValue, fenced)
	for _, t := range c.sh.Targets() {
		m(descTgtBytes, prometheus.CounterValue, float64(t.BytesSent), t.Name)
		m(descTgtSegs, prometheus.CounterValue, float64(t.Segments), t.Name)
		m(descTgtFailed, prometheus.CounterValue, float64(t.Failures), t.Name)
		received := max(t.SentSeq, t.ReceivedSeq)
		m(descTgtReceived, prometheus.GaugeValue, float64(received), t.Name)
		done := received
		if t.AppliedKnown {
			m(descTgtApplied, prometheus.GaugeValue, float64(t.AppliedSeq), t.Name)
			done = t.AppliedSeq
		}
		lag := 0.0
		if st.LastSeq > done {
			lag = float64(st.LastSeq - done)
		}
		m(descTgtLagRecs, prometheus.GaugeValue, lag, t.Name)
		if t.AppliedKnown {
			secs := 0.0
			if !t.OldestUnapplied.IsZero() {
				secs = max(now.Sub(t.OldestUnapplied).Seconds(), 0)
			}
			m(descTgtLagSecs, prometheus.GaugeValue, secs, t.Name)
		}
		up := 1.0
		if t.LastError != "" {
			up = 0
		}
		m(descTgtUp, prometheus.GaugeValue, up, t.Name)
	}
}

var (
	descRecvSegments = prometheus.NewDesc("ferry_receive_segments_applied_total", "Segments applied by this process.", []string{"stream"}, nil)
	descRecvRecords  = prometheus.NewDesc("ferry_receive_records_applied_total", "Records applied by this process.", []string{"stream"}, nil)
	descRecvBytes    = prometheus.NewDesc("ferry_receive_bytes_read_total", "Segment bytes read from the store by this process.", []string{"stream"}, nil)
	descRecvSeq      = prometheus.NewDesc("ferry_receive_applied_seq", "Newest seq applied (the checkpoint).", []string{"stream"}, nil)
	descRecvCkptAge  = prometheus.NewDesc("ferry_receive_checkpoint_age_seconds", "Time since the checkpoint last moved.", []string{"stream"}, nil)
	descRecvGap      = prometheus.NewDesc("ferry_receive_gap_wait_seconds", "How long the receiver has waited on missing segments (0 when none are missing).", []string{"stream"}, nil)
	descRecvGen      = prometheus.NewDesc("ferry_receive_generation", "The generation of the last applied segment (the checkpoint's).", []string{"stream"}, nil)
	descRecvDiverged = prometheus.NewDesc("ferry_receive_divergent_segments_total", "Segments of an old generation past its fork that this process saw and skipped (never applied).", []string{"stream"}, nil)
	descRecvFailing  = prometheus.NewDesc("ferry_receive_failing_seconds", "How long a read or apply has kept failing (0 when none is).", []string{"stream"}, nil)
)

// recvCollector collects every watched receiver's metrics, one stream
// label value each. It is one collector for all of them: prometheus
// refuses a second collector with the same descriptors.
type recvCollector struct {
	mu   sync.Mutex
	recv []watchedReceiver
}

type watchedReceiver struct {
	r      *receiver.Receiver
	stream string
}

func (c *recvCollector) add(r *receiver.Receiver, stream string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.recv {
		if w.stream == stream {
			panic(fmt.Sprintf("metrics: a second receiver of stream %s watched", stream))
		}
	}
	c.recv = append(c.recv, watchedReceiver{r, stream})
}

func (c *recvCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecvSegments, descRecvRecords, descRecvBytes, descRecvSeq, descRecvCkptAge, descRecvGap, descRecvFailing, descRecvGen, descRecvDiverged} {
		ch <- d
	}
}

func (c *recvCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	recv := append([]watchedReceiver(nil), c.recv...)
	c.mu.Unlock()
	for _, w := range recv {
		collectReceiver(ch, w)
	}
}

func collectReceiver(ch chan<- prometheus.Metric, c watchedReceiver) {
	st := c.r.Stats()
	cp := c.r.Checkpoint()
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(d, t, v, c.stream)
	}
	m(descRecvSegments, prometheus.CounterValue, float64(st.Segments))
	m(descRecvRecords, prometheus.CounterValue, float64(st.Records))
	m(descRecvDiverged, prometheus.CounterValue, float64(st.Divergent))
	m(descRecvGen, prometheus.GaugeValue, float64(c.r.Checkpoint().Generation))
	m(descRecvBytes, prometheus.CounterValue, float64(st.Bytes))
	m(descRecvSeq, prometheus.GaugeValue, float64(cp.LastSeq))
	if !cp.AppliedAt.IsZero() {
		m(descRecvCkptAge, prometheus.GaugeValue, max(time.Since(cp.AppliedAt).Seconds(), 0))
	}
	hs := c.r.Health()
	gap, failing := 0.0, 0.0
	if !hs.GapSince.IsZero() {
		gap = time.Since(hs.GapSince).Seconds()
	}
	if hs.Retrying != "" {
		failing = time.Since(hs.RetryingSince).Seconds()
	}
	m(descRecvGap, prometheus.GaugeValue, gap)
	m(descRecvFailing, prometheus.GaugeValue, failing)
}

// WatchSync registers ferry sync's conflict counter: conflicts returns how
// many conflicts the site has resolved (docs/SYNC.md).
func (r *Registry) WatchSync(site string, conflicts func() int64) {
	r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "ferry_sync_conflicts_total",
		Help:        "Conflicts this site resolved: a peer's change met a concurrent local change of the same path (the loser kept as NAME.ferry-conflict-SITE-TIME).",
		ConstLabels: prometheus.Labels{"site": site},
	}, func() float64 { return float64(conflicts()) }))
}
