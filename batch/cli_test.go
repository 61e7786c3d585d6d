package batch

import (
	"bytes"
	"fmt"
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
	// Over four chunks of ~1 KiB records: several frames, compressed in
	// parallel, that must come out in order.
	huge := makeRecords(1, 4*ChunkSize/1000+500)
	for i := range huge {
		huge[i].Data = fmt.Appendf(nil, "%0990d\n", huge[i].Seq*2654435761%1000003)
	}
	segs := map[string][]Record{"golden": goldenRecords(), "big": big, "multiframe": huge}
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
			// One zstd frame per started chunk, each with a checksum.
			list, err := exec.Command(zstdBin, "-lv", "--", path).CombinedOutput()
			if err != nil {
				t.Fatalf("zstd -lv %s: %v\n%s", m.Name(), err, list)
			}
			wantFrames := (int(m.UncompressedSize) + ChunkSize - 1) / ChunkSize
			if !bytes.Contains(list, fmt.Appendf(nil, "# Zstandard Frames: %d\n", wantFrames)) || !bytes.Contains(list, []byte("Check: XXH64")) {
				t.Fatalf("zstd -lv %s: want %d checksummed frames for %d bytes:\n%s", m.Name(), wantFrames, m.UncompressedSize, list)
			}
		})
	}
}
