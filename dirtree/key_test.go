package dirtree

import (
	"strings"
	"testing"
)

func TestCheckKey(t *testing.T) {
	ok := []struct{ key, op string }{
		{"a", OpPut}, {"a/b/c", OpDel}, {".", OpMkdir}, {".hidden", OpPut}, {"a/.ferry-x", OpPut},
		{"a/.ferry-staging", OpMkdir}, {"x.tmp", OpPut}, {strings.Repeat("e", 255), OpPut},
		{strings.Repeat("d/", 2047) + "f", OpPut},
	}
	for _, c := range ok {
		if err := CheckKey(c.key, c.op); err != nil {
			t.Errorf("CheckKey(%.40q, %s): %v", c.key, c.op, err)
		}
	}
	bad := []struct{ key, op, wantInErr string }{
		{"", OpPut, "empty path"},
		{".", OpRmdir, "only mkdir"},
		{".", OpPut, "only mkdir"},
		{"/etc/passwd", OpDel, "absolute path"},
		{"a\x00b", OpPut, "NUL"},
		{"a//b", OpPut, "empty path element"},
		{"a/", OpMkdir, "empty path element"},
		{"../x", OpPut, `path element ".."`},
		{"a/./x", OpPut, `path element "."`},
		{strings.Repeat("e", 256), OpPut, "limit 255"},
		{strings.Repeat("d/", 2048) + "f", OpPut, "limit 4096"},
		{".ferry-staging", OpMkdir, "staging directory"},
		{".ferry-staging/x", OpPut, "staging directory"},
		{"a/.ferry-0000000000000001.tmp", OpPut, "reserved for the applier's temp files"},
	}
	for _, c := range bad {
		err := CheckKey(c.key, c.op)
		if err == nil || !strings.Contains(err.Error(), c.wantInErr) {
			t.Errorf("CheckKey(%.40q, %s): %v, want an error saying %q", c.key, c.op, err, c.wantInErr)
		}
	}
}

func TestReserved(t *testing.T) {
	for key, want := range map[string]bool{
		".ferry-staging": true, ".ferry-staging/x": true, TempName(7): true, "a/b/" + TempName(1<<63): true,
		".": false, "a/.ferry-staging": false, ".ferry-": false, "a/.ferry-x.tmp.old": false, "x.tmp": false,
	} {
		if got := Reserved(key); got != want {
			t.Errorf("Reserved(%q) = %v, want %v", key, got, want)
		}
		if want && key != "." && CheckKey(key, OpPut) == nil {
			t.Errorf("CheckKey(%q) accepts a reserved name", key)
		}
	}
	if got := TempName(0x1f); got != ".ferry-000000000000001f.tmp" {
		t.Fatalf("TempName = %q", got)
	}
}
