// Command zstdgo compresses stdin to stdout with the zstd encoder ferry
// uses (klauspost/compress, the options of batch's segment Builder: the
// fastest level, 1 MiB window, frame checksums, one independent frame per
// batch.ChunkSize bytes, EncodeAll) and nothing else: no parsing, framing,
// hashing or files. ship.sh prints it beside `zstd -1 -T1` as the floor
// the mandated library sets for ferry's CPU.
//
//	zstdgo < input > /dev/null
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"

	"github.com/ferry-dr/ferry/batch"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "zstdgo:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	// The options batch.NewBuilder gives its encoder (batch/segment.go:
	// encoderFor), on one goroutine: CPU, not wall, is what this row is for.
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true),
		zstd.WithWindowSize(1<<20))
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(out, 1<<20)
	raw := make([]byte, batch.ChunkSize)
	var dst []byte
	for {
		n, err := io.ReadFull(in, raw)
		if n > 0 {
			dst = enc.EncodeAll(raw[:n], dst[:0])
			if _, werr := w.Write(dst); werr != nil {
				return werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return w.Flush()
		}
		if err != nil {
			return err
		}
	}
}
