package shipper

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/store"
)

// Pushed files (docs/DIRTREE.md, "Pushed files"): a whole file handed to
// the shipper by a hook such as PostgreSQL's archive_command travels as the
// put or chunk records of the dir-tree encoding, keyed by its name, so a
// receiver with a dir: applier materialises pushed files as a directory.
// A marker object per name, written only after the records are accepted,
// gives the archive_command contract: the same name again with the same
// content is a no-op, with different content an error.

// MaxPushSize is the largest file a push carries. Its records go into the
// spool as one journal entry (a running shipper's other source must not
// come between a file's chunks), which is at most 1 GiB with framing.
const MaxPushSize = 1<<30 - 1<<20

// PushMarkerKey is the store object that records a pushed file.
func PushMarkerKey(stream, name string) string { return stream + "/pushed/" + name }

// PushMarker is the JSON content of a marker. Two markers agree when
// SHA256 and Size do; the other fields describe the push that wrote it.
type PushMarker struct {
	Name       string    `json:"name"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	PushedAt   time.Time `json:"pushed_at"`
	Stream     string    `json:"stream"`
	Generation uint32    `json:"generation"`
	// FirstSeq and LastSeq are the records that carried the file when it
	// was shipped (fetch reads just the segments holding them).
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

// maxMarkerSize caps a marker read: a larger one is damaged.
const maxMarkerSize = 64 << 10

// ErrPushMarkerDamaged marks a marker that is not one: too large, not
// JSON, or without a sha256 and size. Its errors also match
// store.ErrPermanent, so store.Retry returns them at once: reading the
// marker again gives the same bytes.
var ErrPushMarkerDamaged = errors.New("damaged push marker")

type damagedMarker struct{ msg string }

func (e *damagedMarker) Error() string { return e.msg }
func (e *damagedMarker) Is(target error) bool {
	return target == ErrPushMarkerDamaged || target == store.ErrPermanent
}

func markerDamaged(format string, args ...any) error {
	return &damagedMarker{msg: fmt.Sprintf(format, args...)}
}

// ParsePushMarker decodes a marker read from key (named in errors); one
// that does not decode is ErrPushMarkerDamaged.
func ParsePushMarker(key string, data []byte) (PushMarker, error) {
	var m PushMarker
	if err := json.Unmarshal(data, &m); err != nil {
		return m, markerDamaged("marker %s is damaged: %v", key, err)
	}
	if len(m.SHA256) != 64 || m.Size < 0 {
		return m, markerDamaged("marker %s is damaged: sha256 %q, size %d", key, m.SHA256, m.Size)
	}
	return m, nil
}

// ReadPushMarker reads and decodes a marker; a missing one is an error
// wrapping store.ErrNotFound, a damaged one ErrPushMarkerDamaged.
func ReadPushMarker(ctx context.Context, st store.Store, key string) (PushMarker, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return PushMarker{}, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxMarkerSize+1))
	if err != nil {
		return PushMarker{}, fmt.Errorf("read marker %s: %w", key, err)
	}
	if len(data) > maxMarkerSize {
		return PushMarker{}, markerDamaged("marker %s is larger than %d bytes: damaged", key, maxMarkerSize)
	}
	return ParsePushMarker(key, data)
}

// CheckPushName refuses names a push cannot carry. A name is one file name:
// no "/" (a name that is a file and also a directory of another name would
// stop a dir: receiver), no NUL or backslash, not "." or "..", and no
// leading "." (the applier's and the stores' temporary files are hidden).
func CheckPushName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > 255:
		return fmt.Errorf("name %q is %d bytes, limit 255", name, len(name))
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("name %q contains a '/', a backslash or a NUL byte: it must be a plain file name", name)
	case name[0] == '.':
		return fmt.Errorf("name %q starts with '.': hidden names are reserved for temporary files", name)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		// A newline or an escape sequence in a name would forge lines in
		// logs and listings, and trouble every shell that handles it.
		return fmt.Errorf("name %q contains a control character: it must be a plain file name", name)
	}
	return nil
}

// PushFile is one file to push.
type PushFile struct {
	Name    string
	Content []byte
	Mode    uint32 // permission bits (st_mode & 07777)
	Mtime   int64  // Unix nanoseconds
}

// MarkerStore is where markers are kept: a store target that holds
// arbitrary objects (directory, S3) under PushMarkerKey, or the spool's
// own index (SPOOL/pushed, keyed by the bare name).
type MarkerStore struct {
	Name  string // for messages: the target's name or "spool index"
	Store store.Store
	Key   func(name string) string
}

// ErrPushConflict: the name was pushed before with different content.
var ErrPushConflict = errors.New("pushed before with different content")

// PushResult says what a push did.
type PushResult struct {
	Marker PushMarker
	// Already: every marker store had the name with this content; nothing
	// was shipped.
	Already bool
}

// Pusher pushes whole files into a running Shipper (Run must be running).
// It serialises pushes of one name; different names proceed in parallel.
type Pusher struct {
	Shipper *Shipper
	Markers []MarkerStore
	Retry   store.RetryPolicy
	Log     *slog.Logger // store retries
	// BatchBytes > 0 splits a file's records into spool entries of about
	// that many framed bytes. Only a shipper that nothing else appends to
	// may split: another source's record between two chunks abandons the
	// file on the receiver. 0: one entry.
	BatchBytes int
	// AfterAppend, if set, runs once the records are accepted and before
	// the markers are written (seal them, or drain the spool).
	AfterAppend func(ctx context.Context) error

	mu   sync.Mutex
	busy map[string]chan struct{}
}

// Push ships f unless its name was pushed before, and writes its marker
// to every marker store.
//
// The rule that keeps markers honest: a marker is written only after the
// records carrying the file are accepted under the shipper's ack mode.
// A crash between the two leaves records without a marker; the retry
// finds no marker and ships the file again, which is harmless (the dir
// applier's put and chunks rewrite the same content). A marker store
// that lacks the marker while another has it (a write that failed, a
// replaced spool) only gets the marker: the records were accepted before
// any marker was written. A marker with another hash or size anywhere
// fails the push with ErrPushConflict before anything is shipped.
func (p *Pusher) Push(ctx context.Context, f PushFile) (PushResult, error) {
	return p.PushFrom(ctx, PushSource{Name: f.Name, R: bytes.NewReader(f.Content), Size: int64(len(f.Content)), Mode: f.Mode, Mtime: f.Mtime})
}

// PushSource is a file to push read from R, which must give exactly Size
// bytes: the records are read straight from it (ferry push and the
// read-ahead push 16 MiB WAL files: no copy of the whole content beside
// its records, and one SHA-256 pass).
type PushSource struct {
	Name  string
	R     io.Reader
	Size  int64
	Mode  uint32 // permission bits (st_mode & 07777)
	Mtime int64  // Unix nanoseconds
	// Check, if set, is given the content's SHA-256 once it is read, before
	// any marker is read or record appended; an error ends the push (the
	// file is not the one the caller vouched for).
	Check func(sum [32]byte) error
}

// PushFrom is Push for a file read from src.R.
func (p *Pusher) PushFrom(ctx context.Context, src PushSource) (PushResult, error) {
	var res PushResult
	if err := CheckPushName(src.Name); err != nil {
		return res, err
	}
	if src.Size > MaxPushSize {
		return res, fmt.Errorf("%s is %d bytes; a push carries at most %d", src.Name, src.Size, MaxPushSize)
	}
	unlock, err := p.lock(ctx, src.Name)
	if err != nil {
		return res, err
	}
	defer unlock()
	sh := p.Shipper
	recs, sum, err := dirtree.ReadFileRecords(src.Name, src.R, src.Size, src.Mode&0o7777, src.Mtime, sh.spool.Config().MaxRecordSize)
	if err != nil {
		return res, fmt.Errorf("read %s: %w", src.Name, err)
	}
	if src.Check != nil {
		if err := src.Check(sum); err != nil {
			return res, err
		}
	}
	want := p.marker(src.Name, hex.EncodeToString(sum[:]), src.Size)
	found, have, err := p.markers(ctx, want)
	if err != nil {
		return res, err
	}
	res.Already = have != nil
	for _, m := range found {
		res.Already = res.Already && m != nil
	}
	if have == nil {
		if err := p.appendFile(ctx, recs); err != nil {
			return res, fmt.Errorf("ship %s: %w", src.Name, err)
		}
		if p.AfterAppend != nil {
			if err := p.AfterAppend(ctx); err != nil {
				return res, err
			}
		}
		want.FirstSeq, want.LastSeq = recs[0].Seq, recs[len(recs)-1].Seq
		want.PushedAt = time.Now().UTC()
		have = &want
	}
	res.Marker = *have
	data, _ := json.Marshal(have)
	for i, ms := range p.Markers {
		if found[i] != nil {
			continue
		}
		if err := p.writeMarker(ctx, ms, src.Name, data, want); err != nil {
			return res, err
		}
	}
	return res, nil
}

// appendFile hands the records to the spool: one entry, or with
// BatchBytes several, the last waited for under the ack mode (which
// covers the earlier ones: the journal is made durable in order, and
// targets confirm segments in order).
func (p *Pusher) appendFile(ctx context.Context, recs []batch.Record) error {
	sh := p.Shipper
	if err := sh.waitPlaced(ctx); err != nil { // a push marker names seqs
		return err
	}
	if p.BatchBytes > 0 {
		for len(recs) > 1 {
			n, size := 0, 0
			for n < len(recs)-1 && (n == 0 || size+recs[n].FramedSize() <= p.BatchBytes) {
				size += recs[n].FramedSize()
				n++
			}
			if n == len(recs) {
				break
			}
			if _, err := sh.spool.Append(ctx, recs[:n], nil); err != nil {
				return err
			}
			recs = recs[n:]
		}
	}
	return sh.AppendDurable(ctx, recs, nil)
}

// Shipped reports whether every marker store holds the marker of name
// with this SHA-256 (hex) and size: the file was accepted under the ack
// mode, and a Push of that content would ship nothing. A push of name in
// progress finishes first. It reads no file, so the caller vouches for
// the hash (ferry push hashes the file it is asked to archive). A marker
// with other content is ErrPushConflict; a store that lacks the marker
// gives false at once, reading no store after it (Push then reads them
// all, and completes or refuses).
func (p *Pusher) Shipped(ctx context.Context, name, sha256Hex string, size int64) (PushMarker, bool, error) {
	if err := CheckPushName(name); err != nil {
		return PushMarker{}, false, err
	}
	want := p.marker(name, sha256Hex, size)
	return p.marked(ctx, name, &want)
}

// Marked returns name's marker when every marker store holds one, after
// any push of name in progress has finished. It compares no content: only
// Push and Shipped vouch for a file.
func (p *Pusher) Marked(ctx context.Context, name string) (PushMarker, bool, error) {
	return p.marked(ctx, name, nil)
}

// marked is Shipped (want set) and Marked: once any push of name has
// finished (a read-ahead's), the first store's marker if every store
// holds one, each agreeing with want unless it is nil.
func (p *Pusher) marked(ctx context.Context, name string, want *PushMarker) (PushMarker, bool, error) {
	unlock, err := p.lock(ctx, name)
	if err != nil {
		return PushMarker{}, false, err
	}
	defer unlock()
	var have PushMarker
	for i, ms := range p.Markers {
		m, err := p.readMarker(ctx, ms, name)
		if errors.Is(err, store.ErrNotFound) {
			return PushMarker{}, false, nil
		}
		if err != nil {
			return PushMarker{}, false, err
		}
		if want != nil {
			if err := checkSame(ms, name, m, *want); err != nil {
				return PushMarker{}, false, err
			}
		}
		if i == 0 {
			have = m
		}
	}
	return have, len(p.Markers) > 0, nil
}

// marker is the marker a push of this content would write (without the
// seqs and time, which the push fills in).
func (p *Pusher) marker(name, sha256Hex string, size int64) PushMarker {
	sh := p.Shipper
	return PushMarker{Name: name, SHA256: sha256Hex, Size: size, Stream: sh.cfg.Spool.Stream, Generation: sh.spool.Config().Generation}
}

// markers reads want.Name's marker in every marker store: found[i] is
// store i's (nil when it has none), have the first found. One that
// disagrees with want is ErrPushConflict.
func (p *Pusher) markers(ctx context.Context, want PushMarker) (found []*PushMarker, have *PushMarker, err error) {
	found = make([]*PushMarker, len(p.Markers))
	for i, ms := range p.Markers {
		m, err := p.readMarker(ctx, ms, want.Name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if err := checkSame(ms, want.Name, m, want); err != nil {
			return nil, nil, err
		}
		found[i] = &m
		if have == nil {
			have = &m
		}
	}
	return found, have, nil
}

func checkSame(ms MarkerStore, name string, got, want PushMarker) error {
	if got.SHA256 == want.SHA256 && got.Size == want.Size {
		return nil
	}
	return &pushConflict{fmt.Sprintf("%q was pushed before with different content (%s has sha256 %s, %d bytes, pushed %s; this file has sha256 %s, %d bytes); refusing to replace it",
		name, ms.Name, got.SHA256, got.Size, got.PushedAt.Format(time.RFC3339), want.SHA256, want.Size)}
}

// pushConflict is an error matching ErrPushConflict.
type pushConflict struct{ msg string }

func (e *pushConflict) Error() string        { return e.msg }
func (e *pushConflict) Is(target error) bool { return target == ErrPushConflict }

func (p *Pusher) readMarker(ctx context.Context, ms MarkerStore, name string) (PushMarker, error) {
	key := ms.Key(name)
	var m PushMarker
	err := store.Retry(ctx, p.Retry, p.Log, "get "+key, func(ctx context.Context) error {
		var err error
		m, err = ReadPushMarker(ctx, ms.Store, key)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return m, fmt.Errorf("read marker of %q in %s: %w", name, ms.Name, err)
	}
	return m, err
}

// writeMarker puts a marker. A marker that appeared meanwhile (the store
// refuses to overwrite it) is fine when it agrees with want.
func (p *Pusher) writeMarker(ctx context.Context, ms MarkerStore, name string, data []byte, want PushMarker) error {
	key := ms.Key(name)
	err := store.Retry(ctx, p.Retry, p.Log, "put "+key, func(ctx context.Context) error {
		return ms.Store.Put(ctx, key, data)
	})
	if errors.Is(err, store.ErrConflict) {
		got, rerr := p.readMarker(ctx, ms, name)
		if rerr != nil {
			return rerr
		}
		return checkSame(ms, name, got, want)
	}
	if err != nil {
		return fmt.Errorf("write marker of %q to %s (the file is shipped; push it again): %w", name, ms.Name, err)
	}
	return nil
}

func (p *Pusher) lock(ctx context.Context, name string) (func(), error) {
	for {
		p.mu.Lock()
		if p.busy == nil {
			p.busy = map[string]chan struct{}{}
		}
		ch, taken := p.busy[name]
		if !taken {
			ch = make(chan struct{})
			p.busy[name] = ch
			p.mu.Unlock()
			return func() {
				p.mu.Lock()
				delete(p.busy, name)
				p.mu.Unlock()
				close(ch)
			}, nil
		}
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
