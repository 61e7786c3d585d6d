package tcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// A SEGMENT frame over Server.StreamAbove is not read into memory: a
// segment near the receiver's max_segment_bytes would cost that much
// again beside the record stream the receiver decodes it into (and the
// buffer grows by doubling, so up to twice as much while it grows). Its
// bytes go to a staged object of the inbox (a temp file, under no
// segment's name) as they arrive, through a fixed buffer, and are hashed
// and checked on the way; the frame's checksum is checked once they are
// all in. Only then is the segment judged, by the checks a segment held
// in memory gets, in the same order, with the same answers; it is named
// in the inbox (Staged.Publish: Put's fsyncs and contract) only if it
// passes, and acknowledged only after that. A frame cut short or damaged
// ends the link as before, and what it wrote is removed.

// streamBuffer is what a streamed SEGMENT is read through, and the size
// of the writes to its staged object.
const streamBuffer = 256 << 10

// receiveStream is receive for a SEGMENT frame whose header was read and
// whose payload body streams into the inbox through stager. It returns an
// error only when the link must close.
func (s *Server) receiveStream(ctx context.Context, st serverSettings, l *link, sess *session, body *bodyReader, stager store.Stager) error {
	buf := make([]byte, streamBuffer)
	name, err := readSegmentName(body)
	if err != nil {
		if ferr := body.finish(buf); ferr != nil {
			return ferr // a frame cut short or damaged says so first
		}
		return err
	}
	dst := &stageWriter{}
	defer dst.discard()
	if _, _, _, ok := batch.ParseSegmentName(name); ok {
		dst.staged, dst.err = stager.Stage(ctx, batch.SegmentKey(sess.stream, name))
	}
	size := body.left
	sr, verr := batch.NewSegmentReader(io.TeeReader(fullReader{body}, dst), 0, st.maxSegment)
	var seg *batch.Segment
	if verr == nil {
		seg, verr = sr.Verify(buf)
	}
	if err := body.finish(buf); err != nil {
		return err
	}
	return s.store(ctx, l, sess, incoming{
		name:    name,
		size:    size,
		content: dst,
		verify:  func() (*batch.Segment, error) { return seg, verr },
		put:     func(ctx context.Context, _ string) error { return dst.publish(ctx) },
	})
}

// readSegmentName reads the name header of a SEGMENT payload from b:
// u16 length, name.
func readSegmentName(b *bodyReader) (string, error) {
	var nl [2]byte
	if _, err := io.ReadFull(b, nl[:]); err != nil {
		if b.err != nil {
			return "", b.err
		}
		return "", fmt.Errorf("SEGMENT payload of %d bytes has no name header: %w", b.h.n, ErrProtocol)
	}
	n := int(binary.BigEndian.Uint16(nl[:]))
	if n == 0 || int64(n) > b.left {
		return "", fmt.Errorf("SEGMENT name length %d does not fit its %d-byte payload: %w", n, b.h.n, ErrProtocol)
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(b, name); err != nil {
		return "", err
	}
	return string(name), nil
}

// fullReader fills the whole of each Read's buffer unless the stream
// ends: a TLS connection returns a record (16 KiB) at a time, and the
// staged object is written in what Verify reads at once.
type fullReader struct{ r io.Reader }

func (f fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if err == io.ErrUnexpectedEOF {
		err = nil // the end of the stream, after n bytes; EOF next
	}
	return n, err
}

// stageWriter writes a streamed segment to its staged object. A failed
// write (a full disk) does not stop the reading: the frame is read to
// its end and the segment judged, and the failure is what storing it
// returns. Without a staged object (a name that is no segment's),
// nothing is written.
type stageWriter struct {
	staged store.Staged
	err    error // Stage's or the first write's
}

func (w *stageWriter) Write(p []byte) (int, error) {
	if w.staged != nil && w.err == nil {
		_, w.err = w.staged.Write(p)
	}
	return len(p), nil
}

// ReadAt reads back what was staged, to compare it with the inbox.
func (w *stageWriter) ReadAt(p []byte, off int64) (int, error) {
	switch {
	case w.err != nil:
		return 0, w.err
	case w.staged == nil:
		return 0, errors.New("segment not staged")
	}
	return w.staged.ReadAt(p, off)
}

// publish names the staged segment in the inbox: Put's contract.
func (w *stageWriter) publish(ctx context.Context) error {
	if w.err != nil {
		return w.err
	}
	return w.staged.Publish(ctx)
}

// discard removes the staged object unless it was published.
func (w *stageWriter) discard() {
	if w.staged != nil {
		w.staged.Discard()
	}
}
