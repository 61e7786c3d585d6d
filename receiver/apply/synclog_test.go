package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/syncrec"
)

func eventData(seq uint64) []byte { return fmt.Appendf(nil, `{"id":"b-%d"}`+"\n", seq) }

// syncSeg is records first..last of peer b's stream, decoded.
func syncSeg(t *testing.T, first, last uint64, data func(uint64) []byte) (*batch.Meta, batch.Records) {
	t.Helper()
	s := receivertest.SealWith(t, "events@b", 1, first, last, batch.ZeroHash, data)
	seg, recs, err := batch.Decode(s.Data, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return &seg.Meta, recs
}

// origins lists the log's lines: "b:SEQ" for a marked line, the line
// itself for another.
func origins(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l == "" {
			continue
		}
		o, ok, err := syncrec.Parse([]byte(l))
		switch {
		case err != nil:
			t.Fatalf("line %q: %v", l, err)
		case ok:
			var obj map[string]any
			if err := json.Unmarshal([]byte(l), &obj); err != nil || obj["id"] != fmt.Sprintf("b-%d", o.Seq) {
				t.Fatalf("marked line %q: %v %v", l, obj, err)
			}
			out = append(out, fmt.Sprintf("%s:%d", o.Site, o.Seq))
		default:
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// A crash after an Apply and before its checkpoint: restored from the
// older state, the applier finds the peer's records already in the log
// (between the application's own lines) and does not append them twice;
// a new state finds every record of the peer in the log.
func TestSyncLogAppliesOnceAcrossRestore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.ndjson")
	appLine := func(s string) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s + "\n")
		f.Close()
	}
	appLine(`{"id":"a-1"}`)
	a := &SyncLog{Path: path, Peer: "b"}
	if err := a.Restore(nil); err != nil {
		t.Fatal(err)
	}
	m, recs := syncSeg(t, 1, 3, eventData)
	if err := a.Apply(ctx, m, recs); err != nil {
		t.Fatal(err)
	}
	st1, _ := a.State()
	appLine(`{"id":"a-2"}`)
	m2, recs2 := syncSeg(t, 4, 6, eventData)
	if err := a.Apply(ctx, m2, recs2); err != nil {
		t.Fatal(err)
	}
	appLine(`{"id":"a-3"}`)
	want := `{"id":"a-1"} b:1 b:2 b:3 {"id":"a-2"} b:4 b:5 b:6 {"id":"a-3"}`
	if got := strings.Join(origins(t, path), " "); got != want {
		t.Fatalf("log %s, want %s", got, want)
	}

	// Crashed before checkpointing seqs 4-6: the receiver applies them again.
	for _, state := range []json.RawMessage{st1, nil} {
		r := &SyncLog{Path: path, Peer: "b"}
		if err := r.Restore(state); err != nil {
			t.Fatal(err)
		}
		if state == nil {
			if err := r.Apply(ctx, m, recs); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Apply(ctx, m2, recs2); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(origins(t, path), " "); got != want {
			t.Fatalf("after Restore(%s) and the same segments again: log %s, want %s", state, got, want)
		}
		m3, recs3 := syncSeg(t, 7, 7, eventData)
		if state == nil {
			m3, recs3 = syncSeg(t, 8, 8, eventData)
		}
		if err := r.Apply(ctx, m3, recs3); err != nil {
			t.Fatal(err)
		}
		want += fmt.Sprintf(" b:%d", m3.FirstSeq)
		if got := strings.Join(origins(t, path), " "); got != want {
			t.Fatalf("then a new record: log %s, want %s", got, want)
		}
	}
}

// A record that already carries an origin (a site shipped what it did not
// write) or is not a JSON object is refused, fatally, naming the peer and
// the record.
func TestSyncLogRefusesForeignAndNonObjectRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.ndjson")
	for _, c := range []struct {
		data func(uint64) []byte
		want string
	}{
		{func(seq uint64) []byte { return syncrec.Mark(nil, eventData(seq), syncrec.Origin{Site: "c", Seq: 9}) }, "already carries an origin (c 9)"},
		{func(uint64) []byte { return []byte("plain text\n") }, "not a JSON object"},
	} {
		a := &SyncLog{Path: path, Peer: "b"}
		if err := a.Restore(nil); err != nil {
			t.Fatal(err)
		}
		m, recs := syncSeg(t, 1, 1, c.data)
		err := a.Apply(context.Background(), m, recs)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "peer b") || !errors.Is(err, receiver.ErrFatal) {
			t.Errorf("Apply: %v, want a fatal error with %q naming peer b", err, c.want)
		}
	}
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Errorf("the log holds %q after refused records", b)
	}
}

// An Apply killed in the middle of a line (a write a SIGKILL cut at a page
// boundary), after which the application appended a line of its own: at
// every cut, Restore counts only the whole lines of the peer, so the cut
// record is applied again, and the application's line stays readable
// after the cut part.
func TestSyncLogRestoreAfterCutLine(t *testing.T) {
	ctx := context.Background()
	m, recs := syncSeg(t, 1, 3, eventData)
	cut := syncrec.Mark(nil, eventData(3), syncrec.Origin{Site: "b", Seq: 3})
	for at := 1; at < len(cut); at++ {
		path := filepath.Join(t.TempDir(), "events.ndjson")
		var log []byte
		log = append(log, `{"id":"a-1"}`+"\n"...)
		for seq := uint64(1); seq <= 2; seq++ {
			log = syncrec.Mark(log, eventData(seq), syncrec.Origin{Site: "b", Seq: seq})
		}
		log = append(log, cut[:at]...)
		log = append(log, `{"id":"a-2"}`+"\n"...)
		if err := os.WriteFile(path, log, 0o644); err != nil {
			t.Fatal(err)
		}
		a := &SyncLog{Path: path, Peer: "b"}
		if err := a.Restore(nil); err != nil {
			t.Fatal(err)
		}
		if err := a.Apply(ctx, m, recs); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		want := string(log) + string(cut)
		if string(b) != want {
			t.Fatalf("cut after %d bytes: log\n%s\nwant\n%s", at, b, want)
		}
	}
}
