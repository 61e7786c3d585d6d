package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

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
	listFlag // repeatable string
)

// configFlags holds every config flag, by name. A verb lists those it
// accepts (common.accept); the same name means the same key in every verb.
var configFlags = map[string]configFlag{
	"store": {kind: stringFlag, usage: "store `URL`: a directory path, file:///abs/path or s3://bucket/prefix",
		set: func(c *config.File, v string) error { c.Store = v; return nil }},
	"stream": {kind: stringFlag, usage: "stream `name`",
		set: func(c *config.File, v string) error { c.Stream = v; return nil }},
	"generation": {kind: stringFlag, usage: "stream generation `N`, 1 to 4294967295 (default 0: follow the stream's history)",
		set: func(c *config.File, v string) error {
			g, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return fmt.Errorf("%q is not a generation (0 to %d; 0 follows the stream's history)", v, uint32(1<<32-1))
			}
			c.Generation = uint32(g)
			return nil
		}},
	"site": {kind: stringFlag, usage: "this site's `name` in the stream's writer lease (default: host name)",
		set: func(c *config.File, v string) error { c.Site.ID = v; return nil }},
	"log-level": {kind: stringFlag, usage: "debug, info, warn or error (default info)",
		set: func(c *config.File, v string) error { c.LogLevel = v; return nil }},
	"log-format": {kind: stringFlag, usage: "text or json (default text)",
		set: func(c *config.File, v string) error { c.LogFormat = v; return nil }},
	"metrics-addr": {kind: stringFlag, usage: "serve Prometheus /metrics and /healthz on this `address` (host:port)",
		set: func(c *config.File, v string) error { c.MetricsAddr = v; return nil }},

	// [ship]; the usages are ship's.
	"spool": {kind: stringFlag, usage: "spool `dir`: durable local buffer (one shipper per spool)",
		set: func(c *config.File, v string) error { c.Ship.Spool = v; return nil }},
	"source": {kind: stringFlag, usage: "stdin, tail:PATH (follow a file), dir:PATH (replicate a directory tree) or none (only what ferry push hands over) (default stdin)",
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
	"lease-ttl": {kind: stringFlag, usage: "how long the stream's writer lease lasts unless renewed, or off (unsafe: nothing then keeps a second shipper off the stream) (default 30s)",
		set: func(c *config.File, v string) (err error) {
			c.Ship.LeaseTTL, err = config.ParseDurationOrOff(v)
			return
		}},
	"ack": {kind: stringFlag, usage: "when a record counts as accepted: local, received or applied (default local)",
		set: func(c *config.File, v string) error { c.Ship.Ack = v; return nil }},
	"also": {kind: listFlag, usage: "send every segment to this store `URL` too (fan-out; repeatable; see [[ship.targets]])",
		set: func(c *config.File, v string) error {
			c.Ship.Targets = append(c.Ship.Targets, config.Target{Store: v})
			return nil
		}},

	"start-now": {kind: listFlag, usage: "let target `TARGET` (\"store\", a target's name or its URL) begin the stream at the spool's seq if it holds nothing of it and no other target can backfill it (repeatable; see start_now)",
		set: func(c *config.File, v string) error {
			c.Ship.StartNow = append(c.Ship.StartNow, v)
			return nil
		}},

	// [receive]
	"state": {kind: stringFlag, usage: "state `dir`: the durable checkpoint (one receiver per dir)",
		set: func(c *config.File, v string) error { c.Receive.State = v; return nil }},
	"apply": {kind: stringFlag, usage: "where records go: file:PATH (append), exec:CMD (pipe each segment), dir:DIR (a directory tree from a dir: source or ferry push) or stdout",
		set: func(c *config.File, v string) error { c.Receive.Apply = v; return nil }},
	"gap-timeout": {kind: stringFlag, usage: "how long a missing segment may stay missing before it is reported (default 30s)",
		set: func(c *config.File, v string) (err error) {
			c.Receive.GapTimeout, err = config.ParseDuration(v)
			return
		}},
	"poll-min": {kind: stringFlag, usage: "shortest wait between store polls (default 200ms)",
		set: func(c *config.File, v string) (err error) { c.Receive.PollMin, err = config.ParseDuration(v); return }},
	"poll-max": {kind: stringFlag, usage: "longest wait between polls when idle (default 5s)",
		set: func(c *config.File, v string) (err error) { c.Receive.PollMax, err = config.ParseDuration(v); return }},
	"once-timeout": {kind: stringFlag, usage: "with --once: how long one operation may keep failing (unreachable store, failing exec:, full disk) before the run gives up, non-zero (default 5m)",
		set: func(c *config.File, v string) (err error) {
			c.Receive.OnceTimeout, err = config.ParseDuration(v)
			return
		}},
	"exec-timeout": {kind: stringFlag, usage: "kill an exec: command (and its process group) still running on a segment after this long, and retry the segment (default 0: no limit)",
		set: func(c *config.File, v string) (err error) {
			c.Receive.ExecTimeout, err = config.ParseDuration(v)
			return
		}},
	"id": {kind: stringFlag, usage: "receiver id in the published watermark (default: host name)",
		set: func(c *config.File, v string) error { c.Receive.ID = v; return nil }},
	"max-segment-bytes": {kind: stringFlag, usage: "refuse a segment larger than this, stored or decompressed, before allocating it (default 256MiB; at least the shippers' max_bytes + max_record_size)",
		set: func(c *config.File, v string) (err error) {
			c.Receive.MaxSegmentBytes, err = config.ParseSize(v)
			return
		}},
	"prefetch": {kind: intFlag, usage: "segments read and verified ahead of the one being applied, to catch up faster (default 4; 0 for none)",
		set: func(c *config.File, v string) (err error) { c.Receive.Prefetch, err = strconv.Atoi(v); return }},

	// [tcp], the direct link
	"token": {kind: stringFlag, usage: "shared secret for the TCP link; other users see it in ps: prefer --token-file, FERRY_TOKEN or tcp.token_file",
		set: func(c *config.File, v string) error {
			c.TCP.Token, c.TCP.TokenFile, c.TCP.TokenSource = v, "", config.TokenFromFlag
			return nil
		}},
	"token-file": {kind: stringFlag, usage: "read the TCP link's shared secret from this `file` (mode 600; see tcp.token_file)",
		set: func(c *config.File, v string) error {
			if c.TCP.TokenSource == config.TokenFromFlag {
				return errors.New("give --token or --token-file, not both")
			}
			c.TCP.Token, c.TCP.TokenFile, c.TCP.TokenSource = "", v, config.TokenFromFileFlag
			return nil
		}},
	"insecure": {kind: boolFlag, usage: "allow a plaintext TCP link (no TLS)",
		set: func(c *config.File, v string) error { c.TCP.Insecure = v == "true"; return nil }},
	"tls-cert": {kind: stringFlag, usage: "this side's TLS certificate `file` (PEM)",
		set: func(c *config.File, v string) error { c.TCP.CertFile = v; return nil }},
	"tls-key": {kind: stringFlag, usage: "this side's TLS key `file` (PEM)",
		set: func(c *config.File, v string) error { c.TCP.KeyFile = v; return nil }},
	"tls-ca": {kind: stringFlag, usage: "CA `file` that signed the receiver's certificate",
		set: func(c *config.File, v string) error { c.TCP.CAFile = v; return nil }},
	"bandwidth-limit": {kind: stringFlag, usage: "cap the link at this many `bytes` per second (e.g. 10MiB)",
		set: func(c *config.File, v string) (err error) { c.TCP.BandwidthLimit, err = config.ParseSize(v); return }, bareErr: true},
	"tls-client-ca": {kind: stringFlag, usage: "require client certificates signed by this CA `file` (mutual TLS)",
		set: func(c *config.File, v string) error { c.TCP.ClientCAFile = v; return nil }},
	"tls-client-names": {kind: stringFlag, usage: "accept only client certificates whose common name or a DNS name is in this comma-separated `list` (needs --tls-client-ca)",
		set: func(c *config.File, v string) error {
			c.TCP.TLSClientNames = nil
			for n := range strings.SplitSeq(v, ",") {
				if n = strings.TrimSpace(n); n != "" {
					c.TCP.TLSClientNames = append(c.TCP.TLSClientNames, n)
				}
			}
			return nil
		}},
	"inbox": {kind: stringFlag, usage: "`dir` for received segments (default STATE/inbox)",
		set: func(c *config.File, v string) error { c.TCP.Inbox = v; return nil }},
	// --listen ADDR is short for --store tcp://ADDR: accept shippers on
	// ADDR and apply from the local inbox.
	"listen": {kind: stringFlag, usage: "accept shippers on this `address` (host:port) and apply what they send",
		set: func(c *config.File, v string) error { c.Store = "tcp://" + v; return nil }},

	// [retention]
	"keep-for": {kind: stringFlag, usage: "keep segments stored less than this long ago (e.g. 720h)",
		set: func(c *config.File, v string) (err error) { c.Retention.KeepFor, err = config.ParseDuration(v); return }},
	"keep-min": {kind: intFlag, usage: "keep at least this many of the newest segments",
		set: func(c *config.File, v string) (err error) { _, err = fmt.Sscan(v, &c.Retention.KeepMin); return }},
}

// Flags that several verbs accept together.
var (
	// commonFlags are accepted by every verb that reads the config.
	commonFlags = []string{"store", "stream", "generation", "log-level", "log-format"}
	// shipperLinkFlags are for the shipper's end of a tcp:// link.
	shipperLinkFlags = []string{"token", "token-file", "insecure", "tls-cert", "tls-key", "tls-ca", "bandwidth-limit"}
	// receiverLinkFlags are for receive's end of it.
	receiverLinkFlags = []string{"token", "token-file", "insecure", "tls-cert", "tls-key", "listen", "tls-client-ca", "tls-client-names", "inbox"}
)

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
	case listFlag:
		c.fs.Var(new(stringList), name, usage)
	}
	c.accepted[name] = cf
}

// applyFlag stores f, given on the command line, in c.cfg if it is one of
// the verb's config flags.
func (c *common) applyFlag(f *flag.Flag) error {
	cf, ok := c.accepted[f.Name]
	if !ok {
		return nil // --config, or a flag of the verb's own
	}
	values := []string{f.Value.String()}
	if l, isList := f.Value.(*stringList); isList {
		values = *l
	}
	for _, v := range values {
		if err := cf.set(c.cfg, v); err != nil {
			if cf.bareErr {
				return err
			}
			return fmt.Errorf("--%s: %w", f.Name, err)
		}
	}
	return nil
}
