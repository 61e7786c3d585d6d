package source

import (
	"context"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/syncrec"
)

type recordingSink struct {
	recs    []string
	cursors []string
}

func (s *recordingSink) AppendBatch(_ context.Context, recs []batch.Record, cursor []byte) error {
	for _, r := range recs {
		s.recs = append(s.recs, string(r.Data))
	}
	s.cursors = append(s.cursors, string(cursor))
	return nil
}

// OwnRecords passes on the site's own lines, drops the marked ones (still
// moving the cursor, even when a batch is all peers' lines), skips blank
// lines and refuses a line that is not a JSON object, naming the log.
func TestOwnRecords(t *testing.T) {
	sink := &recordingSink{}
	o := &OwnRecords{Sink: sink, Path: "/var/log/app/events.ndjson"}
	marked := string(syncrec.Mark(nil, []byte(`{"id":"b1"}`), syncrec.Origin{Site: "b", Seq: 1}))
	batches := [][]string{
		{`{"id":"a1"}` + "\n", marked, "  \n", `{"id":"a2"}` + "\n"},
		{marked},
	}
	for i, lines := range batches {
		var recs []batch.Record
		for _, l := range lines {
			recs = append(recs, batch.Record{Data: []byte(l)})
		}
		if err := o.AppendBatch(context.Background(), recs, []byte{'0' + byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(sink.recs, ""); got != `{"id":"a1"}`+"\n"+`{"id":"a2"}`+"\n" {
		t.Errorf("shipped %q", got)
	}
	if got := strings.Join(sink.cursors, ","); got != "0,1" {
		t.Errorf("cursors %q, want 0,1 (the all-peers batch moves it too)", got)
	}
	if o.Dropped.Load() != 2 {
		t.Errorf("dropped %d, want 2", o.Dropped.Load())
	}
	err := o.AppendBatch(context.Background(), []batch.Record{{Data: []byte("plain text\n")}}, nil)
	if err == nil || !strings.Contains(err.Error(), "/var/log/app/events.ndjson") || !strings.Contains(err.Error(), "not a JSON object") {
		t.Errorf("a plain-text line: %v", err)
	}
}

// A line an applier's crash cut short, continued by the application's
// next line, ships that next line; continued by the applier's own
// rewrite, ships nothing.
func TestOwnRecordsTornLine(t *testing.T) {
	sink := &recordingSink{}
	o := &OwnRecords{Sink: sink, Path: "events.ndjson"}
	marked := string(syncrec.Mark(nil, []byte(`{"id":"b1","n":{"k":1}}`), syncrec.Origin{Site: "b", Seq: 3}))
	var recs []batch.Record
	for _, l := range []string{marked[:9] + `{"id":"a1"}` + "\n", marked[:30] + marked, marked[:len(marked)-1] + `{"id":"a2"}` + "\n"} {
		recs = append(recs, batch.Record{Data: []byte(l)})
	}
	if err := o.AppendBatch(context.Background(), recs, nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sink.recs, ""); got != `{"id":"a1"}`+"\n"+`{"id":"a2"}`+"\n" {
		t.Errorf("shipped %q", got)
	}
	if o.Torn.Load() != 3 || o.Dropped.Load() != 1 {
		t.Errorf("torn %d, dropped %d; want 3 and 1", o.Torn.Load(), o.Dropped.Load())
	}
}
