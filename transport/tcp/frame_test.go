package tcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// encodeFrame returns the bytes link.write puts on the wire for one frame,
// writing at most chunk bytes at a time.
func encodeFrame(chunk int, typ byte, prefix, body []byte) []byte {
	var buf bytes.Buffer
	l := &link{w: bufio.NewWriterSize(&buf, chunk), chunk: chunk}
	if err := l.write(context.Background(), typ, prefix, body); err != nil {
		panic(err) // a bytes.Buffer does not fail
	}
	return buf.Bytes()
}

// frameBytes encodes a frame whose payload is payload.
func frameBytes(typ byte, payload []byte) []byte { return encodeFrame(defaultChunk, typ, payload, nil) }

func validFrames() [][]byte {
	return [][]byte{
		frameBytes(frameHeartbeat, nil),
		frameBytes(frameHello, []byte(`{"version":1,"stream":"app","generation":1,"token":"t"}`)),
		frameBytes(frameAck, []byte(`{"name":"x","received_seq":3,"applied_seq":1}`)),
		encodeFrame(defaultChunk, frameSegment, segmentHeader("00000001-0000000000000001-0000000000000001.seg.zst"), []byte("segment bytes")),
		frameBytes(frameGeneration, []byte(`{"version":1,"stream":"app","generation":2,"parent":1,"fork_seq":0,"fork_hash":"","time":"2026-03-01T03:00:00Z","site":"b","host":"h","reason":"promote"}`)),
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var stream []byte
	for _, f := range validFrames() {
		stream = append(stream, f...)
	}
	r := bytes.NewReader(stream)
	for i, want := range validFrames() {
		f, err := readFrame(r, 1<<20)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got := frameBytes(f.typ, f.payload); !bytes.Equal(got, want) {
			t.Fatalf("frame %d re-encodes differently", i)
		}
	}
	if _, err := readFrame(r, 1<<20); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

// A frame written in many chunks (a big segment, or a low bandwidth limit)
// is the same bytes as one written at once, and reads back whole.
func TestFrameChunking(t *testing.T) {
	name := segmentHeader("00000001-0000000000000001-0000000000000001.seg.zst")
	body := bytes.Repeat([]byte("0123456789abcdef"), 20<<10) // 320 KiB
	whole := encodeFrame(len(body)+1<<10, frameSegment, name, body)
	for _, chunk := range []int{16, 1 << 10, defaultChunk} {
		if got := encodeFrame(chunk, frameSegment, name, body); !bytes.Equal(got, whole) {
			t.Fatalf("frame written in %d-byte chunks differs from one written at once", chunk)
		}
	}
	f, err := readFrame(bytes.NewReader(whole), 1<<20)
	if err != nil || f.typ != frameSegment || !bytes.Equal(f.payload, append(name, body...)) {
		t.Fatalf("readFrame = %s, %d bytes, %v", typeName(f.typ), len(f.payload), err)
	}
}

// Every single-byte change to a frame is detected.
func TestFrameDamageDetected(t *testing.T) {
	for _, valid := range validFrames() {
		for i := range valid {
			for _, flip := range []byte{0x01, 0x80, 0xff} {
				b := bytes.Clone(valid)
				b[i] ^= flip
				f, err := readFrame(bytes.NewReader(b), 1<<20)
				if err == nil {
					t.Fatalf("byte %d ^ %#x of %s frame accepted as %s", i, flip, typeName(valid[4]), typeName(f.typ))
				}
			}
		}
		for n := range len(valid) {
			if _, err := readFrame(bytes.NewReader(valid[:n]), 1<<20); err == nil {
				t.Fatalf("frame truncated to %d bytes accepted", n)
			} else if n > 0 && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrProtocol) {
				t.Fatalf("frame truncated to %d bytes: %v", n, err)
			}
		}
	}
}

func TestFrameCaps(t *testing.T) {
	hdr := func(n uint32, typ byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), typ)
	}
	cases := []struct {
		name string
		in   []byte
	}{
		{"control over 64 KiB", hdr(MaxControlFrame+1, frameAck)},
		{"segment over the cap", hdr(1<<20+1, frameSegment)},
		{"generation record over 4 KiB", hdr(MaxGenerationRecord+1, frameGeneration)},
		{"unknown type", hdr(0, 0x7f)},
		{"type after GENERATION", hdr(0, frameGeneration+1)},
		{"type zero", hdr(0, 0)},
	}
	for _, tc := range cases {
		if _, err := readFrame(bytes.NewReader(tc.in), 1<<20); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", tc.name, err)
		}
	}
}

// A frame claiming a huge (allowed) size but carrying few bytes costs
// memory for the bytes that arrived, not for the claim.
func TestReadFrameAllocatesWhatArrives(t *testing.T) {
	in := append(binary.BigEndian.AppendUint32(nil, 1<<30), frameSegment)
	in = append(in, make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := readFrame(bytes.NewReader(in), 2<<30)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("readFrame of a truncated 1 GiB frame: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Fatalf("allocated %d bytes for 100 bytes received", grew)
	}
}

func TestParseSegment(t *testing.T) {
	for _, p := range [][]byte{nil, {0}, {0, 0}, {0, 5, 'a'}} {
		if _, _, err := parseSegment(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("parseSegment(%q) = %v, want ErrProtocol", p, err)
		}
	}
	name, data, err := parseSegment(append(segmentHeader("n"), "data"...))
	if err != nil || name != "n" || string(data) != "data" {
		t.Fatalf("parseSegment = %q, %q, %v", name, data, err)
	}
}

// FuzzReadFrame: the decoder never panics, never returns a payload over
// its cap, and whatever it accepts re-encodes to exactly the bytes read.
func FuzzReadFrame(f *testing.F) {
	for _, v := range validFrames() {
		f.Add(v)
		damaged := bytes.Clone(v)
		damaged[len(damaged)-1] ^= 1
		f.Add(damaged)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, frameSegment})
	f.Add([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
	const maxSegment = 1 << 16
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		fr, err := readFrame(r, maxSegment)
		if err != nil {
			return
		}
		limit := MaxControlFrame
		switch fr.typ {
		case frameSegment:
			limit = maxSegment
		case frameGeneration:
			limit = MaxGenerationRecord
		}
		if len(fr.payload) > limit {
			t.Fatalf("%s payload of %d bytes exceeds %d", typeName(fr.typ), len(fr.payload), limit)
		}
		used := len(in) - r.Len()
		if got := frameBytes(fr.typ, fr.payload); !bytes.Equal(got, in[:used]) {
			t.Fatalf("accepted frame re-encodes differently")
		}
		if fr.typ == frameSegment {
			parseSegment(fr.payload)
		}
	})
}

// TestProtocolDocExamples pins the worked examples in docs/PROTOCOL.md.
func TestProtocolDocExamples(t *testing.T) {
	heartbeat := []byte{0x00, 0x00, 0x00, 0x00, 0x06, 0x74, 0xdc, 0xb4, 0xb9}
	if got := frameBytes(frameHeartbeat, nil); !bytes.Equal(got, heartbeat) {
		t.Errorf("HEARTBEAT = % x, docs say % x", got, heartbeat)
	}
	fetch := frameBytes(frameFetch, []byte(`{"name":"00000001-0000000000000001-000000000000000a.seg.zst"}`))
	if len(fetch) != 70 || !bytes.Equal(fetch[:5], []byte{0, 0, 0, 0x3d, 0x08}) || !bytes.Equal(fetch[66:], []byte{0xe1, 0x75, 0x30, 0x95}) {
		t.Errorf("FETCH = % x, differs from the docs", fetch)
	}
}
