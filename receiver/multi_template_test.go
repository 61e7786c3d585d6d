package receiver_test

import (
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/receiver"
)

// A stream name fills the template only if it cannot leave the directory
// the template names.
func TestExpandTemplateRefusesHostileNames(t *testing.T) {
	got, err := receiver.ExpandTemplate("file:/srv/replica/{stream}.log", "app-1")
	if err != nil || got != "file:/srv/replica/app-1.log" {
		t.Fatalf("ExpandTemplate = %q, %v", got, err)
	}
	for _, bad := range []string{"..", ".", "a/b", "../etc", "a\\b", "x\x00y", "new\nline", "", ".hidden", strings.Repeat("a", 200)} {
		if got, err := receiver.ExpandTemplate("dir:/srv/replica/{stream}", bad); err == nil || !strings.Contains(err.Error(), "cannot name a path") {
			t.Errorf("stream %q: want a refusal, got %q, %v", bad, got, err)
		}
	}
	if _, err := receiver.ExpandTemplate("file:/srv/replica.log", "app"); err == nil || !strings.Contains(err.Error(), "has no {stream}") {
		t.Errorf("a template without {stream}: want a refusal, got %v", err)
	}
}
