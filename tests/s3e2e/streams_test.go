package s3e2e

import (
	"strings"
	"testing"
)

// ls and verify of a stream with no segments under an s3:// store fail
// and name the streams the prefix does hold (ListObjectsV2's common
// prefixes), as for a directory store.
func TestUnknownStreamNamesTheStreamsS3(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.newStream("site", "demo")
	a.ship(numbered(1, 100))
	b := h.newStream("site", "other")
	b.ship(numbered(1, 10))
	for _, verb := range []string{"ls", "verify"} {
		r := h.run(nil, nil, verb, "--store", a.url(), "--stream", "demoo")
		if r.Code == 0 {
			t.Fatalf("%s of an unknown stream: want a non-zero exit:\n%s", verb, r)
		}
		for _, w := range []string{`stream "demoo" has no segments`, "its streams: demo, other"} {
			if !strings.Contains(r.Stderr, w) {
				t.Errorf("%s does not say %q:\n%s", verb, w, r)
			}
		}
	}
	h.ferry(nil, "verify", "--store", a.url(), "--stream", "demo")
}
