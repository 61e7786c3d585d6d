package spool

import (
	"context"
	"fmt"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// benchRecords is about size framed bytes of log-like records, in
// entries of 8192 (as a stdin source hands them over).
func benchRecords(size int) [][]batch.Record {
	var entries [][]batch.Record
	var cur []batch.Record
	for n, i := 0, 0; n < size; i++ {
		line := fmt.Appendf(nil, "2025-06-07T08:%02d:%02d.%06dZ INFO  http method=GET path=/api/v1/orders/%d status=200 dur=%d.%dms req=%016x\n",
			i/60%60, i%60, i*7919%1000000, i%100000, i%250, i%10, uint64(i)*0x9e3779b97f4a7c15)
		r := batch.Record{Data: line}
		n += r.FramedSize()
		cur = append(cur, r)
		if len(cur) == 8192 {
			entries, cur = append(entries, cur), nil
		}
	}
	return append(entries, cur)
}

// BenchmarkAppend is the spool stage: 32 MiB of records appended to a
// spool with fsync "batch" and 4 MiB segments, journaled (as from stdin)
// or not (a replayable source), sealed at the end. It covers the journal
// write, framing, compression on the Builder's workers and the seals.
func BenchmarkAppend(b *testing.B) {
	entries := benchRecords(32 << 20)
	var size int64
	for _, e := range entries {
		for i := range e {
			size += int64(e[i].FramedSize())
		}
	}
	for _, replayable := range []bool{false, true} {
		b.Run(fmt.Sprintf("replayable=%v", replayable), func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				cfg := Config{Dir: b.TempDir(), Stream: "app", Fsync: FsyncBatch,
					Policy: batch.FlushPolicy{MaxBytes: 4 << 20}}
				sp, err := Open(cfg, nil, quiet)
				if err != nil {
					b.Fatal(err)
				}
				if replayable {
					sp.SetReplayable()
				}
				for i, e := range entries {
					if _, err := sp.Append(context.Background(), e, fmt.Appendf(nil, "%d", i)); err != nil {
						b.Fatal(err)
					}
				}
				if err := sp.Seal("bench"); err != nil {
					b.Fatal(err)
				}
				sp.Close()
			}
		})
	}
}
