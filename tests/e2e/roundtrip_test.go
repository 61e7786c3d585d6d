package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// A million lines through stdin, back out through a file replica, intact;
// verify and ls agree with what is in the store.
//
// It is not parallel: it runs alone, before the parallel tests, so its
// run time measures ferry rather than the other tests.
func TestShipReceiveMillionLines(t *testing.T) {
	const n = 1_000_000
	s := newStream(t, "big")
	input := logLines(1, 1, n)
	t.Logf("input: %d lines, %d bytes", n, len(input))

	start := time.Now()
	s.ship(input, "--max-bytes", "4MiB")
	t.Logf("ship: %s", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	s.receiveOnce()
	t.Logf("receive: %s", time.Since(start).Round(time.Millisecond))
	s.wantReplica(input, "after receive --once")

	start = time.Now()
	if r := s.verify(); r.Code != 0 {
		t.Fatalf("verify of an intact stream: want exit 0:\n%s", r)
	} else if !strings.Contains(r.Stdout, fmt.Sprintf("%d records, seq 1..%d", n, n)) {
		t.Errorf("verify summary does not say %d records, seq 1..%d:\n%s", n, n, r)
	}
	t.Logf("verify: %s", time.Since(start).Round(time.Millisecond))

	files := s.segments()
	// 1M lines of ~90 bytes at 4 MiB per segment: well over 10 segments.
	if len(files) < 10 {
		t.Fatalf("store holds %d segments; --max-bytes 4MiB over %d bytes should give more than 10", len(files), len(input))
	}

	r := mustFerry(t, nil, "ls", "--store", s.store, "--stream", s.name)
	var listed []string
	for _, line := range strings.Split(r.Stdout, "\n") {
		// A segment row: GEN FIRST LAST RECORDS ... SEGMENT.
		f := strings.Fields(line)
		if len(f) < 5 || strings.Trim(f[0]+f[1]+f[2], "0123456789") != "" || !strings.HasSuffix(f[len(f)-1], ".seg.zst") {
			continue
		}
		listed = append(listed, f[len(f)-1])
	}
	if !slices.Equal(listed, files) {
		t.Errorf("ls lists %d segments %v\nstore dir holds %d %v", len(listed), listed, len(files), files)
	}
	if want := fmt.Sprintf("%d segments, %d records", len(files), n); !strings.Contains(r.Stdout, want) {
		t.Errorf("ls summary does not say %q:\n%s", want, r)
	}

	// The JSON listing tiles 1..n with no gap or overlap, and every segment
	// except the last holds at least max-bytes of records, measured as
	// max_bytes measures them (batch.Record.FramedSize: 23 bytes and the
	// line); format 2's record stream frames them in fewer.
	lineList := lines(input)
	infos := s.lsJSON()
	if len(infos) != len(files) {
		t.Fatalf("ls --json lists %d segments, store holds %d", len(infos), len(files))
	}
	next := uint64(1)
	for i, si := range infos {
		if si.Segment != files[i] || si.Stream != s.name || si.FirstSeq != next || si.Records != si.LastSeq-si.FirstSeq+1 {
			t.Fatalf("ls --json entry %d: %+v; want segment %s of stream %q starting at seq %d", i, si, files[i], s.name, next)
		}
		var framed int64
		for _, l := range lineList[si.FirstSeq-1 : si.LastSeq] {
			framed += int64(batch.RecordOverhead + len(l))
		}
		if i < len(infos)-1 && framed < 4<<20 {
			t.Errorf("segment %s sealed at %d framed bytes of records, under --max-bytes 4MiB", si.Segment, framed)
		}
		if si.UncompressedSize > framed {
			t.Errorf("segment %s: %d bytes of record stream for %d framed bytes of records", si.Segment, si.UncompressedSize, framed)
		}
		next = si.LastSeq + 1
	}
	if next != n+1 {
		t.Errorf("segments end at seq %d, want %d", next-1, n)
	}
}

// A stored segment is a zstd file the stock zstd tool decompresses; its
// content is the framed record stream.
func TestStockZstdDecompressesSegment(t *testing.T) {
	t.Parallel()
	zstd, err := exec.LookPath("zstd")
	if err != nil {
		t.Fatalf("the zstd binary is not installed (apt-get install zstd); this test checks segments are plain zstd files: %v", err)
	}
	s := newStream(t, "z")
	input := logLines(2, 1, 5000)
	s.ship(input, "--max-bytes", "64KiB")
	infos := s.lsJSON()
	if len(infos) < 2 {
		t.Fatalf("want several segments, have %d", len(infos))
	}
	want := lines(input)
	for _, si := range infos {
		cmd := exec.Command(zstd, "-dc", s.segmentPath(si.Segment))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		raw, err := cmd.Output()
		if err != nil {
			t.Fatalf("zstd -dc %s: %v\n%s", si.Segment, err, stderr.String())
		}
		if int64(len(raw)) != si.UncompressedSize {
			t.Fatalf("zstd -dc %s: %d bytes, metadata says %d", si.Segment, len(raw), si.UncompressedSize)
		}
		if si.Format != 2 {
			t.Fatalf("%s: segment format %d; ferry writes format 2", si.Segment, si.Format)
		}
		seq := si.FirstSeq
		for len(raw) > 0 {
			rec, n := parseFrame2(t, raw, seq)
			if rec.seq != seq {
				t.Fatalf("zstd -dc %s: record seq %d, want %d", si.Segment, rec.seq, seq)
			}
			if !bytes.Equal(rec.data, want[seq-1]) {
				t.Fatalf("zstd -dc %s: record %d data %q, want input line %q", si.Segment, seq, rec.data, want[seq-1])
			}
			raw = raw[n:]
			seq++
		}
		if seq != si.LastSeq+1 {
			t.Fatalf("zstd -dc %s: records end at %d, want %d", si.Segment, seq-1, si.LastSeq)
		}
	}
}

type frame struct {
	seq  uint64
	op   string
	key  []byte
	data []byte
}

// parseFrame2 decodes one record of a format-2 stream (docs/FORMAT.md),
// written here from the spec, not with batch's parser:
// uvarint head = body length << 3 | flags (1 time, 2 op, 4 key), then in
// the body [zigzag uvarint time delta] [u8 oplen, op] [uvarint keylen,
// key] data. The seq is implicit: the caller's count from first_seq.
func parseFrame2(t *testing.T, b []byte, seq uint64) (frame, int) {
	t.Helper()
	head, k := binary.Uvarint(b)
	if k <= 0 || head>>3 > uint64(len(b)-k) {
		t.Fatalf("record %d: head %d (%d bytes) does not fit %d remaining bytes", seq, head, k, len(b))
	}
	flags, body := head&7, b[k:k+int(head>>3)]
	f := frame{seq: seq}
	if flags&1 != 0 {
		_, n := binary.Uvarint(body)
		if n <= 0 {
			t.Fatalf("record %d: time delta is no varint", seq)
		}
		body = body[n:]
	}
	if flags&2 != 0 {
		oplen := int(body[0])
		f.op, body = string(body[1:1+oplen]), body[1+oplen:]
	}
	if flags&4 != 0 {
		keylen, n := binary.Uvarint(body)
		if n <= 0 || keylen > uint64(len(body)-n) {
			t.Fatalf("record %d: key length does not fit", seq)
		}
		f.key, body = body[n:n+int(keylen)], body[n+int(keylen):]
	}
	f.data = body
	return f, k + int(head>>3)
}

// ndjson records keep their key and op (ferry cat --json shows them) and
// their data, text or binary, reaches the file replica byte for byte.
func TestNDJSONRoundTrip(t *testing.T) {
	t.Parallel()
	s := newStream(t, "nd")
	type rec struct {
		key, op string
		data    []byte
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var recs []rec
	var input, replica bytes.Buffer
	ops := []string{"put", "del", "upsert"}
	for i := range 3000 {
		r := rec{key: fmt.Sprintf("user/%d", i%97), op: ops[i%3]}
		line := map[string]any{"key": r.key, "op": r.op}
		switch i % 5 {
		case 0: // binary: NULs, newlines, invalid UTF-8
			r.data = make([]byte, 1+rng.IntN(40))
			for j := range r.data {
				r.data[j] = byte(rng.UintN(256))
			}
			r.data[0] = 0xff
			line["data_base64"] = base64.StdEncoding.EncodeToString(r.data)
		case 1: // no data at all
		default:
			r.data = fmt.Appendf(nil, "value %d with \"quotes\", \\ and a newline\n", i)
			line["data"] = string(r.data)
		}
		js, _ := json.Marshal(line)
		input.Write(js)
		input.WriteByte('\n')
		replica.Write(r.data)
		recs = append(recs, r)
	}
	s.ship(input.Bytes(), "--format", "ndjson", "--max-bytes", "16KiB")
	if n := len(s.segments()); n < 2 {
		t.Fatalf("want several segments, have %d", n)
	}

	r := mustFerry(t, nil, "cat", "--json", "--store", s.store, "--stream", s.name)
	dec := json.NewDecoder(strings.NewReader(r.Stdout))
	i := 0
	for ; dec.More(); i++ {
		var j struct {
			Seq        uint64  `json:"seq"`
			Key        string  `json:"key"`
			Op         string  `json:"op"`
			Data       *string `json:"data"`
			DataBase64 *string `json:"data_base64"`
		}
		if err := dec.Decode(&j); err != nil {
			t.Fatalf("cat --json record %d: %v", i+1, err)
		}
		if i >= len(recs) {
			t.Fatalf("cat --json prints more than the %d records shipped", len(recs))
		}
		want := recs[i]
		var data []byte
		switch {
		case j.Data != nil && j.DataBase64 != nil:
			t.Fatalf("cat --json record %d has both data and data_base64", i+1)
		case j.Data != nil:
			data = []byte(*j.Data)
		case j.DataBase64 != nil:
			var err error
			if data, err = base64.StdEncoding.DecodeString(*j.DataBase64); err != nil {
				t.Fatalf("cat --json record %d: data_base64: %v", i+1, err)
			}
		}
		if j.Seq != uint64(i+1) || j.Key != want.key || j.Op != want.op || !bytes.Equal(data, want.data) {
			t.Fatalf("cat --json record %d: seq %d key %q op %q data %q; want seq %d key %q op %q data %q",
				i+1, j.Seq, j.Key, j.Op, data, i+1, want.key, want.op, want.data)
		}
	}
	if i != len(recs) {
		t.Fatalf("cat --json printed %d records, want %d", i, len(recs))
	}

	s.receiveOnce()
	s.wantReplica(replica.Bytes(), "of ndjson data")
}

// --format raw takes u32 big-endian length-prefixed payloads; payloads with
// NULs, newlines and any byte reach the file replica byte for byte.
func TestRawRoundTrip(t *testing.T) {
	t.Parallel()
	s := newStream(t, "raw")
	rng := rand.New(rand.NewPCG(21, 22))
	var input, want bytes.Buffer
	const n = 5000
	for i := range n {
		var p []byte
		switch i % 7 {
		case 0:
			p = nil // empty payload
		case 1:
			p = []byte("\n\n\x00\n")
		default:
			p = make([]byte, rng.IntN(300))
			for j := range p {
				p[j] = byte(rng.UintN(256))
			}
		}
		input.Write(binary.BigEndian.AppendUint32(nil, uint32(len(p))))
		input.Write(p)
		want.Write(p)
	}
	s.ship(input.Bytes(), "--format", "raw", "--max-bytes", "64KiB")
	infos := s.lsJSON()
	if len(infos) < 2 || infos[len(infos)-1].LastSeq != n {
		t.Fatalf("ls --json: %+v; want several segments ending at seq %d", infos, n)
	}
	s.receiveOnce()
	s.wantReplica(want.Bytes(), "of raw payloads")

	// cat (no --json) prints the payloads as shipped too.
	r := mustFerry(t, nil, "cat", "--store", s.store, "--stream", s.name)
	if !bytes.Equal([]byte(r.Stdout), want.Bytes()) {
		t.Fatalf("ferry cat of raw records: %s", describeDiff(want.Bytes(), []byte(r.Stdout)))
	}
}

// Sequence numbers continue across ship runs on one spool, and a new spool
// continues the stream it finds in the store, chain intact.
func TestSeqContinuesAcrossRestartsAndSpools(t *testing.T) {
	t.Parallel()
	s := newStream(t, "cont")
	in1, in2, in3 := logLines(3, 1, 1000), logLines(3, 1001, 1000), logLines(3, 2001, 1000)

	lastSeq := func() uint64 {
		t.Helper()
		infos := s.lsJSON()
		if len(infos) == 0 {
			t.Fatal("ls --json lists no segments")
		}
		return infos[len(infos)-1].LastSeq
	}
	s.ship(in1, "--max-bytes", "16KiB")
	if got := lastSeq(); got != 1000 {
		t.Fatalf("after the first 1000 lines, last seq %d, want 1000", got)
	}
	s.ship(in2, "--max-bytes", "16KiB")
	if got := lastSeq(); got != 2000 {
		t.Fatalf("after 1000 more lines on the same spool, last seq %d, want 2000", got)
	}
	s.spool = filepath.Join(s.dir, "spool2")
	if _, err := os.Stat(s.spool); !os.IsNotExist(err) {
		t.Fatalf("new spool %s should not exist yet: %v", s.spool, err)
	}
	s.ship(in3, "--max-bytes", "16KiB")
	if got := lastSeq(); got != 3000 {
		t.Fatalf("after 1000 lines through a new spool, last seq %d, want 3000", got)
	}
	r := s.verify()
	if r.Code != 0 {
		t.Fatalf("verify after a spool change: want exit 0 (hash chain intact):\n%s", r)
	}
	if !strings.Contains(r.Stdout, "3000 records, seq 1..3000") {
		t.Errorf("verify summary does not say 3000 records, seq 1..3000:\n%s", r)
	}
	s.receiveOnce()
	s.wantReplica(slices.Concat(in1, in2, in3), "after three ship runs")
	if got := s.checkpointSeq(); got != 3000 {
		t.Errorf("checkpoint at seq %d, want 3000", got)
	}
}
