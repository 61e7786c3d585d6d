package receiver_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// The checkpoint file as docs/FORMAT.md ("Receiver checkpoint") lays it
// out, written and read here independently of the receiver's code.
const (
	checkpointName = "checkpoint.ferry"
	legacyName     = "checkpoint.json"
	cpBlock        = 4096
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// cpSlot is one slot's content; a nil payload leaves the slot zero.
type cpSlot struct {
	seq     uint64
	payload []byte
}

// layoutFile builds a checkpoint file with the given slot size and slots.
func layoutFile(slotSize int, slots [2]cpSlot) []byte {
	b := make([]byte, cpBlock+2*slotSize)
	copy(b, "FERRYCKP")
	binary.BigEndian.PutUint32(b[8:], 1)
	binary.BigEndian.PutUint32(b[12:], uint32(slotSize))
	binary.BigEndian.PutUint32(b[16:], crc32.Checksum(b[:16], crc32c))
	for i, s := range slots {
		if s.payload == nil {
			continue
		}
		o := b[cpBlock+i*slotSize:]
		copy(o, "FERRYSLT")
		binary.BigEndian.PutUint64(o[8:], s.seq)
		binary.BigEndian.PutUint32(o[16:], uint32(len(s.payload)))
		binary.BigEndian.PutUint32(o[20:], crc32.Update(crc32.Checksum(o[8:20], crc32c), crc32c, s.payload))
		copy(o[24:], s.payload)
	}
	return b
}

// parseLayout reads a checkpoint file the same way: the slot size and
// each slot's counter and payload (nil when the slot is not valid).
func parseLayout(t *testing.T, b []byte) (slotSize int, slots [2]cpSlot) {
	t.Helper()
	if len(b) < cpBlock || string(b[:8]) != "FERRYCKP" || binary.BigEndian.Uint32(b[8:]) != 1 ||
		binary.BigEndian.Uint32(b[16:]) != crc32.Checksum(b[:16], crc32c) {
		t.Fatalf("checkpoint file header % x is not FERRYCKP layout 1 with its checksum", b[:min(len(b), 20)])
	}
	slotSize = int(binary.BigEndian.Uint32(b[12:]))
	if slotSize%cpBlock != 0 || len(b) != cpBlock+2*slotSize {
		t.Fatalf("checkpoint file of %d bytes has slot size %d", len(b), slotSize)
	}
	for i := range slots {
		o := b[cpBlock+i*slotSize : cpBlock+(i+1)*slotSize]
		n := int(binary.BigEndian.Uint32(o[16:]))
		if string(o[:8]) != "FERRYSLT" || n > slotSize-24 ||
			binary.BigEndian.Uint32(o[20:]) != crc32.Update(crc32.Checksum(o[8:20], crc32c), crc32c, o[24:24+n]) {
			continue
		}
		slots[i] = cpSlot{seq: binary.BigEndian.Uint64(o[8:]), payload: o[24 : 24+n]}
	}
	return slotSize, slots
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestCheckpointFile(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	path := filepath.Join(cfg.StateDir, checkpointName)

	// Open alone writes the starting checkpoint.
	r := receivertest.Open(t, cfg)
	cp := loadCheckpoint(t, cfg)
	if cp.Format != 1 || cp.Stream != receivertest.Stream || cp.Generation != 1 || cp.LastSeq != 0 || cp.LastHash != batch.ZeroHash {
		t.Fatalf("checkpoint after Open: %+v", cp)
	}
	ino := inode(t, path)
	if err := receivertest.Run(t, r); err != nil {
		t.Fatal(err)
	}
	r.Close()

	// Saved in place: the same file, the same size, the two slots holding
	// the last two checkpoints.
	if got := inode(t, path); got != ino {
		t.Fatalf("checkpoint file replaced (inode %d, was %d); saves should write it in place", got, ino)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	slotSize, slots := parseLayout(t, raw)
	if slotSize != cpBlock {
		t.Fatalf("slot size %d, want %d", slotSize, cpBlock)
	}
	newest, older := slots[0], slots[1]
	if older.seq > newest.seq {
		newest, older = older, newest
	}
	// Open saved counter 1; the run one or two more (two segments, maybe
	// applied as one group).
	if newest.payload == nil || older.payload == nil || newest.seq < 2 || older.seq != newest.seq-1 {
		t.Fatalf("slots hold counters %d and %d (valid: %v, %v), want the last two saves, 1 and 2 or 2 and 3",
			slots[0].seq, slots[1].seq, slots[0].payload != nil, slots[1].payload != nil)
	}
	var doc struct {
		Format    int    `json:"format"`
		Stream    string `json:"stream"`
		LastSeq   uint64 `json:"last_seq"`
		LastHash  string `json:"last_hash"`
		Segment   string `json:"segment"`
		AppliedAt string `json:"applied_at"`
		Applier   struct {
			Size int64 `json:"size"`
		} `json:"applier"`
	}
	if err := json.Unmarshal(newest.payload, &doc); err != nil {
		t.Fatalf("newest slot is not JSON: %v\n%s", err, newest.payload)
	}
	if doc.Format != 1 || doc.Stream != receivertest.Stream || doc.LastSeq != 20 || doc.LastHash != segs[1].Hash ||
		doc.Segment != segs[1].Name || doc.AppliedAt == "" || doc.Applier.Size != int64(len(receivertest.Want(1, 20))) {
		t.Fatalf("checkpoint does not record segment %s applied (replica %d bytes):\n%s", segs[1].Name, len(receivertest.Want(1, 20)), newest.payload)
	}
	receivertest.WantCheckpoint(t, loadCheckpoint(t, cfg), segs[1], "LoadCheckpoint")

	// Nothing but the lock and the checkpoint is left in the state dir.
	onlyCheckpoint(t, cfg.StateDir, "")
}

// onlyCheckpoint fails unless dir holds just the lock and the checkpoint
// file (when says when, for the message).
func onlyCheckpoint(t *testing.T, dir, when string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if want := []string{"LOCK", checkpointName}; !slices.Equal(got, want) {
		t.Fatalf("state dir holds %v%s, want %v", got, when, want)
	}
}

// A file laid out as docs/FORMAT.md says is read: the valid slot with the
// higher counter, whichever slot that is.
func TestCheckpointLayout(t *testing.T) {
	a := []byte(`{"format":1,"stream":"app","generation":1,"last_seq":10,"last_hash":"a"}`)
	b := []byte(`{"format":1,"stream":"app","generation":1,"last_seq":20,"last_hash":"b"}`)
	for _, tc := range []struct {
		name     string
		slotSize int
		slots    [2]cpSlot
		want     uint64
	}{
		{"newer in slot 1", cpBlock, [2]cpSlot{{7, a}, {8, b}}, 20},
		{"newer in slot 0", cpBlock, [2]cpSlot{{9, b}, {8, a}}, 20},
		{"only slot 0", cpBlock, [2]cpSlot{{1, a}, {}}, 10},
		{"only slot 1", cpBlock, [2]cpSlot{{}, {1, b}}, 20},
		{"bigger slots", 3 * cpBlock, [2]cpSlot{{5, b}, {4, a}}, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, checkpointName), layoutFile(tc.slotSize, tc.slots), 0o644); err != nil {
				t.Fatal(err)
			}
			cp, ok, err := receiver.LoadCheckpoint(dir)
			if err != nil || !ok || cp.LastSeq != tc.want {
				t.Fatalf("LoadCheckpoint: seq %d ok=%v err=%v, want seq %d", cp.LastSeq, ok, err, tc.want)
			}
		})
	}
}

func TestLoadCheckpoint(t *testing.T) {
	if _, ok, err := receiver.LoadCheckpoint(t.TempDir()); ok || err != nil {
		t.Fatalf("LoadCheckpoint of an empty dir: ok=%v err=%v, want none and no error", ok, err)
	}
	good := layoutFile(cpBlock, [2]cpSlot{{1, []byte(`{"format":1,"stream":"app"}`)}, {}})
	badHeader := func(f func(h []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		binary.BigEndian.PutUint32(b[16:], crc32.Checksum(b[:16], crc32c))
		return b
	}
	for _, tc := range []struct {
		name, file string
		content    []byte
		msg        string
	}{
		{"json damaged", legacyName, []byte(`{"format": 1, "stream": "app"`), "damaged"},
		{"json empty", legacyName, nil, "damaged"},
		{"json newer format", legacyName, []byte(`{"format": 2, "stream": "app"}`), "format 2"},
		{"json no format", legacyName, []byte(`{"stream": "app"}`), "format 0"},
		{"empty", checkpointName, nil, "damaged: 0 bytes"},
		{"short", checkpointName, good[:cpBlock+100], "damaged"},
		{"long", checkpointName, append(bytes.Clone(good), 0), "damaged"},
		{"not ours", checkpointName, append([]byte(`{"format":1}`), make([]byte, 3*cpBlock)...), "no FERRYCKP header"},
		{"header checksum", checkpointName, func() []byte { b := bytes.Clone(good); b[13]++; return b }(), "header fails its checksum"},
		{"newer layout", checkpointName, badHeader(func(h []byte) { h[11] = 2 }), "layout version 2"},
		{"odd slot size", checkpointName, badHeader(func(h []byte) { h[15] = 1 }), "slot size"},
		{"huge slot size", checkpointName, badHeader(func(h []byte) { binary.BigEndian.PutUint32(h[12:], 1<<31) }), "slot size"},
		{"both slots", checkpointName, layoutFile(cpBlock, [2]cpSlot{}), "both slots fail their checksum"},
		{"slot newer format", checkpointName, layoutFile(cpBlock, [2]cpSlot{{1, []byte(`{"format":2}`)}, {}}), "format 2"},
		{"slot not json", checkpointName, layoutFile(cpBlock, [2]cpSlot{{1, []byte(`{"format":1`)}, {}}), "damaged: slot 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tc.file)
			if err := os.WriteFile(path, tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			_, ok, err := receiver.LoadCheckpoint(dir)
			if err == nil || ok {
				t.Fatalf("LoadCheckpoint: ok=%v err=%v, want an error", ok, err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("LoadCheckpoint: %q, want it to name %s and say %q", err, path, tc.msg)
			}

			// Open refuses it too rather than starting over.
			st, _ := receivertest.NewStore(t)
			cfg := receivertest.Config(t, st, &apply.File{Path: filepath.Join(t.TempDir(), "replica")})
			cfg.StateDir = dir
			if r, err := receiver.Open(cfg, receivertest.Quiet); err == nil {
				r.Close()
				t.Fatal("Open with a bad checkpoint succeeded")
			}
			if raw, _ := os.ReadFile(path); !bytes.Equal(raw, tc.content) {
				t.Fatalf("Open changed the bad checkpoint to %q", raw)
			}
		})
	}
}

// writeLegacy turns cfg's state into one written before the slot file:
// its checkpoint as checkpoint.json, as that ferry wrote it.
func writeLegacy(t *testing.T, cfg receiver.Config) receiver.Checkpoint {
	t.Helper()
	cp := loadCheckpoint(t, cfg)
	raw, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, legacyName), append(raw, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(cfg.StateDir, checkpointName)); err != nil {
		t.Fatal(err)
	}
	return cp
}

// A state dir with only checkpoint.json goes on from it; the first save
// writes checkpoint.ferry and removes checkpoint.json.
func TestCheckpointMigration(t *testing.T) {
	segs := receivertest.Chain(t, 5, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[:2]...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	receivertest.RunOnce(t, cfg)
	legacy := writeLegacy(t, cfg)

	cp := loadCheckpoint(t, cfg)
	var applier bytes.Buffer
	if err := json.Compact(&applier, cp.Applier); err != nil {
		t.Fatal(err)
	}
	if cp.LastSeq != 20 || cp.LastHash != legacy.LastHash || !bytes.Equal(applier.Bytes(), legacy.Applier) {
		t.Fatalf("LoadCheckpoint of checkpoint.json: %+v, want %+v", cp, legacy)
	}

	// Nothing new: the old file stays as it is.
	cfg.Applier = &apply.File{Path: replica}
	receivertest.RunOnce(t, cfg)
	if _, err := os.Stat(filepath.Join(cfg.StateDir, legacyName)); err != nil {
		t.Fatalf("a run that saved nothing touched checkpoint.json: %v", err)
	}

	receivertest.Put(t, st, segs[2:4]...)
	cfg.Applier = &apply.File{Path: replica}
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, cfg), segs[3], "after the run on checkpoint.json")
	receivertest.WantFile(t, replica, receivertest.Want(1, 40), "after the run on checkpoint.json")
	receivertest.WantCheckpoint(t, loadCheckpoint(t, cfg), segs[3], "LoadCheckpoint after the run")
	onlyCheckpoint(t, cfg.StateDir, " after the first save")

	// From there on it is saved in place.
	path := filepath.Join(cfg.StateDir, checkpointName)
	ino := inode(t, path)
	receivertest.Put(t, st, segs[4])
	cfg.Applier = &apply.File{Path: replica}
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, cfg), segs[4], "after the next run")
	if got := inode(t, path); got != ino {
		t.Fatalf("the next save replaced %s (inode %d, was %d) instead of writing in place", path, got, ino)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, slots := parseLayout(t, raw); slots[0].payload == nil || slots[1].payload == nil {
		t.Fatalf("after an in-place save one slot is still empty: counters %d, %d", slots[0].seq, slots[1].seq)
	}
}

// When both files exist (a crash after checkpoint.ferry was written and
// before checkpoint.json was removed), checkpoint.ferry wins.
func TestCheckpointBothFilesNewWins(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[:1]...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	receivertest.RunOnce(t, cfg)
	writeLegacy(t, cfg) // at segs[0]
	receivertest.Put(t, st, segs[1:]...)
	cfg.Applier = &apply.File{Path: replica}
	receivertest.RunOnce(t, cfg) // writes checkpoint.ferry at segs[1], removes checkpoint.json

	// Put the old checkpoint.json back next to the newer checkpoint.ferry.
	if err := os.WriteFile(filepath.Join(cfg.StateDir, legacyName), []byte(`{"format":1,"stream":"app","generation":1,"last_seq":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	receivertest.WantCheckpoint(t, loadCheckpoint(t, cfg), segs[1], "LoadCheckpoint with both files")
	cfg.Applier = &apply.File{Path: replica}
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, cfg), segs[1], "a run with both files")
	receivertest.WantFile(t, replica, receivertest.Want(1, 20), "a run with both files")
}
