package apply

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
)

// Writer writes the records' data to a writer (stdout). A crash
// between a write and the checkpoint repeats that segment on restart.
type Writer struct {
	W    io.Writer
	Name string
	w    *bufio.Writer // reused across Applies
}

var _ receiver.Applier = (*Writer)(nil)

func (a *Writer) String() string { return a.Name }

func (a *Writer) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	if a.w == nil {
		a.w = bufio.NewWriterSize(nil, 1<<20)
	}
	w := a.w
	w.Reset(a.W)
	defer w.Reset(nil)
	for i := range recs.Len() {
		if _, err := w.Write(recs.Data(i)); err != nil {
			return fmt.Errorf("apply %s: %w: %w", a.Name, err, receiver.ErrFatal)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("apply %s: %w: %w", a.Name, err, receiver.ErrFatal)
	}
	return nil
}

func (a *Writer) Close() error { return nil }
