package batch

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	segs := map[string][]Record{"golden": goldenRecordsOf(2), "big": big, "multiframe": huge}
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
			if want := frames2(recs); !bytes.Equal(out, want) {
				t.Fatalf("zstd -dc printed %d bytes, want the %d bytes of format-2 record frames", len(out), len(want))
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

// TestStockToolsFormat2 runs the pipeline docs/FORMAT.md gives for
// printing the data of a format-2 segment's records with zstd, od and awk
// alone (taken from the document, so the two cannot drift apart), on a
// segment with every kind of frame: times kept and changed, ops, keys,
// binary data and empty records.
func TestStockToolsFormat2(t *testing.T) {
	for _, bin := range []string{"zstd", "od", "awk", "sh"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found (%v): the documented pipeline needs it (apt-get install zstd coreutils mawk)", bin, err)
		}
	}
	doc, err := os.ReadFile("../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	const intro = "This prints the data of every record, one after another"
	_, after, ok := strings.Cut(string(doc), intro)
	if !ok {
		t.Fatalf("docs/FORMAT.md lacks %q", intro)
	}
	_, block, _ := strings.Cut(after, "```\n")
	script, _, ok := strings.Cut(block, "```\n")
	if !ok || !strings.Contains(script, "zstd -dc SEGMENT") {
		t.Fatalf("no pipeline after %q in docs/FORMAT.md", intro)
	}

	recs := logRecords(256 << 10) // awk is slow; TestZstdCLI covers many frames
	for i := range recs {
		switch i % 7 {
		case 1:
			recs[i].Time = recs[i-1].Time // no time in the frame
		case 2:
			recs[i].Op, recs[i].Key = "", nil
		case 3:
			recs[i].Data = nil
		case 4:
			recs[i].Data = append([]byte{0, 0xff, 0x80, '\n'}, recs[i].Data...)
		case 5:
			recs[i].Key = bytes.Repeat([]byte("k"), 300) // a two-byte key length
		}
	}
	seg, m := build(t, newBuilder(t), "app", 1, ZeroHash, recs, baseTime)
	if m.Format != 2 {
		t.Fatalf("Builder wrote format %d, want 2", m.Format)
	}
	path := filepath.Join(t.TempDir(), m.Name())
	if err := os.WriteFile(path, seg, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(script, "SEGMENT", `"$1"`), "sh", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("documented pipeline: %v\n%s", err, stderr.Bytes())
	}
	var want []byte
	for _, r := range recs {
		want = append(want, r.Data...)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("documented pipeline printed %d bytes, want the %d bytes of the records' data", len(out), len(want))
	}
}
