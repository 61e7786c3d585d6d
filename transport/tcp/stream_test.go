package tcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/store"
)

// streamingServer is insecureServer streaming every SEGMENT frame over
// 64 KiB into its inbox.
func streamingServer(t *testing.T) (*Server, store.Store, string) {
	t.Helper()
	srv, inbox, root := insecureServer(t)
	srv.StreamAbove = 64 << 10
	return srv, inbox, root
}

// wantNoTemp waits until the inbox's stream directory holds no temp file
// (a staged segment) besides the dir store's lock file: the server
// removes what it staged once it has answered or the link is gone.
func wantNoTemp(t *testing.T, root string) {
	t.Helper()
	ferrytest.Eventually(t, 5*time.Second, "no staged segment left in the inbox", func() (bool, string) {
		ents, _ := os.ReadDir(filepath.Join(root, "app"))
		var temps []string
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".tmp") && !isLockFile(e.Name()) {
				temps = append(temps, e.Name())
			}
		}
		return len(temps) == 0, strings.Join(temps, " ")
	})
}

// A segment over StreamAbove is streamed into the inbox: stored byte for
// byte and acknowledged like one read whole, offered to the receiver
// without its bytes (it never was in memory), and resent or replaced
// with other content under its name with the answers of a segment read
// whole, also once the server remembers it no more and compares with the
// inbox.
func TestStreamedSegment(t *testing.T) {
	srv, inbox, root := streamingServer(t)
	srv.RecentSegments = 1
	type offer struct {
		name    string
		size    int64
		inMem   bool
		payload bool
	}
	var mu sync.Mutex
	var offers []offer
	srv.Stored = func(_ string, seg *batch.Segment, size int64, data []byte) {
		mu.Lock()
		offers = append(offers, offer{seg.Meta.Name(), size, data != nil, seg.Payload != nil})
		mu.Unlock()
	}
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	ctx := context.Background()
	big := makeBigSegment(t, "app", 1, 1, 300<<10)
	small := makeSegment(t, "app", 1, big.meta.LastSeq+1, 10, "x")
	big2 := makeBigSegment(t, "app", 1, small.meta.LastSeq+1, 200<<10)
	for _, s := range []testSegment{big, small, big2} {
		if err := c.Put(ctx, "app/"+s.name, s.data); err != nil {
			t.Fatalf("Put %s (%d bytes): %v", s.name, len(s.data), err)
		}
	}
	wantInbox(t, inbox, big.name, small.name, big2.name)
	for _, s := range []testSegment{big, small, big2} {
		if !bytes.Equal(mustGet(t, inbox, "app/"+s.name), s.data) {
			t.Errorf("inbox copy of %s differs from what was sent", s.name)
		}
	}
	want := []offer{
		{big.name, int64(len(big.data)), false, false},
		{small.name, int64(len(small.data)), true, true},
		{big2.name, int64(len(big2.data)), false, false},
	}
	if !slices.Equal(offers, want) {
		t.Errorf("offered %+v, want %+v", offers, want)
	}
	// The server remembers only the newest: the first one is compared
	// with the inbox. The same bytes are a resend, acknowledged; others
	// under its name a conflict, and the stored copy stays.
	if err := c.Put(ctx, "app/"+big.name, big.data); err != nil {
		t.Errorf("resend of %s: %v", big.name, err)
	}
	other := makeBigSegment(t, "app", 1, 1, 300<<10)
	if other.name != big.name || bytes.Equal(other.data, big.data) {
		t.Fatal("the other segment should have the name and not the bytes")
	}
	if err := c.Put(ctx, "app/"+other.name, other.data); !errors.Is(err, store.ErrConflict) {
		t.Errorf("other content under %s: %v, want a conflict", big.name, err)
	}
	if !bytes.Equal(mustGet(t, inbox, "app/"+big.name), big.data) {
		t.Error("a refused segment changed the stored copy")
	}
	wantNoTemp(t, root)
}

// A link cut in the middle of a streamed SEGMENT: the Put fails
// retryably, nothing is stored under the name and what was staged is
// removed; the retry stores one intact copy.
func TestStreamedCutMidSegment(t *testing.T) {
	srv, inbox, root := streamingServer(t)
	addr, _ := startServer(t, srv)
	p := startProxy(t, addr)
	p.setCut(func(conn int, up bool, n int, total int64) bool {
		return conn == 1 && up && total > 200<<10
	})
	c := newClient(t, ClientConfig{Addr: p.addr(), Stream: "app", Token: testToken, Insecure: true, ReconnectMin: time.Millisecond}, nil)
	s := makeBigSegment(t, "app", 1, 1, 600<<10)
	ctx := context.Background()
	err := c.Put(ctx, "app/"+s.name, s.data)
	if err == nil || !store.IsRetryable(err) {
		t.Fatalf("Put over a cut link: %v, want a retryable error", err)
	}
	wantInbox(t, inbox)
	wantNoTemp(t, root)
	err = store.Retry(ctx, store.RetryPolicy{Min: time.Millisecond}, nil, "put", func(ctx context.Context) error {
		return c.Put(ctx, "app/"+s.name, s.data)
	})
	if err != nil {
		t.Fatalf("retried Put: %v", err)
	}
	checkOneCopy(t, inbox, root, s)
}

// segmentFrame is a SEGMENT frame carrying data under name, its checksum
// computed over what it carries, then spoiled if badSum.
func segmentFrame(name string, data []byte, badSum bool) []byte {
	payload := append(segmentHeader(name), data...)
	f := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	f = append(f, frameSegment)
	f = append(f, payload...)
	sum := crc32.Update(crc32.Update(0, castagnoli, []byte{frameSegment}), castagnoli, payload)
	if badSum {
		sum ^= 1
	}
	return binary.BigEndian.AppendUint32(f, sum)
}

// sendRaw sends frames on a fresh link to addr after the handshake, each
// after the answer to the one before, and returns the answers, fewer if
// the link ended.
func sendRaw(t *testing.T, addr string, frames ...[]byte) []frame {
	t.Helper()
	l := rawDial(t, addr)
	if f := rawHello(t, l, helloMsg{Version: 1, Stream: "app", Generation: 1, Token: testToken}); f.typ != frameWelcome {
		t.Fatalf("answer to HELLO: %s %q", typeName(f.typ), f.payload)
	}
	var got []frame
	for _, fr := range frames {
		if _, err := l.conn.Write(fr); err != nil {
			t.Fatal(err)
		}
		f, err := l.read()
		if err != nil {
			return got
		}
		got = append(got, f)
	}
	return got
}

// errorOf decodes an ERROR frame (the zero errorMsg for another frame).
func errorOf(f frame) errorMsg {
	var m errorMsg
	if f.typ == frameError {
		decodeJSON(f, &m)
	}
	return m
}

// A streamed segment with a damaged byte is refused as one read whole is,
// with the same ERROR, and the link goes on; a frame whose checksum is
// wrong ends the link with a protocol ERROR; a frame claiming more than
// MaxSegment is refused on its header, before any of it is read. None of
// them leaves anything in the inbox.
func TestStreamedSegmentRefused(t *testing.T) {
	s := makeBigSegment(t, "app", 1, 1, 300<<10)
	bad := slices.Clone(s.data)
	bad[len(bad)-1000] ^= 0x10
	good := makeBigSegment(t, "app", 1, 1, 200<<10)

	// The answers of a server that reads the frame whole.
	whole, _, _ := insecureServer(t)
	whole.StreamAbove = -1
	wholeAddr, _ := startServer(t, whole)
	wantCorrupt := sendRaw(t, wholeAddr, segmentFrame(s.name, bad, false))

	srv, inbox, root := streamingServer(t)
	srv.MaxSegment = 1 << 20
	addr, _ := startServer(t, srv)
	got := sendRaw(t, addr, segmentFrame(s.name, bad, false), segmentFrame(good.name, good.data, false))
	if len(got) != 2 || len(wantCorrupt) != 1 {
		t.Fatalf("answered %d frames to a damaged segment and a good one (read whole: %d), want 2 (1)", len(got), len(wantCorrupt))
	}
	m, w := errorOf(got[0]), errorOf(wantCorrupt[0])
	if m.Code != codeCorrupt || m != w {
		t.Errorf("damaged segment streamed: %+v; read whole: %+v; want the same corrupt ERROR", m, w)
	}
	if got[1].typ != frameAck {
		t.Errorf("the good segment after it: %s %q, want ACK", typeName(got[1].typ), got[1].payload)
	}
	wantInbox(t, inbox, good.name)

	// A bad checksum: the link ends, nothing stored.
	other := makeBigSegment(t, "app", 1, good.meta.LastSeq+1, 300<<10)
	got = sendRaw(t, addr, segmentFrame(other.name, other.data, true))
	if len(got) != 1 || errorOf(got[0]).Code != codeProtocol || !errorOf(got[0]).Close || !strings.Contains(errorOf(got[0]).Message, "checksum") {
		t.Errorf("frame with a bad checksum answered %v, want a closing protocol ERROR about the checksum", got)
	}
	// Over MaxSegment: refused on the header, nothing else sent.
	hdr := binary.BigEndian.AppendUint32(nil, 1<<20+1)
	got = sendRaw(t, addr, append(hdr, frameSegment))
	if len(got) != 1 || errorOf(got[0]).Code != codeProtocol || !strings.Contains(errorOf(got[0]).Message, "over the 1048576-byte limit") {
		t.Errorf("frame over MaxSegment answered %v, want a protocol ERROR naming the limit", got)
	}
	wantInbox(t, inbox, good.name)
	wantNoTemp(t, root)
}

// A streamed segment is held in no buffer of its size: the server
// allocates a small part of it, where reading the frame whole allocates
// the segment and more.
func TestStreamedSegmentMemory(t *testing.T) {
	s := makeBigSegment(t, "app", 1, 2, 8<<20)
	for _, streamAbove := range []int64{-1, 64 << 10} {
		srv, inbox, _ := insecureServer(t)
		srv.StreamAbove = streamAbove
		addr, _ := startServer(t, srv)
		c := insecureClient(t, addr)
		ctx := context.Background()
		warm := makeSegment(t, "app", 1, 1, 1, "warm") // the link is up before the measure
		if err := c.Put(ctx, "app/"+warm.name, warm.data); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if err := c.Put(ctx, "app/"+s.name, s.data); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		wantInbox(t, inbox, "00000001-0000000000000001-0000000000000001.seg.zst", s.name)
		alloc := int64(after.TotalAlloc - before.TotalAlloc)
		t.Logf("StreamAbove %d: %.1f MiB allocated for a %.1f MiB segment", streamAbove, float64(alloc)/(1<<20), float64(len(s.data))/(1<<20))
		if streamAbove > 0 && alloc > int64(len(s.data))/4 {
			t.Errorf("streamed: %.1f MiB allocated for a %.1f MiB segment, want under a quarter of it", float64(alloc)/(1<<20), float64(len(s.data))/(1<<20))
		}
		if streamAbove < 0 && alloc < int64(len(s.data)) {
			t.Errorf("read whole: %.1f MiB allocated for a %.1f MiB segment; the measure misses the buffer", float64(alloc)/(1<<20), float64(len(s.data))/(1<<20))
		}
	}
}
