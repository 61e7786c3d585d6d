package receiver_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// IsNewerFormat recognises the error batch gives a segment of a newer
// format, and no other.
func TestIsNewerFormat(t *testing.T) {
	seg := receivertest.SealSeg(t, receivertest.Stream, 1, 1, 3, batch.ZeroHash)
	written := fmt.Sprintf(`"format":%d`, batch.FormatVersion)
	future := bytes.Replace(seg.Data, []byte(written), []byte(`"format":9`), 1)
	if bytes.Equal(future, seg.Data) {
		t.Fatalf("segment does not hold %s", written)
	}
	_, _, err := batch.ParseMeta(future)
	if !receiver.IsNewerFormat(err) || !receiver.IsNewerFormat(fmt.Errorf("get %s: %w", seg.Key(), err)) {
		t.Fatalf("ParseMeta of format 9: %v; IsNewerFormat says no", err)
	}
	for _, other := range []error{nil, batch.ErrCorrupt, errors.New("segment format 9 is unknown"), receiver.ErrGap} {
		if receiver.IsNewerFormat(other) {
			t.Errorf("IsNewerFormat(%v) = true", other)
		}
	}
}

// A receiver stops on a segment of a newer format at once, with a retry
// budget far longer than the test: retrying cannot change its format.
func TestReceiverStopsAtOnceOnANewerFormat(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 3, 4)
	receivertest.Put(t, st, segs[0], segs[2])
	written := fmt.Sprintf(`"format":%d`, batch.FormatVersion)
	receivertest.PutAs(t, st, segs[1].Name, bytes.Replace(segs[1].Data, []byte(written), []byte(`"format":9`), 1))
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
	cfg.RetryBudget = time.Hour
	err := receivertest.Run(t, receivertest.Open(t, cfg))
	if !receiver.IsNewerFormat(err) || !strings.Contains(err.Error(), segs[1].Name) {
		t.Fatalf("Run: %v; want the newer-format error naming %s", err, segs[1].Name)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 4), "after stopping at the newer segment")
}
