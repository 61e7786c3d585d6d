package receiver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// testCheckpoint is a checkpoint as a file receiver writes it, at seq.
func testCheckpoint(seq uint64) Checkpoint {
	cp := newCheckpoint("app", 1)
	cp.LastSeq = seq
	cp.LastHash = fmt.Sprintf("%064x", seq*0x9e3779b97f4a7c15)
	cp.Segment = batch.SegmentName(1, seq-min(seq, 999)+1, seq)
	cp.AppliedAt = time.Date(2025, 6, 1, 12, 0, 0, int(seq), time.UTC)
	cp.Applier = json.RawMessage(fmt.Sprintf(`{"size":%d}`, seq*97))
	return cp
}

// newTestCheckpointFile makes a state dir whose checkpoint file holds
// testCheckpoint(1) and opens it for saving.
func newTestCheckpointFile(t testing.TB) *checkpointFile {
	t.Helper()
	dir := t.TempDir()
	if err := saveCheckpoint(dir, testCheckpoint(1)); err != nil {
		t.Fatal(err)
	}
	c, err := openCheckpointFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func save(t *testing.T, c *checkpointFile, seq uint64) {
	t.Helper()
	if err := c.Save(testCheckpoint(seq)); err != nil {
		t.Fatalf("save seq %d: %v", seq, err)
	}
}

// wantLoad fails the test unless LoadCheckpoint of dir finds seq.
func wantLoad(t *testing.T, dir string, seq uint64, when string) {
	t.Helper()
	cp, ok, err := LoadCheckpoint(dir)
	if err != nil || !ok {
		t.Fatalf("%s: LoadCheckpoint: ok=%v err=%v, want seq %d", when, ok, err, seq)
	}
	if want := testCheckpoint(seq); cp.LastSeq != seq || cp.LastHash != want.LastHash || !bytes.Equal(cp.Applier, want.Applier) {
		t.Fatalf("%s: LoadCheckpoint found seq %d (%+v), want seq %d", when, cp.LastSeq, cp, seq)
	}
}

// slotAt is where slot i of c's file starts.
func slotAt(c *checkpointFile, i int) int64 { return cpBlock + int64(i)*c.at.slotSize }

// overwrite writes b at off of c's file, as a crash or a bad disk would.
func overwrite(t *testing.T, c *checkpointFile, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(c.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Saves alternate slots with a counter one higher each time, and a file
// reopened after many saves goes on from the last one.
func TestCheckpointSavesAlternate(t *testing.T) {
	c := newTestCheckpointFile(t)
	size := func() int64 {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	fileSize := size()
	seq := uint64(1)
	for round := range 3 {
		for range 50 {
			cur := c.at.cur
			seq++
			save(t, c, seq)
			if c.at.cur == cur || c.at.seq != seq {
				t.Fatalf("save %d went to slot %d counter %d; the newest was in slot %d, want the other one and counter %d", seq, c.at.cur, c.at.seq, cur, seq)
			}
			f, err := os.Open(c.path)
			if err != nil {
				t.Fatal(err)
			}
			var got [2]uint64
			for i := range 2 {
				got[i], _, err = readSlot(f, slotAt(c, i), c.at.slotSize)
				if err != nil {
					t.Fatalf("after save %d slot %d: %v", seq, i, err)
				}
			}
			f.Close()
			if got[c.at.cur] != seq || got[1-c.at.cur] != seq-1 {
				t.Fatalf("after save %d the slots hold counters %v, want %d in slot %d and %d in the other", seq, got, seq, c.at.cur, seq-1)
			}
			wantLoad(t, c.dir, seq, fmt.Sprintf("after save %d", seq))
		}
		if got := size(); got != fileSize {
			t.Fatalf("file grew from %d to %d bytes", fileSize, got)
		}
		// Reopen, as a restarted receiver does.
		c.Close()
		var err error
		if c, err = openCheckpointFile(c.dir); err != nil {
			t.Fatalf("reopen after round %d: %v", round, err)
		}
		t.Cleanup(func() { c.Close() })
		if c.at.seq != seq {
			t.Fatalf("reopened at counter %d, want %d", c.at.seq, seq)
		}
		wantLoad(t, c.dir, seq, "after reopening")
	}
}

// Damage to the newest slot falls back to the one before; damage to the
// older slot is harmless; damage to both is an error naming the file.
func TestCheckpointDamagedSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  int64 // within the slot
		b    []byte
		why  string
	}{
		{"marker", 0, []byte("X"), "no slot marker"},
		{"counter", 15, []byte{0xff}, "checksum mismatch"},
		{"length", 19, []byte{0x01}, "checksum mismatch"},
		{"length huge", 16, []byte{0xff, 0xff, 0xff, 0xff}, "length 4294967295 does not fit the slot"},
		{"checksum", 20, []byte{0, 0}, "checksum mismatch"},
		{"payload", 40, []byte("#"), "checksum mismatch"},
		{"zeroed", 0, make([]byte, cpBlock), "no slot marker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCheckpointFile(t)
			for seq := uint64(2); seq <= 7; seq++ {
				save(t, c, seq)
			}
			newest, older := c.at.cur, 1-c.at.cur
			c.Close()
			pristine, err := os.ReadFile(c.path)
			if err != nil {
				t.Fatal(err)
			}
			damage := func(slots ...int) {
				t.Helper()
				if err := os.WriteFile(c.path, pristine, 0o644); err != nil {
					t.Fatal(err)
				}
				for _, i := range slots {
					overwrite(t, c, slotAt(c, i)+tc.off, tc.b)
				}
			}

			damage(older)
			wantLoad(t, c.dir, 7, "older slot damaged")

			damage(older, newest)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, ok, err := LoadCheckpoint(c.dir)
			runtime.ReadMemStats(&after)
			if err == nil || ok || !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), "both slots fail their checksum") ||
				!strings.Contains(err.Error(), tc.why) {
				t.Fatalf("both slots damaged: LoadCheckpoint ok=%v err=%v, want an error naming %s that says both slots fail (%s)", ok, err, c.path, tc.why)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
				t.Fatalf("LoadCheckpoint of a damaged file allocated %d bytes; nothing should exceed the %d-byte slots", n, c.at.slotSize)
			}
			if _, err := openCheckpointFile(c.dir); err == nil {
				t.Fatal("openCheckpointFile of a file with both slots damaged succeeded")
			}

			// Only the newest damaged: the one before it wins, and saving
			// goes on over the damaged slot.
			damage(newest)
			wantLoad(t, c.dir, 6, "newest slot damaged")
			r, err := openCheckpointFile(c.dir)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.at.cur != older || r.at.seq != 6 {
				t.Fatalf("reopened at slot %d counter %d, want slot %d counter 6", r.at.cur, r.at.seq, older)
			}
			save(t, r, 7)
			if r.at.cur != newest {
				t.Fatalf("the save after the damage went to slot %d, want the damaged slot %d", r.at.cur, newest)
			}
			wantLoad(t, c.dir, 7, "saved after the damage")
		})
	}
}

// A save torn at any byte (its first k bytes new, the rest as the slot
// held before) leaves the previous checkpoint, unless the new bytes are
// all there.
func TestCheckpointTornSave(t *testing.T) {
	c := newTestCheckpointFile(t)
	for seq := uint64(2); seq <= 4; seq++ {
		save(t, c, seq)
	}
	c.Close()
	target := 1 - c.at.cur // where save 5 goes; it holds save 3
	raw, err := os.ReadFile(c.path)
	if err != nil {
		t.Fatal(err)
	}
	old := raw[slotAt(c, target) : slotAt(c, target)+c.at.slotSize]
	payload, err := json.Marshal(testCheckpoint(5))
	if err != nil {
		t.Fatal(err)
	}
	next := make([]byte, c.at.slotSize)
	putSlot(next, 5, payload)

	torn := bytes.Clone(raw)
	for k := 0; k <= int(c.at.slotSize); k++ {
		slot := torn[slotAt(c, target) : slotAt(c, target)+c.at.slotSize]
		copy(slot, next[:k])
		copy(slot[k:], old[k:])
		if err := os.WriteFile(c.path, torn, 0o644); err != nil {
			t.Fatal(err)
		}
		want := uint64(4)
		if bytes.Equal(slot[:cpSlotHeaderLen+len(payload)], next[:cpSlotHeaderLen+len(payload)]) {
			want = 5 // everything that counts was written
		}
		wantLoad(t, c.dir, want, fmt.Sprintf("save torn after %d bytes", k))
		if k > 2*cpSlotHeaderLen+len(payload) {
			k += 511 // past the payload: a sample is enough
		}
	}
}

// A crash while a save is being written (the slot it writes holds
// garbage) keeps the last good checkpoint, and the receiver reopened on
// it saves over the garbage.
func TestCheckpointCrashMidSave(t *testing.T) {
	c := newTestCheckpointFile(t)
	for seq := uint64(2); seq <= 9; seq++ {
		save(t, c, seq)
	}
	c.Close()
	target := 1 - c.at.cur
	garbage := bytes.Repeat([]byte("\xde\xad\xbe\xef"), int(c.at.slotSize)/4)
	for _, n := range []int{8, cpSlotHeaderLen, 100, len(garbage)} {
		overwrite(t, c, slotAt(c, target), garbage[:n])
		wantLoad(t, c.dir, 9, fmt.Sprintf("%d bytes of garbage over the slot being written", n))
	}
	r, err := openCheckpointFile(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	save(t, r, 10)
	if r.at.cur != target {
		t.Fatalf("the save after the crash went to slot %d, want %d (the one that was being written)", r.at.cur, target)
	}
	wantLoad(t, c.dir, 10, "after saving again")
	save(t, r, 11)
	wantLoad(t, c.dir, 11, "after saving twice")
}

// A checkpoint too big for its slot rewrites the file with bigger slots
// (by rename, as a whole), and later saves go in place in the new file.
func TestCheckpointOversize(t *testing.T) {
	c := newTestCheckpointFile(t)
	save(t, c, 2)
	ino := func() uint64 {
		t.Helper()
		return inodeOf(t, c.path)
	}
	before := ino()

	big := testCheckpoint(3)
	big.Applier = json.RawMessage(`{"path":"` + strings.Repeat("d/", 5000) + `f"}`)
	if err := c.Save(big); err != nil {
		t.Fatal(err)
	}
	cp, ok, err := LoadCheckpoint(c.dir)
	if err != nil || !ok || cp.LastSeq != 3 || !bytes.Equal(cp.Applier, big.Applier) {
		t.Fatalf("LoadCheckpoint after the big save: seq %d ok=%v err=%v", cp.LastSeq, ok, err)
	}
	after := ino()
	if after == before {
		t.Fatal("the big save did not replace the file")
	}
	fi, err := os.Stat(c.path)
	if err != nil {
		t.Fatal(err)
	}
	if c.at.slotSize < cpSlotHeaderLen+int64(len(big.Applier)) || c.at.slotSize%cpBlock != 0 || fi.Size() != cpBlock+2*c.at.slotSize {
		t.Fatalf("after the big save: slots of %d bytes, file %d bytes, for a %d-byte applier state", c.at.slotSize, fi.Size(), len(big.Applier))
	}
	if c.at.seq != 3 {
		t.Fatalf("counter %d after the rewrite, want 3 (counters go on)", c.at.seq)
	}

	// Small and big ones alike now fit in place; the slots stay big.
	slotSize := c.at.slotSize
	for seq := uint64(4); seq <= 8; seq++ {
		cp := testCheckpoint(seq)
		if seq%2 == 0 {
			cp.Applier = big.Applier
		}
		if err := c.Save(cp); err != nil {
			t.Fatal(err)
		}
		got, _, err := LoadCheckpoint(c.dir)
		if err != nil || got.LastSeq != seq || !bytes.Equal(got.Applier, cp.Applier) {
			t.Fatalf("LoadCheckpoint after save %d: seq %d err=%v", seq, got.LastSeq, err)
		}
	}
	if ino() != after || c.at.slotSize != slotSize {
		t.Fatalf("saves that fit replaced the file or changed its slots (%d -> %d bytes)", slotSize, c.at.slotSize)
	}
	c.Close()
	r, err := openCheckpointFile(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if r.at.slotSize != slotSize || r.at.seq != 8 {
		t.Fatalf("reopened with slots of %d bytes at counter %d, want %d and 8", r.at.slotSize, r.at.seq, slotSize)
	}
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("state dir holds %v, want only %s", ents, checkpointName)
	}

	if _, err := slotSizeFor(cpMaxSlot); err == nil {
		t.Fatalf("a %d-byte checkpoint was given a slot", cpMaxSlot)
	}
}

func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// After a failed write the file is not written again: every later save
// returns the same error.
func TestCheckpointSaveErrorIsFinal(t *testing.T) {
	c := newTestCheckpointFile(t)
	save(t, c, 2)
	ro, err := os.Open(c.path)
	if err != nil {
		t.Fatal(err)
	}
	c.f.Close()
	c.f = ro // writes to it fail
	failed := c.Save(testCheckpoint(3))
	if failed == nil {
		t.Fatal("save through a read-only descriptor succeeded")
	}
	c.f.Close()
	if c.f, err = os.OpenFile(c.path, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(testCheckpoint(4)); err == nil || err.Error() != failed.Error() {
		t.Fatalf("save after a failed one: %v, want the first error %v again", err, failed)
	}
	wantLoad(t, c.dir, 2, "after the failed saves")
	c.Close()
	if err := c.Save(testCheckpoint(5)); err == nil {
		t.Fatal("save after Close succeeded")
	}
}

// Reading never panics, whatever the file holds, and every error names
// the file.
func FuzzReadCheckpointFile(f *testing.F) {
	dir := f.TempDir()
	if err := saveCheckpoint(dir, testCheckpoint(1)); err != nil {
		f.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, checkpointName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:cpBlock+40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		const path = "STATE/" + checkpointName
		if _, _, err := readCheckpoint(bytes.NewReader(data), int64(len(data)), path); err != nil && !strings.Contains(err.Error(), path) {
			t.Fatalf("error %q does not name %s", err, path)
		}
	})
}

// BenchmarkCheckpointSave compares one checkpoint save by temp file and
// rename (the JSON file before checkpoint.ferry) with one in-place slot
// save. Only meaningful on a real disk: TMPDIR must not be a tmpfs.
func BenchmarkCheckpointSave(b *testing.B) {
	b.Run("rename", func(b *testing.B) {
		dir := b.TempDir()
		path := filepath.Join(dir, legacyCheckpointName)
		for i := range b.N {
			raw, err := json.MarshalIndent(testCheckpoint(uint64(i+1)), "", "  ")
			if err != nil {
				b.Fatal(err)
			}
			if err := fsutil.WriteFileAtomic(path, append(raw, '\n'), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("slots", func(b *testing.B) {
		c := newTestCheckpointFile(b)
		for i := range b.N {
			if err := c.Save(testCheckpoint(uint64(i + 2))); err != nil {
				b.Fatal(err)
			}
		}
	})
}
