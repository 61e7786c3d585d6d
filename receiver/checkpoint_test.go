package receiver_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
)

func TestCheckpointFile(t *testing.T) {
	segs := chain(t, 2, 10)
	st, _ := newStore(t)
	put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := testConfig(t, st, &receiver.FileApplier{Path: replica})

	// Open alone writes the starting checkpoint.
	r := open(t, cfg)
	cp := loadCheckpoint(t, cfg)
	if cp.Format != 1 || cp.Stream != testStream || cp.Generation != 1 || cp.LastSeq != 0 || cp.LastHash != batch.ZeroHash {
		t.Fatalf("checkpoint after Open: %+v", cp)
	}
	if err := run(t, r); err != nil {
		t.Fatal(err)
	}
	r.Close()

	raw, err := os.ReadFile(filepath.Join(cfg.StateDir, "checkpoint.json"))
	if err != nil {
		t.Fatal(err)
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
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("checkpoint.json is not JSON: %v\n%s", err, raw)
	}
	if doc.Format != 1 || doc.Stream != testStream || doc.LastSeq != 20 || doc.LastHash != segs[1].hash ||
		doc.Segment != segs[1].name || doc.AppliedAt == "" || doc.Applier.Size != int64(len(want(1, 20))) {
		t.Fatalf("checkpoint.json does not record segment %s applied (replica %d bytes):\n%s", segs[1].name, len(want(1, 20)), raw)
	}
	wantCheckpoint(t, loadCheckpoint(t, cfg), segs[1], "LoadCheckpoint")

	// Written by temp file and rename: nothing but the lock and the
	// checkpoint is left in the state dir.
	ents, err := os.ReadDir(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if want := []string{"LOCK", "checkpoint.json"}; !slices.Equal(got, want) {
		t.Fatalf("state dir holds %v, want %v", got, want)
	}
}

func TestLoadCheckpoint(t *testing.T) {
	if _, ok, err := receiver.LoadCheckpoint(t.TempDir()); ok || err != nil {
		t.Fatalf("LoadCheckpoint of an empty dir: ok=%v err=%v, want none and no error", ok, err)
	}
	for _, tc := range []struct {
		name, content, msg string
	}{
		{"damaged", `{"format": 1, "stream": "app"`, "damaged"},
		{"empty", ``, "damaged"},
		{"newer format", `{"format": 2, "stream": "app"}`, "format 2"},
		{"no format", `{"stream": "app"}`, "format 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "checkpoint.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
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
			st, _ := newStore(t)
			cfg := testConfig(t, st, &receiver.FileApplier{Path: filepath.Join(t.TempDir(), "replica")})
			cfg.StateDir = dir
			if r, err := receiver.Open(cfg, quiet); err == nil {
				r.Close()
				t.Fatal("Open with a bad checkpoint succeeded")
			}
			if raw, _ := os.ReadFile(path); string(raw) != tc.content {
				t.Fatalf("Open changed the bad checkpoint to %q", raw)
			}
		})
	}
}
