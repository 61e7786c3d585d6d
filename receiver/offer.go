package receiver

import (
	"slices"
	"strings"

	"github.com/ferry-dr/ferry/batch"
)

// Offers: the direct link's server tells the receiver of each segment it
// stored, so a pass can apply them without listing the inbox.

// Wake makes an idle Run look at the store at once instead of at its next
// poll: the direct link's server calls it when a segment arrives in the
// inbox. It never blocks.
func (r *Receiver) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Offer tells the receiver that segment name, of size bytes, has just been
// stored durably (the direct link's server calls it for each segment it
// puts into the inbox) and wakes Run. A pass that finds the offered names
// continuing the stream from where it stands applies them without listing
// the store, which, for an inbox of a thousand segments, cost more CPU
// than applying a small segment; size sizes the read buffer, as a
// listing's would. It never blocks.
func (r *Receiver) Offer(name string, size int64) {
	r.offer(planned{name: name, listed: size})
}

// offer is Offer of p, a segment stored alone or a bundle part.
func (r *Receiver) offer(p planned) {
	r.mu.Lock()
	if len(r.offered) < maxOffered {
		r.offered = append(r.offered, p)
	} else {
		r.offerLost = true
	}
	r.mu.Unlock()
	r.Wake()
}

// maxOffered bounds the names Offer keeps between passes; past it, the
// next pass lists the store.
const maxOffered = 4096

// takeOffers takes every offered segment, in name order, each name once
// (a resent segment may be offered twice). lost is set when more were
// offered than Offer keeps.
func (r *Receiver) takeOffers() (offered []planned, lost bool) {
	r.mu.Lock()
	names, lost := r.offered, r.offerLost
	r.offered, r.offerLost = nil, false
	r.mu.Unlock()
	slices.SortFunc(names, func(a, b planned) int { return strings.Compare(a.name, b.name) })
	for _, p := range names {
		if n := len(offered); n > 0 && offered[n-1].name == p.name {
			r.releaseMem(p.mem)
			continue
		}
		offered = append(offered, p)
	}
	return offered, lost
}

// takeOffered returns the offered segments that continue the stream from
// c, in order, and releases the others. They are planned as a listing from
// c would be, so an offer that overlaps another or the segment applied
// last is an error. ok is false when they do not continue it (none
// offered, one missing): then the pass lists the store.
func (r *Receiver) takeOffered(c cursor, offered []planned) (_ []planned, ok bool, err error) {
	var mine []planned
	for _, p := range offered {
		if g, _, _, valid := batch.ParseSegmentName(p.name); valid && g == c.gen && p.name > c.after {
			mine = append(mine, p)
		} else {
			// Another generation's, or before the segment applied last,
			// where a listing from c would not look either.
			r.releaseMem(p.mem)
		}
	}
	todo, gap, divergent, err := plan(mine, c)
	if err != nil || gap != nil || len(todo) == 0 {
		r.releasePlanned(mine)
		return nil, false, err
	}
	r.noteDivergent(c, divergent)
	// What plan skipped (applied already, divergent) is not needed; todo
	// keeps mine's order.
	k := 0
	for _, p := range mine {
		if k < len(todo) && p == todo[k] {
			k++
		} else {
			r.releaseMem(p.mem)
		}
	}
	return todo, true, nil
}
