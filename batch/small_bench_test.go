package batch

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSmallSegments is the seal of many quiet streams (issue 23):
// per op, 100 streams' Builders each build and seal a segment of 200
// log records (~20 KB framed), against one Builder sealing the same
// number of records as one segment. The records are
// tests/bench/streamlines' lines (~80 bytes). cpu-us/seg is the process's CPU time
// (user+system, the compressing goroutines included) per stream segment.
func BenchmarkSmallSegments(b *testing.B) {
	const streams, per = 100, 200
	// tests/bench/streamlines' lines: stream i's line n.
	line := func(i, n int) Record {
		at := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second / 100)
		return Record{Time: at, Data: fmt.Appendf(nil, "%s %08d GET /api/v1/items/%d?user=%d 200 %dms\n",
			at.Format(time.RFC3339Nano), n, (n-1)%997, i, (n-1)%89)}
	}
	recs := make([][]Record, streams)
	for i := range recs {
		for j := range per {
			recs[i] = append(recs[i], line(i, 1000+j))
		}
	}
	all := make([]Record, streams*per)
	for j := range all {
		all[j] = line(0, 100000+j)
	}
	b.Run("many", func(b *testing.B) {
		blds := make([]*Builder, streams)
		prev := make([]string, streams)
		seq := make([]uint64, streams)
		for i := range blds {
			blds[i] = newBuilder(b)
			prev[i] = ZeroHash
		}
		b.ReportAllocs()
		cpu0 := rusageCPU()
		for b.Loop() {
			for i, bld := range blds {
				bld.Reset(fmt.Sprintf("s%03d", i), 1, prev[i])
				for j := range recs[i] {
					seq[i]++
					recs[i][j].Seq = seq[i]
					if err := bld.Add(&recs[i][j]); err != nil {
						b.Fatal(err)
					}
				}
				if _, _, err := bld.Seal(time.Time{}); err != nil {
					b.Fatal(err)
				}
				prev[i] = bld.Hash()
			}
		}
		b.ReportMetric(float64(rusageCPU()-cpu0)/float64(b.N)/streams/1e3, "cpu-us/seg")
	})
	b.Run("one", func(b *testing.B) {
		bld := newBuilder(b)
		prev, seq := ZeroHash, uint64(0)
		b.ReportAllocs()
		cpu0 := rusageCPU()
		for b.Loop() {
			bld.Reset("s000", 1, prev)
			for j := range all {
				seq++
				all[j].Seq = seq
				if err := bld.Add(&all[j]); err != nil {
					b.Fatal(err)
				}
			}
			if _, _, err := bld.Seal(time.Time{}); err != nil {
				b.Fatal(err)
			}
			prev = bld.Hash()
		}
		b.ReportMetric(float64(rusageCPU()-cpu0)/float64(b.N)/streams/1e3, "cpu-us/seg")
	})
}

func rusageCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
