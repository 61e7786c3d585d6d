package dirtree

import (
	"bytes"
	"testing"
)

// FuzzParseHeader: no input makes the parser panic, and what it accepts
// is a header within the limits that encodes back to the same bytes.
func FuzzParseHeader(f *testing.F) {
	sum := [32]byte{1, 2, 3}
	f.Add(AppendHeader(nil, 0o644, 1735787045000000006, 6, 0, &sum))
	f.Add(append(AppendHeader(nil, 0o7777, -1, 1<<44, 1<<44, nil), "content"...))
	f.Add(AppendHeader(nil, 0o10644, 0, 0, 0, nil))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, rest, err := ParseHeader(data)
		if err != nil {
			return
		}
		if h.Mode&^0o7777 != 0 || h.Size < 0 || h.Size > maxFileSize || h.Offset < 0 || h.Offset > maxFileSize {
			t.Fatalf("accepted %+v", h)
		}
		if len(rest) != len(data)-HeaderLen {
			t.Fatalf("rest is %d bytes of %d", len(rest), len(data))
		}
		if b := AppendHeader(nil, h.Mode, h.Mtime, h.Size, h.Offset, &h.SHA256); !bytes.Equal(b, data[:HeaderLen]) {
			t.Fatalf("re-encoded\n%x\nparsed from\n%x", b, data[:HeaderLen])
		}
		for _, op := range Ops {
			CheckPayload(op, h, rest)
		}
	})
}
