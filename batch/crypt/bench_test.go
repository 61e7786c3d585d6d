package crypt_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
)

// logLines returns records of log-like lines totalling about size framed
// bytes, which compress about as the benchmark's input does.
func logLines(size int) []batch.Record {
	rng := rand.New(rand.NewPCG(7, 7))
	levels := []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
	paths := []string{"/api/v1/orders", "/api/v1/users", "/healthz", "/api/v1/cart/items"}
	t := time.Date(2025, 6, 7, 8, 0, 0, 0, time.UTC)
	var recs []batch.Record
	for n, seq := 0, uint64(1); n < size; seq++ {
		t = t.Add(time.Duration(rng.IntN(2000)) * time.Microsecond)
		line := fmt.Appendf(nil, "%s %-5s http path=%s/%d status=%d dur=%.1fms req=%016x",
			t.Format("2006-01-02T15:04:05.000000Z"), levels[rng.IntN(len(levels))],
			paths[rng.IntN(len(paths))], rng.IntN(100000), []int{200, 200, 201, 404, 500}[rng.IntN(5)],
			rng.Float64()*250, rng.Uint64())
		r := batch.Record{Seq: seq, Time: t, Op: "log", Data: line}
		n += r.FramedSize()
		recs = append(recs, r)
	}
	return recs
}

const benchSegment = 16 << 20

// benchModes are plaintext and encrypted Builders and the matching
// Decrypter.
func benchModes(b *testing.B) map[string]struct {
	enc batch.Encrypter
	dec batch.Decrypter
} {
	k := newKey(b)
	e, err := crypt.NewEncrypter([]string{k.public()})
	if err != nil {
		b.Fatal(err)
	}
	return map[string]struct {
		enc batch.Encrypter
		dec batch.Decrypter
	}{"plain": {}, "age": {e, keyring(b, k)}}
}

// BenchmarkSeal is a shipper's Builder filling and sealing one segment.
func BenchmarkSeal(b *testing.B) {
	recs := logLines(benchSegment)
	for _, name := range []string{"plain", "age"} {
		mode := benchModes(b)[name]
		b.Run(name, func(b *testing.B) {
			bld, err := batch.NewBuilder(batch.Default)
			if err != nil {
				b.Fatal(err)
			}
			bld.SetEncrypter(mode.enc)
			var m batch.Meta
			b.ReportAllocs()
			for b.Loop() {
				bld.Reset("app", 1, batch.ZeroHash)
				for i := range recs {
					if err := bld.Add(&recs[i]); err != nil {
						b.Fatal(err)
					}
				}
				if _, m, err = bld.Seal(time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(m.UncompressedSize)
		})
	}
}

// BenchmarkReceive is a receiver decoding one segment held whole: open,
// decrypt (in place on GOMAXPROCS goroutines, or "serial": through age's
// reader into new memory, as before), decompress into a reused buffer,
// parse.
func BenchmarkReceive(b *testing.B) {
	recs := logLines(benchSegment)
	for _, name := range []string{"plain", "age", "age-serial"} {
		mode := benchModes(b)[strings.TrimSuffix(name, "-serial")]
		decrypt := func(s *batch.Segment) error { return s.DecryptInPlace(mode.dec, runtime.GOMAXPROCS(0)) }
		if strings.HasSuffix(name, "-serial") {
			decrypt = func(s *batch.Segment) error { return s.Decrypt(mode.dec) }
		}
		b.Run(name, func(b *testing.B) {
			bld, err := batch.NewBuilder(batch.Default)
			if err != nil {
				b.Fatal(err)
			}
			bld.SetEncrypter(mode.enc)
			bld.Reset("app", 1, batch.ZeroHash)
			for i := range recs {
				if err := bld.Add(&recs[i]); err != nil {
					b.Fatal(err)
				}
			}
			data, m, err := bld.Seal(time.Time{})
			if err != nil {
				b.Fatal(err)
			}
			stored := append([]byte(nil), data...)
			var raw []byte
			var rs batch.Records
			b.SetBytes(m.UncompressedSize)
			b.ReportAllocs()
			for b.Loop() {
				copy(data, stored)
				seg, err := batch.Open(data)
				if err != nil {
					b.Fatal(err)
				}
				if err := decrypt(seg); err != nil {
					b.Fatal(err)
				}
				if raw, err = seg.DecompressInto(raw, 1<<30, runtime.GOMAXPROCS(0)); err != nil {
					b.Fatal(err)
				}
				if rs, err = seg.ParseRecords(raw, rs); err != nil || rs.Len() != len(recs) {
					b.Fatal(rs.Len(), err)
				}
			}
		})
	}
}
