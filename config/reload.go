package config

import (
	"reflect"
	"slices"
	"strings"
)

// A running ship, receive or sync re-reads its config file on SIGHUP.
// Reloadable says what changed: the keys it can apply live and the keys
// only a restart can change. The process applies a reload only when no
// key is refused, so it always runs one whole config.

// liveKeys are the keys a verb applies live, by verb. ship applies the
// flush policy and the spool limit at its next append or age check (a
// batch already open is judged by the new policy); flush_at and the
// sending windows (with their bandwidth caps, and time_zone, which they
// are read in) at once, a segment being sent finishing under the old
// ones; [retention] from its next scheduled prune; [tcp] bandwidth_limit
// from the next chunk sent on a tcp:// link (those without a
// bandwidth_limit of their own in [[ship.targets]]); health_max_lag from
// the next health check; the log level at once. receive and sync apply
// health_max_lag and the log level.
var liveKeys = map[string][]string{
	"ship": {"log_level", "ship.max_bytes", "ship.max_age", "ship.max_records", "ship.spool_limit",
		"ship.flush_at", "ship.windows", "time_zone", "retention.keep_for", "retention.keep_min", "retention.schedule",
		"tcp.bandwidth_limit", "health_max_lag"},
	"receive": {"log_level", "health_max_lag"},
	"sync":    {"log_level", "health_max_lag"},
}

// LiveKeys lists the keys verb applies on SIGHUP (for docs and messages).
func LiveKeys(verb string) []string { return slices.Clone(liveKeys[verb]) }

// Reloadable compares the running config old with next, re-read from the
// file (with the same command-line flags applied), and returns the keys
// that differ: live, those verb applies without a restart, and refused,
// every other one. Keys are named as in the file ("ship.max_age",
// "s3.endpoint"); an array of tables is one key ("ship.targets"). Values
// are never returned: some are secrets.
func Reloadable(verb string, old, next *File) (live, refused []string) {
	var changed []string
	diffKeys("", reflect.ValueOf(*old), reflect.ValueOf(*next), &changed)
	for _, k := range changed {
		if slices.Contains(liveKeys[verb], k) {
			live = append(live, k)
		} else {
			refused = append(refused, k)
		}
	}
	return live, refused
}

// diffKeys appends to out the keys of the TOML struct values a and b
// whose values differ, recursing into tables.
func diffKeys(prefix string, a, b reflect.Value, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		key := prefix + name
		fa, fb := a.Field(i), b.Field(i)
		if f.Type.Kind() == reflect.Struct && hasTOMLFields(f.Type) {
			diffKeys(key+".", fa, fb, out)
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			*out = append(*out, key)
		}
	}
}

// hasTOMLFields reports whether t is a table (a struct of keys) rather
// than a value that happens to be a struct.
func hasTOMLFields(t reflect.Type) bool {
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("toml"); tag != "" && tag != "-" {
			return true
		}
	}
	return false
}
