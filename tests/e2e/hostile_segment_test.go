package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// Hostile segments, written into a dir store as a writer ignoring every
// limit would: whatever they claim, verify, cat and receive --once must
// stay within max_segment_bytes + 64 MiB of memory (peak RSS of the child
// process, from getrusage), and refuse what is over the limit with an
// error naming the segment and a non-zero exit.
func TestHostileSegmentMemory(t *testing.T) {
	const (
		stream     = "hostile"
		floodCount = 5_000_000
		slack      = 64 << 20
		mib        = 1 << 20
	)
	// A bomb: 2 GiB of zeros in a 64 KiB payload, claiming exactly that
	// (the old code's limit), and the same claiming 24 MiB (under any
	// limit): its payload decompresses past the claim.
	bomb := bombSegment(t, stream, 2<<30, 2<<30)
	liar := bombSegment(t, stream, 24<<20, 2<<30)
	// A flood: 5 M records of 1 byte: 2 bytes each in format 2's record
	// stream (10 MB), 24 framed bytes each (FramedSize, 114 MiB), which a
	// reader's limit holds format 2's records to.
	flood, floodData := floodSegment(t, stream, floodCount)
	t.Logf("bomb %d bytes, flood %d bytes", len(bomb), len(flood))

	type outcome struct {
		ok   bool     // exit 0
		want []string // in the output when not ok
	}
	for _, lim := range []struct {
		name  string
		limit int64
		flags []string
	}{
		{"limit 32MiB", 32 * mib, []string{"--max-segment-bytes", "32MiB"}},
		{"default limit", batch.DefaultMaxSegmentBytes, nil},
	} {
		limitStr := fmt.Sprint(lim.limit)
		for _, seg := range []struct {
			name string
			data []byte
			want outcome
		}{
			{"bomb", bomb, outcome{want: []string{"claims 2147483648 uncompressed bytes (2.0 GiB), over the limit of " + limitStr}}},
			{"lying bomb", liar, outcome{want: []string{"corrupt segment"}}},
			{"flood", flood, map[bool]outcome{
				true:  {ok: true},
				false: {want: []string{fmt.Sprintf("claims %d records, at least %d bytes framed", floodCount, floodCount*batch.RecordOverhead), "over the limit of " + limitStr}},
			}[floodCount*batch.RecordOverhead <= lim.limit]},
		} {
			t.Run(lim.name+"/"+seg.name, func(t *testing.T) {
				dir := t.TempDir()
				st := filepath.Join(dir, "store")
				m, _, err := batch.ParseMeta(seg.data)
				if err != nil {
					t.Fatal(err)
				}
				key := stream + "/" + m.Name()
				if err := os.MkdirAll(filepath.Join(st, stream), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(st, key), seg.data, 0o644); err != nil {
					t.Fatal(err)
				}
				replica := filepath.Join(dir, "replica")
				for _, cmd := range []struct {
					verb string
					args []string
				}{
					{"verify", []string{"verify", "--store", st, "--stream", stream}},
					{"cat", []string{"cat", "--store", st, "--stream", stream}},
					{"receive", []string{"receive", "--once", "--store", st, "--stream", stream,
						"--state", filepath.Join(dir, "state"), "--apply", "file:" + replica}},
				} {
					r := runMeasured(t, append(cmd.args, lim.flags...)...)
					t.Logf("%s: exit %d, peak RSS %.1f MiB (VmHWM; getrusage %.1f MiB), %s", cmd.verb, r.code,
						float64(r.hwm)/mib, float64(r.maxRSS)/mib, r.elapsed.Round(time.Millisecond))
					if peak := max(r.hwm, r.maxRSS); peak > lim.limit+slack {
						t.Errorf("%s: peak RSS %.1f MiB, over max_segment_bytes + 64 MiB (%d MiB)", cmd.verb, float64(peak)/mib, (lim.limit+slack)/mib)
					}
					if seg.want.ok {
						if r.code != 0 {
							t.Errorf("%s: exit %d, want 0:\n%s", cmd.verb, r.code, clip(r.stderr))
						}
						continue
					}
					out := r.stdout + r.stderr
					if r.code == 0 {
						t.Errorf("%s: exit 0, want the segment refused:\n%s", cmd.verb, clip(out))
					}
					for _, w := range append([]string{key}, seg.want.want...) {
						if !strings.Contains(out, w) {
							t.Errorf("%s: output does not mention %q:\n%s", cmd.verb, w, clip(out))
						}
					}
					if cmd.verb == "cat" && r.stdout != "" {
						t.Errorf("cat printed %d bytes of a refused segment", len(r.stdout))
					}
				}
				if !seg.want.ok {
					if data, err := os.ReadFile(replica); err == nil && len(data) > 0 {
						t.Errorf("receive applied %d bytes of a refused segment", len(data))
					}
					return
				}
				got, err := os.ReadFile(replica)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, floodData) {
					t.Errorf("replica: %d bytes, sha256 %x; want the flood's %d bytes, sha256 %x", len(got), sha256.Sum256(got), len(floodData), sha256.Sum256(floodData))
				}
			})
		}
	}
}

// measured is a finished child's outcome and its peak RSS.
type measured struct {
	code           int
	stdout, stderr string
	// maxRSS is the child's peak RSS as getrusage reports it: an upper
	// bound, as Linux counts in it the RSS of this test process when the
	// child was started (exec records the high-water mark of the memory
	// the child shared with it until then). hwm is the child's own,
	// VmHWM of /proc/PID/status read every few milliseconds until it
	// exits: exact but for a peak in the last of them.
	maxRSS, hwm int64 // bytes
	elapsed     time.Duration
}

// runMeasured runs ferry to completion (within 2 minutes) and measures its
// peak RSS.
func runMeasured(t *testing.T, args ...string) measured {
	t.Helper()
	return runMeasuredTo(t, nil, args...)
}

// runMeasuredTo is runMeasured writing ferry's output to w instead of
// keeping it (nil: keep it). A test that measures later children gives
// large output to w: what this process holds when it starts one counts
// in that child's getrusage peak.
func runMeasuredTo(t *testing.T, w io.Writer, args ...string) measured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if w != nil {
		cmd.Stdout = w
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	var hwm int64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	for tick := time.NewTicker(2 * time.Millisecond); ; {
		if v := readVmHWM(status); v > hwm {
			hwm = v
		}
		select {
		case err = <-done:
			tick.Stop()
		case <-tick.C:
			continue
		}
		break
	}
	if _, exited := err.(*exec.ExitError); err != nil && !exited || ctx.Err() != nil {
		t.Fatalf("ferry %s: %v (%s)", strings.Join(args, " "), err, clip(stderr.String()))
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatalf("no rusage for ferry %s", strings.Join(args, " "))
	}
	return measured{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String(),
		maxRSS: ru.Maxrss << 10, hwm: hwm, elapsed: time.Since(start)} // Maxrss is in KiB on Linux
}

// readVmHWM is the VmHWM of a /proc/PID/status file in bytes (0 if it
// cannot be read: the process is gone).
func readVmHWM(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib)
			return kib << 10
		}
	}
	return 0
}

func clip(s string) string {
	if len(s) > 3000 {
		return s[:1500] + "\n...\n" + s[len(s)-1500:]
	}
	return s
}

// bombSegment is the first segment of stream, claiming claim bytes, whose
// payload is one zstd frame of RLE blocks that decompresses to n zeros.
// Its checksums hold: it is what a writer that ignores every limit makes.
func bombSegment(t *testing.T, stream string, claim, n int64) []byte {
	t.Helper()
	const block = 128 << 10 // the largest zstd block
	p := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	p = append(p, 0x00, 0x50) // no content size, no checksum; window 2^(10+10)
	for left := n; left > 0; left -= block {
		size := min(left, block)
		h := uint32(size)<<3 | 1<<1 // RLE
		if left <= block {
			h |= 1 // last block
		}
		p = append(p, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	sum := sha256.Sum256(p)
	m := batch.Meta{
		Format: 1, Stream: stream, Generation: 1, FirstSeq: 1, LastSeq: 1000, Records: 1000,
		MinTime: time.Unix(0, 0).UTC(), MaxTime: time.Unix(0, 0).UTC(),
		UncompressedSize: claim, PayloadSize: int64(len(p)), Compression: "zstd", Encryption: "none",
		PayloadSHA256: fmt.Sprintf("%x", sum), PrevSHA256: batch.ZeroHash, SealedAt: time.Now().UTC(),
	}
	seg, _, err := batch.Assemble(m, p)
	if err != nil {
		t.Fatal(err)
	}
	return seg
}

// floodSegment is the first segment of stream holding n records of one
// byte each, and the bytes they carry.
func floodSegment(t *testing.T, stream string, n int) ([]byte, []byte) {
	t.Helper()
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset(stream, 1, batch.ZeroHash)
	data := make([]byte, n)
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		data[i] = 'a' + byte(i%26)
		if err := b.Add(&batch.Record{Seq: uint64(i + 1), Time: at, Data: data[i : i+1]}); err != nil {
			t.Fatal(err)
		}
	}
	seg, _, err := b.Seal(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return seg, data
}
