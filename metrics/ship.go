package metrics

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
)

// WatchShipper registers the shipper's metrics and health checks. Every
// series it exports is there from the first scrape, each target's lag
// included. One process may watch the shippers of many streams (ship with
// [[streams]]), told apart by the stream label; a shipper watched for a
// stream already watched replaces the old one (a stream started again).
// unwatch removes the shipper's series and health check: a stream that
// ended (its file removed) is no longer exported or judged.
func (r *Registry) WatchShipper(sh *shipper.Shipper, stream string, h Health) (unwatch func()) {
	r.mu.Lock()
	first := r.shippers == nil
	if first {
		r.shippers = &shipCollector{}
	}
	c := r.shippers
	timed := r.hooked[stream]
	r.mu.Unlock()
	c.add(sh, stream)
	if first {
		r.reg.MustRegister(c)
	}
	if timed {
		for _, t := range sh.Targets() {
			r.sendSeconds.WithLabelValues(stream, t.Name) // exported from the first scrape, at 0
		}
	}
	started := time.Now()
	removeHealth := r.addHealth(func() error {
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
			case !t.OldestUnapplied.IsZero() && now.Sub(t.OldestUnapplied) > r.maxLag(h):
				problems = append(problems, fmt.Sprintf("target %s has not applied records from %s ago", t.Name, now.Sub(t.OldestUnapplied).Round(time.Second)))
			case t.LastError != "" && now.Sub(lastOK(t, started)) > r.maxLag(h):
				problems = append(problems, fmt.Sprintf("target %s failing for %s: %s", t.Name, now.Sub(lastOK(t, started)).Round(time.Second), t.LastError))
			case !oldest.IsZero() && now.Sub(oldest) > r.maxLag(h) && t.SentSeq < sh.Spool().Stats().LastSeq:
				problems = append(problems, fmt.Sprintf("target %s has not received records from %s ago", t.Name, now.Sub(oldest).Round(time.Second)))
			}
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	})
	return func() {
		removeHealth()
		if c.remove(sh, stream) {
			// Its hooks' series go with it: SendHook and RetryHook make
			// them again at 0 if the stream starts again.
			r.sendSeconds.DeletePartialMatch(prometheus.Labels{"stream": stream})
			r.retries.DeletePartialMatch(prometheus.Labels{"stream": stream})
			r.mu.Lock()
			delete(r.hooked, stream)
			r.mu.Unlock()
		}
	}
}

func lastOK(t shipper.TargetStatus, started time.Time) time.Time {
	if t.LastSent.IsZero() {
		return started
	}
	return t.LastSent
}

var (
	descRecordsIn    = prometheus.NewDesc("ferry_ship_records_in_total", "Records accepted into the spool.", []string{"stream"}, nil)
	descBytesIn      = prometheus.NewDesc("ferry_ship_bytes_in_total", "Framed record bytes accepted into the spool.", []string{"stream"}, nil)
	descSegSealed    = prometheus.NewDesc("ferry_ship_segments_sealed_total", "Segments sealed.", []string{"stream"}, nil)
	descSealedBytes  = prometheus.NewDesc("ferry_ship_sealed_bytes_total", "Bytes of sealed segments.", []string{"stream"}, nil)
	descRatio        = prometheus.NewDesc("ferry_ship_compression_ratio", "Uncompressed over compressed bytes of the segments sealed by this process.", []string{"stream"}, nil)
	descSpoolBytes   = prometheus.NewDesc("ferry_ship_spool_bytes", "Bytes in the spool: sealed segments waiting for a target and the open batch.", []string{"stream"}, nil)
	descSpoolLimit   = prometheus.NewDesc("ferry_ship_spool_limit_bytes", "The spool's size limit (ship.spool_limit): appends wait while ferry_ship_spool_bytes is over it.", []string{"stream"}, nil)
	descSpoolSegs    = prometheus.NewDesc("ferry_ship_spool_segments", "Sealed segments waiting in the spool for at least one target.", []string{"stream"}, nil)
	descLastSeq      = prometheus.NewDesc("ferry_ship_last_seq", "Newest sequence number accepted.", []string{"stream"}, nil)
	descOldestUnsent = prometheus.NewDesc("ferry_ship_oldest_unsent_age_seconds", "Age of the oldest record in the spool that some target has not confirmed (0 if none).", []string{"stream"}, nil)
	descTgtBytes     = prometheus.NewDesc("ferry_ship_target_bytes_sent_total", "Segment bytes a target confirmed.", []string{"stream", "target"}, nil)
	descTgtSegs      = prometheus.NewDesc("ferry_ship_target_segments_sent_total", "Segments a target confirmed.", []string{"stream", "target"}, nil)
	descTgtFailed    = prometheus.NewDesc("ferry_ship_target_send_failures_total", "Failed attempts to deliver a segment to a target (each retried).", []string{"stream", "target"}, nil)
	descTgtReceived  = prometheus.NewDesc("ferry_ship_target_received_seq", "Newest seq the target has stored durably.", []string{"stream", "target"}, nil)
	descTgtApplied   = prometheus.NewDesc("ferry_ship_target_applied_seq", "Newest seq applied behind the target (only when known).", []string{"stream", "target"}, nil)
	descTgtLagRecs   = prometheus.NewDesc("ferry_ship_target_lag_records", "Records accepted but not yet applied behind the target (not received, when applied is unknown).", []string{"stream", "target"}, nil)
	descTgtLagSecs   = prometheus.NewDesc("ferry_ship_target_lag_seconds", "Age of the oldest record not yet applied behind the target (not received, when applied is unknown); 0 when caught up.", []string{"stream", "target"}, nil)
	descTgtUp        = prometheus.NewDesc("ferry_ship_target_up", "1 if the target's last attempt succeeded, 0 if it failed.", []string{"stream", "target"}, nil)
	descWindowOpen   = prometheus.NewDesc("ferry_ship_window_open", "1 while sending is allowed by the sending windows (always 1 without windows).", []string{"stream"}, nil)
	descGeneration   = prometheus.NewDesc("ferry_ship_generation", "The generation of the stream this shipper writes (docs/FAILOVER.md).", []string{"stream"}, nil)
	descFenced       = prometheus.NewDesc("ferry_ship_fenced", "1 once a newer generation fenced this shipper (it ships nothing more; run ferry rejoin), else 0.", []string{"stream"}, nil)
	descWindowCap    = prometheus.NewDesc("ferry_ship_window_bandwidth_limit_bytes", "Bytes per second each target may be sent under the open sending windows' bandwidth_limit (0: no cap).", []string{"stream"}, nil)
)

// shipCollector exports the watched shippers, one per stream.
type shipCollector struct {
	mu   sync.Mutex
	ship []watchedShipper
}

type watchedShipper struct {
	sh     *shipper.Shipper
	stream string
}

func (c *shipCollector) add(sh *shipper.Shipper, stream string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, o := range c.ship {
		if o.stream == stream {
			c.ship[i].sh = sh
			return
		}
	}
	c.ship = append(c.ship, watchedShipper{sh: sh, stream: stream})
}

// remove drops sh, unless a newer shipper of its stream replaced it, and
// says whether stream is no longer watched.
func (c *shipCollector) remove(sh *shipper.Shipper, stream string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ship = slices.DeleteFunc(c.ship, func(w watchedShipper) bool { return w.sh == sh })
	return !slices.ContainsFunc(c.ship, func(w watchedShipper) bool { return w.stream == stream })
}

func (c *shipCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecordsIn, descBytesIn, descSegSealed, descSealedBytes, descRatio, descSpoolBytes, descSpoolLimit,
		descSpoolSegs, descLastSeq, descOldestUnsent, descTgtBytes, descTgtSegs, descTgtFailed, descTgtReceived, descTgtApplied,
		descTgtLagRecs, descTgtLagSecs, descTgtUp, descWindowOpen, descWindowCap, descGeneration, descFenced} {
		ch <- d
	}
}

func (c *shipCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	ship := append([]watchedShipper(nil), c.ship...)
	c.mu.Unlock()
	for _, w := range ship {
		collectShipper(ch, w)
	}
}

func collectShipper(ch chan<- prometheus.Metric, c watchedShipper) {
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
	m(descSpoolLimit, prometheus.GaugeValue, float64(c.sh.Spool().Config().Limit))
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
		// Without an applied watermark (a store without ack "applied",
		// a link not yet connected) the lag is that of what the target
		// has not received: the oldest spooled record past it.
		oldest := t.OldestUnapplied
		if !t.AppliedKnown {
			oldest = c.sh.OldestPending(received) // reads a spool file: only when needed
		}
		secs := 0.0
		if !oldest.IsZero() {
			secs = max(now.Sub(oldest).Seconds(), 0)
		}
		m(descTgtLagSecs, prometheus.GaugeValue, secs, t.Name)
		up := 1.0
		if t.LastError != "" {
			up = 0
		}
		m(descTgtUp, prometheus.GaugeValue, up, t.Name)
	}
}
