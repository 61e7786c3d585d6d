package apply_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

func TestStdout(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	var stdout bytes.Buffer
	a, err := apply.Parse("stdout", &stdout)
	if err != nil {
		t.Fatal(err)
	}
	receivertest.RunOnce(t, receivertest.Config(t, st, a))
	if !bytes.Equal(stdout.Bytes(), receivertest.Want(1, 20)) {
		t.Fatalf("stdout got %d bytes, want %d", stdout.Len(), len(receivertest.Want(1, 20)))
	}
}

// errWriter fails every write.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// A failed write to stdout cannot be retried (part of it may be out), so it
// stops the receiver.
func TestStdoutWriteErrorIsFatal(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 1, 10)...)
	a, err := apply.Parse("stdout", errWriter{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := receivertest.Config(t, st, a)
	cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour
	r := receivertest.Open(t, cfg)
	if err := receivertest.Run(t, r); !errors.Is(err, receiver.ErrFatal) {
		t.Fatalf("Run: %v, want ErrFatal", err)
	}
	if cp := r.Checkpoint(); cp.LastSeq != 0 {
		t.Fatalf("checkpoint at seq %d after a failed write", cp.LastSeq)
	}
}
