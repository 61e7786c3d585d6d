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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds ferry's metrics for one process.
type Registry struct {
	reg *prometheus.Registry

	sendSeconds *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	s3Requests  *prometheus.CounterVec

	mu        sync.Mutex
	health    []healthCheck   // each returns why the process is unhealthy, or nil
	checks    uint64          // health checks ever added: their ids
	receivers *recvCollector  // registered with the first WatchReceiver
	shippers  *shipCollector  // registered with the first WatchShipper
	hooked    map[string]bool // streams with a SendHook: their targets' sends are timed
	stopped   []healthCheck   // watched receivers' failed funcs (Serve's stop waits for a scrape)

	// Scrapes, under mu: a channel closed (and replaced) as each ends;
	// stopInScrape: a scrape's collection exported a watched receiver's
	// stop (ferry_receive_stopped 1); stopSeen: a scrape has ended since.
	scraped                chan struct{}
	stopInScrape, stopSeen bool

	// StopGrace is how long Serve's stop keeps serving, once a watched
	// receiver has stopped on an error, waiting for a scrape that shows
	// it (ferry_receive_stopped): the process exits after, and a scrape
	// must see why. 0: one minute, Prometheus' default scrape interval.
	StopGrace time.Duration

	reset atomic.Pointer[Health] // SetHealth's, over the Watch calls' (nil: none)
}

// Build is the binary's version, as ferry_build_info labels it.
type Build struct {
	Version, Commit, GoVersion string
}

// Retry reasons and S3 request kinds: every stream's counters start at 0
// for each, so that rate() and increase() see the first one.
var (
	retryReasons = []string{"timeout", "refused", "reset", "throttled", "server_error", "other"}
	s3Kinds      = []string{"list", "get", "head", "put", "delete"}
)

// New returns a registry with ferry_build_info and the Go runtime and
// process collectors.
func New(b Build) *Registry {
	r := &Registry{reg: prometheus.NewRegistry(), hooked: map[string]bool{}, scraped: make(chan struct{})}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "ferry_build_info",
		Help:        "Always 1; the labels say which ferry binary runs (ferry version prints the same).",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "go_version": b.GoVersion},
	}, func() float64 { return 1 }))
	r.sendSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ferry_ship_send_seconds",
		Help:    "Time to deliver one segment to a target, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 18), // 1 ms .. 131 s
	}, []string{"stream", "target"})
	r.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_retries_total",
		Help: "Store operations retried after a transient failure, by reason.",
	}, []string{"stream", "reason"})
	r.s3Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_s3_requests_total",
		Help: "HTTP requests made to S3, by kind (list, get, head, put, delete).",
	}, []string{"stream", "kind"})
	r.reg.MustRegister(r.sendSeconds, r.retries, r.s3Requests)
	return r
}

// SendHook returns stream's shipper.Config.OnSent hook: the send latency
// of each of its targets, exported from the first scrape once
// WatchShipper names them.
func (r *Registry) SendHook(stream string) func(target string, bytes int, took time.Duration) {
	r.mu.Lock()
	r.hooked[stream] = true
	r.mu.Unlock()
	return func(target string, _ int, took time.Duration) {
		r.sendSeconds.WithLabelValues(stream, target).Observe(took.Seconds())
	}
}

// RetryHook returns stream's store.RetryPolicy.OnRetry hook; its retry
// counters are exported at 0 for every reason from now on.
func (r *Registry) RetryHook(stream string) func(error) {
	for _, reason := range retryReasons {
		r.retries.WithLabelValues(stream, reason)
	}
	return func(err error) { r.retries.WithLabelValues(stream, Reason(err)).Inc() }
}

// S3Hook returns stream's s3 Config.OnRequest hook; its request counters
// are exported at 0 for every kind from now on (whatever the store: they
// stay 0 without an s3:// one).
func (r *Registry) S3Hook(stream string) func(kind string) {
	for _, kind := range s3Kinds {
		r.s3Requests.WithLabelValues(stream, kind)
	}
	return func(kind string) { r.s3Requests.WithLabelValues(stream, kind).Inc() }
}

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

// SetHealth replaces what every watcher's health checks judge against
// (the Health given to WatchShipper and WatchReceiver), from the next
// check on: a config reload of health_max_lag.
func (r *Registry) SetHealth(h Health) { r.reset.Store(&h) }

// maxLag is the MaxLag in force for a watcher started with h.
func (r *Registry) maxLag(h Health) time.Duration {
	if set := r.reset.Load(); set != nil {
		return set.maxLag()
	}
	return h.maxLag()
}

type healthCheck struct {
	id    uint64
	check func() error
}

// addHealth adds a health check, which the returned func removes.
func (r *Registry) addHealth(f func() error) (remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks++
	id := r.checks
	r.health = append(r.health, healthCheck{id: id, check: f})
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.health = slices.DeleteFunc(r.health, func(h healthCheck) bool { return h.id == id })
	}
}

// Check runs the health checks: nil when healthy.
func (r *Registry) Check() error {
	r.mu.Lock()
	checks := slices.Clone(r.health)
	r.mu.Unlock()
	var errs []error
	for _, c := range checks {
		if err := c.check(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Handler serves /metrics and /healthz (200 "ok", or 503 with the reasons).
func (r *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	prom := promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, req *http.Request) {
		prom.ServeHTTP(w, req)
		r.mu.Lock()
		r.stopSeen = r.stopSeen || r.stopInScrape
		close(r.scraped)
		r.scraped = make(chan struct{})
		r.mu.Unlock()
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := r.Check(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve listens on addr and serves Handler until ctx ends or the returned
// stop is called. The listener is bound before Serve returns its first
// error, so a port in use fails at start, not silently later. Called
// while ctx is live and a watched receiver has stopped on an error, stop
// first waits up to StopGrace for a scrape to begin and end.
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
	var once sync.Once
	stop := func() {
		once.Do(func() {
			r.awaitScrape(ctx, log)
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			<-done
		})
	}
	go func() {
		<-ctx.Done()
		stop()
	}()
	return stop, nil
}

// WatchSync registers ferry sync's conflict counter: conflicts returns how
// many conflicts the site has resolved applying its peers' changes
// (docs/SYNC.md); stream is the site's own, STREAM@SITE.
func (r *Registry) WatchSync(stream, site string, conflicts func() int64) {
	r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "ferry_sync_conflicts_total",
		Help:        "Conflicts this site resolved: a peer's change met a concurrent local change of the same path (the loser kept as NAME.ferry-conflict-SITE-TIME).",
		ConstLabels: prometheus.Labels{"stream": stream, "site": site},
	}, func() float64 { return float64(conflicts()) }))
}

// stopExported notes that a scrape's collection has exported a watched
// receiver's stop.
func (r *Registry) stopExported() {
	r.mu.Lock()
	r.stopInScrape = true
	r.mu.Unlock()
}

// anyStoppedLocked is the error of a watched receiver that has stopped,
// if any (under mu).
func (r *Registry) anyStoppedLocked() error {
	for _, s := range r.stopped {
		if err := s.check(); err != nil {
			return err
		}
	}
	return nil
}

// awaitScrape waits, when a watched receiver has stopped on an error and
// ctx is live, until a /metrics request that exported the stop has ended,
// at most StopGrace.
func (r *Registry) awaitScrape(ctx context.Context, log *slog.Logger) {
	r.mu.Lock()
	stopped := r.anyStoppedLocked()
	r.mu.Unlock()
	if stopped == nil || ctx.Err() != nil {
		return
	}
	grace := r.StopGrace
	if grace <= 0 {
		grace = time.Minute
	}
	log.Info("receiver stopped: serving metrics until scraped", "reason", StopReason(stopped), "wait_max", grace)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		r.mu.Lock()
		done, ch := r.stopSeen, r.scraped
		r.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
