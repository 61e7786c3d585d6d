package dirtree

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// A Maildir flag change and a directory move, byte for byte (the examples
// of docs/DIRTREE.md, "Rename").
func TestRenameGolden(t *testing.T) {
	hello := sha256.Sum256([]byte("hello\n"))
	cases := []struct {
		name string
		r    Rename
		want string
	}{
		{"file", Rename{Old: "cur/1:2,S", Kind: RenameFile, Mode: 0o600, Mtime: 1735787045000000006, Size: 6, SHA256: hello},
			"01" + "01" + "00000180" + "1816c11eeef33206" + "0000000000000006" +
				"5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" + hex.EncodeToString([]byte("cur/1:2,S"))},
		{"dir", Rename{Old: "a", Kind: RenameDir, Mode: 0o755, Mtime: -5},
			"01" + "02" + "000001ed" + "fffffffffffffffb" + strings.Repeat("00", 8) + strings.Repeat("00", 32) + "61"},
	}
	for _, c := range cases {
		b := AppendRename(nil, c.r)
		if got := hex.EncodeToString(b); got != c.want {
			t.Fatalf("%s: data\n got %s\nwant %s", c.name, got, c.want)
		}
		if len(b) != RenameHeaderLen+len(c.r.Old) {
			t.Fatalf("%s: %d bytes", c.name, len(b))
		}
		r, err := ParseRename(b)
		if err != nil || r != c.r {
			t.Fatalf("%s: ParseRename = %+v, %v; want %+v", c.name, r, err, c.r)
		}
	}
}

func TestParseRenameRefuses(t *testing.T) {
	good := AppendRename(nil, Rename{Old: "a", Kind: RenameFile, Mode: 0o644, Size: 1})
	with := func(i int, b byte) []byte { d := bytes.Clone(good); d[i] = b; return d }
	cases := []struct {
		name, wantInErr string
		data            []byte
	}{
		{"empty", "shorter than the 54-byte header", nil},
		{"short", "shorter than the 54-byte header", good[:RenameHeaderLen-1]},
		{"version", "rename header version 2", with(0, 2)},
		{"kind 0", "kind 0", with(1, 0)},
		{"kind 3", "kind 3", with(1, 3)},
		{"mode", "bits beyond 07777", with(3, 0x10)},
		{"size", "oversize rename header", with(14, 0x80)},
		{"dir with size", "carries a size or hash", AppendRename(nil, Rename{Old: "a", Kind: RenameDir, Size: 1})},
		{"dir with hash", "carries a size or hash", AppendRename(nil, Rename{Old: "a", Kind: RenameDir, SHA256: [32]byte{1}})},
		{"no old path", "no old path", good[:RenameHeaderLen]},
	}
	for _, c := range cases {
		_, err := ParseRename(c.data)
		if err == nil || !strings.Contains(err.Error(), c.wantInErr) {
			t.Errorf("%s: ParseRename: %v, want an error saying %q", c.name, err, c.wantInErr)
		}
	}
}

// Hostile old paths: escaping, absolute, the new path itself, a directory
// moved into itself or over its ancestor, reserved names.
func TestCheckRenameRefuses(t *testing.T) {
	cases := []struct{ key, old, wantInErr string }{
		{"a", "../etc/passwd", `path element ".."`},
		{"a", "b/../../x", `path element ".."`},
		{"a", "/etc/passwd", "absolute path"},
		{"a", ".", "op rename on the root"},
		{"a", "a", "to itself"},
		{"a/b/c", "a", "into itself"},
		{"a", "a/b", "over its own ancestor"},
		{"a", ".ferry-staging/1.part", "reserved"},
		{"a", "d/.ferry-0000000000000001.tmp", "reserved"},
		{"a", "x\x00y", "NUL"},
	}
	for _, c := range cases {
		err := CheckRename(c.key, Rename{Old: c.old, Kind: RenameDir})
		if err == nil || !strings.Contains(err.Error(), c.wantInErr) {
			t.Errorf("rename %q -> %q: %v, want an error saying %q", c.old, c.key, err, c.wantInErr)
		}
	}
	for _, ok := range [][2]string{{"ab", "a"}, {"a", "ab"}, {"x/a", "y/a"}, {"cur/1:2,RS", "cur/1:2,S"}} {
		if err := CheckRename(ok[0], Rename{Old: ok[1], Kind: RenameFile}); err != nil {
			t.Errorf("rename %q -> %q: %v", ok[1], ok[0], err)
		}
	}
	// The new path is checked as every key is, by CheckKey.
	if err := CheckKey(".", OpRename); err == nil {
		t.Error("rename onto the root accepted")
	}
}

// FuzzParseRename: no input makes the parser panic, and what it accepts
// encodes back to the same bytes.
func FuzzParseRename(f *testing.F) {
	f.Add(AppendRename(nil, Rename{Old: "cur/1:2,S", Kind: RenameFile, Mode: 0o600, Mtime: 1, Size: 6, SHA256: [32]byte{9}}))
	f.Add(AppendRename(nil, Rename{Old: "a/b", Kind: RenameDir, Mode: 0o7777, Mtime: -1}))
	f.Add([]byte{1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRename(data)
		if err != nil {
			return
		}
		if r.Mode&^0o7777 != 0 || r.Size < 0 || r.Size > maxFileSize || r.Old == "" || (r.Kind != RenameFile && r.Kind != RenameDir) {
			t.Fatalf("accepted %+v", r)
		}
		if b := AppendRename(nil, r); !bytes.Equal(b, data) {
			t.Fatalf("re-encoded\n%x\nparsed from\n%x", b, data)
		}
		CheckRename("k", r)
		_ = r.String()
	})
}
