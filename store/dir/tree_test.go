package dir_test

import (
	"testing"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/storetest"
)

func TestTreeConformance(t *testing.T) {
	storetest.RunTree(t, func(t *testing.T) store.Store { return newStore(t, t.TempDir()) })
}

func TestRangeConformance(t *testing.T) {
	storetest.RunRange(t, func(t *testing.T) store.Store { return newStore(t, t.TempDir()) })
}
