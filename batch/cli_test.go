package batch

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestZstdCLI checks the promise that lets operators inspect a segment with
// stock tools: `zstd -dc` skips the metadata frame and prints exactly the
// record frames. The zstd binary is required; a missing binary fails the
// test instead of skipping it, so the check cannot silently vanish from CI.
func TestZstdCLI(t *testing.T) {
	zstdBin, err := exec.LookPath("zstd")
	if err != nil {
		t.Fatalf("zstd binary not found (%v): install the zstd package (apt-get install zstd)", err)
	}
	big := makeRecords(1, 20000) // several zstd blocks
	segs := map[string][]Record{"golden": goldenRecords(), "big": big}
	b := newBuilder(t)
	dir := t.TempDir()
	for name, recs := range segs {
		t.Run(name, func(t *testing.T) {
			seg, m := build(t, b, "app", 1, ZeroHash, recs, baseTime)
			path := filepath.Join(dir, m.Name())
			if err := os.WriteFile(path, seg, 0o644); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd := exec.Command(zstdBin, "-dc", "--", path)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("zstd -dc %s: %v\n%s", m.Name(), err, stderr.Bytes())
			}
			if want := frames(recs); !bytes.Equal(out, want) {
				t.Fatalf("zstd -dc printed %d bytes, want the %d bytes of record frames", len(out), len(want))
			}
		})
	}
}
