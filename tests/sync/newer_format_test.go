//go:build linux

package sync_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// A sync site that meets a peer's segment of a newer format than it
// reads stops at once, exits non-zero and says to upgrade ferry: its
// receiver does not spend its retry window on an object that cannot
// change.
func TestSyncStopsAtOnceOnANewerFormat(t *testing.T) {
	store, sites := newRecordMesh(t, viaStore, "", "a", "b")
	a, b := sites[0], sites[1]
	a.start(t)
	for i := range 20 {
		appendEvent(t, a, i)
	}
	dir := filepath.Join(store("a"), "events@a")
	var seg string
	deadline := time.Now().Add(60 * time.Second)
	for seg == "" {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".seg.zst") {
				seg = e.Name()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("site a stored no segment within 60s:\n%s", a.proc)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.stop(t)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	written := fmt.Sprintf(`"format":%d`, batch.FormatVersion)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".seg.zst") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte(written)) {
			t.Fatalf("segment %s does not hold %s", e.Name(), written)
		}
		if err := os.WriteFile(p, bytes.Replace(data, []byte(written), []byte(`"format":9`), 1), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b.start(t)
	code, ok := b.proc.Wait(60 * time.Second)
	if !ok {
		b.proc.Kill9()
		t.Fatalf("site b: ferry sync still running 60s after it met a segment of a newer format:\n%s", b.proc)
	}
	want := fmt.Sprintf("segment format 9 is newer than this ferry reads (%d); upgrade ferry", batch.FormatVersion)
	if code == 0 || !strings.Contains(b.proc.Stderr(), want) {
		t.Fatalf("site b: exit %d; want a non-zero exit saying %q:\n%s", code, want, b.proc)
	}
}
