package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sameRecord reports how a and b differ, or "" when they are equal as the
// framing sees them: time by instant, nil and empty bytes alike.
func sameRecord(a, b Record) string {
	switch {
	case a.Seq != b.Seq:
		return "seq " + strconv.FormatUint(a.Seq, 10) + " != " + strconv.FormatUint(b.Seq, 10)
	case timeNanos(a.Time) != timeNanos(b.Time):
		return "time " + a.Time.String() + " != " + b.Time.String()
	case !bytes.Equal(a.Key, b.Key):
		return "key " + strconv.Quote(string(a.Key)) + " != " + strconv.Quote(string(b.Key))
	case a.Op != b.Op:
		return "op " + strconv.Quote(a.Op) + " != " + strconv.Quote(b.Op)
	case !bytes.Equal(a.Data, b.Data):
		return "data " + strconv.Quote(string(a.Data)) + " != " + strconv.Quote(string(b.Data))
	}
	return ""
}

func TestFrameRoundTrip(t *testing.T) {
	ts := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC)
	cases := []struct {
		name string
		r    Record
	}{
		{"typical", Record{Seq: 42, Time: ts, Key: []byte("user:1"), Op: "put", Data: []byte(`{"a":1}`)}},
		{"binary", Record{Seq: 1, Time: ts, Key: []byte{0, '\n', 0xff, 0}, Op: "\x00\n", Data: []byte{0, 0, '\n', '\r', 0xff, 0, 0x28, 0xb5, 0x2f, 0xfd}}},
		{"all empty", Record{Seq: 7, Time: ts}},
		{"empty key and op", Record{Seq: 8, Time: ts, Data: []byte("x")}},
		{"max key", Record{Seq: 9, Time: ts, Key: bytes.Repeat([]byte{'k'}, MaxKeyLen), Op: strings.Repeat("o", MaxOpLen), Data: []byte("d")}},
		{"max seq", Record{Seq: 1<<64 - 1, Time: ts}},
		{"pre-epoch", Record{Seq: 2, Time: time.Date(1969, 12, 31, 23, 59, 59, 1, time.UTC)}},
		{"local zone", Record{Seq: 3, Time: ts.In(time.FixedZone("X", -7*3600))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.r.CheckSize(MaxFramedRecord); err != nil {
				t.Fatalf("CheckSize: %v", err)
			}
			prefix := []byte("prefix")
			b := AppendFrame(prefix, &c.r)
			if !bytes.Equal(b[:len(prefix)], prefix) {
				t.Fatal("AppendFrame overwrote dst")
			}
			frame := b[len(prefix):]
			if len(frame) != c.r.FramedSize() {
				t.Fatalf("frame is %d bytes, FramedSize says %d", len(frame), c.r.FramedSize())
			}
			if got := binary.BigEndian.Uint32(frame); int(got) != len(frame)-4 {
				t.Fatalf("length field %d, want %d", got, len(frame)-4)
			}
			// Trailing bytes belong to the next frame and must be left alone.
			got, n, err := ParseFrame(append(frame, 0xde, 0xad))
			if err != nil {
				t.Fatal(err)
			}
			if n != len(frame) {
				t.Fatalf("consumed %d, want %d", n, len(frame))
			}
			if d := sameRecord(got, c.r); d != "" {
				t.Fatal(d)
			}
			if got.Time.Location() != time.UTC {
				t.Errorf("decoded time in %v, want UTC", got.Time.Location())
			}
		})
	}
}

func TestFrameLayout(t *testing.T) {
	r := Record{Seq: 0x0102030405060708, Time: time.Unix(0, 0x1112131415161718), Key: []byte("ky"), Op: "op!", Data: []byte("DATA")}
	want := []byte{
		0, 0, 0, 28, // len: 8+8+1+3+2+2+4
		1, 2, 3, 4, 5, 6, 7, 8, // seq
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // unix nanos
		3, 'o', 'p', '!', // oplen, op
		0, 2, 'k', 'y', // keylen, key
		'D', 'A', 'T', 'A',
	}
	if got := AppendFrame(nil, &r); !bytes.Equal(got, want) {
		t.Fatalf("frame\n got % x\nwant % x", got, want)
	}
}

func TestFrameZeroTime(t *testing.T) {
	got, _, err := ParseFrame(AppendFrame(nil, &Record{Seq: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(time.Unix(0, 0)) {
		t.Fatalf("zero time reads back as %v, want the Unix epoch", got.Time)
	}
}

func TestFrameAliasesInput(t *testing.T) {
	b := AppendFrame(nil, &Record{Seq: 1, Key: []byte("k"), Data: []byte("d")})
	r, _, err := ParseFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	// Appending to Key or Data must not scribble over the next field.
	_ = append(r.Key, 'X')
	_ = append(r.Data, 'Y')
	if r2, _, _ := ParseFrame(b); string(r2.Key) != "k" || string(r2.Data) != "d" {
		t.Fatalf("append through a parsed record changed the buffer: %q %q", r2.Key, r2.Data)
	}
}

func TestParseFrameDamage(t *testing.T) {
	good := AppendFrame(nil, &Record{Seq: 5, Key: []byte("key"), Op: "op", Data: []byte("data")})
	withLen := func(n uint32, body []byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), body...)
	}
	body19 := make([]byte, 19)
	cases := []struct {
		name, want string
		b          []byte
	}{
		{"empty", "header truncated", nil},
		{"3 bytes", "header truncated", good[:3]},
		{"len below fixed", "out of range", withLen(18, make([]byte, 18))},
		{"len above cap", "out of range", withLen(MaxFramedRecord+1, nil)},
		{"len max u32", "out of range", withLen(1<<32-1, nil)},
		{"body truncated", "record truncated", good[:len(good)-1]},
		{"op overruns", "op length", withLen(19, append(bytes.Clone(body19[:16]), 1, 0, 0))},
		{"key overruns", "key length", withLen(19, append(bytes.Clone(body19[:16]), 0, 0, 1))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, n, err := ParseFrame(c.b)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if n != 0 {
				t.Errorf("consumed %d on error", n)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %q does not mention %q", err, c.want)
			}
		})
	}
	// The smallest legal frame: everything empty.
	if _, n, err := ParseFrame(withLen(19, body19)); err != nil || n != 23 {
		t.Fatalf("minimal frame: n=%d err=%v", n, err)
	}
}

func TestCheckSize(t *testing.T) {
	ok := Record{Key: bytes.Repeat([]byte{1}, MaxKeyLen), Op: strings.Repeat("o", MaxOpLen)}
	if err := ok.CheckSize(ok.FramedSize()); err != nil {
		t.Fatalf("record exactly at limit: %v", err)
	}
	if got, want := (&Record{}).FramedSize(), 23; got != want {
		t.Fatalf("FramedSize of empty record = %d, want %d", got, want)
	}
	cases := []struct {
		name  string
		r     Record
		limit int
		want  []string
	}{
		{"key too long", Record{Key: make([]byte, MaxKeyLen+1)}, 1 << 20, []string{"key is 65536 bytes", "limit 65535"}},
		{"op too long", Record{Op: strings.Repeat("o", MaxOpLen+1)}, 1 << 20, []string{"op is 256 bytes", "limit 255"}},
		{"over limit", Record{Data: make([]byte, 100)}, 122, []string{"record is 123 bytes", "limit is 122", "max_record_size"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.r.CheckSize(c.limit)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not mention %q", err, w)
				}
			}
		})
	}
}
