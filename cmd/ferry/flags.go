package main

import (
	"flag"
	"fmt"

	"github.com/ferry-dr/ferry/config"
)

// A configFlag is a command-line flag that stands for a config key. Given on
// the command line it overrides the config file; left out, the file's value
// (or the default) stands. Its default in the flag set is the zero value of
// its kind, so --help gives the real default in the usage text.
type configFlag struct {
	kind  flagKind
	usage string // for the verbs that do not word it their own way
	// set stores a value given on the command line in cfg; a list flag
	// calls it once per value, in order.
	set func(cfg *config.File, v string) error
	// bareErr leaves set's error without the "--name: " prefix (the
	// message of --bandwidth-limit has always read so).
	bareErr bool
}

// flagKind is the type the flag package parses a configFlag's value as, and
// shows in --help. Sizes and durations are strings the setter parses.
type flagKind int

const (
	stringFlag flagKind = iota
	boolFlag
	intFlag
	int64Flag
	uintFlag
	listFlag // repeatable string
)

// configFlags holds every config flag, by name. A verb lists those it
// accepts (common.accept); the same name means the same key in every verb.
var configFlags = map[string]configFlag{
	"store": {kind: stringFlag, usage: "store `URL`: a directory path, file:///abs/path or s3://bucket/prefix",
		set: func(c *config.File, v string) error { c.Store = v; return nil }},
	"stream": {kind: stringFlag, usage: "stream `name`",
		set: func(c *config.File, v string) error { c.Stream = v; return nil }},
	"generation": {kind: uintFlag, usage: "stream generation (default 1)",
		set: func(c *config.File, v string) error {
			// A value over uint32 stores 0, which Validate refuses.
			var g uint32
			fmt.Sscan(v, &g)
			c.Generation = g
			return nil
		}},
	"log-level": {kind: stringFlag, usage: "debug, info, warn or error (default info)",
		set: func(c *config.File, v string) error { c.LogLevel = v; return nil }},
	"log-format": {kind: stringFlag, usage: "text or json (default text)",
		set: func(c *config.File, v string) error { c.LogFormat = v; return nil }},
	"metrics-addr": {kind: stringFlag, usage: "serve Prometheus /metrics and /healthz on this `address` (host:port)",
		set: func(c *config.File, v string) error { c.MetricsAddr = v; return nil }},

	// [ship]; the usages are ship's.
	"spool": {kind: stringFlag, usage: "spool `dir`: durable local buffer (one shipper per spool)",
		set: func(c *config.File, v string) error { c.Ship.Spool = v; return nil }},
	"source": {kind: stringFlag, usage: "stdin, tail:PATH (follow a file) or dir:PATH (replicate a directory tree) (default stdin)",
		set: func(c *config.File, v string) error { c.Ship.Source = v; return nil }},
	"format": {kind: stringFlag, usage: "line, ndjson or raw (default line)",
		set: func(c *config.File, v string) error { c.Ship.Format = v; return nil }},
	"fsync": {kind: stringFlag, usage: "always, batch or off (default batch)",
		set: func(c *config.File, v string) error { c.Ship.Fsync = v; return nil }},
	"max-bytes": {kind: stringFlag, usage: "seal a segment at this many uncompressed `bytes` (default 4MiB)",
		set: func(c *config.File, v string) (err error) { c.Ship.MaxBytes, err = config.ParseSize(v); return }},
	"max-age": {kind: stringFlag, usage: "seal a segment this long after its first record (default 2s)",
		set: func(c *config.File, v string) (err error) { c.Ship.MaxAge, err = config.ParseDuration(v); return }},
	"max-records": {kind: int64Flag, usage: "seal a segment at this many records (default no limit)",
		set: func(c *config.File, v string) (err error) { _, err = fmt.Sscan(v, &c.Ship.MaxRecords); return }},
	"max-record-size": {kind: stringFlag, usage: "refuse records larger than this (default 16MiB)",
		set: func(c *config.File, v string) (err error) { c.Ship.MaxRecordSize, err = config.ParseSize(v); return }},
	"spool-limit": {kind: stringFlag, usage: "stop reading input above this spool size (default 1GiB)",
		set: func(c *config.File, v string) (err error) { c.Ship.SpoolLimit, err = config.ParseSize(v); return }},
	"shutdown-timeout": {kind: stringFlag, usage: "how long to keep sending after EOF or a signal (default 30s)",
		set: func(c *config.File, v string) (err error) {
			c.Ship.ShutdownTimeout, err = config.ParseDuration(v)
			return
		}},
	"compression": {kind: stringFlag, usage: "fastest, default, better or best (default fastest)",
		set: func(c *config.File, v string) error { c.Ship.Compression = v; return nil }},
	"ack": {kind: stringFlag, usage: "when a record counts as accepted: local, received or applied (default local)",
		set: func(c *config.File, v string) error { c.Ship.Ack = v; return nil }},
	"also": {kind: listFlag, usage: "send every segment to this store `URL` too (fan-out; repeatable; see [[ship.targets]])",
		set: func(c *config.File, v string) error {
			c.Ship.Targets = append(c.Ship.Targets, config.Target{Store: v})
			return nil
		}},
}

// commonFlags are accepted by every verb that reads the config.
var commonFlags = []string{"store", "stream", "generation", "log-level", "log-format"}

// accept adds the named config flags to the verb, with the table's usage.
func (c *common) accept(names ...string) {
	for _, name := range names {
		c.acceptWithUsage(name, configFlags[name].usage)
	}
}

// acceptWithUsage adds one config flag with a usage worded for this verb.
func (c *common) acceptWithUsage(name, usage string) {
	cf, ok := configFlags[name]
	if !ok {
		panic("no config flag " + name)
	}
	switch cf.kind {
	case stringFlag:
		c.fs.String(name, "", usage)
	case boolFlag:
		c.fs.Bool(name, false, usage)
	case intFlag:
		c.fs.Int(name, 0, usage)
	case int64Flag:
		c.fs.Int64(name, 0, usage)
	case uintFlag:
		c.fs.Uint(name, 0, usage)
	case listFlag:
		c.fs.Var(new(stringList), name, usage)
	}
	c.accepted[name] = cf
}

// applyFlag stores a config flag given on the command line in c.cfg; ok is
// false if f is not a config flag of this verb.
func (c *common) applyFlag(f *flag.Flag) (ok bool, err error) {
	cf, ok := c.accepted[f.Name]
	if !ok {
		return false, nil
	}
	values := []string{f.Value.String()}
	if l, isList := f.Value.(*stringList); isList {
		values = *l
	}
	for _, v := range values {
		if err := cf.set(c.cfg, v); err != nil {
			if cf.bareErr {
				return true, err
			}
			return true, fmt.Errorf("--%s: %w", f.Name, err)
		}
	}
	return true, nil
}
