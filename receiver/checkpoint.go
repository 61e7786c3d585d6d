// Package receiver is the secondary side: it lists a store after its
// checkpoint, following the stream's history across its generations,
// verifies each segment (checksum, sequence continuity, hash chain),
// applies it through an Applier, and only then advances a durable
// checkpoint. Segments are applied strictly in order, exactly once for
// appliers that keep state in the checkpoint.
package receiver

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Checkpoint is how far the receiver has applied, kept in
// STATE/checkpoint.ferry as JSON (docs/FORMAT.md, "Receiver checkpoint").
type Checkpoint struct {
	Format     int             `json:"format"`
	Stream     string          `json:"stream"`
	Generation uint32          `json:"generation"` // of Segment; Config.Generation until one is applied
	LastSeq    uint64          `json:"last_seq"`   // last applied seq, 0 = nothing yet
	LastHash   string          `json:"last_hash"`  // hash of the last applied segment
	Segment    string          `json:"segment,omitempty"`
	AppliedAt  time.Time       `json:"applied_at,omitzero"`
	Applier    json.RawMessage `json:"applier,omitempty"` // applier state at LastSeq
	// PartialHash is set when a restore boundary fell inside segment
	// Segment: its records up to LastSeq are applied, the rest are not,
	// and LastHash is the hash of the segment before it (restore.go).
	PartialHash string `json:"partial_hash,omitempty"`
	// Bundle is the bundle of the last bundle part applied (not
	// necessarily Segment, which may be stored alone after it): listings
	// read the indexes of that writer's bundles after it only.
	Bundle *catalog.BundlePos `json:"bundle,omitempty"`
}

// The checkpoint file is a header block and two slots, each slot holding
// one checkpoint under a counter; a save overwrites the slot that does not
// hold the newest one and fdatasyncs, so the file never changes size and a
// torn save leaves the other slot as it was. docs/FORMAT.md has the layout:
//
//	0                   header: "FERRYCKP", layout version, slot size, CRC-32C
//	4096                slot 0
//	4096 + slot size    slot 1
//
//	slot: "FERRYSLT", counter u64, length u32, CRC-32C u32 of counter,
//	      length and payload, payload (Checkpoint JSON)
//
// All integers are big-endian. Every region starts on a 4 KiB boundary, so
// writing one slot never rewrites a disk block of the header or the other.
const (
	checkpointName       = "checkpoint.ferry"
	legacyCheckpointName = "checkpoint.json" // before the slot file: one JSON document, replaced by rename

	cpBlock         = 4096
	cpHeaderLen     = 20
	cpSlotHeaderLen = 24
	cpLayout        = 1
	cpDefaultSlot   = cpBlock
	cpMaxSlot       = 64 << 20
)

var (
	cpFileMagic = []byte("FERRYCKP")
	cpSlotMagic = []byte("FERRYSLT")
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)

	// errSlots: neither slot holds a valid checkpoint. A reader racing two
	// saves of a running receiver could see that too, so LoadCheckpoint
	// looks again before it believes it.
	errSlots = errors.New("both slots fail their checksum")
	// errSlotEmpty: a slot whose header is all zeros, as slot 1 of a file
	// written whole is until its first save; not reported as damage.
	errSlotEmpty = errors.New("no slot marker (all zeros: never written)")
)

// LoadCheckpoint reads the checkpoint in dir. ok is false when there is
// none yet. A state written before the slot file, with only
// checkpoint.json, is read from that; when both exist, checkpoint.ferry
// wins (the receiver removes checkpoint.json after writing it).
func LoadCheckpoint(dir string) (cp Checkpoint, ok bool, err error) {
	path := filepath.Join(dir, checkpointName)
	for attempt := 1; ; attempt++ {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			return loadLegacyCheckpoint(dir)
		}
		if err != nil {
			return cp, false, err
		}
		cp, _, err = readCheckpointFile(f, path)
		f.Close()
		if errors.Is(err, errSlots) && attempt < 3 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		return cp, err == nil, err
	}
}

func loadLegacyCheckpoint(dir string) (cp Checkpoint, ok bool, err error) {
	path := filepath.Join(dir, legacyCheckpointName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, err
	}
	if err := json.Unmarshal(raw, &cp); err != nil {
		return cp, false, fmt.Errorf("checkpoint %s is damaged: %v", path, err)
	}
	if err := checkFormat(cp, path); err != nil {
		return cp, false, err
	}
	return cp, true, nil
}

func checkFormat(cp Checkpoint, path string) error {
	if cp.Format != 1 {
		return fmt.Errorf("checkpoint %s has format %d; this ferry reads 1", path, cp.Format)
	}
	return nil
}

// cpPlace is where a checkpoint file stands: its slot size, the slot
// holding the newest checkpoint and that checkpoint's counter.
type cpPlace struct {
	slotSize int64
	cur      int
	seq      uint64
	// damaged says why the other slot is not valid, when it was written
	// once (not all zeros): a torn save or a damaged disk block, so the
	// checkpoint read may be one save older than the newest written.
	damaged error
}

// readCheckpointFile reads the newest valid checkpoint of the file f,
// opened from path: of the slots whose marker, length and checksum agree,
// the one with the higher counter.
func readCheckpointFile(f *os.File, path string) (Checkpoint, cpPlace, error) {
	fi, err := f.Stat()
	if err != nil {
		return Checkpoint{}, cpPlace{}, err
	}
	return readCheckpoint(f, fi.Size(), path)
}

// readCheckpoint reads a checkpoint file of size bytes from r.
func readCheckpoint(r io.ReaderAt, size int64, path string) (Checkpoint, cpPlace, error) {
	var cp Checkpoint
	at, err := readCheckpointHeader(r, size)
	if err != nil {
		return cp, at, fmt.Errorf("checkpoint %s is damaged: %w", path, err)
	}
	var payload [2][]byte
	var seq [2]uint64
	var why [2]error
	for i := range 2 {
		seq[i], payload[i], why[i] = readSlot(r, cpBlock+int64(i)*at.slotSize, at.slotSize)
	}
	switch {
	case why[0] != nil && why[1] != nil:
		return cp, at, fmt.Errorf("checkpoint %s is damaged: %w (slot 0: %v; slot 1: %v)", path, errSlots, why[0], why[1])
	case why[0] != nil || (why[1] == nil && seq[1] > seq[0]):
		at.cur = 1
	}
	at.seq = seq[at.cur]
	if other := why[1-at.cur]; other != nil && !errors.Is(other, errSlotEmpty) {
		at.damaged = fmt.Errorf("slot %d: %w", 1-at.cur, other)
	}
	if err := json.Unmarshal(payload[at.cur], &cp); err != nil {
		return cp, at, fmt.Errorf("checkpoint %s is damaged: slot %d: %v", path, at.cur, err)
	}
	return cp, at, checkFormat(cp, path)
}

func readCheckpointHeader(r io.ReaderAt, size int64) (cpPlace, error) {
	var at cpPlace
	var h [cpHeaderLen]byte
	if size < cpBlock {
		return at, fmt.Errorf("%d bytes, shorter than its header", size)
	}
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return at, err
	}
	if string(h[:8]) != string(cpFileMagic) {
		return at, fmt.Errorf("no %s header", cpFileMagic)
	}
	if crc32.Checksum(h[:16], castagnoli) != binary.BigEndian.Uint32(h[16:]) {
		return at, errors.New("its header fails its checksum")
	}
	if v := binary.BigEndian.Uint32(h[8:]); v != cpLayout {
		return at, fmt.Errorf("layout version %d; this ferry reads %d", v, cpLayout)
	}
	at.slotSize = int64(binary.BigEndian.Uint32(h[12:]))
	if at.slotSize < cpBlock || at.slotSize > cpMaxSlot || at.slotSize%cpBlock != 0 {
		return at, fmt.Errorf("slot size %d is not a multiple of %d up to %d", at.slotSize, cpBlock, cpMaxSlot)
	}
	if want := cpBlock + 2*at.slotSize; size != want {
		return at, fmt.Errorf("%d bytes, want %d for slots of %d", size, want, at.slotSize)
	}
	return at, nil
}

// readSlot reads the slot at off and returns its counter and payload, or
// why it is not valid. The length is checked against the slot size
// before anything is allocated for it.
func readSlot(r io.ReaderAt, off, slotSize int64) (uint64, []byte, error) {
	var h [cpSlotHeaderLen]byte
	if _, err := r.ReadAt(h[:], off); err != nil {
		return 0, nil, err
	}
	if string(h[:8]) != string(cpSlotMagic) {
		if h == [cpSlotHeaderLen]byte{} {
			return 0, nil, errSlotEmpty
		}
		return 0, nil, errors.New("no slot marker")
	}
	n := int64(binary.BigEndian.Uint32(h[16:]))
	if n > slotSize-cpSlotHeaderLen {
		return 0, nil, fmt.Errorf("length %d does not fit the slot", n)
	}
	payload := make([]byte, n)
	if _, err := r.ReadAt(payload, off+cpSlotHeaderLen); err != nil {
		return 0, nil, err
	}
	sum := crc32.Update(crc32.Checksum(h[8:20], castagnoli), castagnoli, payload)
	if sum != binary.BigEndian.Uint32(h[20:]) {
		return 0, nil, errors.New("checksum mismatch")
	}
	return binary.BigEndian.Uint64(h[8:]), payload, nil
}

// putSlot encodes a slot holding payload under counter seq at the start
// of b and returns its length.
func putSlot(b []byte, seq uint64, payload []byte) int {
	copy(b, cpSlotMagic)
	binary.BigEndian.PutUint64(b[8:], seq)
	binary.BigEndian.PutUint32(b[16:], uint32(len(payload)))
	sum := crc32.Update(crc32.Checksum(b[8:20], castagnoli), castagnoli, payload)
	binary.BigEndian.PutUint32(b[20:], sum)
	return cpSlotHeaderLen + copy(b[cpSlotHeaderLen:], payload)
}

// slotSizeFor is the slot size for a payload of n bytes: the default, or,
// for a payload that does not fit it, twice what it needs, so that a
// state growing slowly does not rewrite the file at every save.
func slotSizeFor(n int) (int64, error) {
	need := int64(cpSlotHeaderLen + n)
	switch {
	case need <= cpDefaultSlot:
		return cpDefaultSlot, nil
	case need > cpMaxSlot:
		return 0, fmt.Errorf("checkpoint of %d bytes exceeds the %d bytes a slot holds", n, cpMaxSlot-cpSlotHeaderLen)
	}
	return min((2*need+cpBlock-1)/cpBlock*cpBlock, cpMaxSlot), nil
}

// writeCheckpointFile replaces dir's checkpoint file as a whole (temp
// file, fsync, rename): payload in slot 0 under counter seq, slot 1
// empty, slots of at least minSlot bytes. It then removes a
// checkpoint.json left from before the slot file. It returns the slot size.
func writeCheckpointFile(dir string, minSlot int64, seq uint64, payload []byte) (int64, error) {
	slotSize, err := slotSizeFor(len(payload))
	if err != nil {
		return 0, err
	}
	slotSize = max(slotSize, minSlot)
	// Every byte is written, zeros included, so that no block of the file
	// is left to allocate on a later in-place save.
	b := make([]byte, cpBlock+2*slotSize)
	copy(b, cpFileMagic)
	binary.BigEndian.PutUint32(b[8:], cpLayout)
	binary.BigEndian.PutUint32(b[12:], uint32(slotSize))
	binary.BigEndian.PutUint32(b[16:], crc32.Checksum(b[:16], castagnoli))
	putSlot(b[cpBlock:], seq, payload)
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, checkpointName), b, 0o644); err != nil {
		return 0, err
	}
	legacy := filepath.Join(dir, legacyCheckpointName)
	if err := os.Remove(legacy); errors.Is(err, os.ErrNotExist) {
		return slotSize, nil
	} else if err != nil {
		return 0, fmt.Errorf("remove the replaced %s: %w", legacy, err)
	}
	return slotSize, fsutil.SyncDir(dir)
}

// saveCheckpoint writes cp as the whole checkpoint file of dir, for the
// places that save once without a Receiver.
func saveCheckpoint(dir string, cp Checkpoint) error {
	payload, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	_, err = writeCheckpointFile(dir, 0, 1, payload)
	return err
}

// checkpointFile is a state dir's checkpoint file held open by its
// Receiver, which saves every checkpoint into it in place.
type checkpointFile struct {
	dir, path string
	f         *os.File // nil while the file does not exist yet (a state with only checkpoint.json)
	at        cpPlace
	// dirInfo and fileInfo are the state dir and f as opened: a save
	// checks that the paths still name them (checkPlace).
	dirInfo, fileInfo os.FileInfo
	buf               []byte
	// err is the write or fdatasync that failed: what the file holds is
	// unknown, and no save is tried on it again.
	err error
}

var errCheckpointClosed = errors.New("checkpoint file closed")

// openCheckpointFile opens dir's checkpoint file for saving. The caller
// holds the state lock and has loaded the checkpoint (LoadCheckpoint).
func openCheckpointFile(dir string) (*checkpointFile, error) {
	c := &checkpointFile{dir: dir, path: filepath.Join(dir, checkpointName)}
	var err error
	if c.dirInfo, err = os.Stat(dir); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	f, err := os.OpenFile(c.path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	if _, c.at, err = readCheckpointFile(f, c.path); err != nil {
		f.Close()
		return nil, err
	}
	if c.fileInfo, err = f.Stat(); err != nil {
		f.Close()
		return nil, fmt.Errorf("checkpoint %s: %w", c.path, err)
	}
	c.f = f
	return c, nil
}

// checkPlace checks that the state dir and the checkpoint file are still
// where the receiver opened them: a save into a removed or replaced state
// dir would go to a file nobody reads, and the next start would begin
// again from nothing or from an older checkpoint.
func (c *checkpointFile) checkPlace() error {
	if c.f != nil {
		// While all is well, one stat: the file, through the dir's path.
		if fi, err := os.Stat(c.path); err == nil && os.SameFile(fi, c.fileInfo) {
			return nil
		}
	}
	di, err := os.Stat(c.dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("state dir %s was removed while the receiver ran: the checkpoint cannot be saved; stop whatever removes it, restore it and start the receiver again", c.dir)
	case err != nil:
		return fmt.Errorf("state dir %s: %w", c.dir, err)
	case !os.SameFile(di, c.dirInfo):
		return fmt.Errorf("state dir %s was replaced while the receiver ran (it is not the directory the receiver locked): the checkpoint cannot be saved", c.dir)
	}
	if c.f == nil {
		return nil
	}
	return fmt.Errorf("checkpoint %s was removed or replaced while the receiver ran: the checkpoint cannot be saved", c.path)
}

// Save makes cp the durable checkpoint: written over the slot that does
// not hold the newest one, then fdatasynced. A payload too big for the
// slots, or a state without the file yet, rewrites the whole file
// instead. Any error is final: the file is not written again.
func (c *checkpointFile) Save(cp Checkpoint) error {
	return c.saveWith(cp, nil)
}

// saveWith is Save with sync, if not nil, in place of the fdatasync of
// the slot written (a SyncGroup's sync of the file system).
func (c *checkpointFile) saveWith(cp Checkpoint, sync func() error) error {
	if c.err != nil {
		return c.err
	}
	if err := c.checkPlace(); err != nil {
		return c.fail(err)
	}
	payload, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	if c.f == nil || cpSlotHeaderLen+int64(len(payload)) > c.at.slotSize {
		return c.rewrite(payload)
	}
	next := 1 - c.at.cur
	// Whole blocks, zero-padded: no block is half old, half new.
	n := (cpSlotHeaderLen + len(payload) + cpBlock - 1) / cpBlock * cpBlock
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	b := c.buf[:n]
	clear(b[putSlot(b, c.at.seq+1, payload):])
	if _, err := c.f.WriteAt(b, cpBlock+int64(next)*c.at.slotSize); err != nil {
		return c.fail(fmt.Errorf("write checkpoint: %w", err))
	}
	if sync != nil {
		if err := sync(); err != nil {
			return c.fail(fmt.Errorf("sync checkpoint %s: %w", c.path, err))
		}
	} else if err := fdatasync(c.f); err != nil {
		return c.fail(fmt.Errorf("fdatasync checkpoint %s: %w", c.path, err))
	}
	c.at.cur, c.at.seq = next, c.at.seq+1
	return nil
}

// rewrite replaces the file as a whole with payload in slot 0 (slots grow
// to fit it and never shrink) and holds the new file open.
func (c *checkpointFile) rewrite(payload []byte) error {
	seq := c.at.seq + 1
	slotSize, err := writeCheckpointFile(c.dir, c.at.slotSize, seq, payload)
	if err != nil {
		return c.fail(fmt.Errorf("write checkpoint %s: %w", c.path, err))
	}
	if c.f != nil {
		c.f.Close() // the replaced file
		c.f = nil
	}
	f, err := os.OpenFile(c.path, os.O_RDWR, 0)
	if err != nil {
		return c.fail(fmt.Errorf("open checkpoint: %w", err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return c.fail(fmt.Errorf("checkpoint %s: %w", c.path, err))
	}
	c.f, c.fileInfo, c.at = f, fi, cpPlace{slotSize: slotSize, cur: 0, seq: seq}
	return nil
}

func (c *checkpointFile) fail(err error) error {
	c.err = err
	return err
}

// Close closes the file; Save fails after it. It may be called again.
func (c *checkpointFile) Close() error {
	if c.err == nil {
		c.err = errCheckpointClosed
	}
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

func newCheckpoint(stream string, gen uint32) Checkpoint {
	return Checkpoint{Format: 1, Stream: stream, Generation: gen, LastHash: batch.ZeroHash}
}
