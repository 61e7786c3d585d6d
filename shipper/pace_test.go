package shipper

import (
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/transport/tcp"
)

var _ LinkLimiter = (*tcp.Client)(nil)

const mib = 1 << 20

func TestWindowBandwidthRule(t *testing.T) {
	night := Window{Start: mustCron(t, "0 22 * * *"), Duration: 6 * time.Hour, BandwidthLimit: 1 * mib}
	late := Window{Start: mustCron(t, "0 23 * * *"), Duration: time.Hour, BandwidthLimit: 4 * mib}
	free := Window{Start: mustCron(t, "0 2 * * *"), Duration: time.Hour}
	sc := Schedules{Windows: []Window{night, late, free}}
	for _, c := range []struct {
		now  time.Time
		open bool
		want int64
	}{
		{at(10, 21, 0), false, 0},
		{at(10, 22, 30), true, 1 * mib}, // night alone
		{at(10, 23, 30), true, 4 * mib}, // night and late: the highest cap
		{at(11, 2, 30), true, 0},        // night and free: free has no cap
		{at(11, 3, 30), true, 1 * mib},  // night alone again
		{at(11, 4, 30), false, 0},       // closed: no cap to report
	} {
		ws := sc.windowAt(c.now)
		if ws.Open != c.open || ws.BandwidthLimit != c.want {
			t.Errorf("at %s: open %t, cap %d; want open %t, cap %d", c.now.Format(time.DateTime), ws.Open, ws.BandwidthLimit, c.open, c.want)
		}
	}
	if ws := (&Schedules{}).windowAt(at(1, 0, 0)); ws.BandwidthLimit != 0 {
		t.Errorf("no windows: cap %d, want none", ws.BandwidthLimit)
	}
}

// pacerAt returns a pacer for a target that takes whole segments, under
// windows, on clk.
func pacerAt(clk *ferrytest.Clock, store store.Store, windows ...Window) *pacer {
	s := &Shipper{cfg: Config{Schedules: Schedules{Windows: windows}}, clock: clk, log: quiet}
	return s.newPacer(Target{Name: "archive", Store: store})
}

// startWait runs p.wait in the background and waits until it blocks on
// clk (or returns at once).
func startWait(t *testing.T, clk *ferrytest.Clock, p *pacer, size int64) <-chan bool {
	t.Helper()
	done := make(chan bool, 1)
	go func() { done <- p.wait(context.Background(), size) }()
	deadline := time.Now().Add(5 * time.Second)
	for clk.Pending() == 0 && len(done) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("wait neither returned nor waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
	return done
}

func mustReturn(t *testing.T, what string, done <-chan bool) {
	t.Helper()
	select {
	case ok := <-done:
		if !ok {
			t.Fatalf("%s: wait returned false", what)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still waiting", what)
	}
}

func mustBlock(t *testing.T, what string, done <-chan bool) {
	t.Helper()
	select {
	case <-done:
		t.Fatalf("%s: wait returned, want it to wait", what)
	case <-time.After(30 * time.Millisecond):
	}
}

// Whole-segment stores: each segment goes at once, the next waits until
// the bytes sent are paid for at the cap; a cap that changes rescales
// what is owed; no cap, no wait.
func TestPacerSegments(t *testing.T) {
	night := Window{Start: mustCron(t, "0 22 * * *"), Duration: 6 * time.Hour, BandwidthLimit: 1 * mib}
	late := Window{Start: mustCron(t, "0 23 * * *"), Duration: time.Hour, BandwidthLimit: 4 * mib}
	free := Window{Start: mustCron(t, "0 2 * * *"), Duration: time.Hour}
	clk := ferrytest.NewClock(at(10, 22, 0))
	p := pacerAt(clk, newDirStore(t), night, late, free)

	mustReturn(t, "first segment", startWait(t, clk, p, 2*mib))
	done := startWait(t, clk, p, 1*mib)
	mustBlock(t, "second segment at once", done)
	clk.Set(at(10, 22, 0).Add(1900 * time.Millisecond))
	mustBlock(t, "second segment after 1.9 s", done)
	clk.Set(at(10, 22, 0).Add(2 * time.Second)) // 2 MiB at 1 MiB/s
	mustReturn(t, "second segment after 2 s", done)

	// 4 MiB sent a second before the 4 MiB/s window opens: 3 MiB still
	// owed then, which take 0.75 s at the new cap.
	clk.Set(at(10, 22, 59).Add(59 * time.Second))
	mustReturn(t, "4 MiB", startWait(t, clk, p, 4*mib))
	clk.Set(at(10, 23, 0))
	done = startWait(t, clk, p, mib)
	clk.Set(at(10, 23, 0).Add(700 * time.Millisecond))
	mustBlock(t, "after the cap rose, 0.7 s", done)
	clk.Set(at(10, 23, 0).Add(750 * time.Millisecond))
	mustReturn(t, "after the cap rose, 0.75 s", done)

	// Inside a window without a cap nothing waits.
	clk.Set(at(11, 2, 30))
	for i := range 3 {
		if ok := <-startWait(t, clk, p, 64*mib); !ok {
			t.Fatalf("uncapped segment %d: wait returned false", i)
		}
	}

	// Owed time that runs past the end of the windows: the next segment
	// waits for the next window, then goes at once.
	clk.Set(at(11, 3, 59).Add(59 * time.Second))
	mustReturn(t, "last segment of the night", startWait(t, clk, p, 16*mib))
	done = startWait(t, clk, p, mib)
	clk.Set(at(11, 4, 0))
	mustBlock(t, "windows closed", done)
	clk.Set(at(11, 22, 0))
	mustReturn(t, "next night", done)
}

// linkStore is a target that paces its own bytes: it records the caps it
// is given.
type linkStore struct {
	store.Store
	caps chan int64
}

func (l *linkStore) SetWindowLimit(bps int64) { l.caps <- bps }

// A link is given the window's cap before each segment and never held by
// the shipper itself.
func TestPacerLink(t *testing.T) {
	night := Window{Start: mustCron(t, "0 22 * * *"), Duration: 6 * time.Hour, BandwidthLimit: 1 * mib}
	free := Window{Start: mustCron(t, "0 2 * * *"), Duration: time.Hour}
	clk := ferrytest.NewClock(at(10, 22, 0))
	link := &linkStore{Store: newDirStore(t), caps: make(chan int64, 10)}
	p := pacerAt(clk, link, night, free)
	for range 2 {
		mustReturn(t, "16 MiB to a link", startWait(t, clk, p, 16*mib))
		if got := <-link.caps; got != mib {
			t.Fatalf("cap given to the link %d, want %d", got, mib)
		}
	}
	clk.Set(at(11, 2, 30))
	mustReturn(t, "uncapped", startWait(t, clk, p, 16*mib))
	if got := <-link.caps; got != 0 {
		t.Fatalf("cap given to the link in an uncapped window %d, want 0", got)
	}
}

// randomRecord is n incompressible bytes, so a segment is about n bytes.
func randomRecord(n int) batch.Record {
	b := make([]byte, n)
	rand.Read(b)
	return batch.Record{Data: b}
}

// sendTime appends rec and returns how long until target confirmed it.
func sendTime(t *testing.T, sh *running, rec batch.Record) time.Duration {
	t.Helper()
	seq, err := sh.Append(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the segment sent", func() bool { return sh.Targets()[0].SentSeq >= seq })
	return time.Since(start)
}

// Real bytes over a real link: 1 MiB in a window capped at 1 MiB/s takes
// about a second (the limiter lets one 64 KiB chunk go at once); in an
// uncapped window, far less.
func TestWindowCapOnLink(t *testing.T) {
	inbox := newDirStore(t)
	srv := &tcp.Server{Token: "t0ken", Insecure: true, Inbox: inbox, Log: quiet}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(served) }()
	t.Cleanup(func() { cancel(); <-served })
	cl, err := tcp.NewClient(tcp.ClientConfig{Addr: ln.Addr().String(), Stream: "app", Token: "t0ken", Insecure: true}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })

	clk := ferrytest.NewClock(at(10, 22, 0))
	cfg := shipperConfig(t, Target{Name: "dr", Store: cl})
	cfg.Spool.Policy = batch.FlushPolicy{MaxRecords: 1}
	cfg.Clock = clk
	cfg.Schedules.Windows = []Window{
		{Start: mustCron(t, "0 22 * * *"), Duration: 6 * time.Hour, BandwidthLimit: mib},
		{Start: mustCron(t, "0 12 * * *"), Duration: time.Hour},
	}
	sh := startShipper(t, cfg)

	const size = mib
	minCapped := time.Duration(float64(size-64<<10) / mib * float64(time.Second)) // 0.94 s
	if took := sendTime(t, sh, randomRecord(size)); took < minCapped {
		t.Errorf("1 MiB in a window capped at 1 MiB/s took %v, want at least %v", took, minCapped)
	} else {
		t.Logf("1 MiB at 1 MiB/s: %v", took)
	}
	clk.Set(at(11, 12, 0))
	if took := sendTime(t, sh, randomRecord(size)); took >= minCapped/2 {
		t.Errorf("1 MiB in an uncapped window took %v, want well under %v", took, minCapped)
	} else {
		t.Logf("1 MiB uncapped: %v", took)
	}
}

// Real bytes into a store that takes whole segments: three 256 KiB
// segments in a window capped at 1 MiB/s take at least half a second
// (the first goes at once); the real clock drives the windows.
func TestWindowCapOnStore(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "archive", Store: st})
	cfg.Spool.Policy = batch.FlushPolicy{MaxRecords: 1}
	cfg.Schedules.Windows = []Window{{Start: mustCron(t, "* * * * *"), Duration: time.Hour, BandwidthLimit: mib}} // always open
	sh := startShipper(t, cfg)
	start := time.Now()
	var seq uint64
	for range 3 {
		var err error
		if seq, err = sh.Append(context.Background(), randomRecord(256<<10)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three segments sent", func() bool { return sh.Targets()[0].SentSeq >= seq })
	if took := time.Since(start); took < 480*time.Millisecond {
		t.Errorf("3 × 256 KiB at 1 MiB/s took %v, want at least 0.5 s", took)
	}
}
