package source

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// benchLines is about size bytes of log-like lines (~110 bytes each).
func benchLines(size int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "2025-06-07T08:%02d:%02d.%06dZ INFO  http method=GET path=/api/v1/orders/%d status=200 dur=%d.%dms req=%016x\n",
			i/60%60, i%60, i*7919%1000000, i%100000, i%250, i%10, uint64(i)*0x9e3779b97f4a7c15)
	}
	return b.Bytes()
}

// countSink counts what it is given and keeps nothing.
type countSink struct{ records, bytes int }

func (s *countSink) AppendBatch(_ context.Context, recs []batch.Record, _ []byte) error {
	s.records += len(recs)
	for i := range recs {
		s.bytes += len(recs[i].Data)
	}
	return nil
}

// BenchmarkLineReader is the parsing stage alone: a stdin Reader splitting
// 16 MiB of log lines into records and handing them over in batches.
func BenchmarkLineReader(b *testing.B) {
	in := benchLines(16 << 20)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		sink := &countSink{}
		r := &Reader{R: bytes.NewReader(in), Name: "stdin", Format: FormatLine}
		if err := r.Run(context.Background(), sink); err != nil {
			b.Fatal(err)
		}
		if sink.bytes != len(in) {
			b.Fatalf("the sink got %d bytes of records, the input is %d", sink.bytes, len(in))
		}
	}
}
