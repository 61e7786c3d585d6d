package source

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unsafe"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

func runReader(t *testing.T, format, input string, max int) (*fakeSink, error) {
	t.Helper()
	sink := &fakeSink{}
	src := &Reader{R: strings.NewReader(input), Name: "stdin", Format: format, MaxRecordSize: max}
	return sink, src.Run(context.Background(), sink)
}

func TestReaderSourceLines(t *testing.T) {
	cases := []struct {
		name, in string
		want     []string
	}{
		{"newlines kept", "a\nbb\n", []string{"a\n", "bb\n"}},
		{"last line without newline", "a\nlast", []string{"a\n", "last"}},
		{"CRLF kept", "a\r\nb\r\n", []string{"a\r\n", "b\r\n"}},
		{"empty lines are records", "\n\nx\n", []string{"\n", "\n", "x\n"}},
		{"binary", "\x00\xff\n", []string{"\x00\xff\n"}},
		{"empty input", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink, err := runReader(t, FormatLine, c.in, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := sink.datas(); !slices.Equal(got, c.want) {
				t.Fatalf("records %q, want %q", got, c.want)
			}
			for _, cur := range sink.cursors {
				if cur != nil {
					t.Fatalf("reader source passed cursor %q", cur)
				}
			}
		})
	}
}

func TestReaderSourceSmallReads(t *testing.T) {
	// Input arriving a byte at a time (a pipe) gives the same records.
	in := "one\ntwo\r\nthree"
	sink := &fakeSink{}
	src := &Reader{R: iotest.OneByteReader(strings.NewReader(in)), Name: "stdin", Format: FormatLine}
	if err := src.Run(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	if got, want := sink.datas(), []string{"one\n", "two\r\n", "three"}; !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
}

func TestReaderSourceManyLinesBatched(t *testing.T) {
	var in strings.Builder
	for i := range 20000 {
		in.WriteString(strings.Repeat("x", i%50))
		in.WriteByte('\n')
	}
	sink, err := runReader(t, FormatLine, in.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got := sink.records()
	if len(got) != 20000 {
		t.Fatalf("%d records, want 20000", len(got))
	}
	for i, r := range got {
		if want := strings.Repeat("x", i%50) + "\n"; string(r.Data) != want {
			t.Fatalf("record %d = %q, want %q", i, r.Data, want)
		}
	}
	for i, b := range sink.batches {
		if len(b) > sourceBatchRecords {
			t.Fatalf("batch %d holds %d records, limit %d", i, len(b), sourceBatchRecords)
		}
	}
	if len(sink.batches) >= 20000 {
		t.Fatalf("%d batches for 20000 buffered lines: no group commit", len(sink.batches))
	}
}

func TestReaderSourceNDJSON(t *testing.T) {
	in := `{"key":"user:1","op":"put","data":"hello","time":"2025-03-04T05:06:07.5Z"}
{"data_base64":"AP8K"}
{"key":"","op":"del"}` + "\r\n"
	sink, err := runReader(t, FormatNDJSON, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := sink.records()
	if len(got) != 3 {
		t.Fatalf("%d records, want 3", len(got))
	}
	want0 := time.Date(2025, 3, 4, 5, 6, 7, 500_000_000, time.UTC)
	if string(got[0].Key) != "user:1" || got[0].Op != "put" || string(got[0].Data) != "hello" || !got[0].Time.Equal(want0) {
		t.Errorf("record 1 = %+v", got[0])
	}
	if got[1].Key != nil || got[1].Op != "" || !bytes.Equal(got[1].Data, []byte{0, 0xff, '\n'}) || !got[1].Time.IsZero() {
		t.Errorf("record 2 = %+v", got[1])
	}
	if got[2].Key != nil || got[2].Op != "del" || len(got[2].Data) != 0 {
		t.Errorf("record 3 = %+v", got[2])
	}
}

func TestReaderSourceNDJSONErrors(t *testing.T) {
	good := `{"data":"a"}` + "\n" + `{"data":"b"}` + "\n"
	cases := []struct {
		name, bad string
		want      []string
	}{
		{"bad JSON", `{"data":`, []string{"stdin line 3", "invalid JSON"}},
		{"not an object", `[1]`, []string{"stdin line 3"}},
		{"both data fields", `{"data":"x","data_base64":"eA=="}`, []string{"stdin line 3", "not both"}},
		{"bad base64", `{"data_base64":"!!"}`, []string{"stdin line 3", "data_base64"}},
		{"empty line", ``, []string{"stdin line 3", "empty line"}},
		{"bad time", `{"time":"yesterday"}`, []string{"stdin line 3"}},
		{"time out of range", `{"time":"3000-01-01T00:00:00Z"}`, []string{"stdin line 3", "outside the range"}},
		{"op too long", `{"op":"` + strings.Repeat("o", 256) + `"}`, []string{"stdin line 3", "op is 256 bytes"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink, err := runReader(t, FormatNDJSON, good+c.bad+"\n"+`{"data":"after"}`+"\n", 0)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not mention %q", err, w)
				}
			}
			if got := sink.datas(); !slices.Equal(got, []string{"a", "b"}) {
				t.Fatalf("appended %q, want the two records before the bad line", got)
			}
		})
	}
}

func rawFrame(data string) string {
	return string(binary.BigEndian.AppendUint32(nil, uint32(len(data)))) + data
}

func TestReaderSourceRaw(t *testing.T) {
	in := rawFrame("one") + rawFrame("") + rawFrame("with\nnewline\x00")
	sink, err := runReader(t, FormatRaw, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sink.datas(), []string{"one", "", "with\nnewline\x00"}; !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
}

func TestReaderSourceRawErrors(t *testing.T) {
	good := rawFrame("a") + rawFrame("b")
	cases := []struct {
		name, tail string
		tooLarge   bool
		want       string
	}{
		{"truncated data", rawFrame("hello")[:6], false, "raw record 3: truncated"},
		{"truncated length", "\x00\x00", false, "raw record 3: truncated length prefix"},
		{"over max", string(binary.BigEndian.AppendUint32(nil, 1000)), true, "raw record 3: length 1000 is over max_record_size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink, err := runReader(t, FormatRaw, good+c.tail, 1000)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
			if errors.Is(err, batch.ErrTooLarge) != c.tooLarge {
				t.Fatalf("err %v: ErrTooLarge %v, want %v", err, !c.tooLarge, c.tooLarge)
			}
			if got := sink.datas(); !slices.Equal(got, []string{"a", "b"}) {
				t.Fatalf("appended %q, want the records before the bad one", got)
			}
		})
	}
}

func TestReaderSourceRawHugeLengthNotAllocated(t *testing.T) {
	// A length prefix of ~4 GiB must be refused from the header alone.
	in := string(binary.BigEndian.AppendUint32(nil, 0xffff_fff0)) + "short"
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := runReader(t, FormatRaw, in, 0)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, batch.ErrTooLarge) {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 64<<20 {
		t.Fatalf("allocated %d MiB for a refused record", d>>20)
	}
}

func TestReaderSourceOversizeLine(t *testing.T) {
	// max 64 framed bytes: a 41-byte line fits (23 bytes of framing).
	ok := strings.Repeat("o", 40) + "\n"
	for _, c := range []struct {
		name string
		line string
	}{
		{"over the read limit", strings.Repeat("x", 200) + "\n"},
		{"over the record limit only", strings.Repeat("x", 45) + "\n"},
		{"longer than the read buffer", strings.Repeat("x", 3<<20) + "\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink, err := runReader(t, FormatLine, "a\n"+ok+c.line+"z\n", 64)
			if !errors.Is(err, batch.ErrTooLarge) || !strings.Contains(err.Error(), "stdin line 3") {
				t.Fatalf("err %v, want ErrTooLarge naming stdin line 3", err)
			}
			if got := sink.datas(); !slices.Equal(got, []string{"a\n", ok}) {
				t.Fatalf("appended %q, want the two lines before it", got)
			}
		})
	}
}

func TestReaderSourceSinkError(t *testing.T) {
	boom := errors.New("spool failed")
	sink := &fakeSink{failAt: 0, failErr: boom}
	src := &Reader{R: strings.NewReader("a\nb\n"), Name: "stdin", Format: FormatLine}
	if err := src.Run(context.Background(), sink); !errors.Is(err, boom) {
		t.Fatalf("err %v, want the sink's", err)
	}
}

func TestReaderSourceCancelled(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	sink := &fakeSink{}
	done := make(chan error, 1)
	go func() {
		done <- (&Reader{R: pr, Name: "stdin", Format: FormatLine}).Run(ctx, sink)
	}()
	if _, err := pw.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first line", func() bool { return len(sink.records()) == 1 })
	cancel()
	// The source notices ctx between records; one more line lets it look.
	pw.Write([]byte("b\n"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
}

func TestReaderSourceIntoSpool(t *testing.T) {
	// End to end with the real sink: the spool copies the source's reused
	// buffers, so every record survives intact.
	cfg, st := shipperConfig(t)
	sh := startShipper(t, cfg)
	var in strings.Builder
	for i := range 100 {
		in.WriteString(batchtest.Lines("l", i+1, i+1)[0])
	}
	src := &Reader{R: iotest.HalfReader(strings.NewReader(in.String())), Name: "stdin", Format: FormatLine}
	if err := src.Run(context.Background(), sh); err != nil {
		t.Fatal(err)
	}
	drain(t, sh)
	all := batchtest.CheckChain(t, batchtest.ReadStore(t, st, "app"), 0, batch.ZeroHash)
	if got := batchtest.Datas(all); !slices.Equal(got, batchtest.Lines("l", 1, 100)) {
		t.Fatalf("store holds %q", got)
	}
}

// readTracker is an io.Reader that remembers the buffers it read into.
type readTracker struct {
	r    io.Reader
	bufs [][]byte
}

func (t *readTracker) Read(p []byte) (int, error) {
	t.bufs = append(t.bufs, p)
	return t.r.Read(p)
}

// within says whether b's last byte is in memory read into (a line
// longer than the reader's buffer starts in bytes moved to a larger one).
func (t *readTracker) within(b []byte) bool {
	last := uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(len(b)) - 1
	for _, buf := range t.bufs {
		s := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
		if last >= s && last < s+uintptr(len(buf)) {
			return true
		}
	}
	return false
}

// TestReaderSourceLinesNotCopied: line records are the bytes where they
// were read, not copies (copying each line into an arena was a third of
// the parsing stage), and what a batch holds is intact when the sink gets
// it, across buffer refills and a line longer than the buffer.
func TestReaderSourceLinesNotCopied(t *testing.T) {
	var in strings.Builder
	for i := 0; in.Len() < 3<<20; i++ {
		fmt.Fprintf(&in, "line %d %s\n", i, strings.Repeat("x", i%300))
	}
	in.WriteString(strings.Repeat("L", 1500<<10) + "\n") // over the 1 MiB buffer
	in.WriteString("last without newline")
	tr := &readTracker{r: iotest.HalfReader(strings.NewReader(in.String()))}
	var got []string
	batches := 0
	sink := &funcSink{fn: func(recs []batch.Record) {
		batches++
		for i := range recs {
			got = append(got, string(recs[i].Data))
			if !tr.within(recs[i].Data) {
				t.Fatalf("record %d (%.20q...) is a copy, not the bytes read", len(got), recs[i].Data)
			}
		}
	}}
	src := &Reader{R: tr, Name: "stdin", Format: FormatLine, MaxRecordSize: 4 << 20}
	if err := src.Run(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	if want := strings.SplitAfter(in.String(), "\n"); !slices.Equal(got, want) {
		t.Fatalf("got %d records, want the %d lines of the input, the same", len(got), len(want))
	}
	if batches < 3 {
		t.Fatalf("%d batches", batches)
	}
}

// funcSink hands each batch to fn.
type funcSink struct{ fn func([]batch.Record) }

func (s *funcSink) AppendBatch(_ context.Context, recs []batch.Record, _ []byte) error {
	s.fn(recs)
	return nil
}
