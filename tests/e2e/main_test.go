// Package e2e runs the real ferry binary as separate processes against real
// files: shipping, receiving, inspecting, and the faults in between (kill -9,
// damaged and missing segments, bad configuration).
//
// TestMain builds ./cmd/ferry once. Every test owns its temp dirs, stream,
// spool and state, kills the processes it started on cleanup, and waits by
// polling with deadlines rather than by fixed sleeps.
//
// Tests that inject faults at random moments log their seed; set
// FERRY_E2E_SEED to replay one.
package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/receiver"
)

// linkToken is the token of the tests' tcp:// links (16 bytes at least,
// as ferry requires).
const linkToken = "e2e-link-token-5f0c2a9d"

// ferryBin is the binary TestMain built.
var ferryBin string

func TestMain(m *testing.M) {
	os.Exit(ferrytest.Main(m, &ferryBin))
}

// seededRand returns a generator seeded from FERRY_E2E_SEED or the clock,
// logging the seed so a failure can be replayed.
func seededRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FERRY_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FERRY_E2E_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with FERRY_E2E_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// ferry runs the binary with args and stdin (nil for none) to completion.
func ferry(t *testing.T, stdin io.Reader, args ...string) ferrytest.Result {
	t.Helper()
	return ferrytest.Cmd{Bin: ferryBin}.Run(t, stdin, args...)
}

// mustFerry is ferry that fails the test unless the run exits 0.
func mustFerry(t *testing.T, stdin io.Reader, args ...string) ferrytest.Result {
	t.Helper()
	r := ferry(t, stdin, args...)
	if r.Code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	return r
}

// failFerry is ferry that fails the test unless the run exits non-zero
// with output containing every one of want.
func failFerry(t *testing.T, stdin io.Reader, want []string, args ...string) ferrytest.Result {
	t.Helper()
	r := ferry(t, stdin, args...)
	if r.Code == 0 {
		t.Fatalf("want a non-zero exit:\n%s", r)
	}
	for _, w := range want {
		if !strings.Contains(r.Output(), w) {
			t.Errorf("output does not mention %q:\n%s", w, r)
		}
	}
	return r
}

// startFerry starts a long-running ferry (ship with a tail source, receive
// without --once), killed on test cleanup if still running.
func startFerry(t *testing.T, stdin io.Reader, args ...string) *ferrytest.Process {
	t.Helper()
	return ferrytest.Cmd{Bin: ferryBin}.Start(t, stdin, args...)
}

// stream is one test's stream with its own store, spool, state and replica.
type stream struct {
	t       *testing.T
	dir     string
	name    string
	store   string
	spool   string
	state   string
	replica string
}

func newStream(t *testing.T, name string) *stream {
	dir := t.TempDir()
	return &stream{
		t:       t,
		dir:     dir,
		name:    name,
		store:   filepath.Join(dir, "store"),
		spool:   filepath.Join(dir, "spool"),
		state:   filepath.Join(dir, "state"),
		replica: filepath.Join(dir, "replica.out"),
	}
}

// streamDir is where the directory store keeps this stream's segments.
func (s *stream) streamDir() string { return filepath.Join(s.store, s.name) }

func (s *stream) shipArgs(extra ...string) []string {
	return append([]string{"ship", "--store", s.store, "--stream", s.name, "--spool", s.spool}, extra...)
}

func (s *stream) receiveArgs(extra ...string) []string {
	return append([]string{"receive", "--store", s.store, "--stream", s.name, "--state", s.state,
		"--apply", "file:" + s.replica}, extra...)
}

// ship runs ferry ship with data on stdin and wants exit 0.
func (s *stream) ship(data []byte, extra ...string) ferrytest.Result {
	s.t.Helper()
	return mustFerry(s.t, bytes.NewReader(data), s.shipArgs(extra...)...)
}

// receiveOnce runs ferry receive --once into the replica and wants exit 0.
func (s *stream) receiveOnce(extra ...string) ferrytest.Result {
	s.t.Helper()
	return mustFerry(s.t, nil, s.receiveArgs(append([]string{"--once"}, extra...)...)...)
}

// notYet reports whether r failed only because a shipper started moments
// ago has not created its store or stored a first segment yet (read-only
// verbs refuse both, loudly): a poll then just tries again.
func notYet(r ferrytest.Result) bool {
	return r.Code != 0 && (strings.Contains(r.Stderr, "does not exist (this verb only reads a store") ||
		strings.Contains(r.Stderr, "has no segments in"))
}

// pollReceiveOnce is receiveOnce for a poll racing a shipper's start: a
// store the shipper has not created yet is not a failure.
func (s *stream) pollReceiveOnce() {
	s.t.Helper()
	if r := ferry(s.t, nil, s.receiveArgs("--once")...); r.Code != 0 && !notYet(r) {
		s.t.Fatalf("want exit 0:\n%s", r)
	}
}

// pollCat is ferry cat of the stream for a poll racing a shipper's start:
// what the store holds, empty while it holds nothing yet.
func (s *stream) pollCat() string {
	s.t.Helper()
	r := ferry(s.t, nil, "cat", "--store", s.store, "--stream", s.name)
	if r.Code != 0 && !notYet(r) {
		s.t.Fatalf("want exit 0:\n%s", r)
	}
	return r.Stdout
}

func (s *stream) verify() ferrytest.Result {
	s.t.Helper()
	return ferry(s.t, nil, "verify", "--store", s.store, "--stream", s.name)
}

// readReplica returns the replica file (empty if it does not exist yet).
func (s *stream) readReplica() []byte {
	s.t.Helper()
	data, err := os.ReadFile(s.replica)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.t.Fatal(err)
	}
	return data
}

// wantReplica fails the test unless the replica is exactly want.
func (s *stream) wantReplica(want []byte, what string) {
	s.t.Helper()
	if got := s.readReplica(); !bytes.Equal(got, want) {
		s.t.Fatalf("replica %s: %s", what, describeDiff(want, got))
	}
}

// segments lists the stream's segment files in the store, sorted (which is
// seq order: names are fixed-width hex).
func (s *stream) segments() []string {
	s.t.Helper()
	ents, err := os.ReadDir(s.streamDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg.zst") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names
}

// segmentPath is the store file of segment name.
func (s *stream) segmentPath(name string) string { return filepath.Join(s.streamDir(), name) }

// middleSegment returns the name of a segment with segments on both sides;
// it needs at least three.
func (s *stream) middleSegment() string {
	s.t.Helper()
	names := s.segments()
	if len(names) < 3 {
		s.t.Fatalf("want at least 3 segments in %s, have %d", s.streamDir(), len(names))
	}
	return names[len(names)/2]
}

// checkpointSeq is last_seq in the receiver's checkpoint.
func (s *stream) checkpointSeq() uint64 {
	s.t.Helper()
	return readCheckpoint(s.t, s.state).LastSeq
}

// checkpoint is what the tests read of a receiver's checkpoint.
type checkpoint struct {
	LastSeq uint64
	Applier struct {
		Size int64 `json:"size"` // the file applier's replica size
	}
}

// readCheckpoint reads the checkpoint in the state dir dir, as ferry
// status does.
func readCheckpoint(t *testing.T, dir string) checkpoint {
	t.Helper()
	cp, ok := tryCheckpoint(t, dir)
	if !ok {
		t.Fatalf("read checkpoint in %s: there is none", dir)
	}
	return cp
}

// tryCheckpoint is readCheckpoint for a state dir that may have none yet
// (ok false).
func tryCheckpoint(t *testing.T, dir string) (_ checkpoint, ok bool) {
	t.Helper()
	cp, ok, err := receiver.LoadCheckpoint(dir)
	if err != nil {
		t.Fatalf("read checkpoint in %s: %v", dir, err)
	}
	out := checkpoint{LastSeq: cp.LastSeq}
	if cp.Applier != nil {
		if err := json.Unmarshal(cp.Applier, &out.Applier); err != nil {
			t.Fatalf("checkpoint in %s: applier state %s: %v", dir, cp.Applier, err)
		}
	}
	return out, ok
}

// segInfo is one line of ferry ls --json.
type segInfo struct {
	Segment          string `json:"segment"`
	Size             int64  `json:"size"`
	Format           int    `json:"format"`
	Stream           string `json:"stream"`
	Generation       uint32 `json:"generation"`
	FirstSeq         uint64 `json:"first_seq"`
	LastSeq          uint64 `json:"last_seq"`
	Records          uint64 `json:"records"`
	UncompressedSize int64  `json:"uncompressed_size"`
}

func (s *stream) lsJSON() []segInfo {
	s.t.Helper()
	r := mustFerry(s.t, nil, "ls", "--json", "--store", s.store, "--stream", s.name)
	var out []segInfo
	dec := json.NewDecoder(strings.NewReader(r.Stdout))
	for dec.More() {
		var si segInfo
		if err := dec.Decode(&si); err != nil {
			s.t.Fatalf("ls --json output: %v\n%s", err, r)
		}
		out = append(out, si)
	}
	return out
}

// segmentSeqs parses the seq range out of a segment name
// (GGGGGGGG-FFFFFFFFFFFFFFFF-LLLLLLLLLLLLLLLL.seg.zst, lower-case hex).
func segmentSeqs(t *testing.T, name string) (first, last uint64) {
	t.Helper()
	parts := strings.Split(strings.TrimSuffix(name, ".seg.zst"), "-")
	if len(parts) != 3 || len(parts[0]) != 8 || len(parts[1]) != 16 || len(parts[2]) != 16 {
		t.Fatalf("%q is not a segment name", name)
	}
	first, err1 := strconv.ParseUint(parts[1], 16, 64)
	last, err2 := strconv.ParseUint(parts[2], 16, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("%q is not a segment name", name)
	}
	return first, last
}

// payloadOffset is where a segment's zstd payload starts: after the
// skippable metadata frame (u32 LE magic, u32 LE length, body).
func payloadOffset(t *testing.T, seg []byte) int {
	t.Helper()
	if len(seg) < 8 || binary.LittleEndian.Uint32(seg) != 0x184D2A5E {
		t.Fatalf("segment does not start with ferry's metadata frame")
	}
	return 8 + int(binary.LittleEndian.Uint32(seg[4:]))
}

// logLines returns n deterministic log-like lines numbered from first, each
// 60-120 bytes including its newline.
func logLines(seed uint64, first, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, uint64(first)))
	levels := [...]string{"INFO ", "DEBUG", "WARN ", "ERROR"}
	const filler = "abcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFGHIJKLMNOPQRSTUVWXYZ=abcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, n*92)
	for i := first; i < first+n; i++ {
		start := len(out)
		size := 60 + rng.IntN(61)
		out = append(out, "2026-03-01T"...)
		out = appendPad(out, (i/3600)%24, 2)
		out = append(out, ':')
		out = appendPad(out, (i/60)%60, 2)
		out = append(out, ':')
		out = appendPad(out, i%60, 2)
		out = append(out, ' ')
		out = append(out, levels[rng.IntN(len(levels))]...)
		out = append(out, " svc-"...)
		out = appendPad(out, rng.IntN(40), 2)
		out = append(out, " n="...)
		out = strconv.AppendInt(out, int64(i), 10)
		out = append(out, " req="...)
		out = strconv.AppendUint(out, rng.Uint64()>>20, 16)
		out = append(out, ' ')
		if pad := size - 1 - (len(out) - start); pad > 0 {
			off := rng.IntN(len(filler) - pad + 1)
			out = append(out, filler[off:off+pad]...)
		}
		out = append(out, '\n')
	}
	return out
}

func appendPad(b []byte, v, width int) []byte {
	s := strconv.Itoa(v)
	for range width - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

// lines splits data into lines, each keeping its newline.
func lines(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, data)
			break
		}
		out = append(out, data[:i+1])
		data = data[i+1:]
	}
	return out
}

// prefixLines returns the first n lines of data.
func prefixLines(data []byte, n int) []byte {
	off := 0
	for range n {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return data
		}
		off += i + 1
	}
	return data[:off]
}

// describeDiff explains how got differs from want, by line: the first line
// that differs, and the sizes.
func describeDiff(want, got []byte) string {
	if bytes.Equal(want, got) {
		return "identical"
	}
	wl, gl := lines(want), lines(got)
	for i := 0; i < max(len(wl), len(gl)); i++ {
		switch {
		case i >= len(wl):
			return fmt.Sprintf("%d extra line(s) after the expected %d; first extra line %d: %q (have %d lines/%d bytes, want %d lines/%d bytes)",
				len(gl)-len(wl), len(wl), i+1, gl[i], len(gl), len(got), len(wl), len(want))
		case i >= len(gl):
			return fmt.Sprintf("missing %d line(s) from line %d on: want %q next (have %d lines/%d bytes, want %d lines/%d bytes)",
				len(wl)-len(gl), i+1, wl[i], len(gl), len(got), len(wl), len(want))
		case !bytes.Equal(wl[i], gl[i]):
			return fmt.Sprintf("first divergence at line %d: want %q, got %q (have %d lines/%d bytes, want %d lines/%d bytes)",
				i+1, wl[i], gl[i], len(gl), len(got), len(wl), len(want))
		}
	}
	return "differs"
}
