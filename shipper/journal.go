package shipper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/ferry-dr/ferry/batch"
)

// The journal holds the records of the open batch. It is append-only and
// made of entries; one entry is the unit of atomicity: a group of records
// together with the source cursor reached after them, so a restart neither
// loses nor repeats input. Entry layout (big-endian):
//
//	u32 body length | u32 CRC-32C of body | body
//	body: u8 kind (1) | u32 cursor length | cursor | record frames (batch.AppendFrame)
//
// A torn or damaged tail (short entry, bad CRC) marks the end of the journal:
// those bytes were never fsynced, so the records in them were never accepted.
const (
	entryHeader     = 8
	entryKindRecord = 1
	maxEntryBody    = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var errTornEntry = errors.New("torn journal entry")

// appendEntry appends one journal entry holding recs and cursor to dst.
func appendEntry(dst []byte, recs []batch.Record, cursor []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, entryHeader)...)
	dst = append(dst, entryKindRecord)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(cursor)))
	dst = append(dst, cursor...)
	for i := range recs {
		dst = batch.AppendFrame(dst, &recs[i])
	}
	body := dst[start+entryHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(body, crcTable))
	return dst
}

// parseEntry decodes the entry at the front of b. It returns the records
// (aliasing b), the cursor, and the entry's total length. A short or
// damaged entry yields errTornEntry.
func parseEntry(b []byte) ([]batch.Record, []byte, int, error) {
	if len(b) < entryHeader {
		return nil, nil, 0, errTornEntry
	}
	n := binary.BigEndian.Uint32(b)
	if n > maxEntryBody || n < 5 || uint64(len(b)-entryHeader) < uint64(n) {
		return nil, nil, 0, errTornEntry
	}
	body := b[entryHeader : entryHeader+n]
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(b[4:]) {
		return nil, nil, 0, errTornEntry
	}
	if body[0] != entryKindRecord {
		return nil, nil, 0, fmt.Errorf("journal entry kind %d unknown", body[0])
	}
	cl := binary.BigEndian.Uint32(body[1:])
	if uint64(cl) > uint64(len(body)-5) {
		return nil, nil, 0, errTornEntry
	}
	cursor := body[5 : 5+cl]
	rest := body[5+cl:]
	var recs []batch.Record
	for len(rest) > 0 {
		r, k, err := batch.ParseFrame(rest)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("journal record: %w", err)
		}
		recs = append(recs, r)
		rest = rest[k:]
	}
	return recs, cursor, entryHeader + int(n), nil
}
