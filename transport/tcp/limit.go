package tcp

import "golang.org/x/time/rate"

// SetWindowLimit caps the segment bytes sent per second from now on, on
// top of the client's own limit (ClientConfig.BandwidthLimit, or the last
// SetBandwidthLimit): the lower of the two applies; 0 (or less) lifts this
// cap and leaves the own limit. The shipper sets it to the cap of the
// sending window in force. A segment being sent follows the new rate from
// its next chunk (at most 64 KiB, or BandwidthLimit/8 of the start).
func (c *Client) SetWindowLimit(bytesPerSecond int64) {
	c.limitMu.Lock()
	defer c.limitMu.Unlock()
	c.window = bytesPerSecond
	c.applyLimit()
}

// SetBandwidthLimit replaces the client's own limit (what
// ClientConfig.BandwidthLimit set), in segment bytes per second; 0 (or
// less): none. A window's cap still applies on top of it. It takes effect
// from the next chunk of the segment being sent (a config reload).
func (c *Client) SetBandwidthLimit(bytesPerSecond int64) {
	c.limitMu.Lock()
	defer c.limitMu.Unlock()
	c.own = max(bytesPerSecond, 0)
	c.applyLimit()
}

// applyLimit sets the limiter to the lower of the own limit and the
// window's cap. Under limitMu.
func (c *Client) applyLimit() {
	limit := rate.Inf
	switch {
	case c.window > 0 && (c.own <= 0 || c.window < c.own):
		limit = rate.Limit(c.window)
	case c.own > 0:
		limit = rate.Limit(c.own)
	}
	if c.limiter.Limit() != limit {
		c.limiter.SetLimit(limit)
	}
}
