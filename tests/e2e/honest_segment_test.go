package e2e

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/testpki"
)

// An honest segment near the limit, of data that does not compress, is
// as large stored as decompressed: a reader holding both would need twice
// the limit. verify, cat and receive --once must apply it within
// max_segment_bytes + 64 MiB of memory (peak RSS of the child process)
// and get every byte right.
func TestHonestSegmentMemory(t *testing.T) {
	const (
		mib   = 1 << 20
		limit = 96 * mib
		slack = 64 << 20
	)
	// The segment is shipped by ferry ship rather than built here: a
	// child's peak RSS from getrusage is at least this process's peak
	// (exec records the high-water mark of the memory they shared).
	s := newStream(t, "honest")
	in := newRandomLines(91 * mib)
	mustFerry(t, in, s.shipArgs("--max-bytes", "95MiB", "--max-age", "1h")...)
	sum := [32]byte(in.sum.Sum(nil))
	names := s.segments()
	if len(names) != 1 {
		t.Fatalf("ship made %d segments, want 1: %v", len(names), names)
	}
	stored, m := segmentHeader(t, s.segmentPath(names[0]))
	t.Logf("segment %s: %.1f MiB stored, %.1f MiB decompressed", names[0], float64(stored)/mib, float64(m.UncompressedSize)/mib)
	if stored > limit || m.UncompressedSize > limit || stored < 90*mib {
		t.Fatalf("segment of %d bytes (%d decompressed) is not near the %d-byte limit", stored, m.UncompressedSize, limit)
	}
	limitFlag := []string{"--max-segment-bytes", fmt.Sprint(limit)}
	for _, cmd := range []struct {
		verb string
		args []string
	}{
		{"verify", []string{"verify", "--store", s.store, "--stream", s.name}},
		{"cat", []string{"cat", "--store", s.store, "--stream", s.name}},
		{"receive", s.receiveArgs("--once")},
	} {
		out := sha256.New() // cat's output, hashed rather than held (see runMeasuredTo)
		r := runMeasuredTo(t, out, append(cmd.args, limitFlag...)...)
		t.Logf("%s: exit %d, peak RSS %.1f MiB (VmHWM; getrusage %.1f MiB), %s", cmd.verb, r.code,
			float64(r.hwm)/mib, float64(r.maxRSS)/mib, r.elapsed.Round(time.Millisecond))
		if r.code != 0 {
			t.Errorf("%s: exit %d, want 0:\n%s", cmd.verb, r.code, clip(r.stderr))
		}
		if peak := max(r.hwm, r.maxRSS); peak > limit+slack {
			t.Errorf("%s: peak RSS %.1f MiB, over max_segment_bytes + 64 MiB (%d MiB)", cmd.verb, float64(peak)/mib, (limit+slack)/mib)
		}
		if got := [32]byte(out.Sum(nil)); cmd.verb == "cat" && got != sum {
			t.Errorf("cat: output sha256 %x; want the %d bytes shipped, sha256 %x", got, 91*mib, sum)
		}
	}
	if got := fileSum(t, s.replica); got != sum {
		t.Errorf("replica: sha256 %x; want the %d bytes shipped, sha256 %x", got, 91*mib, sum)
	}
}

// segmentHeader is the size of the segment file at path and its metadata,
// read without reading the rest of it.
func segmentHeader(t *testing.T, path string) (int64, batch.Meta) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 8+batch.MaxMetaSize)
	n, err := io.ReadFull(f, hdr)
	if err != nil && err != io.ErrUnexpectedEOF {
		t.Fatal(err)
	}
	m, _, err := batch.ParseMeta(hdr[:n])
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return fi.Size(), m
}

// fileSum is the sha256 of the file at path, read as a stream.
func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// randomLines is n bytes of random data in lines of 4 KiB (which do not
// compress), made as they are read.
type randomLines struct {
	rng  *rand.ChaCha8
	left int
	sum  hash.Hash // of what was read
}

func newRandomLines(n int) *randomLines {
	return &randomLines{rng: rand.NewChaCha8([32]byte{18, 2}), left: n, sum: sha256.New()}
}

func (r *randomLines) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	p = p[:min(len(p), r.left)]
	r.rng.Read(p)
	for i := range p {
		if p[i] == '\n' {
			p[i] = 0
		}
		if (r.left-i)%4096 == 1 {
			p[i] = '\n'
		}
	}
	r.left -= len(p)
	r.sum.Write(p)
	return len(p), nil
}

// Over the direct link, the same segment near the limit: receive --listen
// takes it over TLS, stores it in its inbox and applies it within
// max_segment_bytes + 64 MiB of peak RSS (VmHWM of the long-running
// child). Its link server streams so large a SEGMENT frame into the
// inbox instead of reading it into memory, where it stayed while the
// receiver decoded the segment.
func TestHonestSegmentMemoryLink(t *testing.T) {
	const (
		mib   = 1 << 20
		limit = 96 * mib
		slack = 64 << 20
	)
	s := newStream(t, "honestlink")
	pki := testpki.New(t)
	cert, key := pki.Issue(t, "receiver", true)
	addr := ferrytest.FreeAddr(t)
	recv := startReceiver(t, s, addr, "--tls-cert", cert, "--tls-key", key, "--token", linkToken,
		"--max-segment-bytes", fmt.Sprint(limit))
	pid := pidOf(t, s.state)
	in := newRandomLines(91 * mib)
	start := time.Now()
	mustFerry(t, in, "ship", "--store", "tcp://"+addr, "--tls-ca", pki.CAFile, "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--max-bytes", "95MiB", "--max-age", "1h")
	ferrytest.Eventually(t, time.Minute, "replica complete", func() (bool, string) {
		fi, err := os.Stat(s.replica)
		return err == nil && fi.Size() == 91*mib, fmt.Sprint(fi, err)
	})
	elapsed := time.Since(start)
	sum := [32]byte(in.sum.Sum(nil))
	peak := procStatus(t, pid, "VmHWM")
	inbox := filepath.Join(s.state, "inbox", s.name)
	ents, err := os.ReadDir(inbox)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if _, _, _, ok := batch.ParseSegmentName(e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	if len(names) != 1 {
		t.Fatalf("the inbox holds %d segments, want 1: %.200v", len(names), names)
	}
	stored, m := segmentHeader(t, filepath.Join(inbox, names[0]))
	t.Logf("segment %s: %.1f MiB stored, %.1f MiB decompressed; shipped and applied in %s; receiver peak RSS %.1f MiB (VmHWM)",
		names[0], float64(stored)/mib, float64(m.UncompressedSize)/mib, elapsed.Round(time.Millisecond), float64(peak)/mib)
	if stored > limit || stored < 90*mib {
		t.Fatalf("segment of %d bytes is not near the %d-byte limit", stored, limit)
	}
	if peak > limit+slack {
		t.Errorf("receive --listen: peak RSS %.1f MiB, over max_segment_bytes + 64 MiB (%d MiB)", float64(peak)/mib, (limit+slack)/mib)
	}
	if got := fileSum(t, s.replica); got != sum {
		t.Errorf("replica: sha256 %x; want the %d bytes shipped, sha256 %x", got, 91*mib, sum)
	}
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d:\n%s", code, recv)
	}
}
