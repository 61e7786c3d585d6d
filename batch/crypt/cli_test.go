package crypt_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// stockPipeline is the stock-tool path of docs/FORMAT.md ("Encryption"),
// word for word: skip the metadata frame, decrypt with age, decompress
// with zstd.
const stockPipeline = `n=$(od -An -tu4 -j4 -N4 --endian=little "$SEG" | tr -d ' ')
tail -c +$((8 + n + 1)) "$SEG" | age -d -i "$IDENTITY" | zstd -dc`

// TestStockTools decrypts and decompresses segments with the real age
// and zstd binaries, as FORMAT.md tells an operator to without ferry.
// tests/run.sh installs age (go install filippo.io/age/cmd/...) and sets
// FERRY_REQUIRE_AGE=1: there a missing binary fails the test instead of
// skipping it.
func TestStockTools(t *testing.T) {
	for _, tool := range []string{"age", "zstd", "od", "tail", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("FERRY_REQUIRE_AGE") != "" || tool != "age" {
				t.Fatalf("%s not found (%v): go install filippo.io/age/cmd/...@v1.3.2 and apt-get install zstd", tool, err)
			}
			t.Skipf("age not found (%v); go install filippo.io/age/cmd/...@v1.3.2 (tests/run.sh requires it)", err)
		}
	}
	doc, err := os.ReadFile("../../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte("```\n"+stockPipeline+"\n```")) {
		t.Fatalf("docs/FORMAT.md does not give the stock-tool pipeline this test runs:\n%s", stockPipeline)
	}
	k1, k2 := newKey(t), newKey(t)
	for name, recs := range map[string][]batch.Record{"small": records(3, 5), "multiframe": records(6000, 1000)} {
		t.Run(name, func(t *testing.T) {
			data, m := seal(t, recs, k1, k2)
			seg := filepath.Join(t.TempDir(), m.Name())
			if err := os.WriteFile(seg, data, 0o644); err != nil {
				t.Fatal(err)
			}
			want := batch.AppendStream(nil, m.Format, recs)
			for _, k := range []key{k1, k2} {
				cmd := exec.Command("bash", "-o", "pipefail", "-c", stockPipeline)
				cmd.Env = append(os.Environ(), "SEG="+seg, "IDENTITY="+k.file)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("stock pipeline with key %s: %v\n%s", k.fp, err, stderr.Bytes())
				}
				if !bytes.Equal(out, want) {
					t.Fatalf("stock pipeline printed %d bytes, want the %d bytes of record frames", len(out), len(want))
				}
			}
			// The wrong key: age refuses, the pipeline fails.
			cmd := exec.Command("bash", "-o", "pipefail", "-c", stockPipeline)
			cmd.Env = append(os.Environ(), "SEG="+seg, "IDENTITY="+newKey(t).file)
			if out, err := cmd.CombinedOutput(); err == nil || !bytes.Contains(out, []byte("no identity matched")) {
				t.Fatalf("stock pipeline with another key: %v\n%s", err, out)
			}
		})
	}
}

// rekeyedPipeline is the stock-tool path of docs/FORMAT.md ("Rotation")
// for a segment read through a key epoch's header HDR: the header, then
// the payload after the embedded header.
const rekeyedPipeline = `n=$(od -An -tu4 -j4 -N4 --endian=little "$SEG" | tr -d ' ')
h=$(tail -c +$((8 + n + 1)) "$SEG" | head -c 16384 | grep -abm1 '^--- ' | cut -d: -f1)
{ cat "$HDR"; tail -c +$((8 + n + h + 48 + 1)) "$SEG"; } | age -d -i "$IDENTITY" | zstd -dc`

// TestStockToolsRekeyed: the header Rewrap writes is a standard age
// header: the real age binary decrypts the segment through it, with the
// new key, as FORMAT.md says.
func TestStockToolsRekeyed(t *testing.T) {
	for _, tool := range []string{"age", "zstd", "od", "tail", "head", "grep", "cut", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("FERRY_REQUIRE_AGE") != "" || tool != "age" {
				t.Fatalf("%s not found (%v): go install filippo.io/age/cmd/...@v1.3.2 and apt-get install zstd", tool, err)
			}
			t.Skipf("age not found (%v); go install filippo.io/age/cmd/...@v1.3.2 (tests/run.sh requires it)", err)
		}
	}
	doc, err := os.ReadFile("../../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte("```\n"+rekeyedPipeline+"\n```")) {
		t.Fatalf("docs/FORMAT.md does not give the rekeyed stock-tool pipeline this test runs:\n%s", rekeyedPipeline)
	}
	old, k2, k3 := newKey(t), newKey(t), newKey(t)
	recs := records(6000, 1000)
	data, m := seal(t, recs, old)
	meta, hdr, payload := splitAge(t, data)
	nh, err := keyring(t, old).Rewrap(meta, hdr, payload, encrypter(t, k2, k3))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	seg, hdrFile := filepath.Join(dir, m.Name()), filepath.Join(dir, m.Name()+".hdr")
	if err := os.WriteFile(seg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hdrFile, nh, 0o644); err != nil {
		t.Fatal(err)
	}
	want := batch.AppendStream(nil, batch.FormatVersion, recs)
	for _, k := range []key{k2, k3} {
		cmd := exec.Command("bash", "-o", "pipefail", "-c", rekeyedPipeline)
		cmd.Env = append(os.Environ(), "SEG="+seg, "HDR="+hdrFile, "IDENTITY="+k.file)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("rekeyed pipeline with key %s: %v\n%s", k.fp, err, stderr.Bytes())
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("rekeyed pipeline printed %d bytes, want the %d bytes of record frames", len(out), len(want))
		}
	}
	cmd := exec.Command("bash", "-o", "pipefail", "-c", rekeyedPipeline)
	cmd.Env = append(os.Environ(), "SEG="+seg, "HDR="+hdrFile, "IDENTITY="+old.file)
	if out, err := cmd.CombinedOutput(); err == nil || !bytes.Contains(out, []byte("no identity matched")) {
		t.Fatalf("rekeyed pipeline with the retired key: %v\n%s", err, out)
	}
}
