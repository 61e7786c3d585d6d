package dirsync

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A ledger line holds exactly one part: an entry, a segment's decisions
// or what a rejoin says the site had seen. A line holding two, none, or
// no JSON is refused, naming the file and the byte, unless it is the
// last line (torn: never fsynced, so ignored); a "known" line is read back.
func TestOpenRefusesDamagedLedgerLine(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, "b")
	if _, _, err := l.Local("f", file(100, 3, "h1")); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	path := filepath.Join(dir, LedgerFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitAfter(string(good), "\n")[0]
	entry := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(first), `{`), `}`)
	for name, bad := range map[string]string{
		"known and entry": `{"known":{"a":5},` + entry + `}`,
		"known and seg":   `{"known":{"a":5},"seg":{"peer":"a","segment":"s","acts":"a"}}`,
		"entry and seg":   `{` + entry + `,"seg":{"peer":"a","segment":"s","acts":"a"}}`,
		"none":            `{}`,
		"not json":        `not json`,
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			p := filepath.Join(d, LedgerFile)
			os.WriteFile(p, []byte(string(good)+bad+"\n"+first), 0o644)
			_, err := Open(d, "b", slog.New(slog.NewTextHandler(io.Discard, nil)))
			if want := fmt.Sprintf("sync ledger %s is damaged at byte %d", p, len(good)); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Open with a damaged line: %v; want %q", err, want)
			}
			os.WriteFile(p, []byte(string(good)+bad+"\n"), 0o644)
			l, err := Open(d, "b", slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatalf("Open with a damaged last line (torn): %v", err)
			}
			l.Close()
		})
	}
	os.WriteFile(path, []byte(string(good)+`{"known":{"a":5,"b":7}}`+"\n"), 0o644)
	l = open(t, dir, "b")
	defer l.Close()
	if l.known["a"] != 5 || l.known["b"] != 7 {
		t.Fatalf("known after Open = %v; want a:5 b:7", l.known)
	}
}
