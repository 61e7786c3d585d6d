// Package loadgen drives a shipper through its Go API the way an embedding
// application would: concurrent appenders, an optional offered rate, and
// the latency of every Append. ferry bench and tests/bench/appender use it.
package loadgen

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
)

// Options shape the load.
type Options struct {
	Records     int64         // records to append in total; 0 with Duration: until it passes
	Duration    time.Duration // stop starting appends after this long (0: until Records)
	Concurrency int           // concurrent appenders, at least 1
	Rate        int           // records per second offered in total, evenly paced (open loop); 0: as fast as acks allow
	Size        int           // bytes per synthetic record (newline included)
	// Sample, if set, is cycled through instead of synthetic records (one
	// record per line, newline kept), so compression matches real data.
	Sample [][]byte
	// OnAck, if set, is called after each Append returns, with its seq and
	// record (under a lock: keep it short).
	OnAck func(seq uint64, rec []byte)
}

// Result is what the run measured.
type Result struct {
	Records       int64   `json:"records"`
	Bytes         int64   `json:"bytes"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"`
	P50ms         float64 `json:"p50_ms"`
	P90ms         float64 `json:"p90_ms"`
	P99ms         float64 `json:"p99_ms"`
	Maxms         float64 `json:"max_ms"`
}

// Progress is read while Run runs.
type Progress struct {
	Done  atomic.Int64 // records acknowledged
	Bytes atomic.Int64
}

// Run appends until the options say stop, ctx ends, or an Append fails
// (the first error is returned with what was measured so far).
func Run(ctx context.Context, sh *shipper.Shipper, o Options, p *Progress) (Result, error) {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	if o.Size < 2 {
		o.Size = 2
	}
	if p == nil {
		p = &Progress{}
	}
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Second / time.Duration(o.Rate)
	}
	pid := os.Getpid()
	record := func(i int64) []byte {
		if len(o.Sample) > 0 {
			return o.Sample[int(i-1)%len(o.Sample)]
		}
		// "PID-N " padded to Size: unique across runs.
		b := fmt.Appendf(make([]byte, 0, o.Size), "%d-%d ", pid, i)
		for len(b) < o.Size-1 {
			b = append(b, 'a'+byte(len(b)%26))
		}
		return append(b, '\n')
	}
	var (
		next  atomic.Int64
		mu    sync.Mutex
		lats  []time.Duration
		first error
	)
	start := time.Now()
	var deadline time.Time
	if o.Duration > 0 {
		deadline = start.Add(o.Duration)
	}
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1)
				if (o.Records > 0 && i > o.Records) || (!deadline.IsZero() && time.Now().After(deadline)) {
					return
				}
				if interval > 0 {
					// Record i is due at start + (i-1)*interval: a slow ack
					// does not lower the offered rate.
					if d := time.Until(start.Add(time.Duration(i-1) * interval)); d > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(d):
						}
					}
				}
				data := record(i)
				t0 := time.Now()
				seq, err := sh.Append(ctx, batch.Record{Data: data})
				lat := time.Since(t0)
				mu.Lock()
				if err != nil {
					if first == nil && ctx.Err() == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				lats = append(lats, lat)
				if o.OnAck != nil {
					o.OnAck(seq, data)
				}
				mu.Unlock()
				p.Done.Add(1)
				p.Bytes.Add(int64(len(data)))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lats)
	pct := func(q float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[min(len(lats)-1, int(q*float64(len(lats))))]) / 1e6
	}
	r := Result{Records: int64(len(lats)), Bytes: p.Bytes.Load(), Seconds: elapsed.Seconds(),
		P50ms: pct(0.50), P90ms: pct(0.90), P99ms: pct(0.99)}
	if len(lats) > 0 {
		r.Maxms = float64(lats[len(lats)-1]) / 1e6
	}
	if r.Seconds > 0 {
		r.RecordsPerSec = float64(r.Records) / r.Seconds
		r.MBPerSec = float64(r.Bytes) / 1e6 / r.Seconds
	}
	return r, first
}
