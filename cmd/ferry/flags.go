package main

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agnivade/levenshtein"
	"github.com/spf13/pflag"

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

// flagKind is the type pflag parses a configFlag's value as, and shows in
// --help. Sizes and durations are strings the setter parses, shown as
// "size" and "duration" like the verbs' own (sizeValue, durationValue).
type flagKind int

const (
	stringFlag flagKind = iota
	boolFlag
	intFlag
	int64Flag
	sizeFlag     // config.ParseSize: 4MiB, 512KiB, 1GB
	durationFlag // config.ParseDuration: 250ms, 2s, 30d
	listFlag     // repeatable string
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
	"tail-journal": {kind: boolFlag, usage: "journal the lines of a tail: source before sealing them (default: written once, into the segment; after a crash read again from the file)",
		set: func(c *config.File, v string) error { c.Ship.TailJournal = v == "true"; return nil }},
	"max-bytes": {kind: sizeFlag, usage: "seal a segment at this many uncompressed `bytes` (default 4MiB)",
		set: func(c *config.File, v string) (err error) { c.Ship.MaxBytes, err = config.ParseSize(v); return }},
	"max-age": {kind: durationFlag, usage: "seal a segment this long after its first record (default 2s)",
		set: func(c *config.File, v string) (err error) { c.Ship.MaxAge, err = config.ParseDuration(v); return }},
	"max-records": {kind: int64Flag, usage: "seal a segment at this many records (default no limit)",
		set: func(c *config.File, v string) (err error) { _, err = fmt.Sscan(v, &c.Ship.MaxRecords); return }},
	"max-record-size": {kind: sizeFlag, usage: "refuse records larger than this (default 16MiB)",
		set: func(c *config.File, v string) (err error) { c.Ship.MaxRecordSize, err = config.ParseSize(v); return }},
	"spool-limit": {kind: sizeFlag, usage: "stop reading input above this spool size (default 1GiB)",
		set: func(c *config.File, v string) (err error) { c.Ship.SpoolLimit, err = config.ParseSize(v); return }},
	"shutdown-timeout": {kind: durationFlag, usage: "how long to keep sending after EOF or a signal (default 30s)",
		set: func(c *config.File, v string) (err error) {
			c.Ship.ShutdownTimeout, err = config.ParseDuration(v)
			return
		}},
	"compression": {kind: stringFlag, usage: "fastest, default, better or best (default fastest)",
		set: func(c *config.File, v string) error { c.Ship.Compression = v; return nil }},
	"lease-ttl": {kind: durationFlag, usage: "how long the stream's writer lease lasts unless renewed, or off (unsafe: nothing then keeps a second shipper off the stream) (default 30s)",
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

	"pg-data": {kind: stringFlag, usage: "read ahead of PostgreSQL's archive_command: ship every WAL file this data `dir`ectory marks ready (see pg_data)",
		set: func(c *config.File, v string) error { c.Ship.PGData = v; return nil }},
	"start-now": {kind: listFlag, usage: "let target `TARGET` (\"store\", a target's name or its URL) begin the stream at the spool's seq if it holds nothing of it and no other target can backfill it (repeatable; see start_now)",
		set: func(c *config.File, v string) error {
			c.Ship.StartNow = append(c.Ship.StartNow, v)
			return nil
		}},

	// [fleet]
	"fleet": {kind: stringFlag, usage: "share the streams with the other receivers of fleet `NAME` (docs/FLEET.md)",
		set: func(c *config.File, v string) error { c.Fleet.Name = v; return nil }},
	"fleet-member": {kind: stringFlag, usage: "this receiver's `id` in the fleet (default: host name and pid)",
		set: func(c *config.File, v string) error { c.Fleet.Member = v; return nil }},
	"fleet-ttl": {kind: durationFlag, usage: "how long a fleet member's heartbeat and leases last unless renewed (default 30s, at least 3s)",
		set: func(c *config.File, v string) (err error) { c.Fleet.LeaseTTL, err = config.ParseDuration(v); return }},

	// [receive]
	"state": {kind: stringFlag, usage: "state `dir`: the durable checkpoint (one receiver per dir)",
		set: func(c *config.File, v string) error { c.Receive.State = v; return nil }},
	"apply": {kind: stringFlag, usage: "where records go: file:PATH (append), exec:CMD (pipe each segment), dir:DIR (a directory tree from a dir: source or ferry push) or stdout",
		set: func(c *config.File, v string) error { c.Receive.Apply = v; return nil }},
	"gap-timeout": {kind: durationFlag, usage: "how long a missing segment may stay missing before it is reported (default 30s)",
		set: func(c *config.File, v string) (err error) {
			c.Receive.GapTimeout, err = config.ParseDuration(v)
			return
		}},
	"poll-min": {kind: durationFlag, usage: "shortest wait between store polls (default 200ms)",
		set: func(c *config.File, v string) (err error) { c.Receive.PollMin, err = config.ParseDuration(v); return }},
	"poll-max": {kind: durationFlag, usage: "longest wait between polls when idle (default 5s)",
		set: func(c *config.File, v string) (err error) { c.Receive.PollMax, err = config.ParseDuration(v); return }},
	"once-timeout": {kind: durationFlag, usage: "with --once: how long one operation may keep failing (unreachable store, failing exec:, full disk) before the run gives up, non-zero (default 5m)",
		set: func(c *config.File, v string) (err error) {
			c.Receive.OnceTimeout, err = config.ParseDuration(v)
			return
		}},
	"exec-timeout": {kind: durationFlag, usage: "kill an exec: command (and its process group) still running on a segment after this long, and retry the segment (default 0: no limit)",
		set: func(c *config.File, v string) (err error) {
			c.Receive.ExecTimeout, err = config.ParseDuration(v)
			return
		}},
	"id": {kind: stringFlag, usage: "receiver id in the published watermark (default: host name)",
		set: func(c *config.File, v string) error { c.Receive.ID = v; return nil }},
	"max-segment-bytes": {kind: sizeFlag, usage: "refuse a segment larger than this, stored or decompressed, before allocating it (default 256MiB; at least the shippers' max_bytes + max_record_size)",
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
	"bandwidth-limit": {kind: sizeFlag, usage: "cap the link at this many `bytes` per second (e.g. 10MiB)",
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
	"keep-for": {kind: durationFlag, usage: "keep segments stored less than this long ago (e.g. 30d or 720h)",
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
	case sizeFlag:
		c.fs.Var(&rawValue{kind: "size"}, name, usage)
	case durationFlag:
		c.fs.Var(&rawValue{kind: "duration"}, name, usage)
	case listFlag:
		c.fs.StringArray(name, nil, usage)
	}
	c.accepted[name] = cf
}

// applyFlag stores f, given on the command line, in c.cfg if it is one of
// the verb's config flags.
func (c *common) applyFlag(f *pflag.Flag) error {
	cf, ok := c.accepted[f.Name]
	if !ok {
		return nil // --config, or a flag of the verb's own
	}
	values := []string{f.Value.String()}
	if cf.kind == listFlag {
		values, _ = c.fs.GetStringArray(f.Name)
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

// rawValue is a config flag's value as given: its setter parses it, so a
// bad one is reported as the config key's would be. kind is what --help
// shows it as.
type rawValue struct{ s, kind string }

func (v *rawValue) String() string     { return v.s }
func (v *rawValue) Set(s string) error { v.s = s; return nil }
func (v *rawValue) Type() string       { return v.kind }

// durationValue is a verb's own duration flag, in the config's syntax
// (config.ParseDuration: "250ms", "2m", "30d").
type durationValue time.Duration

func (d *durationValue) Set(s string) error {
	v, err := config.ParseDuration(s)
	*d = durationValue(v)
	return err
}

func (d *durationValue) String() string {
	if *d == 0 {
		return "0" // shown as no default in --help
	}
	return time.Duration(*d).String()
}

func (d *durationValue) Type() string { return "duration" }

// sizeValue is a verb's own size flag, in the config's syntax
// (config.ParseSize: "200", "4MiB", "1GB").
type sizeValue config.Size

func (v *sizeValue) Set(s string) error {
	n, err := config.ParseSize(s)
	*v = sizeValue(n)
	return err
}

func (v *sizeValue) String() string {
	if *v == 0 {
		return "0"
	}
	return config.Size(*v).String()
}

func (v *sizeValue) Type() string { return "size" }

// duration defines a verb's own duration flag (config.ParseDuration).
func (c *common) duration(name string, value time.Duration, usage string) *time.Duration {
	p := &value
	c.fs.Var((*durationValue)(p), name, usage)
	return p
}

// size defines a verb's own size flag (config.ParseSize).
func (c *common) size(name string, value config.Size, usage string) *config.Size {
	p := &value
	c.fs.Var((*sizeValue)(p), name, usage)
	return p
}

// alias adds old as a deprecated name of the flag named name: it sets the
// same value, is left out of --help, completion and the man pages, and
// using it prints a notice naming the new flag.
func (c *common) alias(old, name string) {
	f := c.fs.Lookup(name)
	if f == nil {
		panic("alias of an undefined flag " + name)
	}
	c.fs.Var(f.Value, old, f.Usage)
	if f.NoOptDefVal != "" {
		c.fs.Lookup(old).NoOptDefVal = f.NoOptDefVal
	}
	c.fs.MarkDeprecated(old, "use --"+name)
}

// longFlags rewrites Go-style single-dash long flags as pflag's double-dash
// ones ("-store x" as "--store x", "-json" as "--json", "-max-age=2s" as
// "--max-age=2s"). ferry's flags were Go flags, and scripts, units and docs
// use both forms; ferry defines no one-letter shorthands that "-abc" could
// otherwise mean, so only a lone letter ("-h") is left alone. The value of
// a flag that takes one is never rewritten, nor anything after "--".
func longFlags(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			continue
		}
		if a[1] != '-' {
			if name, _, _ := strings.Cut(a[1:], "="); len(name) < 2 {
				out = append(out, a) // a shorthand: -h
				continue
			}
			a = "-" + a
		}
		out = append(out, a)
		name, _, hasValue := strings.Cut(a[2:], "=")
		if f := fs.Lookup(name); f != nil && f.NoOptDefVal == "" && !hasValue && i+1 < len(args) {
			i++
			out = append(out, args[i]) // its value, whatever it looks like
		}
	}
	return out
}

// flagError adds the nearest defined flags to pflag's "unknown flag" error:
// "unknown flag: --stram (did you mean --stream?)".
func flagError(fs *pflag.FlagSet, err error) error {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) {
		return err
	}
	if s := suggestFlags(fs, ne.GetSpecifiedName()); len(s) > 0 {
		return fmt.Errorf("%w (did you mean --%s?)", err, strings.Join(s, " or --"))
	}
	return err
}

// suggestFlags returns the visible flags of fs nearest to name: at most two
// edits away, or starting with it (a flag cut short), the nearest first.
func suggestFlags(fs *pflag.FlagSet, name string) []string {
	if len(name) < 2 || len(name) > 64 {
		return nil
	}
	best, bestDist := []string(nil), 3
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" {
			return
		}
		d := levenshtein.ComputeDistance(name, f.Name)
		if strings.HasPrefix(f.Name, name) {
			d = min(d, 2)
		}
		switch {
		case d < bestDist:
			best, bestDist = []string{f.Name}, d
		case d == bestDist:
			best = append(best, f.Name)
		}
	})
	sort.Strings(best)
	return best[:min(len(best), 3)]
}
