package receiver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
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

// A many-stream receiver does not open again a stream that stopped on a
// segment of a newer format (this binary will never read it), however
// short its retry; its other streams go on.
func TestMultiDoesNotReopenANewerFormat(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 3, 4)
	written := fmt.Sprintf(`"format":%d`, batch.FormatVersion)
	other := receivertest.SealSeg(t, "good", 1, 1, 3, batch.ZeroHash)
	if err := st.Put(context.Background(), batch.SegmentKey("good", other.Name), other.Data); err != nil {
		t.Fatal(err)
	}
	receivertest.Put(t, st, segs[0])
	receivertest.PutAs(t, st, segs[1].Name, bytes.Replace(segs[1].Data, []byte(written), []byte(`"format":9`), 1))
	tmp := t.TempDir()
	var opens sync.Map // stream -> *atomic.Int64
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		n, _ := opens.LoadOrStore(stream, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
			Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Prefetch: -1,
			PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond, RetryBudget: time.Hour, Fence: fence}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, slog.New(slog.DiscardHandler))
	}
	var stops atomic.Int64
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
		PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond, Retry: 20 * time.Millisecond,
		OnStop: func(stream string, _ *receiver.Receiver, err error, _ bool) {
			if stream == receivertest.Stream && receiver.IsNewerFormat(err) {
				stops.Add(1)
			}
		}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	receivertest.Eventually(t, "the stream stopped on the newer format", func() bool { return stops.Load() > 0 })
	time.Sleep(50 * 20 * time.Millisecond) // 50 retry periods
	n, _ := opens.Load(receivertest.Stream)
	if got := n.(*atomic.Int64).Load(); got != 1 {
		t.Fatalf("the stream with a newer-format segment was opened %d times in 50 retry periods; want once", got)
	}
	receivertest.WantFile(t, filepath.Join(tmp, receivertest.Stream+".log"), receivertest.Want(1, 4), "before the newer segment")
	good := m.Receiver("good")
	if good == nil || good.Checkpoint().LastSeq != 3 {
		t.Fatalf("the other stream stopped too: %v", good)
	}
}
