package tcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// testRecord is the record of generation gen of stream, forked at seq
// fork on site.
func testRecord(stream string, gen uint32, fork uint64, site string) batch.Generation {
	r := batch.Generation{Stream: stream, Generation: gen, Parent: gen - 1, ForkSeq: fork,
		Time: time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC), Site: site, Host: "host-" + site, Reason: "promote"}
	if fork > 0 {
		r.ForkHash = strings.Repeat("ab", 32)
	}
	return r
}

// createRecord stores rec as a promotion on the receiving host would.
func createRecord(t *testing.T, st store.Store, rec batch.Generation) {
	t.Helper()
	if err := catalog.CreateGeneration(context.Background(), st, rec); err != nil {
		t.Fatal(err)
	}
}

// historyClient is a client of stream "app" shipping generation gen with
// the records recs, as the shipper identified by id.
func historyClient(t *testing.T, addr string, gen uint32, id string, recs ...batch.Generation) *Client {
	return newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true,
		Generation: gen, History: recs, ClientID: id, Host: "host-" + id, ReconnectMin: time.Millisecond}, nil)
}

// A shipper promoted elsewhere carries the record of its generation; the
// receiver stores it in its inbox, the bytes MarshalGeneration makes. The
// same record again is fine; a different one of that generation is
// refused for good, naming both sites, and the stored one is kept.
func TestHistoryCarriedAndStored(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	rec := testRecord("app", 2, 3, "dr-b")
	c := historyClient(t, addr, 2, "b", rec)
	if err := put(t, c, makeSegment(t, "app", 2, 4, 2, "x")); err != nil {
		t.Fatal(err)
	}
	want, _ := batch.MarshalGeneration(rec)
	key := batch.GenerationKey("app", 2)
	if got := mustGet(t, inbox, key); !bytes.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", key, got, want)
	}
	c.Close()

	// The same shipper again, with the same record: accepted.
	again := historyClient(t, addr, 2, "b", rec)
	if err := put(t, again, makeSegment(t, "app", 2, 6, 1, "x")); err != nil {
		t.Fatalf("identical record again: %v", err)
	}
	again.Close()

	// Another promotion of generation 2, on dr-c.
	other := testRecord("app", 2, 5, "dr-c")
	c3 := historyClient(t, addr, 2, "b", other)
	err := put(t, c3, makeSegment(t, "app", 2, 7, 1, "x"))
	if !errors.Is(err, store.ErrPermanent) || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "code history") {
		t.Fatalf("conflicting record: %v; want a permanent refusal, code history", err)
	}
	for _, s := range []string{"conflicting histories", "dr-b", "dr-c", "seq 3", "seq 5"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("conflicting record: %q does not mention %q", err, s)
		}
	}
	if got := mustGet(t, inbox, key); !bytes.Equal(got, want) {
		t.Fatalf("%s was changed to %q", key, got)
	}
}

// With Records set, the history is read from and stored there, not in
// the inbox.
func TestRecordsStore(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	records, _ := newInbox(t)
	srv.Records = records
	createRecord(t, records, testRecord("app", 2, 3, "dr-b"))
	addr, _ := startServer(t, srv)
	if err := put(t, historyClient(t, addr, 1, "a"), makeSegment(t, "app", 1, 4, 1, "x")); !errors.Is(err, batch.ErrFenced) {
		t.Fatalf("generation 1 with record 2 in Records: %v; want ErrFenced", err)
	}
	c := historyClient(t, addr, 3, "c", testRecord("app", 2, 3, "dr-b"), testRecord("app", 3, 3, "dr-c"))
	if err := put(t, c, makeSegment(t, "app", 3, 4, 1, "x")); err != nil {
		t.Fatal(err)
	}
	mustGet(t, records, batch.GenerationKey("app", 3))
	if names := inboxObjects(t, inbox, "app/generations"); len(names) != 0 {
		t.Fatalf("records stored in the inbox: %v", names)
	}
}

// Records that would leave the receiver's history with a gap (generation
// 3 without 2) are refused, and none is stored: the receiver could not
// read its history any more.
func TestHistoryWithAGapRefused(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	c := historyClient(t, addr, 3, "c", testRecord("app", 3, 7, "dr-c"))
	err := put(t, c, makeSegment(t, "app", 3, 8, 1, "x"))
	if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "code history") || !strings.Contains(err.Error(), "generation 2 is missing") {
		t.Fatalf("record 3 without 2: %v", err)
	}
	if names := inboxObjects(t, inbox, "app/generations"); len(names) != 0 {
		t.Fatalf("records stored: %v", names)
	}
}

// A shipper of a generation older than the receiver's newest (a promotion
// ran on the receiving side) is refused at the handshake with code fenced;
// its error wraps batch.ErrFenced and store.ErrPermanent and carries the
// receiver's message.
func TestOldGenerationFencedAtHandshake(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	createRecord(t, inbox, testRecord("app", 2, 5, "dr-b"))
	addr, _ := startServer(t, srv)
	c := historyClient(t, addr, 1, "a")
	err := put(t, c, makeSegment(t, "app", 1, 6, 1, "x"))
	want := "fenced: generation 2 was promoted at seq 5 on dr-b at 2026-03-01T03:00:00Z; run ferry rejoin"
	if !errors.Is(err, batch.ErrFenced) || !errors.Is(err, store.ErrPermanent) || store.IsRetryable(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Put of a fenced generation: %v; want ErrFenced, ErrPermanent and %q", err, want)
	}
	wantInbox(t, inbox)
}

// A generation the receiver's history does not hold, its record not sent,
// is refused for good.
func TestUnknownGenerationRefused(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	c := historyClient(t, addr, 2, "b")
	err := put(t, c, makeSegment(t, "app", 2, 1, 1, "x"))
	want := "unknown generation 2: the shipper did not send its generation record"
	if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "code generation") || !strings.Contains(err.Error(), want) {
		t.Fatalf("Put of an unknown generation: %v; want %q", err, want)
	}
	wantInbox(t, inbox)
}

// A shipper of a newer generation takes the stream over from the writer of
// the old one, whose link is closed; the old writer is then refused as
// fenced.
func TestNewerGenerationFencesTheWriter(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	old := historyClient(t, addr, 1, "a")
	s1 := makeSegment(t, "app", 1, 1, 3, "a")
	if err := put(t, old, s1); err != nil {
		t.Fatal(err)
	}
	promoted := historyClient(t, addr, 2, "b", testRecord("app", 2, 3, "dr-b"))
	s2 := makeSegment(t, "app", 2, 4, 2, "b")
	if err := put(t, promoted, s2); err != nil {
		t.Fatalf("Put of the newer generation while the old writer is connected: %v", err)
	}
	err := put(t, old, makeSegment(t, "app", 1, 4, 1, "a"))
	for range 10 {
		if !store.IsRetryable(err) {
			break
		}
		// The link was closed under it; the redial is refused.
		err = put(t, old, makeSegment(t, "app", 1, 4, 1, "a"))
	}
	if !errors.Is(err, batch.ErrFenced) || !errors.Is(err, store.ErrPermanent) {
		t.Fatalf("old writer after the promotion: %v; want ErrFenced", err)
	}
	wantInbox(t, inbox, s1.name, s2.name)
}

// A link established before a newer generation was admitted is fenced at
// its next SEGMENT: ERROR fenced, link closed. (Here the newer shipper
// itself is refused after its record was stored, by a receiver pinned to
// generation 1, so the old link stays up until it sends.)
func TestFencedPerSegment(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	srv.Generation = 1
	addr, _ := startServer(t, srv)
	old := historyClient(t, addr, 1, "a")
	s1 := makeSegment(t, "app", 1, 1, 3, "a")
	if err := put(t, old, s1); err != nil {
		t.Fatal(err)
	}
	newer := historyClient(t, addr, 2, "b", testRecord("app", 2, 3, "dr-b"))
	if err := put(t, newer, makeSegment(t, "app", 2, 4, 1, "b")); err == nil || !strings.Contains(err.Error(), "accepts generation 1") {
		t.Fatalf("Put to a receiver pinned to generation 1: %v", err)
	}
	err := put(t, old, makeSegment(t, "app", 1, 4, 1, "a"))
	want := "fenced: generation 2 was promoted at seq 3 on dr-b"
	if !errors.Is(err, batch.ErrFenced) || !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), want) {
		t.Fatalf("SEGMENT on a fenced link: %v; want ErrFenced and %q", err, want)
	}
	if old.dials != 1 {
		t.Fatalf("%d dials; the fence should come on the established link", old.dials)
	}
	wantInbox(t, inbox, s1.name)
}

// A segment of generation G must start above G's fork seq.
func TestSegmentBelowForkRefused(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	c := historyClient(t, addr, 2, "b", testRecord("app", 2, 10, "dr-b"))
	err := put(t, c, makeSegment(t, "app", 2, 9, 3, "x"))
	if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "forked at seq 10") {
		t.Fatalf("segment starting below the fork: %v", err)
	}
	wantInbox(t, inbox)
}

// A receiver before protocol 1.1 cannot store the records; a client with
// records refuses it for good instead of shipping a generation it would
// not know.
func TestHistoryToOldReceiverRefused(t *testing.T) {
	addr := fakeReceiver(t, func(_ int, l *link) {
		welcome(l) // no minor
		readUntilEOF(l)
	})
	c := historyClient(t, addr, 2, "b", testRecord("app", 2, 3, "dr-b"))
	err := put(t, c, makeSegment(t, "app", 2, 4, 1, "x"))
	if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "upgrade the receiver") {
		t.Fatalf("records to an old receiver: %v", err)
	}
	// Without records it is fine.
	addr2 := fakeReceiver(t, func(_ int, l *link) {
		welcome(l)
		serveAcks(l, "")
	})
	plain := historyClient(t, addr2, 1, "a")
	if err := put(t, plain, makeSegment(t, "app", 1, 1, 1, "x")); err != nil {
		t.Fatalf("no records, old receiver: %v", err)
	}
}

// Hostile or broken HELLOs and records are refused before anything large
// is read or kept: too many records announced, a record frame over its
// cap, an oversized identity, a record of another stream, a malformed one,
// two different records of one generation.
func TestHistoryCaps(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	good := helloMsg{Version: 1, Minor: 1, Stream: "app", Generation: 2, Token: testToken}
	rec, _ := batch.MarshalGeneration(testRecord("app", 2, 3, "dr-b"))
	otherStream, _ := batch.MarshalGeneration(testRecord("other", 2, 3, "dr-b"))
	forged, _ := batch.MarshalGeneration(testRecord("app", 2, 3, "dr-c"))
	tests := []struct {
		name   string
		hello  func(h *helloMsg)
		frames func(l *link) // written after HELLO
		code   string
		msg    string
	}{
		{"too many records", func(h *helloMsg) { h.Generations = MaxHistoryRecords + 1 }, nil, codeHistory, "at most 1024"},
		{"negative count", func(h *helloMsg) { h.Generations = -1 }, nil, codeHistory, "announces -1"},
		{"long client id", func(h *helloMsg) { h.ClientID = strings.Repeat("x", 300) }, nil, codeProtocol, "client_id is 300 bytes"},
		{"long spool", func(h *helloMsg) { h.Spool = strings.Repeat("x", 2000) }, nil, codeProtocol, "spool is 2000 bytes"},
		{"record over 4 KiB", func(h *helloMsg) { h.Generations = 1 }, func(l *link) {
			// Only the header: the length alone is refused.
			hdr := append(binary.BigEndian.AppendUint32(nil, 1<<30), frameGeneration)
			l.conn.Write(hdr)
		}, codeProtocol, "over the 4096-byte limit"},
		{"segment instead of record", func(h *helloMsg) { h.Generations = 1 }, func(l *link) {
			s := makeSegment(t, "app", 2, 4, 1, "x")
			l.write(context.Background(), frameSegment, segmentHeader(s.name), s.data)
		}, codeProtocol, "is a SEGMENT"},
		{"record of another stream", func(h *helloMsg) { h.Generations = 1 }, func(l *link) {
			l.write(context.Background(), frameGeneration, otherStream, nil)
		}, codeHistory, `of stream "other"`},
		{"malformed record", func(h *helloMsg) { h.Generations = 1 }, func(l *link) {
			l.write(context.Background(), frameGeneration, []byte(`{"generation":2,"parent":7}`), nil)
		}, codeHistory, "damaged"},
		{"two different records of one generation", func(h *helloMsg) { h.Generations = 3 }, func(l *link) {
			l.write(context.Background(), frameGeneration, rec, nil)
			l.write(context.Background(), frameGeneration, rec, nil) // the same one twice is no harm
			l.write(context.Background(), frameGeneration, forged, nil)
		}, codeHistory, "two different records of generation 2"},
		{"fewer records than announced", func(h *helloMsg) { h.Generations = 2 }, func(l *link) {
			l.write(context.Background(), frameGeneration, rec, nil)
			l.write(context.Background(), frameHeartbeat, nil, nil)
		}, codeProtocol, "is a HEARTBEAT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := good
			tc.hello(&h)
			l := rawDial(t, addr)
			if err := l.writeJSON(context.Background(), frameHello, h); err != nil {
				t.Fatal(err)
			}
			if tc.frames != nil {
				tc.frames(l)
			}
			f, err := l.read()
			var r refuseMsg
			if err != nil || f.typ != frameRefuse || decodeJSON(f, &r) != nil {
				t.Fatalf("answer %s %q (%v), want REFUSE", typeName(f.typ), f.payload, err)
			}
			if r.Code != tc.code || !strings.Contains(r.Message, tc.msg) {
				t.Fatalf("REFUSE %+v, want code %s and a message with %q", r, tc.code, tc.msg)
			}
		})
	}
	if names := inboxObjects(t, inbox, "app/generations"); len(names) != 0 {
		t.Fatalf("records stored: %v", names)
	}

	// The client refuses to send what the receiver would refuse: records
	// and identities.
	cfg := ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, Generation: 2}
	big := testRecord("app", 2, 3, strings.Repeat("s", MaxGenerationRecord))
	for name, recs := range map[string][]batch.Generation{
		"too many":       make([]batch.Generation, MaxHistoryRecords+1),
		"too big":        {big},
		"other stream":   {testRecord("other", 2, 3, "b")},
		"invalid record": {{Stream: "app", Generation: 2, Parent: 7}},
	} {
		cfg.History = recs
		if _, err := NewClient(cfg, nil); err == nil {
			t.Errorf("NewClient with %s records: no error", name)
		}
	}
	cfg.History = nil
	for name, tc := range map[string]struct {
		set  func(c *ClientConfig)
		want string
	}{
		"long site":    {func(c *ClientConfig) { c.Site = strings.Repeat("s", 300) }, "site is 300 bytes"},
		"long spool":   {func(c *ClientConfig) { c.Spool = strings.Repeat("s", 2000) }, "spool is 2000 bytes"},
		"negative pid": {func(c *ClientConfig) { c.PID = -2 }, "pid -2 is negative"},
	} {
		c := cfg
		tc.set(&c)
		if _, err := NewClient(c, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewClient with a %s: %v; want an error with %q", name, err, tc.want)
		}
	}
}
