package batch

import "time"

// FlushPolicy decides when the open batch seals. A zero field disables that
// trigger; whichever enabled trigger fires first seals.
type FlushPolicy struct {
	MaxBytes   int64         // uncompressed framed bytes
	MaxRecords int           // records
	MaxAge     time.Duration // since the first record of the open batch
}

// Due reports whether a batch of size bytes and n records whose first
// record arrived at first must seal at now, and which trigger fired.
func (p FlushPolicy) Due(size int64, n int, first, now time.Time) (bool, string) {
	if n == 0 {
		return false, ""
	}
	switch {
	case p.MaxBytes > 0 && size >= p.MaxBytes:
		return true, "max_bytes"
	case p.MaxRecords > 0 && n >= p.MaxRecords:
		return true, "max_records"
	case p.MaxAge > 0 && !now.Before(first.Add(p.MaxAge)):
		return true, "max_age"
	}
	return false, ""
}

// Deadline is when the age trigger fires for a batch whose first record
// arrived at first; zero when MaxAge is disabled.
func (p FlushPolicy) Deadline(first time.Time) time.Time {
	if p.MaxAge <= 0 {
		return time.Time{}
	}
	return first.Add(p.MaxAge)
}
