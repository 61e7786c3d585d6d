//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/treetest"
)

// Mailbox files that get appends and index files patched in place, as a
// mail server keeps them, replicated by the binary while the receiver is
// killed -9 again and again (and the shipper once): the changes travel as
// append and delta records (ferry cat --json shows them), and after every
// phase the replica equals the source.
func TestDirTreeAppendsAndDeltasSurviveKill9(t *testing.T) {
	t.Parallel()
	s := newStream(t, "maildelta")
	src, dst := filepath.Join(s.dir, "src"), filepath.Join(s.dir, "dst")
	rng := seededRand(t)
	text := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefghij klmnopqrstuvwxyz\n"[rng.IntN(28)]
		}
		return b
	}
	mboxes, indexes := 6, 4
	for i := range mboxes {
		p := filepath.Join(src, fmt.Sprintf("user%d/mbox", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, text(150<<10+rng.IntN(100<<10)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i := range indexes {
		p := filepath.Join(src, fmt.Sprintf("user%d/cyrus.index", i))
		if err := os.WriteFile(p, text(512<<10), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	shipArgs := []string{"ship", "--store", s.store, "--stream", s.name, "--spool", s.spool, "--source", "dir:" + src,
		"--max-bytes", "256KiB", "--max-age", "50ms"}
	recvArgs := []string{"receive", "--store", s.store, "--stream", s.name, "--state", s.state, "--apply", "dir:" + dst,
		"--poll-min", "20ms", "--poll-max", "100ms"}
	ship := startFerry(t, nil, shipArgs...)
	recv := startFerry(t, nil, recvArgs...)
	change := func() {
		for i := range mboxes {
			f, err := os.OpenFile(filepath.Join(src, fmt.Sprintf("user%d/mbox", i)), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			for range 1 + rng.IntN(3) {
				f.Write(append([]byte("From someone\n"), text(200+rng.IntN(2000))...))
			}
			f.Close()
		}
		for i := range indexes {
			f, err := os.OpenFile(filepath.Join(src, fmt.Sprintf("user%d/cyrus.index", i)), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for range 1 + rng.IntN(2) {
				f.WriteAt(text(4<<10), int64(rng.IntN(512<<10-4<<10)))
			}
			f.Close()
		}
	}
	for round := range 8 {
		change()
		time.Sleep(time.Duration(150+rng.IntN(250)) * time.Millisecond)
		if round%2 == 1 {
			recv.Kill9()
			recv = startFerry(t, nil, recvArgs...)
		}
		if round == 4 {
			ship.Kill9()
			ship = startFerry(t, nil, shipArgs...)
		}
	}
	converge := func() {
		want := treeState(t, src)
		ferrytest.Eventually(t, 60*time.Second, "replica equals the source", func() (bool, string) {
			if ship.Exited() || recv.Exited() {
				t.Fatalf("a process exited:\n%s\n%s", ship, recv)
			}
			got, err := treetest.Walk(dst, treeOptions)
			if err != nil {
				return false, "replica still changing: " + err.Error()
			}
			d := diffTrees(want, got)
			return d == "", d
		})
	}
	// Under load the changes above may all ride in the first puts (and the
	// shipper's kill ships every file whole again). Changes made once the
	// replica has caught up go as appends and deltas (an index's first
	// change after its put builds its block map; the next ones are deltas),
	// with the receiver killed while it applies them.
	converge()
	for range 3 {
		change()
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		recv.Kill9()
		recv = startFerry(t, nil, recvArgs...)
		converge()
	}

	// Messages written now and patched in place soon after: the source
	// still has their block maps (dir_recent.go), so even the first patch
	// of each is a delta of its 1 KiB blocks. The receiver is killed while
	// it applies them; then the shipper is killed after a second patch
	// (its restart has no maps: whole files or the index's maps).
	msgs := 8
	msg := func(i int) string { return filepath.Join(src, fmt.Sprintf("user%d/Maildir/cur/msg%d", i%mboxes, i)) }
	for i := range msgs {
		os.MkdirAll(filepath.Dir(msg(i)), 0o755)
		if err := os.WriteFile(msg(i), text(12<<10+rng.IntN(40<<10)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	converge()
	patchMsgs := func() {
		for i := range msgs {
			f, err := os.OpenFile(msg(i), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(text(1000), int64(rng.IntN(8<<10)))
			f.Close()
		}
	}
	patchMsgs()
	time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
	recv.Kill9()
	recv = startFerry(t, nil, recvArgs...)
	converge()
	patchMsgs()
	time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
	ship.Kill9()
	ship = startFerry(t, nil, shipArgs...)
	converge()

	ship.Terminate(30 * time.Second)
	recv.Terminate(30 * time.Second)
	mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)

	out := mustFerry(t, nil, "cat", "--json", "--store", s.store, "--stream", s.name).Stdout
	ops, msgDeltas := map[string]int{}, map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct {
			Op    string `json:"op"`
			Key   string `json:"key"`
			Delta *struct {
				BaseSize int64  `json:"base_size"`
				Size     int64  `json:"size"`
				SHA256   string `json:"sha256"`
				Bytes    int    `json:"bytes"`
				Error    string `json:"error"`
			} `json:"delta"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("ferry cat --json line %q: %v", line, err)
		}
		ops[r.Op]++
		if r.Op == "delta" && strings.Contains(r.Key, "/msg") {
			msgDeltas[r.Key]++
		}
		if r.Op == "append" || r.Op == "delta" {
			if r.Delta == nil || r.Delta.Error != "" || len(r.Delta.SHA256) != 64 || r.Delta.Bytes == 0 {
				t.Fatalf("ferry cat --json shows %s %q as %+v", r.Op, r.Key, r.Delta)
			}
		}
	}
	if ops["append"] < mboxes || ops["delta"] < indexes {
		t.Fatalf("ops in the stream: %v; want appends to every mbox and deltas to every index", ops)
	}
	if len(msgDeltas) < msgs {
		t.Fatalf("deltas of the messages patched soon after they were written: %v; want one for each of the %d at least", msgDeltas, msgs)
	}
	t.Logf("ops in the stream: %v", ops)

	// ferry cat --sum counts the same records by op, and the segments as
	// the store holds them.
	var sum struct {
		Segments int64 `json:"segments"`
		Stored   int64 `json:"stored_bytes"`
		Framed   int64 `json:"framed_bytes"`
		Ops      []struct {
			Op         string `json:"op"`
			Records    int    `json:"records"`
			Framing    int64  `json:"framing_bytes"`
			Keys       int64  `json:"key_bytes"`
			Header     int64  `json:"header_bytes"`
			Content    int64  `json:"content_bytes"`
			Compressed int64  `json:"compressed_alone_bytes"`
		} `json:"ops"`
	}
	out = mustFerry(t, nil, "cat", "--sum", "--json", "--store", s.store, "--stream", s.name).Stdout
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("ferry cat --sum --json: %q: %v", out, err)
	}
	segs, _ := filepath.Glob(filepath.Join(s.store, s.name, "*.seg.zst"))
	var stored, framed int64
	for _, p := range segs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		stored += fi.Size()
	}
	summed := map[string]int{}
	for _, o := range sum.Ops {
		summed[o.Op] = o.Records
		framed += o.Framing + o.Keys + o.Header + o.Content
		if o.Compressed <= 0 {
			t.Errorf("ferry cat --sum: %s compressed to %d bytes", o.Op, o.Compressed)
		}
	}
	if sum.Segments != int64(len(segs)) || sum.Stored != stored || sum.Framed != framed || !maps.Equal(summed, ops) {
		t.Fatalf("ferry cat --sum: %d segments, %d bytes stored, %d framed, records %v; the store holds %d segments of %d bytes, the ops add up to %d framed, cat --json counted %v",
			sum.Segments, sum.Stored, sum.Framed, summed, len(segs), stored, framed, ops)
	}
}
