package main

import "math/bits"

// rng is wyrand: one add and one 128-bit multiply per value, fast enough to
// call several times per line. Not for anything but test data.
type rng struct{ s uint64 }

// newRNG derives an independent stream from a seed and a stream index, so
// chunk k gets the same numbers however many chunks are generated at once.
func newRNG(seed, stream uint64) *rng {
	return &rng{s: splitmix(splitmix(seed) ^ stream)}
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func (r *rng) u64() uint64 {
	r.s += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(r.s, r.s^0xe7037ed1a0b428db)
	return hi ^ lo
}

// n returns a number in [0, k) (Lemire's multiply-shift; the bias is far
// below anything a compressor could notice).
func (r *rng) n(k int) int {
	hi, _ := bits.Mul64(r.u64(), uint64(k))
	return int(hi)
}

// skew returns a number in [0, k) where small values are much more likely,
// roughly like the popularity of paths or clients in real traffic.
func (r *rng) skew(k int) int {
	return r.n(r.n(k) + 1)
}

// percent reports true with probability p/100.
func (r *rng) percent(p int) bool { return r.n(100) < p }
