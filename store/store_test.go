package store

import "testing"

// segmentsOnly is a Store (its methods are never called) that answers
// SegmentsOnly with only.
type segmentsOnly struct {
	Store
	only bool
}

func (s segmentsOnly) SegmentsOnly() bool { return s.only }

// A store is segments-only only if it says so: lacking the method, or
// answering false, it holds any object.
func TestIsSegmentsOnly(t *testing.T) {
	if IsSegmentsOnly(struct{ Store }{}) {
		t.Error("a store without SegmentsOnly is segments-only")
	}
	if IsSegmentsOnly(segmentsOnly{only: false}) {
		t.Error("a store answering false is segments-only")
	}
	if !IsSegmentsOnly(segmentsOnly{only: true}) {
		t.Error("a store answering true is not segments-only")
	}
}
