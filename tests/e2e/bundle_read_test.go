package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

const e2eWriter = "feedfacecafe0001"

// fillBundledStore fills s's store as a bundle-writing shipper of three
// streams would: parts of "app", "web" and "zz" in bundles, with segments
// of "app" stored alone between them. It returns the writer.
func fillBundledStore(t *testing.T, s *stream) *bundletest.Writer {
	t.Helper()
	st, err := dir.New(s.store)
	if err != nil {
		t.Fatal(err)
	}
	w := bundletest.NewWriter(t, st, e2eWriter)
	all := []string{s.name, "web", "zz"}
	w.Bundle(t, all, 40)
	w.Alone(t, s.name, 25)
	w.Bundle(t, all, 30)
	w.Bundle(t, []string{"web", "zz"}, 10)
	w.Restart()
	w.Bundle(t, []string{s.name, "web"}, 7)
	w.Alone(t, s.name, 3)
	return w
}

// receive, ls, verify and restore read a stream whose segments are
// bundle parts and segments stored alone: the replicas are exact, ls
// lists every segment, verify finds the chain whole; receive goes on
// from its checkpoint when more bundles arrive.
func TestBundledStreamReaders(t *testing.T) {
	s := newStream(t, "app")
	w := fillBundledStore(t, s)

	s.receiveOnce()
	s.wantReplica(bundletest.Want(s.name, 1, w.Last(s.name)), "after receive --once")

	r := mustFerry(t, nil, "ls", "--store", s.store, "--stream", s.name, "--json")
	var listed, bundles []string
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	for sc.Scan() {
		var row struct {
			Segment string `json:"segment"`
			Bundle  string `json:"bundle"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatalf("ls --json line %q: %v", sc.Text(), err)
		}
		listed = append(listed, row.Segment)
		bundles = append(bundles, row.Bundle)
	}
	wantBundles := []string{catalog.BundleKey(e2eWriter, 1), "", catalog.BundleKey(e2eWriter, 2), catalog.BundleKey(e2eWriter, 4), ""}
	if strings.Join(bundles, " ") != strings.Join(wantBundles, " ") {
		t.Errorf("ls --json bundles %q, want %q", bundles, wantBundles)
	}
	want := []string{batch.SegmentName(1, 1, 40), batch.SegmentName(1, 41, 65), batch.SegmentName(1, 66, 95),
		batch.SegmentName(1, 96, 102), batch.SegmentName(1, 103, 105)}
	if strings.Join(listed, " ") != strings.Join(want, " ") {
		t.Fatalf("ls lists %q, want %q", listed, want)
	}
	r = mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
	if !strings.Contains(r.Stdout, "5 segments") {
		t.Errorf("verify does not count 5 segments:\n%s", r)
	}
	mustFerry(t, nil, "verify", "--store", s.store, "--stream", "zz")

	// Another stream, parts only, restored.
	web := filepath.Join(s.dir, "web.out")
	mustFerry(t, nil, "restore", "--store", s.store, "--stream", "web", "--state", filepath.Join(s.dir, "web.state"), "--apply", "file:"+web)
	if got, want := readFile(t, web), bundletest.Want("web", 1, w.Last("web")); !bytes.Equal(got, want) {
		t.Fatalf("restored web: %s", describeDiff(want, got))
	}

	// More, then receive again from the checkpoint.
	w.Bundle(t, []string{s.name, "zz"}, 11)
	w.Alone(t, s.name, 2)
	s.receiveOnce()
	s.wantReplica(bundletest.Want(s.name, 1, w.Last(s.name)), "after the second receive --once")
	cp, ok, err := receiver.LoadCheckpoint(s.state)
	if err != nil || !ok || cp.Bundle == nil || *cp.Bundle != (catalog.BundlePos{Writer: e2eWriter, Number: 5}) {
		t.Fatalf("checkpoint %+v (%v, %v): want its bundle %s/5", cp, ok, err, e2eWriter)
	}
}

// verify reports a damaged part with its bundle, and a bundle whose
// index does not read as a defect with the gap its parts leave; receive
// stops at either, naming the bundle.
func TestBundledDamageReported(t *testing.T) {
	s := newStream(t, "app")
	fillBundledStore(t, s)
	b1 := filepath.Join(s.store, filepath.FromSlash(catalog.BundleKey(e2eWriter, 1)))
	b2 := filepath.Join(s.store, filepath.FromSlash(catalog.BundleKey(e2eWriter, 2)))

	// A byte of app's part in bundle 1 (the first part, past its metadata).
	flipByte(t, b1, 600)
	failFerry(t, nil, []string{catalog.BundleKey(e2eWriter, 1), batch.SegmentName(1, 1, 40), "sha256"},
		"verify", "--store", s.store, "--stream", s.name)
	failFerry(t, nil, []string{catalog.BundleKey(e2eWriter, 1), "damaged"}, s.receiveArgs("--once")...)

	// Bundle 2's index.
	info, err := os.Stat(b2)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, b2, info.Size()-int64(batch.BundleTrailerSize)-5)
	failFerry(t, nil, []string{"bundle " + catalog.BundleKey(e2eWriter, 2), "gap: seq 66..95 missing"},
		"verify", "--store", s.store, "--stream", s.name)
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[at] ^= 0x40
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A many-stream receive applies streams whose segments are bundle parts:
// those in the store when it starts and those bundled while it runs, with
// segments stored alone between them; every replica ends exact.
func TestBundledManyStreamsReceive(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	stDir, state, replicas := filepath.Join(root, "store"), filepath.Join(root, "state"), filepath.Join(root, "replica")
	if err := os.MkdirAll(replicas, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := dir.New(stDir)
	if err != nil {
		t.Fatal(err)
	}
	w := bundletest.NewWriter(t, st, e2eWriter)
	var streams []string
	for i := range 12 {
		streams = append(streams, fmt.Sprintf("s-%02d", i))
	}
	w.Bundle(t, streams, 20)
	w.Alone(t, "s-03", 5)
	w.Bundle(t, streams[2:], 10)

	recv := startFerry(t, nil, "receive", "--store", stDir, "--stream", "s-*", "--state", state,
		"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--poll-min", "50ms", "--poll-max", "200ms")
	exact := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; {
			missing := ""
			for _, s := range streams {
				got, _ := os.ReadFile(filepath.Join(replicas, s+".log"))
				if !bytes.Equal(got, bundletest.Want(s, 1, w.Last(s))) {
					missing = s
					break
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: replica of %s not exact after 60s:\n%s", what, missing, recv.Stderr())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	exact("bundles stored before the start")
	for round := range 5 {
		w.Bundle(t, streams[round:], 7)
		if round == 2 {
			w.Alone(t, "s-05", 3)
			w.Restart()
		}
	}
	exact("bundles stored while it runs")
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receive exited %d:\n%s", code, recv.Stderr())
	}
}

// prune of bundled streams: each stream's prune writes its start marker
// and deletes its segments stored alone; a bundle goes once every stream
// in it is pruned past its part. verify then starts at the start marker.
func TestBundledPrune(t *testing.T) {
	s := newStream(t, "app")
	w := fillBundledStore(t, s)
	for _, stream := range []string{s.name, "web", "zz"} {
		mustFerry(t, nil, "prune", "--store", s.store, "--stream", stream, "--keep-min", "1")
	}
	left, err := filepath.Glob(filepath.Join(s.store, "_bundles", e2eWriter, "*.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	// app's newest part is in bundle 4 (then a segment alone), web's in 4,
	// zz's in 3: bundles 1 and 2 go.
	if len(left) != 2 || filepath.Base(left[0]) != batch.BundleName(3) || filepath.Base(left[1]) != batch.BundleName(4) {
		t.Fatalf("bundles left %q, want 3 and 4", left)
	}
	r := mustFerry(t, nil, "verify", "--store", s.store, "--stream", "web")
	if !strings.Contains(r.Stdout, "pruned") {
		t.Errorf("verify of web does not say where the pruned stream starts:\n%s", r)
	}
	r = mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
	// app's part of bundle 4 (seq 96..102) stays with the bundle, below
	// its start marker (103): listed, not part of its history.
	if want := fmt.Sprintf("seq 96..%d: checksums, sequence and hash chain ok", w.Last(s.name)); !strings.Contains(r.Stdout, want) ||
		!strings.Contains(r.Stdout, "were pruned by retention") {
		t.Errorf("verify of app after the prune does not say %q and that the start was pruned:\n%s", want, r)
	}
}
