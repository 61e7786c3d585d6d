package metrics

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
)

// WatchReceiver registers the receiver's metrics and health checks: it is
// unhealthy once Run has failed (failed() returns non-nil), while an
// operation (a read, an apply) has kept failing for longer than MaxLag, or
// while it has waited on a gap that long. A process may watch several
// receivers (ferry sync: one per peer; ferry receive of many streams: one
// per stream), each of its own stream: their metrics are told apart by
// the stream label. Watching two receivers of one stream at once panics,
// as a duplicate registration does; unwatch removes the receiver's series
// and health check, after which its stream may be watched again (a
// stream's receiver opened again, or handed over in a fleet).
//
// Once failed() returns an error, ferry_receive_stopped says why, and
// Serve's stop keeps serving until a scrape has seen it (StopGrace).
func (r *Registry) WatchReceiver(rc *receiver.Receiver, stream string, failed func() error, h Health) (unwatch func()) {
	r.mu.Lock()
	first := r.receivers == nil
	if first {
		r.receivers = &recvCollector{}
	}
	c := r.receivers
	r.checks++
	id := r.checks
	r.stopped = append(r.stopped, healthCheck{id: id, check: failed})
	r.mu.Unlock()
	c.add(watchedReceiver{r: rc, stream: stream, failed: failed, since: time.Now(), shown: r.stopExported})
	if first {
		r.reg.MustRegister(c)
	}
	removeHealth := r.addHealth(func() error {
		if err := failed(); err != nil {
			return fmt.Errorf("receiver of %s stopped: %v", stream, err)
		}
		hs, now := rc.Health(), time.Now()
		switch {
		case hs.Waiting:
			return fmt.Errorf("receiver of %s waiting for its store, which has not answered since the start: %s", stream, hs.Retrying)
		case hs.Retrying != "" && now.Sub(hs.RetryingSince) > r.maxLag(h):
			return fmt.Errorf("receiver of %s failing for %s: %s", stream, now.Sub(hs.RetryingSince).Round(time.Second), hs.Retrying)
		case !hs.GapSince.IsZero() && now.Sub(hs.GapSince) > r.maxLag(h):
			return fmt.Errorf("receiver of %s waiting on a gap for %s", stream, now.Sub(hs.GapSince).Round(time.Second))
		}
		return nil
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			removeHealth()
			c.remove(rc)
			r.mu.Lock()
			r.stopped = slices.DeleteFunc(r.stopped, func(s healthCheck) bool { return s.id == id })
			r.mu.Unlock()
		})
	}
}

// stopReasons are the values of ferry_receive_stopped's reason label,
// each exported (0 or 1) for every watched receiver.
var stopReasons = []string{"corrupt", "format", "chain", "history", "gap", "apply", "other"}

// StopReason classifies the error a receiver's Run stopped on for
// ferry_receive_stopped: corrupt (a segment that cannot be read: damaged
// or over max_segment_bytes), format (a segment of a newer format than this
// ferry reads: upgrade ferry), chain (a segment that does not continue the
// stream, or overlaps another), history (the stream's generations cannot
// be followed, or the checkpoint is past a fork), gap (a missing segment
// outlived gap_timeout), apply (the applier failed fatally), other.
func StopReason(err error) string {
	switch {
	case batch.IsUnreadable(err):
		return "corrupt"
	case receiver.IsNewerFormat(err):
		return "format"
	case errors.Is(err, receiver.ErrChain) || errors.Is(err, receiver.ErrOverlap):
		return "chain"
	case errors.Is(err, receiver.ErrHistory) || errors.Is(err, batch.ErrDiverged):
		return "history"
	case errors.Is(err, receiver.ErrGap):
		return "gap"
	case errors.Is(err, receiver.ErrFatal):
		return "apply"
	}
	return "other"
}

var (
	descRecvSegments = prometheus.NewDesc("ferry_receive_segments_applied_total", "Segments applied by this process.", []string{"stream"}, nil)
	descRecvRecords  = prometheus.NewDesc("ferry_receive_records_applied_total", "Records applied by this process.", []string{"stream"}, nil)
	descRecvBytes    = prometheus.NewDesc("ferry_receive_bytes_read_total", "Segment bytes read from the store by this process.", []string{"stream"}, nil)
	descRecvSeq      = prometheus.NewDesc("ferry_receive_applied_seq", "Newest seq applied (the checkpoint).", []string{"stream"}, nil)
	descRecvCkptAge  = prometheus.NewDesc("ferry_receive_checkpoint_age_seconds", "Time since the checkpoint last moved (since this process started, when it never has).", []string{"stream"}, nil)
	descRecvGap      = prometheus.NewDesc("ferry_receive_gap_wait_seconds", "How long the receiver has waited on missing segments (0 when none are missing).", []string{"stream"}, nil)
	descRecvGen      = prometheus.NewDesc("ferry_receive_generation", "The generation of the last applied segment (the checkpoint's).", []string{"stream"}, nil)
	descRecvDiverged = prometheus.NewDesc("ferry_receive_divergent_segments_total", "Segments of an old generation past its fork that this process saw and skipped (never applied).", []string{"stream"}, nil)
	descRecvFailing  = prometheus.NewDesc("ferry_receive_failing_seconds", "How long a read or apply has kept failing (0 when none is).", []string{"stream"}, nil)
	descRecvStopped  = prometheus.NewDesc("ferry_receive_stopped", "1 once the receiver stopped on an error it cannot retry, for that error's reason (corrupt, format, chain, history, gap, apply, other); else 0.", []string{"stream", "reason"}, nil)
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
	failed func() error
	since  time.Time // when it was watched: the checkpoint age before it first moves
	// shown is called when a scrape's collection exports the stop (Serve's
	// stop waits for that scrape to end).
	shown func()
}

func (c *recvCollector) add(w watchedReceiver) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.recv {
		if o.stream == w.stream {
			panic(fmt.Sprintf("metrics: a second receiver of stream %s watched", w.stream))
		}
	}
	c.recv = append(c.recv, w)
}

func (c *recvCollector) remove(rc *receiver.Receiver) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recv = slices.DeleteFunc(c.recv, func(w watchedReceiver) bool { return w.r == rc })
}

func (c *recvCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecvSegments, descRecvRecords, descRecvBytes, descRecvSeq, descRecvCkptAge,
		descRecvGap, descRecvFailing, descRecvGen, descRecvDiverged, descRecvStopped} {
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
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, append([]string{c.stream}, labels...)...)
	}
	m(descRecvSegments, prometheus.CounterValue, float64(st.Segments))
	m(descRecvRecords, prometheus.CounterValue, float64(st.Records))
	m(descRecvDiverged, prometheus.CounterValue, float64(st.Divergent))
	m(descRecvGen, prometheus.GaugeValue, float64(cp.Generation))
	m(descRecvBytes, prometheus.CounterValue, float64(st.Bytes))
	m(descRecvSeq, prometheus.GaugeValue, float64(cp.LastSeq))
	moved := cp.AppliedAt
	if moved.IsZero() {
		moved = c.since
	}
	m(descRecvCkptAge, prometheus.GaugeValue, max(time.Since(moved).Seconds(), 0))
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
	why := ""
	if err := c.failed(); err != nil {
		why = StopReason(err)
		if c.shown != nil {
			c.shown()
		}
	}
	for _, reason := range stopReasons {
		v := 0.0
		if reason == why {
			v = 1
		}
		m(descRecvStopped, prometheus.GaugeValue, v, reason)
	}
}
