//go:build linux

package apply_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
)

// appendRec is the append record that makes base into base+tail.
func (r *dirRecs) appendRec(key string, mode uint32, base, tail string) batch.Record {
	h := dirtree.DeltaHeader{Mode: mode, Mtime: dirT + int64(len(base)+len(tail)), BaseSize: int64(len(base)),
		BaseSHA256: sha256.Sum256([]byte(base)), Size: int64(len(base) + len(tail)), SHA256: sha256.Sum256([]byte(base + tail))}
	return r.rec(dirtree.OpAppend, key, dirtree.AppendAppendRecord(nil, h, []byte(tail)))
}

// deltaRec is the delta record, in blocks of bs bytes, that makes base
// into next, carrying the blocks that differ (and every block past the
// end of base).
func (r *dirRecs) deltaRec(key string, mode uint32, base, next string, bs int) batch.Record {
	h := dirtree.DeltaHeader{Mode: mode, Mtime: dirT + 1000 + int64(len(next)), BaseSize: int64(len(base)),
		BaseSHA256: sha256.Sum256([]byte(base)), Size: int64(len(next)), SHA256: sha256.Sum256([]byte(next))}
	var blocks []uint32
	var data []byte
	for k := 0; k*bs < len(next); k++ {
		nb := next[k*bs : min(k*bs+bs, len(next))]
		if (k+1)*bs > len(base) || base[k*bs:(k+1)*bs] != nb {
			blocks = append(blocks, uint32(k))
			data = append(data, nb...)
		}
	}
	return r.rec(dirtree.OpDelta, key, dirtree.AppendDeltaRecord(nil, h, bs, blocks, data))
}

// dirDeltaScenario: segments of appends and deltas, for the replay and
// crash tests of dir_test.go. A file appended to several times in one
// segment, a delta that grows and one that shrinks a file, and an append
// superseded by a put in the same segment (a replay meets the put's
// content and must skip the append).
func dirDeltaScenario(r *dirRecs) [][]batch.Record {
	mb := []string{"From a\nbody\n", "From b\nsecond\n", "From c\nthird one\n", "From d\n"}
	ix0 := strings.Repeat("0123456789abcdef", 40) // 640 bytes: 10 blocks of 64
	ix1 := ix0[:100] + "PATCH" + ix0[105:600] + "tail-changed...." + ix0[616:] + strings.Repeat("+", 70)
	ix2 := ix1[:130]
	seg9 := []batch.Record{r.put("mbox", 0o600, mb[0]), r.appendRec("mbox", 0o600, mb[0], mb[1]),
		r.appendRec("mbox", 0o640, mb[0]+mb[1], mb[2]), r.put("ix", 0o644, ix0), r.deltaRec("ix", 0o644, ix0, ix1, 64)}
	all := mb[0] + mb[1] + mb[2]
	seg10 := []batch.Record{r.appendRec("mbox", 0o600, all, mb[3]), r.deltaRec("ix", 0o600, ix1, ix2, 64),
		r.put("mbox", 0o600, "rewritten"), r.appendRec("mbox", 0o600, "rewritten", " and grown")}
	return [][]batch.Record{seg9, seg10}
}

func dirApplyErr(a interface {
	Apply(context.Context, *batch.Meta, batch.Records) error
}, rs ...batch.Record) error {
	return a.Apply(context.Background(), dirMeta(rs), batch.RecordsOf(rs))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An append writes the tail in place; mode and mtime follow the record;
// consecutive appends (the second one trusting what the first left) and a
// delta that patches, grows and shrinks give the exact content.
func TestDirAppendAndDelta(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	var r dirRecs
	dirApply(t, a, r.put("m", 0o600, "head\n"))
	p := filepath.Join(root, "m")
	var before, after os.FileInfo
	before, _ = os.Stat(p)
	dirApply(t, a, r.appendRec("m", 0o640, "head\n", "tail one\n"), r.appendRec("m", 0o640, "head\ntail one\n", "two\n"))
	after, _ = os.Stat(p)
	if got := readFile(t, p); got != "head\ntail one\ntwo\n" {
		t.Fatalf("after appends: %q", got)
	}
	if !os.SameFile(before, after) || after.Mode().Perm() != 0o640 || after.ModTime().UnixNano() != dirT+18 {
		t.Fatalf("append: same file %v, mode %v, mtime %d", os.SameFile(before, after), after.Mode(), after.ModTime().UnixNano())
	}
	base := strings.Repeat("abcdefgh", 100) // 800 bytes
	for _, next := range []string{
		base[:64] + "X" + base[65:],                         // one block
		base[:64] + "X" + base[65:] + "grown",               // patch + growth into a new short block
		base[:64] + "Y" + base[65:130],                      // shrink
		strings.Repeat("z", 200) + base[200:1000%len(base)], // several blocks
	} {
		cur := readFileOr(root, "ix")
		if cur == "" {
			dirApply(t, a, r.put("ix", 0o644, base))
			cur = base
		}
		dirApply(t, a, r.deltaRec("ix", 0o644, cur, next, 64))
		if got := readFile(t, filepath.Join(root, "ix")); got != next {
			t.Fatalf("delta to %d bytes: got %d bytes %q", len(next), len(got), got[:min(len(got), 80)])
		}
	}
	if st, _ := os.Stat(filepath.Join(root, "ix")); st.ModTime().UnixNano() <= dirT || st.Mode().Perm() != 0o644 {
		t.Fatalf("delta: mode %v, mtime %v", st.Mode(), st.ModTime())
	}
	if ents, _ := os.ReadDir(root); len(ents) != 2 {
		t.Fatalf("left behind in the root: %v", ents)
	}
}

func readFileOr(root, name string) string {
	b, _ := os.ReadFile(filepath.Join(root, name))
	return string(b)
}

// The applier refuses, as fatal errors naming the segment and the key and
// changing nothing: an append or delta to a replica file that is not its
// base (a head that differs, a rewrite of the same size, a file changed
// after this applier's last append to it), one whose result does not
// hash to its SHA-256, and one through or onto a symlink.
func TestDirAppendAndDeltaRefused(t *testing.T) {
	var r dirRecs
	base := strings.Repeat("0123456789", 30)
	badSum := func(rec batch.Record) batch.Record {
		rec.Data = append([]byte(nil), rec.Data...)
		rec.Data[61+5] ^= 1 // the new sha256
		return rec
	}
	cases := []struct {
		name      string
		setup     func(t *testing.T, root string)
		rec       batch.Record
		wantInErr string
	}{
		{"append head differs", func(t *testing.T, root string) { dirPatchFile(t, root, "f", 3, "X") },
			r.appendRec("f", 0o644, base, "more"), `is not the content this append was made against`},
		{"same-size rewrite not an append", func(t *testing.T, root string) { dirPatchFile(t, root, "f", 299, "!") },
			r.appendRec("f", 0o644, base, "more"), `is not the content this append was made against`},
		{"append to a shorter file", func(t *testing.T, root string) { os.Truncate(filepath.Join(root, "f"), 10) },
			r.appendRec("f", 0o644, base, "more"), `(10 bytes) is not the content`},
		{"append result hash", nil, badSum(r.appendRec("f", 0o644, base, "more")), `the append to "f" makes content with sha256`},
		{"delta wrong base", func(t *testing.T, root string) { dirPatchFile(t, root, "f", 200, "Q") },
			r.deltaRec("f", 0o644, base, "x"+base[1:], 64), `is not the content this delta was made against`},
		{"delta result hash", nil, badSum(r.deltaRec("f", 0o644, base, "x"+base[1:], 64)), `the delta to "f" makes content with sha256`},
		{"append to symlink", dirLinkAt("f"), r.appendRec("f", 0o644, base, "more"), `"f" is a symlink in the replica; refusing to write through it`},
		{"delta to symlink", dirLinkAt("f"), r.deltaRec("f", 0o644, base, "x"+base[1:], 64), `"f" is a symlink in the replica`},
		{"append through symlink", dirLinkAt("d"), r.appendRec("d/f", 0o644, base, "more"), `"d" is a symlink in the replica`},
		{"missing", func(t *testing.T, root string) { os.Remove(filepath.Join(root, "f")) },
			r.appendRec("f", 0o644, base, "more"), `the replica has no "f" to change`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "replica")
			a := newDirApplier(t, root, nil)
			var rr dirRecs
			rr.seq = 1000
			dirApply(t, a, rr.mkdir("d", 0o755), rr.put("f", 0o644, base), rr.put("d/f", 0o644, base))
			// An append first, so the applier has the file in its cache of
			// its own appends: a change after it must still be seen.
			dirApply(t, a, rr.appendRec("f", 0o644, base, "x"), rr.put("f", 0o644, base))
			if c.setup != nil {
				c.setup(t, root)
			}
			want := dirWalk(t, root)
			outside := readFileOr(filepath.Dir(root), "outside")
			err := dirApplyErr(a, c.rec)
			if err == nil || !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), c.wantInErr) ||
				!strings.Contains(err.Error(), "segment ") || !strings.Contains(err.Error(), "\"f\"") && !strings.Contains(err.Error(), "\"d/f\"") {
				t.Fatalf("Apply: %v\nwant a fatal error naming the segment and the key, saying %q", err, c.wantInErr)
			}
			if d := diffTrees(want, dirWalk(t, root)); d != "" {
				t.Fatalf("the refused record changed the replica:\n%s", d)
			}
			if got := readFileOr(filepath.Dir(root), "outside"); got != outside {
				t.Fatalf("the file outside changed: %q", got)
			}
		})
	}
}

// dirPatchFile overwrites bytes of root/name at off, as something outside
// ferry would.
func dirPatchFile(t *testing.T, root, name string, off int64, s string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, name), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		t.Fatal(err)
	}
}

// dirLinkAt replaces root/name with a symlink to a file beside the root.
func dirLinkAt(name string) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		t.Helper()
		out := filepath.Join(filepath.Dir(root), "outside")
		if err := os.WriteFile(out, []byte(strings.Repeat("0123456789", 30)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(out, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// A crash between an append's write and the checkpoint, at any point of
// the write (none of the tail, part of it, all of it), is repaired when
// the segment is applied again: the head still matches and the tail is
// written whole. A delta applied again finds its result and does nothing.
func TestDirAppendAndDeltaAgainAfterCrash(t *testing.T) {
	base := strings.Repeat("m", 500)
	tail := "appended message\n"
	for _, torn := range []int{0, 1, len(tail) - 1, len(tail)} {
		root := filepath.Join(t.TempDir(), "replica")
		a := newDirApplier(t, root, nil)
		var r dirRecs
		dirApply(t, a, r.put("mbox", 0o600, base))
		state := dirState(t, a)
		rec := r.appendRec("mbox", 0o600, base, tail)
		// The crash: part of the tail on disk, no checkpoint.
		f, err := os.OpenFile(filepath.Join(root, "mbox"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(tail[:torn])
		f.Close()
		a.Close()
		b := newDirApplier(t, root, state)
		dirApply(t, b, rec)
		if got := readFile(t, filepath.Join(root, "mbox")); got != base+tail {
			t.Fatalf("torn after %d bytes: re-applied append gives %d bytes", torn, len(got))
		}
	}
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	var r dirRecs
	next := base[:100] + "Z" + base[101:]
	seg := []batch.Record{r.put("ix", 0o644, base), r.deltaRec("ix", 0o644, base, next, 64)}
	dirApply(t, a, seg...)
	fi, _ := os.Stat(filepath.Join(root, "ix"))
	dirApply(t, a, seg[1]) // applied again: the file is already next
	fi2, _ := os.Stat(filepath.Join(root, "ix"))
	if got := readFile(t, filepath.Join(root, "ix")); got != next || !os.SameFile(fi, fi2) {
		t.Fatalf("delta again: %d bytes, same file %v", len(got), os.SameFile(fi, fi2))
	}
}

// The applier trusts what it remembers of its own last append to a file
// only while the file's ctime says nobody touched it: a change of the
// same size outside ferry, with the mtime put back, is still refused.
func TestDirAppendAfterOutsideChangeRefused(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	var r dirRecs
	base := strings.Repeat("b", 300)
	dirApply(t, a, r.put("m", 0o600, base), r.appendRec("m", 0o600, base, "one\n"))
	p := filepath.Join(root, "m")
	fi, _ := os.Stat(p)
	time.Sleep(10 * time.Millisecond)
	dirPatchFile(t, root, "m", 5, "X")
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	err := dirApplyErr(a, r.appendRec("m", 0o600, base+"one\n", "two\n"))
	if err == nil || !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), "is not the content this append was made against") {
		t.Fatalf("append to a file changed outside ferry: %v", err)
	}
	if got := readFile(t, p); got != base[:5]+"X"+base[6:]+"one\n" {
		t.Fatalf("the refused append changed the file: %q", got)
	}
}

// ferry sync streams carry whole files: its applier refuses an append or
// delta record, naming it, and leaves the file as it was.
func TestDirPeerRefusesAppendAndDelta(t *testing.T) {
	base := strings.Repeat("p", 300)
	for _, op := range []string{dirtree.OpAppend, dirtree.OpDelta} {
		root := filepath.Join(t.TempDir(), "tree")
		a, _ := newPeerApplier(t, root, filepath.Join(t.TempDir(), "state"), "a")
		p := &peerRecs{origin: "a", stamp: 100}
		dirApply(t, a, p.change(p.put("f", 0o644, base))...)
		rec := p.appendRec("f", 0o644, base, "more")
		if op == dirtree.OpDelta {
			rec = p.deltaRec("f", 0o644, base, "x"+base[1:], 64)
		}
		seg := p.change(rec)
		err := dirApplyErr(a, seg...)
		if err == nil || !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), `op "`+op+`" record in a ferry sync stream`) {
			t.Fatalf("%s in a sync stream: %v", op, err)
		}
		if got := readFile(t, filepath.Join(root, "f")); got != base {
			t.Fatalf("%s in a sync stream changed the file: %q", op, got)
		}
	}
}

// A replica file whose mode denies its owner the access (a receiver not
// running as root) is opened with the owner's bits added, and keeps its
// own mode whether the append or delta is applied (the record's mode) or
// refused. Run as root, the test runs itself as nobody: root is never
// denied.
func TestDirAppendAndDeltaToFileOwnerCannotOpen(t *testing.T) {
	if os.Getuid() == 0 {
		dirRunTestAsNobody(t)
		return
	}
	var r dirRecs
	base, other := strings.Repeat("a", 300), strings.Repeat("z", 300)
	cases := []struct {
		name     string
		rec      batch.Record
		wantErr  string
		wantMode os.FileMode
		want     string
	}{
		{"append", r.appendRec("f", 0o000, base, "more"), "", 0o000, base + "more"},
		{"delta", r.deltaRec("f", 0o000, base, "x"+base[1:], 64), "", 0o000, "x" + base[1:]},
		{"append refused", r.appendRec("f", 0o644, other, "more"), "is not the content this append was made against", 0o000, base},
		{"delta refused", r.deltaRec("f", 0o644, other, "x"+other[1:], 64), "is not the content this delta was made against", 0o000, base},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "replica")
			a := newDirApplier(t, root, nil)
			var rr dirRecs
			rr.seq = 1000
			dirApply(t, a, rr.put("f", 0o000, base))
			err := dirApplyErr(a, c.rec)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("got error %v, want %q", err, c.wantErr)
			}
			p := filepath.Join(root, "f")
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != c.wantMode {
				t.Fatalf("mode %v after the %s, want %v", fi.Mode().Perm(), c.name, c.wantMode)
			}
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, p); got != c.want {
				t.Fatalf("content after the %s: %q", c.name, got)
			}
		})
	}
}

// dirRunTestAsNobody runs t's test in a copy of the test binary as the
// user nobody and fails t if it fails (or does not run).
func dirRunTestAsNobody(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "apply.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s as nobody: %v\n%s", t.Name(), err, out)
	}
}
