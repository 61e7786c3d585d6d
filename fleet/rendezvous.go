package fleet

import (
	"crypto/sha256"
	"encoding/binary"
)

// Owner is the member of members that owns stream by rendezvous (highest
// random weight) hashing: each member scores the stream, the highest
// score wins. Every member computes the same owner from the same member
// list, and a member joining or leaving moves only the streams it wins or
// held (about 1/N of them). "" if members is empty.
func Owner(stream string, members []string) string {
	var best string
	var bestScore uint64
	for _, m := range members {
		h := sha256.New()
		h.Write([]byte(m))
		h.Write([]byte{0})
		h.Write([]byte(stream))
		score := binary.BigEndian.Uint64(h.Sum(nil))
		if best == "" || score > bestScore || (score == bestScore && m < best) {
			best, bestScore = m, score
		}
	}
	return best
}
