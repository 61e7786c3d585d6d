package shipper

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"unsafe"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/store"
)

// putMemory is a store that records the memory each Put was handed.
type putMemory struct {
	store.Store
	mu    sync.Mutex
	datas []*byte
}

func (p *putMemory) Put(ctx context.Context, name string, data []byte) error {
	p.mu.Lock()
	p.datas = append(p.datas, unsafe.SliceData(data))
	p.mu.Unlock()
	return p.Store.Put(ctx, name, data)
}

// TestSenderReusesItsReadBuffer: a target's sender reads segment after
// segment into the buffer it read the first one into, once that one is
// delivered (each no larger than it here), and every segment still
// arrives whole and chained. A fresh 2-3 MB slice per segment was a
// sixth of what ferry ship allocated, and fresh memory is what its
// memory limit and the kernel's first touch of each page charge for.
func TestSenderReusesItsReadBuffer(t *testing.T) {
	st := newDirStore(t)
	pm := &putMemory{Store: st}
	sh := startShipper(t, shipperConfig(t, Target{Name: "local", Store: pm}))
	rng := rand.New(rand.NewPCG(3, 4))
	const segments = 6
	for k := range segments {
		// Incompressible records, smaller in each segment (10 records).
		recs := make([]batch.Record, 10)
		for i := range recs {
			d := make([]byte, 6000-800*k)
			for j := range d {
				d[j] = byte(rng.Uint32())
			}
			recs[i].Data = d
		}
		if err := sh.AppendBatch(context.Background(), recs, nil); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, sh.Shipper)
	segs := storeSegments(t, st, "app")
	if len(segs) != segments {
		t.Fatalf("store holds %d segments, want %d", len(segs), segments)
	}
	batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for i, p := range pm.datas[1:] {
		if p != pm.datas[0] {
			t.Fatalf("segment %d was read into other memory than segment 1 (Put data at %v)", i+2, pm.datas)
		}
	}
}
