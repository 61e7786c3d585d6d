package main

import (
	"bytes"
	"strings"
	"testing"
)

// ferry --version and ferry version print the same one line on stdout:
// the version, the commit and the build date, set by -ldflags -X.
func TestVersion(t *testing.T) {
	defer func(v, c, d string) { version, commit, buildDate = v, c, d }(version, commit, buildDate)
	version, commit, buildDate = "1.2.3", "0123456789abcdef0123", "2026-12-05T10:00:00Z"
	var lines []string
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || errb.Len() > 0 {
			t.Fatalf("ferry %v: rc %d, stderr %q", args, code, errb.String())
		}
		lines = append(lines, out.String())
	}
	want := "ferry 1.2.3 (commit 0123456789ab, built 2026-12-05T10:00:00Z, go"
	if !strings.HasPrefix(lines[0], want) || lines[0] != lines[1] || strings.Count(lines[0], "\n") != 1 {
		t.Errorf("ferry --version %q, ferry version %q; want one line starting %q", lines[0], lines[1], want)
	}
}
