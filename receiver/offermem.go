package receiver

import (
	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Segments offered with their bytes. The direct link's server has a
// segment in memory, verified, when it stores it in the inbox; reading it
// back from the inbox and verifying it again (two SHA-256 passes over it)
// took 0.17 s of the receiver's 1.30 s of CPU in a 256 MiB bulk run over
// the link. A pass applies such a segment from a copy instead, through the
// same pipeline: only where the bytes come from differs.

// memSeg is an offered segment's copy.
type memSeg struct {
	data []byte        // the segment, as stored
	seg  batch.Segment // its verified parse; Payload aliases data
}

// maxMemFree is how many buffers of released copies are kept for the next
// offers' copies, as long as they and the copies held stay within
// memLimit. Fresh memory is what a copy would cost otherwise: in a bulk
// run over the link, copying into new buffers took 0.10 s of the
// receiver's 1.20 s of CPU, nearly all of it page faults.
const maxMemFree = 16

// memLimit is how many bytes of offered copies the receiver holds at
// most; past it, offers carry only the name and the segment is read from
// the store.
func (r *Receiver) memLimit() int64 { return r.cfg.PrefetchBytes / 4 }

// OfferVerified is Offer for a segment the caller has stored durably in
// the receiver's store and verified with batch.Open: seg is that parse and
// data the bytes stored. Unless the copy would take the copies held past a
// quarter of PrefetchBytes, the receiver keeps a copy of data and applies
// from it, without reading the segment back from the store or verifying
// it again. A segment stored in over streamAbove bytes is never copied:
// read back from the store it is decompressed as it is read, holding
// none of its stored bytes, where a copy would hold them all. It keeps
// neither seg nor data. It never blocks.
func (r *Receiver) OfferVerified(seg *batch.Segment, data []byte) {
	r.offerVerified(seg, data, nil)
}

// offerVerified is OfferVerified for a segment stored alone (part nil) or
// as part of a bundle: a part not kept in memory is offered with its
// place in its bundle, where the pass reads it back by range.
func (r *Receiver) offerVerified(seg *batch.Segment, data []byte, part *catalog.Part) {
	name, n := seg.Meta.Name(), int64(len(data))
	r.mu.Lock()
	var buf []byte
	keep := len(r.offered) < maxOffered && r.memHeld+n <= r.memLimit() && n <= streamAbove
	if keep {
		r.memHeld += n
		for i, b := range r.memFree {
			if int64(cap(b)) >= n {
				buf = b[:n]
				r.memFree = append(r.memFree[:i], r.memFree[i+1:]...)
				r.memFreeBytes -= int64(cap(b))
				break
			}
		}
	}
	r.mu.Unlock()
	if !keep {
		r.offer(planned{name: name, listed: n, part: part})
		return
	}
	if buf == nil {
		buf = make([]byte, n, n+n/8) // the slack fits the next segment too
	}
	copy(buf, data)
	m := &memSeg{data: buf, seg: *seg}
	m.seg.Payload = buf[len(data)-len(seg.Payload):]
	r.mu.Lock()
	if len(r.offered) < maxOffered {
		r.offered = append(r.offered, planned{name: name, listed: n, mem: m, part: part})
	} else {
		r.offerLost = true
		r.releaseMemLocked(m)
	}
	r.mu.Unlock()
	r.Wake()
}

// releaseMem gives back what an offered copy holds, once it is applied or
// will not be (nil: nothing).
func (r *Receiver) releaseMem(m *memSeg) {
	if m == nil {
		return
	}
	r.mu.Lock()
	r.releaseMemLocked(m)
	r.mu.Unlock()
}

func (r *Receiver) releaseMemLocked(m *memSeg) {
	r.memHeld -= int64(len(m.data))
	if c := int64(cap(m.data)); len(r.memFree) < maxMemFree && r.memHeld+r.memFreeBytes+c <= r.memLimit() {
		r.memFree = append(r.memFree, m.data[:0])
		r.memFreeBytes += c
	}
	m.data, m.seg.Payload = nil, nil
}

// releasePlanned releases the copies of ps.
func (r *Receiver) releasePlanned(ps []planned) {
	for _, p := range ps {
		r.releaseMem(p.mem)
	}
}
