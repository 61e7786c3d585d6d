package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// lastJSON decodes the last line of stderr as a JSON object, failing the
// test if it is not one.
func lastJSON(t *testing.T, stderr string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	var obj map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &obj); err != nil {
		t.Fatalf("the last line of stderr is not JSON: %v\n%s", err, stderr)
	}
	return obj
}

// ship and receive log a start-up line (version, commit, stream,
// generation, where they resume). With --log-format json, ship, receive
// and restore end with their
// summary as one JSON log line (msg "VERB summary") holding the same
// figures the text line gives, and every other line they write to stderr
// is JSON too.
func TestSummaryAsJSON(t *testing.T) {
	s := newStream(t, "jsonsum")
	data := logLines(7, 0, 500)
	r := s.ship(data, "--log-format", "json")
	sum := lastJSON(t, r.Stderr)
	if sum["msg"] != "ship summary" || sum["stream"] != "jsonsum" || sum["records"] != float64(500) || sum["last_seq"] != float64(500) || sum["bytes"].(float64) < float64(len(data)) || sum["segments"].(float64) < 1 {
		t.Errorf("ship summary %v, want msg \"ship summary\", stream jsonsum, 500 records of at least %d bytes, last seq 500", sum, len(data))
	}
	var start map[string]any
	for _, l := range strings.Split(r.Stderr, "\n") {
		if strings.Contains(l, `"ship starting"`) {
			json.Unmarshal([]byte(l), &start)
		}
	}
	if start["version"] == nil || start["commit"] == nil || start["stream"] != "jsonsum" || start["resume_after_seq"] != float64(0) || start["generation"] != float64(1) {
		t.Errorf("ship's start-up line %v, want version, commit, stream jsonsum, generation 1, resume after seq 0:\n%s", start, r.Stderr)
	}
	r = s.receiveOnce("--log-format", "json")
	if !strings.Contains(r.Stderr, `"msg":"receive starting"`) || !strings.Contains(r.Stderr, `"resume_after_seq":0`) {
		t.Errorf("receive has no start-up line with where it resumes:\n%s", r.Stderr)
	}
	sum = lastJSON(t, r.Stderr)
	if sum["msg"] != "receive summary" || sum["records"] != float64(500) || sum["checkpoint_seq"] != float64(500) || sum["stream"] != "jsonsum" {
		t.Errorf("receive summary %v, want 500 records, checkpoint seq 500", sum)
	}
	s.wantReplica(data, "after receive")
	r = mustFerry(t, nil, "restore", "--store", s.store, "--stream", s.name, "--state", s.dir+"/rstate",
		"--apply", "file:"+s.dir+"/restored", "--log-format", "json")
	sum = lastJSON(t, r.Stderr)
	if sum["msg"] != "restore summary" || sum["records"] != float64(500) || sum["restored_seq"] != float64(500) {
		t.Errorf("restore summary %v, want 500 records restored through seq 500", sum)
	}
	for _, out := range []string{r.Stderr} {
		for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if !json.Valid([]byte(l)) {
				t.Errorf("a stderr line under --log-format json is not JSON: %q", l)
			}
		}
	}
	// The text summary without it.
	r = mustFerry(t, nil, s.receiveArgs("--once")...)
	if lines := strings.Split(strings.TrimSpace(r.Stderr), "\n"); !strings.HasPrefix(lines[len(lines)-1], "ferry receive: applied 0 segments") {
		t.Errorf("text summary: %q", r.Stderr)
	}
}
