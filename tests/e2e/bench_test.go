package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ferry bench runs the real pipeline against a store and reports what it
// measured; its segments go to a stream of its own and are removed after.
func TestBenchVerb(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "store")
	out := mustFerry(t, nil, "bench", "--store", store, "--records", "3000", "--size", "120", "--concurrency", "8",
		"--ack", "received", "--max-age", "20ms", "--json")
	var r struct {
		Stream        string
		Ack           string
		Records       int64
		Bytes         int64
		RecordsPerSec float64 `json:"records_per_sec"`
		P99ms         float64 `json:"p99_ms"`
		Ratio         float64 `json:"compression_ratio"`
		Segments      uint64
	}
	if err := json.Unmarshal([]byte(out.Stdout), &r); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	if r.Records != 3000 || r.Bytes != 3000*120 || r.Ack != "received" || r.RecordsPerSec <= 0 || r.P99ms <= 0 ||
		r.Ratio <= 1 || r.Segments < 1 {
		t.Fatalf("bench result %+v", r)
	}
	ents, err := os.ReadDir(filepath.Join(store, r.Stream))
	if err != nil {
		t.Fatal(err)
	}
	// The dir store's lock file (".segments-lock.tmp") is not an object.
	ents = slices.DeleteFunc(ents, func(e os.DirEntry) bool { return strings.HasSuffix(e.Name(), ".tmp") })
	if len(ents) != 0 {
		t.Fatalf("bench left %d objects in the store", len(ents))
	}
	failFerry(t, nil, []string{"--stream"}, "bench", "--store", "tcp://127.0.0.1:1", "--insecure", "--token", linkToken)
}
