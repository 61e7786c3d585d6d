package tcp

import "golang.org/x/time/rate"

// SetWindowLimit caps the segment bytes sent per second from now on, on
// top of ClientConfig.BandwidthLimit: the lower of the two applies; 0 (or
// less) lifts this cap and leaves BandwidthLimit. The shipper sets it to
// the cap of the sending window in force. A segment being sent follows
// the new rate from its next chunk (at most 64 KiB, or BandwidthLimit/8).
func (c *Client) SetWindowLimit(bytesPerSecond int64) {
	own := c.cfg.BandwidthLimit
	limit := rate.Inf
	switch {
	case bytesPerSecond > 0 && (own <= 0 || bytesPerSecond < own):
		limit = rate.Limit(bytesPerSecond)
	case own > 0:
		limit = rate.Limit(own)
	}
	if c.limiter.Limit() != limit {
		c.limiter.SetLimit(limit)
	}
}
