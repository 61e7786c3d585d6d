package dirtree

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// TestSummary sums a stream of every kind of tree record and checks each
// op's parts against the records it was given: the parts add up to the
// framed size, headers are the ops' headers, repeats are keys named
// before (a file's later chunks are not), and the compressed estimate
// tells compressible content from random bytes.
func TestSummary(t *testing.T) {
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 400) // 17,600 bytes
	noise := make([]byte, 17600)
	rand.Read(noise)
	var recs []batch.Record
	add := func(rs ...batch.Record) { recs = append(recs, rs...) }
	put := func(key string, content []byte) {
		rs, _, err := FileRecords(key, content, 0o644, 1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		add(rs...)
	}
	put("a/text", text)
	put("a/noise", noise)
	chunks, _, err := FileRecords("a/big", noise, 0o644, 1, 8000) // 3 chunks
	if err != nil || len(chunks) != 3 {
		t.Fatalf("%d chunks, %v", len(chunks), err)
	}
	add(chunks...)
	add(batch.Record{Op: OpMkdir, Key: []byte("a"), Data: AppendHeader(nil, 0o755, 1, 0, 0, nil)})
	base, grown := sha256.Sum256(text), sha256.Sum256(append(text, "tail"...))
	add(batch.Record{Op: OpAppend, Key: []byte("a/text"), Data: AppendAppendRecord(nil,
		DeltaHeader{Mode: 0o644, BaseSize: int64(len(text)), BaseSHA256: base, Size: int64(len(text)) + 4, SHA256: grown}, []byte("tail"))})
	add(batch.Record{Op: OpDelta, Key: []byte("a/noise"), Data: AppendDeltaRecord(nil,
		DeltaHeader{Mode: 0o644, BaseSize: 17600, Size: 17600}, 4096, []uint32{1, 3}, noise[:8192])})
	add(batch.Record{Op: OpRename, Key: []byte("b"), Data: AppendRename(nil, Rename{Old: "a/big", Kind: RenameFile, Size: 17600})})
	add(batch.Record{Op: OpDel, Key: []byte("a/gone")})

	s, err := NewSummary("")
	if err != nil {
		t.Fatal(err)
	}
	var framed int64
	for i := range recs {
		framed += int64(recs[i].FramedSize())
		if err := s.Add(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	ops, err := s.Ops()
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]OpSum{}
	var total int64
	for _, o := range ops {
		by[o.Op] = o
		total += o.framed()
	}
	if total != framed {
		t.Fatalf("the ops' parts add up to %d bytes, the records are %d framed", total, framed)
	}
	if len(ops) != 7 || ops[0].Op != OpPut || ops[1].Op != OpChunk {
		t.Fatalf("ops in order %v, want 7 with put then chunk (most bytes) first", ops)
	}
	checks := []struct {
		op                                string
		records, repeats, header, content int64
		keys                              int64
	}{
		{OpPut, 2, 0, 2 * HeaderLen, 2 * 17600, int64(len("a/text") + len("a/noise"))},
		{OpChunk, 3, 0, 3 * HeaderLen, 17600, 3 * int64(len("a/big"))},
		{OpMkdir, 1, 0, HeaderLen, 0, 1},
		{OpAppend, 1, 1, DeltaHeaderLen, 4, 6},
		{OpDelta, 1, 1, DeltaHeaderLen + 8 + 2*4, 8192, 7},
		{OpRename, 1, 0, RenameHeaderLen + int64(len("a/big")), 0, 1},
		{OpDel, 1, 0, 0, 0, 6},
	}
	for _, c := range checks {
		o := by[c.op]
		if o.Records != c.records || o.Repeats != c.repeats || o.Header != c.header || o.Content != c.content || o.Keys != c.keys {
			t.Errorf("%s: records %d repeats %d header %d content %d keys %d, want %d %d %d %d %d", c.op,
				o.Records, o.Repeats, o.Header, o.Content, o.Keys, c.records, c.repeats, c.header, c.content, c.keys)
		}
		if o.Framing != o.Records*int64(batch.RecordOverhead+len(c.op)) {
			t.Errorf("%s: framing %d", c.op, o.Framing)
		}
	}
	// The put of text compresses (one of its two files is 400 repeats of
	// a line), the chunks of random bytes do not.
	if p, c := by[OpPut], by[OpChunk]; p.Compressed > p.framed()*6/10 || c.Compressed < c.framed()*9/10 {
		t.Errorf("compressed alone: put %d of %d framed, chunk %d of %d", p.Compressed, p.framed(), c.Compressed, c.framed())
	}

	var out strings.Builder
	if err := WriteTable(&out, ops); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "total") || !strings.Contains(out.String(), "repeats: 2 records") {
		t.Errorf("table:\n%s", out.String())
	}
	if _, err := NewSummary("fastest-ever"); err == nil || !strings.Contains(err.Error(), `"fastest-ever"`) {
		t.Errorf("an unknown level: %v", err)
	}
}
