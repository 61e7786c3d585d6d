package receiver_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// countingDecrypter counts how the receiver decrypts with a Keyring.
type countingDecrypter struct {
	*crypt.Keyring
	streamed, inPlace atomic.Int64
}

func (d *countingDecrypter) Decrypt(m *batch.Meta, ct io.Reader) (io.Reader, error) {
	d.streamed.Add(1)
	return d.Keyring.Decrypt(m, ct)
}

func (d *countingDecrypter) DecryptInPlace(m *batch.Meta, ct []byte, workers int) ([]byte, error) {
	d.inPlace.Add(1)
	return d.Keyring.DecryptInPlace(m, ct, workers)
}

// A segment the receiver holds whole (read from the store, or an offered
// copy) is decrypted over its own bytes on the decode workers, not
// through a serial reader into memory of its own; the replica is exact.
func TestDecryptInPlace(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "identity.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc, err := crypt.NewEncrypter([]string{id.Recipient().String()})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := crypt.LoadIdentities(idFile)
	if err != nil {
		t.Fatal(err)
	}
	// Records of distinct digits: a payload of a few age chunks.
	data := func(seq uint64) []byte {
		return fmt.Appendf(nil, "%x %x\n", seq*0x9e3779b97f4a7c15, seq*seq*0xbf58476d1ce4e5b9)
	}
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	b.SetEncrypter(enc)
	st, _ := receivertest.NewStore(t)
	prev, per, n := batch.ZeroHash, 20000, 4
	var want bytes.Buffer
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for i := range n {
		b.Reset(receivertest.Stream, 1, prev)
		for seq := uint64(i*per + 1); seq <= uint64((i+1)*per); seq++ {
			r := batch.Record{Seq: seq, Time: base, Data: data(seq)}
			if err := b.Add(&r); err != nil {
				t.Fatal(err)
			}
			want.Write(r.Data)
		}
		seg, m, err := b.Seal(base)
		if err != nil {
			t.Fatal(err)
		}
		if m.PayloadSize < 3*64<<10 {
			t.Fatalf("payload of %d bytes: want several age chunks", m.PayloadSize)
		}
		receivertest.PutAs(t, st, m.Name(), seg)
		prev = batch.Hash(seg)
	}
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
	dec := &countingDecrypter{Keyring: kr}
	cfg.Decrypter, cfg.DecodeWorkers = dec, 2
	receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, want.Bytes(), "after the pass")
	if got := dec.inPlace.Load(); got != int64(n) || dec.streamed.Load() != 0 {
		t.Fatalf("decrypted %d segments in place and %d streamed, want %d in place", got, dec.streamed.Load(), n)
	}
}
