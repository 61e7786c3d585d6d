package receiver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A save refuses, naming what moved, when the state dir was removed or
// replaced, or the checkpoint file in it replaced, since the receiver
// opened them: the save would go where nobody reads it.
func TestCheckpointSaveChecksItsPlace(t *testing.T) {
	for _, c := range []struct {
		name string
		move func(t *testing.T, dir string)
		want string
	}{
		{"dir removed", func(t *testing.T, dir string) { must(t, os.RemoveAll(dir)) }, "was removed while the receiver ran"},
		{"dir replaced", func(t *testing.T, dir string) {
			must(t, os.Rename(dir, dir+".old"))
			must(t, os.Mkdir(dir, 0o755))
		}, "was replaced while the receiver ran"},
		{"dir replaced, with a copy of the file", func(t *testing.T, dir string) {
			must(t, os.Rename(dir, dir+".old"))
			must(t, os.Mkdir(dir, 0o755))
			b, err := os.ReadFile(filepath.Join(dir+".old", checkpointName))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, checkpointName), b, 0o644))
		}, "was replaced while the receiver ran"},
		{"file replaced", func(t *testing.T, dir string) {
			p := filepath.Join(dir, checkpointName)
			b, err := os.ReadFile(p)
			must(t, err)
			must(t, os.Remove(p))
			must(t, os.WriteFile(p, b, 0o644))
		}, "was removed or replaced while the receiver ran"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			must(t, os.Mkdir(dir, 0o755))
			must(t, saveCheckpoint(dir, newCheckpoint("app", 1)))
			f, err := openCheckpointFile(dir)
			must(t, err)
			defer f.Close()
			cp := newCheckpoint("app", 1)
			cp.LastSeq = 5
			must(t, f.Save(cp))
			c.move(t, dir)
			cp.LastSeq = 9
			if err := f.Save(cp); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Save after the %s: %v, want an error with %q", c.name, err, c.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
