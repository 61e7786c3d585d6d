package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

func genRecord(gen uint32, fork uint64, site string) batch.Generation {
	return batch.Generation{Stream: "app", Generation: gen, Parent: gen - 1, ForkSeq: fork,
		ForkHash: strings.Repeat("ab", 32), Time: time.Unix(1_700_000_000, 0), Site: site, Host: "h", Reason: "promote"}
}

func TestHistoriesReadsEachRecordOnce(t *testing.T) {
	ctx := context.Background()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gets := 0
	counted := getCounter{Store: st, gets: &gets}
	hs := NewHistories(counted, "app")
	h, err := hs.Read(ctx)
	if err != nil || h.Newest().Generation != 1 {
		t.Fatalf("empty stream: history newest %d, err %v; want generation 1", h.Newest().Generation, err)
	}
	for g := uint32(2); g <= 4; g++ {
		if err := CreateGeneration(ctx, st, genRecord(g, uint64(g)*10, "dr")); err != nil {
			t.Fatal(err)
		}
		h, err := hs.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h.Newest().Generation != g || h.Newest().ForkSeq != uint64(g)*10 {
			t.Fatalf("after creating generation %d: newest %+v", g, h.Newest())
		}
	}
	if gets != 3 {
		t.Errorf("three records read through three Reads with %d Gets; want each read once (3)", gets)
	}
}

// getCounter counts Gets, to show that Histories reads each record once.
type getCounter struct {
	store.Store
	gets *int
}

func (g getCounter) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	*g.gets++
	return g.Store.Get(ctx, name)
}

// Of concurrent promotions of one generation exactly one wins; the others
// learn who won.
func TestCreateGenerationOneWinner(t *testing.T) {
	ctx := context.Background()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = CreateGeneration(ctx, st, genRecord(2, 100, fmt.Sprintf("site%d", i))) })
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrPromoted) || !strings.Contains(err.Error(), "promoted at seq 100 on site"):
			t.Errorf("promotion %d: %v; want ErrPromoted naming the winner", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent promotions won; want exactly 1", won, n)
	}
	// A retry of the winner's exact bytes is not a conflict.
	h, err := ReadHistory(ctx, st, "app")
	if err != nil {
		t.Fatal(err)
	}
	if err := CreateGeneration(ctx, st, h.Newest()); err != nil {
		t.Errorf("retrying the winning record: %v", err)
	}
}

// A damaged or oversized record, or a missing link in the chain, stops the
// reader with an error naming the object.
func TestReadHistoryRefusesBadRecords(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		put  func(store.Store) error
		want string
	}{
		{"damaged", func(st store.Store) error {
			return st.Put(ctx, "app/generations/00000002.json", []byte("{not json"))
		}, "app/generations/00000002.json"},
		{"oversized", func(st store.Store) error {
			return st.Put(ctx, "app/generations/00000002.json", make([]byte, maxGenerationRecord+1))
		}, "larger than"},
		{"gap in the chain", func(st store.Store) error {
			return CreateGeneration(ctx, st, genRecord(3, 5, "dr"))
		}, "the record of generation 2 is missing"},
		{"another stream's record", func(st store.Store) error {
			data, _ := batch.MarshalGeneration(batch.Generation{Stream: "other", Generation: 2, Parent: 1, ForkSeq: 1,
				ForkHash: strings.Repeat("ab", 32), Time: time.Unix(1, 0)})
			return st.Put(ctx, "app/generations/00000002.json", data)
		}, "stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := dir.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.put(st); err != nil {
				t.Fatal(err)
			}
			_, err = ReadHistory(ctx, st, "app")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadHistory: %v; want an error containing %q", err, tc.want)
			}
			if !errors.Is(err, store.ErrPermanent) {
				t.Errorf("ReadHistory: %v; want it permanent (no retry mends a damaged record)", err)
			}
		})
	}
}
