package s3e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/versitygw"
)

// TestRequestEconomy counts S3 requests through the proxy: a ship run
// makes one PUT per segment and reads nothing back; a receive GETs each
// segment once and lists only after its checkpoint; an idle receiver only
// LISTs, and less and less often.
func TestRequestEconomy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withProxy)
	p := h.proxy
	s := h.newStream("economy", "app")
	const first = 30_000
	input := numbered(1, first)

	s.ship(input, "--max-bytes", "32KiB")
	names := s.segments()
	if msg := checkContiguous(names, first); msg != "" || len(names) < 10 {
		t.Fatalf("%d segments: %s", len(names), msg)
	}
	c := p.Counts()
	t.Logf("ship, %d segments: requests %v", len(names), c)
	if n := segmentPuts(p, h.bucket, s.dirKey()); n != len(names) {
		t.Errorf("ship made %d segment PUTs for %d segments; want exactly one per segment", n, len(names))
	}
	if n := c[versitygw.Put] - len(names); n > 3 {
		t.Errorf("ship made %d PUTs besides its segments; want at most its writer lease's create, renewal and release", n)
	}
	for _, k := range []versitygw.Kind{versitygw.Get, versitygw.Head, versitygw.Delete} {
		if c[k] != 0 {
			t.Errorf("ship into an empty stream made %d %s requests; want none", c[k], k)
		}
	}
	for _, r := range p.Requests() {
		if r.Kind == versitygw.Put && !strings.HasPrefix(r.Path, "/"+h.bucket+"/"+s.dirKey()) {
			t.Errorf("ship PUT %s: outside the stream's prefix", r.Path)
		}
	}

	// First receive: one GET per segment, and every listing of the
	// stream's segments starts after the checkpoint.
	p.ResetCounts()
	s.receiveOnce()
	s.wantReplica(input, "after the first receive")
	cp1 := s.checkpoint()
	if cp1.LastSeq != first {
		t.Fatalf("checkpoint at seq %d after receive --once, want %d", cp1.LastSeq, first)
	}
	checkReceiveRequests(t, h, s, p.Requests(), names, checkpoint{Generation: 1})

	// Second receive after a little more: it must resume from the
	// checkpoint, not list the stream's whole history again.
	more := numbered(first+1, 2_000)
	s.ship(more, "--max-bytes", "32KiB")
	all := s.segments()
	p.ResetCounts()
	s.receiveOnce()
	s.wantReplica(append(input, more...), "after the second receive")
	checkReceiveRequests(t, h, s, p.Requests(), all[len(names):], cp1)

	// Idle receiver: nothing new. Watch it for 2 s: only LISTs, backing off.
	p.ResetCounts()
	var (
		mu    sync.Mutex
		times []time.Time
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		seen := 0
		for {
			if n := p.Count(versitygw.List); n > seen {
				now := time.Now()
				mu.Lock()
				for ; seen < n; seen++ {
					times = append(times, now)
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	rcv := h.start(nil, nil, s.receiveArgs("--poll-min", "50ms", "--poll-max", "400ms")...)
	ferrytest.Eventually(t, 15*time.Second, "idle receiver's first LIST", func() (bool, string) {
		mu.Lock() // the watcher above records it, a moment after the proxy counts it
		defer mu.Unlock()
		return len(times) > 0, fmt.Sprintf("requests %v\n%s", p.Counts(), rcv)
	})
	mu.Lock()
	t0 := times[0]
	mu.Unlock()
	time.Sleep(time.Until(t0.Add(2*time.Second + 50*time.Millisecond)))
	counts := p.Counts()
	reqs := p.Requests()
	close(stop)
	<-done
	if code := rcv.Terminate(30 * time.Second); code != 0 {
		t.Errorf("idle receiver exited %d after SIGTERM, want 0:\n%s", code, rcv)
	}

	var inFirst, inSecond int
	var gaps []string
	mu.Lock()
	for i, at := range times {
		switch d := at.Sub(t0); {
		case d < time.Second:
			inFirst++
		case d < 2*time.Second:
			inSecond++
		}
		if i > 0 {
			gaps = append(gaps, at.Sub(times[i-1]).Round(time.Millisecond).String())
		}
	}
	mu.Unlock()
	t.Logf("idle receiver: %d LISTs in its first second, %d in its second; gaps %v; all requests %v",
		inFirst, inSecond, gaps, counts)
	for k, n := range counts {
		if k != versitygw.List && n > 0 {
			t.Errorf("idle receiver made %d %s requests in 2 s; want LISTs only", n, k)
		}
	}
	if inSecond == 0 || inFirst <= inSecond {
		t.Errorf("idle receiver polled %d times in its first second and %d in its second; want it polling, and backing off (fewer in the second)",
			inFirst, inSecond)
	}
	cp2 := s.checkpoint()
	for _, r := range reqs {
		if r.Kind == versitygw.List && r.Query.Get("prefix") == s.dirKey() {
			checkStartAfter(t, "idle receiver", s, r, cp2)
		}
	}
}

// checkReceiveRequests checks the requests of one receive --once run that
// started at checkpoint from and had to apply exactly the segments fetch:
// one GET each and no other segment read, no HEAD of a segment, writes
// only under the stream's watermarks/, and every listing of the segments
// resuming after a checkpoint: the first after from, later ones after a
// segment this run applied.
func checkReceiveRequests(t *testing.T, h *harness, s *stream, reqs []versitygw.Request, fetch []string, from checkpoint) {
	t.Helper()
	objPrefix := "/" + h.bucket + "/" + s.dirKey()
	resume := []checkpoint{from}
	for _, name := range fetch {
		gen, _, last, _ := batch.ParseSegmentName(name)
		resume = append(resume, checkpoint{Generation: gen, LastSeq: last, Segment: name})
	}
	gets := map[string]int{}
	kinds := map[versitygw.Kind]int{}
	var segLists []versitygw.Request
	for _, r := range reqs {
		kinds[r.Kind]++
		inWatermarks := strings.HasPrefix(r.Path, objPrefix+"watermarks/")
		switch r.Kind {
		case versitygw.Get:
			gets[strings.TrimPrefix(r.Path, objPrefix)]++
		case versitygw.Head, versitygw.Put, versitygw.Delete:
			if !inWatermarks {
				t.Errorf("receive made %s %s: outside the stream's watermarks/ a receiver needs only LIST and GET", r.Kind, r.Path)
			}
		case versitygw.List:
			if r.Query.Get("prefix") == s.dirKey() {
				segLists = append(segLists, r)
			}
		default:
			t.Errorf("receive made an unexpected request %s %s?%s", r.Method, r.Path, r.Query.Encode())
		}
	}
	t.Logf("receive from seq %d applying %d segments: requests %v", from.LastSeq, len(fetch), kinds)
	if len(segLists) == 0 {
		t.Fatalf("receive never listed %s", s.dirKey())
	}
	checkStartAfter(t, "receive's first listing", s, segLists[0], from)
	for _, r := range segLists[1:] {
		if !slices.ContainsFunc(resume, func(cp checkpoint) bool { return startAfterFits(s, r, cp) }) {
			t.Errorf("receive listed %s with start-after %q: not after its starting checkpoint (seq %d) nor after any segment it applied",
				s.dirKey(), r.Query.Get("start-after"), from.LastSeq)
		}
	}
	for _, name := range fetch {
		if gets[name] != 1 {
			t.Errorf("receive fetched segment %s %d times; want exactly once", name, gets[name])
		}
		delete(gets, name)
	}
	for name, n := range gets {
		t.Errorf("receive fetched %s %d times; it had nothing to apply there", name, n)
	}
}

// startAfterFits reports whether a LIST of the stream's segments resumes
// at checkpoint cp: its start-after sorts just before cp's segment (the
// receiver lists the segment it applied last again, to see any other
// segment overlapping it) and before any segment that would continue it.
func startAfterFits(s *stream, r versitygw.Request, cp checkpoint) bool {
	after := r.Query.Get("start-after")
	lo := s.dirKey() + cp.Segment
	if _, first, _, ok := batch.ParseSegmentName(cp.Segment); ok {
		lo = s.dirKey() + batch.NameAfter(cp.Generation, first-1)
	}
	hi := s.dirKey() + batch.SegmentName(cp.Generation, cp.LastSeq+1, cp.LastSeq+1)
	return after != "" && after >= lo && after < hi
}

// checkStartAfter fails the test unless r resumes after cp. An empty
// start-after would list the stream's whole history on every poll.
func checkStartAfter(t *testing.T, who string, s *stream, r versitygw.Request, cp checkpoint) {
	t.Helper()
	if !startAfterFits(s, r, cp) {
		t.Errorf("%s at checkpoint seq %d (segment %q) listed %s with start-after %q; want a key from just before that segment, below %q",
			who, cp.LastSeq, cp.Segment, s.dirKey(), r.Query.Get("start-after"),
			s.dirKey()+batch.SegmentName(cp.Generation, cp.LastSeq+1, cp.LastSeq+1))
	}
}
