package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count written with a unit: "4MiB", "16 MiB", "512KiB",
// "4MB" (decimal, 1000-based), "123" or "123B". Units are case-insensitive.
// A bare TOML integer is a count of bytes.
type Size int64

// Binary size units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
	PiB
)

// sizeUnits maps a lower-cased unit to its multiplier. "k", "m" alone are
// refused: they do not say whether 1000 or 1024 is meant.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kib": int64(KiB), "mib": int64(MiB), "gib": int64(GiB), "tib": int64(TiB), "pib": int64(PiB),
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15,
}

const sizeUnitList = "B, KiB, MiB, GiB, TiB, PiB, kB, MB, GB, TB, PB"

// ParseSize parses a size such as "4MiB" or "512 KiB". It refuses negative
// values, fractions and values that overflow int64.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		if strings.HasPrefix(t, "-") {
			return 0, fmt.Errorf("invalid size %q: must not be negative", s)
		}
		return 0, fmt.Errorf("invalid size %q: want a whole number and a unit, e.g. \"4MiB\"", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	unit := strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use %s)", s, strings.TrimSpace(t[i:]), sizeUnitList)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(n * mult), nil
}

// String formats s with the largest binary unit that divides it exactly
// ("4MiB"), else as bytes ("1000B"). The result parses back to s.
func (s Size) String() string {
	for _, u := range []struct {
		n    Size
		name string
	}{{PiB, "PiB"}, {TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}} {
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Set implements flag.Value.
func (s *Size) Set(v string) error { return s.UnmarshalText([]byte(v)) }

// Duration is a time.Duration written as "250ms", "2s" or "1m".
// Negative durations are refused. A bare TOML 0 is accepted; other bare
// integers are refused because they carry no unit.
type Duration time.Duration

// ParseDuration parses a non-negative duration in time.ParseDuration
// syntax, plus the unit "d" for 24 hours ("30d", "1d12h"), which retention
// settings are most naturally written in.
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New(`invalid duration "": want e.g. "2s", "250ms", "1m", "30d"`)
	}
	d, err := parseDurationDays(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want e.g. \"2s\", \"250ms\", \"1m\", \"30d\"", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	return Duration(d), nil
}

// parseDurationDays is time.ParseDuration that also knows "d" (24h). A
// string without a "d" term goes to time.ParseDuration unchanged; one with
// it is parsed term by term, "d" terms as hours times 24.
func parseDurationDays(s string) (time.Duration, error) {
	if !strings.Contains(s, "d") {
		return time.ParseDuration(s)
	}
	rest, neg := s, false
	if rest[0] == '-' || rest[0] == '+' {
		neg, rest = rest[0] == '-', rest[1:]
	}
	var total time.Duration
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] == '.' || rest[i] >= '0' && rest[i] <= '9') {
			i++
		}
		j := i
		for j < len(rest) && rest[j] != '.' && (rest[j] < '0' || rest[j] > '9') {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		if num == "" || unit == "" {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		mult := time.Duration(1)
		if unit == "d" {
			unit, mult = "h", 24
		}
		d, err := time.ParseDuration(num + unit)
		if err != nil {
			return 0, err
		}
		if d > math.MaxInt64/mult || total > math.MaxInt64-d*mult {
			return 0, fmt.Errorf("invalid duration %q: too large", s)
		}
		total += d * mult
	}
	if neg {
		total = -total
	}
	return total, nil
}

// String formats d like time.Duration ("2s", "1m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Set implements flag.Value.
func (d *Duration) Set(v string) error { return d.UnmarshalText([]byte(v)) }

// DurationOrOff is a Duration that may also be written "off", which is 0.
type DurationOrOff Duration

// ParseDurationOrOff parses "off" as 0, anything else as ParseDuration.
func ParseDurationOrOff(s string) (DurationOrOff, error) {
	if strings.TrimSpace(s) == "off" {
		return 0, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%w, or \"off\"", err)
	}
	return DurationOrOff(d), nil
}

// String formats d like Duration, and 0 as "off".
func (d DurationOrOff) String() string {
	if d == 0 {
		return "off"
	}
	return Duration(d).String()
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *DurationOrOff) UnmarshalText(b []byte) error {
	v, err := ParseDurationOrOff(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d DurationOrOff) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
