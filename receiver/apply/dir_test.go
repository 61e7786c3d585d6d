//go:build linux

package apply_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/treetest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// dirHdr is the dirtree record header (docs/DIRTREE.md).
func dirHdr(mode uint32, mtime int64, size, off int64, sum *[32]byte) []byte {
	return dirtree.AppendHeader(nil, mode, mtime, size, off, sum)
}

// dirT is a fixed base time for records.
var dirT = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC).UnixNano()

// dirRecs builds dirtree records, numbering them from seq 1.
type dirRecs struct{ seq uint64 }

func (r *dirRecs) rec(op, key string, data []byte) batch.Record {
	r.seq++
	return batch.Record{Seq: r.seq, Op: op, Key: []byte(key), Data: data}
}

func (r *dirRecs) put(key string, mode uint32, content string) batch.Record {
	sum := sha256.Sum256([]byte(content))
	return r.rec("put", key, append(dirHdr(mode, dirT+int64(len(key)), int64(len(content)), 0, &sum), content...))
}

func (r *dirRecs) mkdir(key string, mode uint32) batch.Record {
	return r.rec("mkdir", key, dirHdr(mode, dirT-int64(len(key))*1e9, 0, 0, nil))
}

func (r *dirRecs) symlink(key, target string) batch.Record {
	return r.rec("symlink", key, append(dirHdr(0o777, dirT+7, int64(len(target)), 0, nil), target...))
}

func (r *dirRecs) attr(key string, mode uint32, content string) batch.Record {
	sum := sha256.Sum256([]byte(content))
	return r.rec("attr", key, dirHdr(mode, dirT+99, int64(len(content)), 0, &sum))
}

func (r *dirRecs) del(key string) batch.Record   { return r.rec("del", key, nil) }
func (r *dirRecs) rmdir(key string) batch.Record { return r.rec("rmdir", key, nil) }

// chunks splits content into chunk records of n bytes.
func (r *dirRecs) chunks(key string, mode uint32, content string, n int) []batch.Record {
	sum := sha256.Sum256([]byte(content))
	var out []batch.Record
	for off := 0; off < len(content); off += n {
		end := min(off+n, len(content))
		var s *[32]byte
		if end == len(content) {
			s = &sum
		}
		out = append(out, r.rec("chunk", key, append(dirHdr(mode, dirT+3, int64(len(content)), int64(off), s), content[off:end]...)))
	}
	return out
}

func dirMeta(rs []batch.Record) *batch.Meta {
	m := &batch.Meta{Stream: "tree", Generation: 1, Records: uint64(len(rs))}
	if len(rs) > 0 {
		m.FirstSeq, m.LastSeq = rs[0].Seq, rs[len(rs)-1].Seq
	}
	return m
}

func newDirApplier(t *testing.T, root string, state json.RawMessage) *apply.Dir {
	t.Helper()
	a := &apply.Dir{Root: root}
	if err := a.Restore(state); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func dirApply(t *testing.T, a *apply.Dir, rs ...batch.Record) {
	t.Helper()
	if err := a.Apply(context.Background(), dirMeta(rs), batch.RecordsOf(rs)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func dirState(t *testing.T, a *apply.Dir) json.RawMessage {
	t.Helper()
	st, err := a.State()
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	return st
}

// dirWalk describes every path under root by its type, content or link
// target, all its mode bits and its mtime to the nanosecond.
func dirWalk(t *testing.T, root string) treetest.Tree {
	t.Helper()
	return treetest.Read(t, root, treetest.Options{Mode: 0o7777, Mtime: time.Nanosecond})
}

func diffTrees(want, got treetest.Tree) string {
	return treetest.Diff("want", want, "got", got)
}

func TestDirOps(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	var r dirRecs
	big := strings.Repeat("0123456789", 25) + "tail"
	rs := []batch.Record{
		r.mkdir(".", 0o711),
		r.mkdir("a", 0o750),
		r.put("a/f", 0o640, "hello\n"),
		r.put("a/empty", 0o600, ""),
		r.put("a/g", 0o4755, "setuid\n"),
		r.symlink("a/out", "/etc/passwd"),
		r.put("deep/er/file", 0o644, "parents made on the way\n"),
	}
	rs = append(rs, r.chunks("a/big", 0o644, big, 64)...)
	dirApply(t, a, rs...)
	got := dirWalk(t, root)
	want := treetest.Tree{
		".":            {Kind: "dir", Mode: 0o711, Mtime: dirT - 1e9},
		"a":            {Kind: "dir", Mode: 0o750, Mtime: dirT - 1e9},
		"a/f":          {Kind: "file", Mode: 0o640, Mtime: dirT + 3, Content: "hello\n"},
		"a/empty":      {Kind: "file", Mode: 0o600, Mtime: dirT + 7, Content: ""},
		"a/g":          {Kind: "file", Mode: 0o4755, Mtime: dirT + 3, Content: "setuid\n"},
		"a/out":        {Kind: "symlink", Mtime: dirT + 7, Target: "/etc/passwd"},
		"a/big":        {Kind: "file", Mode: 0o644, Mtime: dirT + 3, Content: big},
		"deep":         got["deep"], // made on the way: mode and time are the applier's
		"deep/er":      got["deep/er"],
		"deep/er/file": {Kind: "file", Mode: 0o644, Mtime: dirT + 12, Content: "parents made on the way\n"},
	}
	if d := diffTrees(want, got); d != "" {
		t.Fatalf("tree after the first segment:\n%s", d)
	}

	// Type changes, attr, deletes of present and missing paths.
	rs = []batch.Record{
		r.attr("a/f", 0o600, "hello\n"),
		r.put("a/out", 0o644, "was a symlink\n"),
		r.mkdir("a/big", 0o700), // file -> directory
		r.put("a/big/x", 0o644, "x"),
		r.symlink("deep", "/tmp"), // directory -> symlink
		r.del("a/empty"),
		r.del("a/empty"),
		r.del("no/such/path"),
		r.rmdir("gone"),
	}
	dirApply(t, a, rs...)
	got = dirWalk(t, root)
	want = treetest.Tree{
		".":       want["."],
		"a":       want["a"],
		"a/f":     {Kind: "file", Mode: 0o600, Mtime: dirT + 99, Content: "hello\n"},
		"a/g":     want["a/g"],
		"a/out":   {Kind: "file", Mode: 0o644, Mtime: dirT + 5, Content: "was a symlink\n"},
		"a/big":   {Kind: "dir", Mode: 0o700, Mtime: dirT - 5e9},
		"a/big/x": {Kind: "file", Mode: 0o644, Mtime: dirT + 7, Content: "x"},
		"deep":    {Kind: "symlink", Mtime: dirT + 7, Target: "/tmp"},
	}
	if d := diffTrees(want, got); d != "" {
		t.Fatalf("tree after the second segment:\n%s", d)
	}
	if _, err := os.Stat("/tmp"); err != nil {
		t.Fatal("the symlink target outside the tree was touched")
	}
}

// Baseline markers change nothing: not the tree, not a file being
// assembled across them (the source never ships one there, but a marker
// must not be what breaks it).
func TestDirBaselineMarkers(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	var r dirRecs
	begin := []byte(`{"version":1,"started_at":"2025-03-04T05:06:07Z"}`)
	end := []byte(`{"version":1,"started_at":"2025-03-04T05:06:07Z","begin_seq":3,"paths":2,"later":"ignored"}`)
	big := strings.Repeat("x", 100)
	chunks := r.chunks("big", 0o644, big, 64)
	rs := []batch.Record{
		r.mkdir(".", 0o755),
		r.put("f", 0o644, "before\n"),
		r.rec("baseline-begin", ".", begin),
		r.mkdir(".", 0o755),
		r.put("f", 0o644, "before\n"),
		chunks[0],
	}
	dirApply(t, a, rs...)
	dirApply(t, a, r.rec("baseline-end", ".", end))
	dirApply(t, a, chunks[1])
	got := dirWalk(t, root)
	if got["f"].Content != "before\n" || got["big"].Content != big || len(got) != 3 {
		t.Fatalf("tree after baseline markers: %+v", got)
	}
}

// A chunked file spanning segments survives in the applier state, and a
// restart continues it.
func TestDirChunksAcrossRestart(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	var r dirRecs
	content := strings.Repeat("abcdefghij", 100)
	cs := r.chunks("big", 0o644, content, 300)
	a := newDirApplier(t, root, nil)
	dirApply(t, a, cs[:2]...)
	st := dirState(t, a)
	if !strings.Contains(string(st), `"offset":600`) {
		t.Fatalf("state after two chunks: %s", st)
	}
	if _, err := os.Lstat(filepath.Join(root, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a partly received file is visible: %v", err)
	}
	a.Close()
	b := newDirApplier(t, root, st)
	dirApply(t, b, cs[2:]...)
	if got, _ := os.ReadFile(filepath.Join(root, "big")); string(got) != content {
		t.Fatalf("assembled %d bytes, want %d", len(got), len(content))
	}
	if _, err := os.Lstat(filepath.Join(root, ".ferry-staging")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staging directory left behind: %v", err)
	}
	if st := dirState(t, b); string(st) != "{}" {
		t.Fatalf("state after the last chunk: %s", st)
	}
}

// dirScenario is a stream in segments exercising every op, type changes,
// a chunked file spanning segments, a chunked file abandoned for another
// record, and one published and deleted again within a segment.
func dirScenario() [][]batch.Record {
	var r dirRecs
	big := strings.Repeat("0123456789", 3) + "xyz"
	other := strings.Repeat("Z", 25)
	seg1 := []batch.Record{r.mkdir(".", 0o755), r.mkdir("a", 0o755), r.put("a/f1", 0o644, "one"), r.put("a/f2", 0o600, "two"),
		r.mkdir("b", 0o700), r.symlink("b/l", "/etc"), r.put("c", 0o644, "see")}
	bc := r.chunks("big", 0o644, big, 10)
	seg1 = append(seg1, bc[0])
	seg2 := []batch.Record{bc[1]}
	seg3 := []batch.Record{bc[2], bc[3], r.put("a/f1", 0o644, "one again"), r.del("a/f2"), r.attr("c", 0o600, "see"),
		r.mkdir("d", 0o755), r.put("d/x", 0o644, "x")}
	seg4 := []batch.Record{r.put("a", 0o644, "a is a file now"), r.mkdir("c", 0o750), r.put("c/y", 0o644, "y"),
		r.symlink("d", "/tmp"), r.rmdir("b"), r.del("big")}
	seg4 = append(seg4, r.chunks("big", 0o640, other, 10)...)
	ab := r.chunks("abandoned", 0o644, strings.Repeat("q", 30), 10)
	seg5 := []batch.Record{ab[0], ab[1], r.put("e", 0o644, "e"), r.mkdir(".", 0o751)}
	seg5 = append(seg5, r.chunks("c/z", 0o644, strings.Repeat("z", 15), 10)[:1]...)
	seg6 := append(r.chunks("c/z", 0o644, strings.Repeat("z", 15), 10), r.del("nothing/here"), r.put("f", 0o644, "f"))
	// Paths written below a directory and then the directory replaced, in
	// one segment: a replay meets the replacement first (a symlink or file
	// where the directory was) and must skip what the segment undoes.
	seg7 := []batch.Record{r.mkdir("g", 0o755), r.mkdir("k", 0o755), r.mkdir("n", 0o755)}
	mc := r.chunks("m", 0o644, strings.Repeat("m", 25), 10)
	seg7 = append(seg7, mc[0])
	seg8 := append([]batch.Record{}, mc[1:]...)
	seg8 = append(seg8, r.put("m", 0o644, "m replaced"), r.put("g/h", 0o644, "h"), r.symlink("g", "/tmp"),
		r.put("k/l", 0o644, "l"), r.attr("k/l", 0o600, "l"), r.put("k", 0o644, "k is a file"))
	seg8 = append(seg8, r.chunks("n/o", 0o644, strings.Repeat("o", 25), 10)...)
	seg8 = append(seg8, r.symlink("n", "/"))
	return append([][]batch.Record{seg1, seg2, seg3, seg4, seg5, seg6, seg7, seg8}, dirDeltaScenario(&r)...)
}

// A crash anywhere (after any record of any segment, before that
// segment's checkpoint) followed by a restart from the checkpoint and a
// replay converges to the same tree as a run without crashes.
func TestDirReplayConverges(t *testing.T) {
	segs := dirScenario()
	refRoot := filepath.Join(t.TempDir(), "ref")
	ref := newDirApplier(t, refRoot, nil)
	for _, s := range segs {
		dirApply(t, ref, s...)
	}
	want := dirWalk(t, refRoot)
	if _, ok := want["big"]; !ok || want["big"].Content != strings.Repeat("Z", 25) {
		t.Fatalf("reference tree wrong: big = %+v", want["big"])
	}
	for k := range segs {
		for j := 1; j <= len(segs[k]); j++ {
			root := filepath.Join(t.TempDir(), "replica")
			a := newDirApplier(t, root, nil)
			var state json.RawMessage
			for _, s := range segs[:k] {
				dirApply(t, a, s...)
				state = dirState(t, a)
			}
			if state == nil {
				state = dirState(t, a)
			}
			dirApply(t, a, segs[k][:j]...) // applied, then the crash: no checkpoint
			a.Close()
			b := newDirApplier(t, root, state)
			for _, s := range segs[k:] {
				dirApply(t, b, s...)
			}
			if d := diffTrees(want, dirWalk(t, root)); d != "" {
				t.Fatalf("crash after record %d of segment %d: replica differs:\n%s", j, k+1, d)
			}
			b.Close()
		}
	}
}

// dirErrAfter is a context whose Err starts failing after n calls: an Apply
// that stops midway with a retryable error.
type dirErrAfter struct {
	context.Context
	n int
}

func (c *dirErrAfter) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

// A retryable failure midway through Apply leaves the applier where the
// segment started; the retry converges.
func TestDirRetryAfterError(t *testing.T) {
	segs := dirScenario()
	refRoot := filepath.Join(t.TempDir(), "ref")
	ref := newDirApplier(t, refRoot, nil)
	for _, s := range segs {
		dirApply(t, ref, s...)
	}
	want := dirWalk(t, refRoot)
	for k := range segs {
		for n := 1; n < len(segs[k]); n++ {
			root := filepath.Join(t.TempDir(), "replica")
			a := newDirApplier(t, root, nil)
			for _, s := range segs[:k] {
				dirApply(t, a, s...)
			}
			// Err is asked once per record or run of puts: late failures
			// may not come at all.
			rest := segs[k:]
			err := a.Apply(&dirErrAfter{Context: context.Background(), n: n}, dirMeta(segs[k]), batch.RecordsOf(segs[k]))
			switch {
			case err == nil:
				rest = segs[k+1:]
			case !errors.Is(err, context.Canceled) || errors.Is(err, receiver.ErrFatal):
				t.Fatalf("segment %d, failing after %d: Apply returned %v", k+1, n, err)
			}
			for _, s := range rest {
				dirApply(t, a, s...)
			}
			if d := diffTrees(want, dirWalk(t, root)); d != "" {
				t.Fatalf("retry of segment %d after %d records: replica differs:\n%s", k+1, n, d)
			}
			a.Close()
		}
	}
}

// Every bad record stops the applier with a fatal error naming the record's
// seq, its path and the segment; nothing is written outside the root, and
// no panic.
func TestDirRefusesBadRecords(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("data"))
	good := append(dirHdr(0o644, dirT, 4, 0, &sum), "data"...)
	badVersion := slices.Clone(good)
	badVersion[0] = 2
	badMode := append(dirHdr(0o10644, dirT, 4, 0, &sum), "data"...)
	sizeMismatch := append(dirHdr(0o644, dirT, 5, 0, &sum), "data"...)
	wrongSum := append(dirHdr(0o644, dirT, 4, 0, &[32]byte{1}), "data"...)
	hugeSize := append(dirHdr(0o644, dirT, 1<<62, 0, nil), "data"...)
	overrun := append(dirHdr(0o644, dirT, 10, 8, nil), "data"...)
	midChunk := append(dirHdr(0o644, dirT, 10, 4, nil), "data"...)
	cases := []struct {
		name      string
		setup     func(t *testing.T, root string)
		op, key   string
		data      []byte
		wantInErr string
	}{
		{name: "dotdot", op: "put", key: "../x", data: good, wantInErr: `path element ".."`},
		{name: "dotdot inside", op: "put", key: "a/../../x", data: good, wantInErr: `path element ".."`},
		{name: "absolute", op: "put", key: "/tmp/x", data: good, wantInErr: "absolute path"},
		{name: "absolute del", op: "del", key: "/etc/passwd", wantInErr: "absolute path"},
		{name: "dot element", op: "put", key: "a/./x", data: good, wantInErr: `path element "."`},
		{name: "empty element", op: "put", key: "a//x", data: good, wantInErr: "empty path element"},
		{name: "trailing slash", op: "mkdir", key: "a/", data: dirHdr(0o755, 0, 0, 0, nil), wantInErr: "empty path element"},
		{name: "empty key", op: "put", key: "", data: good, wantInErr: "empty path"},
		{name: "nul", op: "put", key: "a\x00b", data: good, wantInErr: "NUL"},
		{name: "root delete", op: "rmdir", key: ".", wantInErr: "only mkdir"},
		{name: "staging", op: "put", key: ".ferry-staging/x", data: good, wantInErr: "reserved"},
		{name: "temp name", op: "put", key: "a/.ferry-0000000000000001.tmp", data: good, wantInErr: "reserved"},
		{name: "through symlink put", setup: dirLinkOut(outside), op: "put", key: "esc/x", data: good, wantInErr: "is a symlink in the replica"},
		{name: "through symlink deep", setup: dirLinkOut(outside), op: "put", key: "esc/sub/x", data: good, wantInErr: "is a symlink in the replica"},
		{name: "through symlink mkdir", setup: dirLinkOut(outside), op: "mkdir", key: "esc/d", data: dirHdr(0o755, 0, 0, 0, nil), wantInErr: "refusing to write through it"},
		{name: "through symlink del", setup: dirLinkOut(outside), op: "del", key: "esc/keep", wantInErr: "refusing to write through it"},
		{name: "through symlink symlink", setup: dirLinkOut(outside), op: "symlink", key: "esc/l", data: append(dirHdr(0o777, 0, 1, 0, nil), 'x'), wantInErr: "refusing"},
		{name: "through symlink chunk", setup: dirLinkOut(outside), op: "chunk", key: "esc/c",
			data: append(dirHdr(0o644, 0, 4, 0, &sum), "data"...), wantInErr: "refusing to write through it"},
		{name: "through symlink attr", setup: dirLinkOut(outside), op: "attr", key: "esc/keep", data: dirHdr(0o600, 0, 4, 0, nil), wantInErr: "refusing"},
		{name: "through a file", setup: dirFileAt("f"), op: "put", key: "f/x", data: good, wantInErr: "not a directory in the replica"},
		{name: "short header", op: "put", key: "x", data: []byte{1, 2, 3}, wantInErr: "shorter than the 61-byte header"},
		{name: "bad version", op: "put", key: "x", data: badVersion, wantInErr: "header version 2"},
		{name: "bad mode", op: "put", key: "x", data: badMode, wantInErr: "bits beyond 07777"},
		{name: "put size mismatch", op: "put", key: "x", data: sizeMismatch, wantInErr: "header says 5"},
		{name: "put hash mismatch", op: "put", key: "x", data: wrongSum, wantInErr: "does not match the sha256"},
		{name: "del with data", op: "del", key: "x", data: []byte("junk"), wantInErr: "want none"},
		{name: "baseline on a path", op: "baseline-begin", key: "x", data: []byte(`{"version":1}`), wantInErr: `want "."`},
		{name: "baseline data", op: "baseline-end", key: ".", data: []byte("junk"), wantInErr: "not a baseline header"},
		{name: "mkdir with payload", op: "mkdir", key: "x", data: good, wantInErr: "want none"},
		{name: "unknown op", op: "chmod", key: "x", data: good, wantInErr: `unknown op "chmod"`},
		{name: "empty op", op: "", key: "x", data: good, wantInErr: "unknown op"},
		{name: "sync version record", op: "version", key: "x", data: []byte(`{"v":1,"origin":"a","vv":{"a":1}}`), wantInErr: "this is a ferry sync stream"},
		{name: "symlink empty target", op: "symlink", key: "l", data: dirHdr(0o777, 0, 0, 0, nil), wantInErr: "symlink target"},
		{name: "symlink nul target", op: "symlink", key: "l", data: append(dirHdr(0o777, 0, 3, 0, nil), "a\x00b"...), wantInErr: "symlink target"},
		{name: "oversize chunk header", op: "chunk", key: "x", data: hugeSize, wantInErr: "oversize record header"},
		{name: "chunk overrun", op: "chunk", key: "x", data: overrun, wantInErr: "overrun the file size"},
		{name: "chunk without start", op: "chunk", key: "x", data: midChunk, wantInErr: "no file is being assembled"},
		{name: "chunk hash mismatch", op: "chunk", key: "x", data: append(dirHdr(0o644, 0, 4, 0, &[32]byte{9}), "data"...), wantInErr: "does not match the sha256"},
		{name: "attr on missing file", op: "attr", key: "nofile", data: dirHdr(0o600, 0, 4, 0, nil), wantInErr: "has no"},
		{name: "attr size mismatch", setup: dirFileAt("f"), op: "attr", key: "f", data: dirHdr(0o600, 0, 99, 0, nil), wantInErr: "the record says 99"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "replica")
			a := newDirApplier(t, root, nil)
			if c.setup != nil {
				c.setup(t, root)
			}
			before := dirWalk(t, outside)
			seq := uint64(1000 + i)
			rec := batch.Record{Seq: seq, Op: c.op, Key: []byte(c.key), Data: c.data}
			meta := dirMeta([]batch.Record{rec})
			err := a.Apply(context.Background(), meta, batch.RecordsOf([]batch.Record{rec}))
			if err == nil {
				t.Fatalf("applied")
			}
			if !errors.Is(err, receiver.ErrFatal) {
				t.Fatalf("error is not fatal: %v", err)
			}
			for _, s := range []string{fmt.Sprint(seq), fmt.Sprintf("%q", c.key), meta.Name(), c.wantInErr} {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("error does not name %q: %v", s, err)
				}
			}
			if d := diffTrees(before, dirWalk(t, outside)); d != "" {
				t.Fatalf("the directory outside the replica changed:\n%s", d)
			}
		})
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("outside holds %d entries", len(ents))
	}
}

// dirLinkOut makes replica/esc a symlink to outside.
func dirLinkOut(outside string) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		if err := os.Symlink(outside, filepath.Join(root, "esc")); err != nil {
			t.Fatal(err)
		}
	}
}

func dirFileAt(name string) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		if err := os.WriteFile(filepath.Join(root, name), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A record that would go through a symlink is skipped only when a later
// record of the same segment replaces that symlink: a segment applied
// again after a crash meets the tree it left.
func TestDirSupersededThroughSymlink(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "x")); err != nil {
		t.Fatal(err)
	}
	var r dirRecs
	dirApply(t, a, r.put("x/f", 0o644, "through"), r.symlink("x", outside))
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote through the symlink: %v", ents)
	}
}

func TestDirRestoreRefuses(t *testing.T) {
	t.Run("new state over files", func(t *testing.T) {
		root := t.TempDir()
		os.WriteFile(filepath.Join(root, "foreign"), nil, 0o644)
		err := (&apply.Dir{Root: root}).Restore(nil)
		if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), "already holds files") {
			t.Fatalf("Restore: %v", err)
		}
	})
	var r dirRecs
	cs := r.chunks("big", 0o644, strings.Repeat("b", 100), 40)
	partial := func(t *testing.T) (string, json.RawMessage) {
		root := filepath.Join(t.TempDir(), "replica")
		a := newDirApplier(t, root, nil)
		dirApply(t, a, cs[:2]...)
		st := dirState(t, a)
		a.Close()
		return root, st
	}
	staging := func(root string) string {
		ents, _ := os.ReadDir(filepath.Join(root, ".ferry-staging"))
		if len(ents) != 1 {
			panic(fmt.Sprintf("staging holds %d files", len(ents)))
		}
		return filepath.Join(root, ".ferry-staging", ents[0].Name())
	}
	t.Run("staging file cut short", func(t *testing.T) {
		root, st := partial(t)
		os.Truncate(staging(root), 10)
		err := (&apply.Dir{Root: root}).Restore(st)
		if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), "shorter than the 80") {
			t.Fatalf("Restore: %v", err)
		}
	})
	t.Run("staging file longer is cut back", func(t *testing.T) {
		root, st := partial(t)
		f, _ := os.OpenFile(staging(root), os.O_WRONLY|os.O_APPEND, 0)
		f.WriteString("applied after the checkpoint")
		f.Close()
		a := newDirApplier(t, root, st)
		dirApply(t, a, cs[2:]...)
		if got, _ := os.ReadFile(filepath.Join(root, "big")); string(got) != strings.Repeat("b", 100) {
			t.Fatalf("big = %q", got)
		}
	})
	t.Run("staging file removed outside ferry", func(t *testing.T) {
		root, st := partial(t)
		os.Remove(staging(root))
		a := newDirApplier(t, root, st)
		err := a.Apply(context.Background(), dirMeta(cs[2:]), batch.RecordsOf(cs[2:]))
		if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), "removed outside ferry") {
			t.Fatalf("Apply: %v", err)
		}
	})
	t.Run("damaged state", func(t *testing.T) {
		root := t.TempDir()
		err := (&apply.Dir{Root: root}).Restore(json.RawMessage(`{"partial":{"path":"../x","seq":1,"size":10,"offset":5}}`))
		if !errors.Is(err, receiver.ErrFatal) {
			t.Fatalf("Restore: %v", err)
		}
	})
}

// FuzzDirApply applies arbitrary records to a replica beside a directory
// that must stay untouched: no panic, nothing written outside the root.
func FuzzDirApply(f *testing.F) {
	var r dirRecs
	for _, rec := range []batch.Record{r.put("a/b", 0o644, "x"), r.mkdir("d", 0o755), r.symlink("esc/l", "/"), r.del("esc/x")} {
		f.Add(rec.Op, string(rec.Key), rec.Data)
	}
	f.Add("chunk", "esc/c", dirHdr(0o644, 0, 4, 0, nil))
	for _, rec := range []batch.Record{r.appendRec("esc/keep", 0o644, "keep", "more"), r.deltaRec("esc/keep", 0o644, "keep", "KEEP", 64),
		r.renameFile("esc/keep", "x", 0o644, "keep"), r.renameDir("esc", "y", 0o755), r.renameFile("x", "esc/y", 0o644, "keep")} {
		f.Add(rec.Op, string(rec.Key), rec.Data)
	}
	f.Fuzz(func(t *testing.T, op, key string, data []byte) {
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		os.Mkdir(outside, 0o755)
		os.WriteFile(filepath.Join(outside, "keep"), []byte("keep"), 0o644)
		root := filepath.Join(base, "replica")
		a := &apply.Dir{Root: root}
		if err := a.Restore(nil); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		os.Symlink(outside, filepath.Join(root, "esc"))
		before := dirWalk(t, outside)
		rec := batch.Record{Seq: 1, Op: op, Key: []byte(key), Data: data}
		a.Apply(context.Background(), dirMeta([]batch.Record{rec}), batch.RecordsOf([]batch.Record{rec}))
		if d := diffTrees(before, dirWalk(t, outside)); d != "" {
			t.Fatalf("op %q key %q changed the outside directory:\n%s", op, key, d)
		}
	})
}

// dirSegments seals the scenario's segments as testStream, chained.
func dirSegments(t *testing.T, segs [][]batch.Record) []receivertest.Seg {
	t.Helper()
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	prev, next := batch.ZeroHash, uint64(1)
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var out []receivertest.Seg
	for _, rs := range segs {
		b.Reset(receivertest.Stream, 1, prev)
		for _, r := range rs {
			r.Seq, r.Time = next, at
			next++
			if err := b.Add(&r); err != nil {
				t.Fatal(err)
			}
		}
		data, meta, err := b.Seal(at)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, receivertest.Seg{Name: meta.Name(), Data: data, Meta: meta, Hash: batch.Hash(data)})
		prev = out[len(out)-1].Hash
	}
	return out
}

// Through the real receiver: a crash after any segment was applied but
// before its checkpoint (the checkpoint file put back as it was) is undone
// by the applier state in the checkpoint, including a file assembled from
// chunks in several segments.
func TestDirCrashBetweenApplyAndCheckpoint(t *testing.T) {
	segs := dirSegments(t, dirScenario())
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	refRoot := filepath.Join(t.TempDir(), "ref")
	receivertest.RunOnce(t, receivertest.Config(t, st, &apply.Dir{Root: refRoot}))
	want := dirWalk(t, refRoot)

	for k := range segs {
		st, _ := receivertest.NewStore(t)
		receivertest.Put(t, st, segs[:k+1]...)
		root := filepath.Join(t.TempDir(), "replica")
		cfg := receivertest.Config(t, st, &apply.Dir{Root: root})
		before, _ := receivertest.NewStore(t) // the first k segments: the checkpoint to go back to
		receivertest.Put(t, before, segs[:k]...)
		c := cfg
		c.Store = before
		receivertest.RunOnce(t, c)
		ckpt := filepath.Join(cfg.StateDir, "checkpoint.ferry")
		saved, err := os.ReadFile(ckpt)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Applier = &apply.Dir{Root: root}
		receivertest.RunOnce(t, cfg) // applies segment k+1
		if err := os.WriteFile(ckpt, saved, 0o644); err != nil {
			t.Fatal(err)
		}
		receivertest.Put(t, st, segs[k+1:]...)
		cfg.Applier = &apply.Dir{Root: root}
		receivertest.RunOnce(t, cfg)
		if d := diffTrees(want, dirWalk(t, root)); d != "" {
			t.Fatalf("crash before the checkpoint of segment %d: replica differs:\n%s", k+1, d)
		}
	}
}

// Puts are applied in runs (written, fsynced together, renamed in order)
// with the mkdirs between them; the result must be that of applying every
// record on its own.
func TestDirPutRunsMatchOneByOne(t *testing.T) {
	var r dirRecs
	mixed := []batch.Record{
		r.mkdir(".", 0o755), r.put("D/a", 0o644, "a"), r.mkdir("D", 0o700), r.put("D/b", 0o644, "b"),
		r.put("X", 0o644, "file first"), r.mkdir("X", 0o750), r.put("X/y", 0o644, "y"),
		r.put("Z/1", 0o644, "1"), r.put("Z/2", 0o644, "2"), r.mkdir("Z/sub", 0o711), r.put("Z/sub/3", 0o600, "3"),
		r.put("D/a", 0o640, "a again"), r.mkdir("D", 0o750), r.mkdir("Z", 0o755),
		r.put("Y", 0o644, "y1"), r.put("Y", 0o600, "y2"), r.mkdir("Y", 0o700), r.put("Y/in", 0o644, "in"), r.put("Y/in2", 0o644, "in2"),
		r.put("S/1", 0o644, "1"), r.del("Z/2"), r.put("S/3", 0o644, "3"), r.mkdir("S", 0o755), r.put("U", 0o644, "u"), r.del("U"),
		r.put("Q/x", 0o644, "x"), r.put("Q/y", 0o644, "y"), r.rmdir("Q"), r.put("Q", 0o644, "q"), r.rmdir("Y"), r.put("V", 0o644, "v"),
	}
	segs := append([][]batch.Record{mixed}, dirScenario()...)
	together := filepath.Join(t.TempDir(), "together")
	a := newDirApplier(t, together, nil)
	for _, s := range segs {
		dirApply(t, a, s...)
	}
	single := filepath.Join(t.TempDir(), "single")
	b := newDirApplier(t, single, nil)
	for _, s := range segs {
		for i := range s {
			dirApply(t, b, s[i])
		}
	}
	if d := diffTrees(dirWalk(t, single), dirWalk(t, together)); d != "" {
		t.Fatalf("applying segments whole differs from record by record:\n%s", d)
	}
}

// Through the real receiver, a record that would write through a symlink
// in the replica stops it with an error naming the segment and the path;
// the checkpoint stays before that segment and nothing lands outside.
func TestDirStopsReceiver(t *testing.T) {
	var r dirRecs
	segs := dirSegments(t, [][]batch.Record{
		{r.mkdir(".", 0o755), r.put("ok", 0o644, "fine")},
		{r.put("esc/passwd", 0o644, "owned")},
	})
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	root := filepath.Join(t.TempDir(), "replica")
	outside := t.TempDir()
	cfg := receivertest.Config(t, st, &apply.Dir{Root: root})
	rc := receivertest.Open(t, cfg)
	if err := os.Symlink(outside, filepath.Join(root, "esc")); err != nil {
		t.Fatal(err)
	}
	err := receivertest.Run(t, rc)
	if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), segs[1].Name) ||
		!strings.Contains(err.Error(), `"esc/passwd"`) || !strings.Contains(err.Error(), "refusing to write through it") {
		t.Fatalf("Run: %v", err)
	}
	t.Log(err)
	if cp := rc.Checkpoint(); cp.Segment != segs[0].Name {
		t.Fatalf("checkpoint at %q, want %q", cp.Segment, segs[0].Name)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote outside the replica: %v", ents)
	}
}
