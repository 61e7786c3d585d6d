// Package config reads ferry's TOML configuration file.
//
// The file is strict: a key ferry does not know is an error naming the file,
// the line and the key, so a typo such as "max_byts" never silently falls
// back to a default. Keys are snake_case and matched exactly (TOML keys are
// case-sensitive; so is ferry).
//
// Layout (see etc/*.toml for commented examples):
//
//	stream = "app"
//	store  = "s3://bucket/prefix"   # the store URL: a string key
//	[ship]     ...                  # read by "ferry ship"
//	[receive]  ...                  # read by "ferry receive"
//	[s3]       ...                  # S3 settings, used when store is s3://
//
// The S3 settings live in a top-level [s3] table rather than [store.s3]
// because TOML cannot have "store" be both a string and a table.
//
// Load fills a File from [Defaults], so every key left out keeps its
// documented default, then calls [File.Validate]. Callers that also take
// command-line flags apply them to the returned File and call Validate again.
package config

import (
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// File is the whole configuration file.
type File struct {
	// Stream names the log stream; it is part of every segment name.
	// Required by ship and receive. Pattern [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
	Stream string `toml:"stream"`

	// Generation is the generation of the stream's history a shipper
	// writes (docs/FORMAT.md, "Generation records"; docs/FENCING.md).
	// Default 0: follow the history. A spool that has shipped keeps its
	// generation; a new one takes the newest in the store targets. A
	// shipper of an older generation than the newest is fenced: it ships
	// nothing and exits. Kept for compatibility; other verbs take 0 as 1.
	Generation uint32 `toml:"generation"`

	// Store is where segments are kept: a plain directory path,
	// file:///abs/path, s3://bucket/prefix or tcp://host:port.
	// Required by ship and receive; no default.
	Store string `toml:"store"`

	// LogLevel is one of debug, info, warn, error. Default "info".
	LogLevel string `toml:"log_level"`

	// LogFormat is text or json. Default "text".
	LogFormat string `toml:"log_format"`

	// MetricsAddr is where ship and receive serve Prometheus metrics
	// (/metrics) and a health check (/healthz), e.g. "127.0.0.1:9108".
	// Default "": no metrics endpoint. Same as --metrics-addr.
	MetricsAddr string `toml:"metrics_addr"`

	// HealthMaxLag is how far behind a target may fall before /healthz
	// reports the shipper unhealthy: an unapplied (or, when that is
	// unknown, unreceived) record older than this, or a target failing
	// for this long. Default 5m.
	HealthMaxLag Duration `toml:"health_max_lag"`

	// TimeZone is the zone of every schedule (ship.flush_at, ship.windows,
	// ship.baseline, retention.schedule), an IANA name such as
	// "Europe/Paris". Default: the machine's local time. A schedule may
	// also carry its own "CRON_TZ=Zone " prefix.
	TimeZone string `toml:"time_zone"`

	// Site says which site this is. It is the top-level [site] table.
	Site Site `toml:"site"`

	// Ship configures "ferry ship".
	Ship Ship `toml:"ship"`

	// Streams, as [[streams]] tables, are the streams one "ferry ship"
	// runs at once, in place of stream and ship.source (streams.go).
	Streams []StreamTable `toml:"streams"`

	// Receive configures "ferry receive".
	Receive Receive `toml:"receive"`

	// Fleet shares the streams among receivers (fleet.go).
	Fleet Fleet `toml:"fleet"`

	// S3 configures the s3:// store. It is the top-level [s3] table.
	S3 S3 `toml:"s3"`

	// TCP configures the direct link (tcp:// stores, receive --listen).
	// It is the top-level [tcp] table.
	TCP TCP `toml:"tcp"`

	// Sync configures "ferry sync" (docs/SYNC.md): this site's tree,
	// replicated in both directions with its peers.
	Sync Sync `toml:"sync"`

	// Retention prunes the archive: "ferry prune", and "ferry ship" on its
	// schedule. It is the top-level [retention] table.
	Retention Retention `toml:"retention"`

	// Encryption encrypts segment payloads with age (README, "Security";
	// docs/FORMAT.md, "Encryption"). It is the top-level [encryption]
	// table.
	Encryption Encryption `toml:"encryption"`
	// env holds the FERRY_* variables LoadEnv applied, by dotted key.
	env map[string]string
}

// Encryption configures client-side encryption of the archive.
type Encryption struct {
	// Recipients are the X25519 age public keys ("age1...") every segment
	// a shipper seals is encrypted for. A shipper needs only these: it
	// cannot read its own archive. Default none: plaintext segments.
	Recipients []string `toml:"recipients"`

	// RecipientsFile names a file of more recipients, one "age1..." per
	// line, # comments.
	RecipientsFile string `toml:"recipients_file"`

	// IdentityFile is the age identity file (AGE-SECRET-KEY-1... lines,
	// old keys kept to read old segments) of the verbs that decrypt:
	// receive, restore, drill, cat, fetch, verify --deep, rejoin. The
	// environment variable FERRY_AGE_IDENTITY_FILE is used when it is
	// not set. Keep it mode 600 and off the shipper's host.
	IdentityFile string `toml:"identity_file"`

	// RequireEncryption makes receive (and restore, drill) refuse a
	// plaintext segment, naming it, instead of applying it.
	RequireEncryption bool `toml:"require_encryption"`

	// SigningKeyFile is the shipper's ed25519 private key (PKCS#8 PEM,
	// ferry keygen --signing; mode 600): every segment it seals carries a
	// signature over its metadata (docs/FORMAT.md, "Signatures"). Default
	// none: segments are not signed.
	SigningKeyFile string `toml:"signing_key_file"`

	// TrustedKeys are the ed25519 public keys ("ferry-ed25519:BASE64") of
	// the readers (receive, restore, drill, cat, fetch, verify): with any
	// set, a segment not signed by one of them is refused, naming it.
	// Keep the old key and the new one while a shipper's key changes.
	TrustedKeys []string `toml:"trusted_keys"`

	// TrustedKeysFile names a file of more trusted keys, one per line, #
	// comments.
	TrustedKeysFile string `toml:"trusted_keys_file"`
}

// Signs reports whether a shipper with e signs its segments.
func (e *Encryption) Signs() bool { return e.SigningKeyFile != "" }

// Verifies reports whether a reader with e requires signed segments.
func (e *Encryption) Verifies() bool { return len(e.TrustedKeys) > 0 || e.TrustedKeysFile != "" }

// IdentityEnv is the environment variable naming an age identity file
// when [encryption] identity_file is not set.
const IdentityEnv = "FERRY_AGE_IDENTITY_FILE"

// Encrypts reports whether a shipper with e encrypts its segments.
func (e *Encryption) Encrypts() bool { return len(e.Recipients) > 0 || e.RecipientsFile != "" }

// Retention says which segments of the stream the archive keeps. A segment
// a registered receiver has not applied, and the newest segment, are always
// kept.
type Retention struct {
	// KeepFor keeps segments stored less than this long ago, e.g. "720h".
	// Default 0: no age rule.
	KeepFor Duration `toml:"keep_for"`

	// KeepMin keeps at least this many of the newest segments. Default 0.
	KeepMin int `toml:"keep_min"`

	// Schedule is a cron expression (5 fields, or descriptors such as
	// "@daily"; "CRON_TZ=Europe/Paris 0 3 * * *" for a time zone) on which
	// "ferry ship" prunes its store targets. Default "": only "ferry prune"
	// prunes.
	Schedule string `toml:"schedule"`
}

// Sync is the [sync] table: one site of a bi-directional pair (or ring).
type Sync struct {
	// Data is what this site replicates: a directory tree, "dir:PATH", or
	// a record stream, "tail:PATH": a log of one JSON object per line that
	// an application appends to on every site. Required by sync.
	Data string `toml:"data"`

	// Apply is where a record stream applies the peers' records,
	// "file:PATH", each line marked with its origin. Default: the tailed
	// file itself. Only with data = "tail:PATH".
	Apply string `toml:"apply"`

	// Stream is the name of the tree's streams: this site ships its own
	// changes as "STREAM@SITE" and applies each peer's "STREAM@PEER".
	// Default: the tree's base name (made a valid stream name).
	Stream string `toml:"stream"`

	// Spool is this site's spool directory (its own stream's durable
	// buffer and the dir source's index). Required by sync.
	Spool string `toml:"spool"`

	// State holds the sync ledger (the version of every path and where
	// it came from), the list of conflicts, and one receiver state
	// directory per peer (STATE/PEER). Required by sync.
	State string `toml:"state"`

	// Exclude are globs, as ship.dir_exclude, for paths neither shipped
	// nor expected from the peers. Default none.
	Exclude []string `toml:"exclude"`

	// Listen is the address this site accepts its link peers' streams on
	// ([[sync.peers]] link), e.g. "0.0.0.0:7100": the direct link in the
	// other direction, with TLS and the token of the [tcp] table as for
	// "ferry receive --listen". Required when a peer has a link, refused
	// when none has. Each peer's stream is kept in STATE/inbox.
	Listen string `toml:"listen"`

	// Peers, as [[sync.peers]] tables, are the other sites. At least one.
	Peers []SyncPeer `toml:"peers"`
}

// SyncPeer is one [[sync.peers]] table.
type SyncPeer struct {
	// ID is the peer's site.id. Required; not this site's.
	ID string `toml:"id"`

	// Store is where the peer's stream is read: a directory path,
	// file:///abs/path or s3://bucket/prefix. Default: the top-level store
	// (both sites write one shared store). Not with Link.
	Store string `toml:"store"`

	// Link, "tcp://host:port", is the peer's sync.listen: this site ships
	// its own stream there over the direct link, and the peer ships its
	// stream to this site's sync.listen. Not with Store.
	Link string `toml:"link"`
}

// Site names the site a ferry runs on.
type Site struct {
	// ID names this site in the stream's writer lease, where a shipper
	// kept out of the stream reads who holds it. Default: the host name.
	// Same pattern as stream.
	ID string `toml:"id"`
}

// Ship configures the shipping side: where records come from, how they are
// cut into segments and when a segment counts as delivered.
type Ship struct {
	// Spool is the local directory that holds sealed segments until the
	// store has them. Required by ship; no default.
	Spool string `toml:"spool"`

	// Source is "stdin", "tail:PATH" (follow a growing file), "dir:PATH"
	// (replicate a directory tree; see docs/DIRTREE.md) or "none" (a
	// push-only shipper: it reads no input, only what `ferry push` hands it
	// through SPOOL/push.sock, and runs until stopped). Default "stdin".
	Source string `toml:"source"`

	// TailJournal keeps the old way for a tail: source: every line read is
	// written to the spool's journal before its segment, so the spool
	// holds the lines read but not yet sealed. Default false: a tailed
	// file keeps its lines where they are, so they are written once, into
	// the segment, and after a crash read again from the file at the
	// newest segment's cursor (docs/RELIABILITY.md, "Journal-less tail:").
	// Only for a tail: source or [[streams]].
	TailJournal bool `toml:"tail_journal"`

	// DirExclude are globs for a dir: source, matched against each path's
	// base name and its path relative to the root, e.g. ["*.tmp",
	// "*.lock"]. An excluded directory is not descended into. Default none.
	DirExclude []string `toml:"dir_exclude"`

	// Baseline is a cron schedule (in time_zone) on which a dir: source
	// ships the whole tree again as a baseline, so retention can drop the
	// segments before it and a restore can start at it (docs/DIRTREE.md,
	// "Baselines"), e.g. "0 2 * * 0". Default "": none.
	Baseline string `toml:"baseline"`

	// PGData is a PostgreSQL data directory whose archive a running ship
	// reads ahead of archive_command: it pushes every file PostgreSQL
	// marks pg_wal/archive_status/NAME.ready as soon as it appears, so
	// `ferry push` from archive_command finds it shipped and returns at
	// once (docs/DIRTREE.md, "Reading ahead of PostgreSQL"). The shipper's
	// user must be able to read pg_wal. Default "": no read-ahead.
	PGData string `toml:"pg_data"`

	// Format is how the source is split into records: line, ndjson or raw.
	// Default "line".
	Format string `toml:"format"`

	// Fsync is when the spool is synced to disk: always (every record),
	// batch (every sealed segment) or off. Default "batch".
	Fsync string `toml:"fsync"`

	// MaxBytes seals a segment once its uncompressed records reach this
	// size. Default 4MiB; between 1KiB and 1GiB.
	MaxBytes Size `toml:"max_bytes"`

	// MaxRecords seals a segment once it holds this many records.
	// Default 0, meaning no count limit.
	MaxRecords int64 `toml:"max_records"`

	// MaxAge seals a segment this long after its first record.
	// Default 2s; 0 means no age limit.
	MaxAge Duration `toml:"max_age"`

	// MaxRecordSize refuses any single record larger than this.
	// Default 16MiB; at most 256MiB.
	MaxRecordSize Size `toml:"max_record_size"`

	// SpoolLimit is the spool size above which ship stops reading its
	// source (backpressure). Default 1GiB; at least MaxBytes.
	SpoolLimit Size `toml:"spool_limit"`

	// MemoryLimit is the soft limit ship sets on the memory its Go
	// runtime uses (runtime/debug.SetMemoryLimit): the garbage collector
	// runs more often as the heap nears it, so the peak stays near it
	// rather than at twice the live data. Soft: with more live data than
	// that (huge records), ship goes over it and collects more often.
	// GOMEMLIMIT in the environment, when set, wins. Set when ship starts:
	// a SIGHUP changes neither it nor the default it took from max_bytes.
	// Default 0: 32MiB plus max_bytes (48MiB with 16MiB segments); at
	// least 16MiB.
	MemoryLimit Size `toml:"memory_limit"`

	// ShutdownTimeout bounds how long ship keeps uploading after it is told
	// to stop. Default 30s; must be > 0.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	// Compression is the zstd level: fastest, default, better or best.
	// Default "fastest".
	Compression string `toml:"compression"`

	// SegmentFormat is the segment format written: 2 (compact framing,
	// the default; 0 means it) or 1, which ferry before format 2 reads:
	// for a rolling upgrade that reaches the shipper before every reader
	// (docs/FORMAT.md). Readers read both.
	SegmentFormat int `toml:"segment_format"`

	// Ack is when a record counts as accepted: local (durable in the
	// spool), received (stored durably by every target that is not async)
	// or applied (applied by the receiver behind every such target).
	// Default "local".
	Ack string `toml:"ack"`

	// FlushAt is a cron schedule on which the open batch is sealed and
	// shipped, on top of max_bytes, max_records and max_age (e.g.
	// "0 * * * *": every hour on the hour). Default "": none.
	FlushAt string `toml:"flush_at"`

	// Windows, as [[ship.windows]] tables, restrict sending to the times
	// inside one of them: start (a cron schedule) and duration. Outside,
	// records are still accepted and sealed into the spool; when a window
	// opens the backlog drains, under the window's bandwidth_limit if it
	// has one; when it closes, the segment being sent finishes and sending
	// stops. Default none: always send.
	Windows []Window `toml:"windows"`

	// BundleInterval turns bundles on for a ship with [[streams]] tables
	// (docs/STREAMS.md, "Bundle segments"): every interval, each stream
	// whose open batch holds at most BundleMax framed bytes seals it into
	// one shared bundle, stored with one put per target, instead of a
	// segment, a put and two listings per stream. A stream's max_age at or
	// above it is then left to the tick. Readers from before bundles do
	// not see a bundled stream's segments: upgrade every receiver and every
	// host running restore, fetch, verify or ls first. Only with ack =
	// "local" and without [[ship.windows]]. Default 0: off.
	BundleInterval Duration `toml:"bundle_interval"`

	// BundleMax is the largest open batch (framed bytes) a tick puts into
	// a bundle; a larger one seals alone at the tick. Default 1MiB;
	// between 1KiB and 64MiB.
	BundleMax Size `toml:"bundle_max"`

	// LeaseTTL is how long the stream's writer lease lasts unless renewed
	// (every third of it): the lease that keeps a second shipper off the
	// stream in every dir and s3:// target (docs/FENCING.md). It must
	// exceed the worst clock skew between the hosts that may ship the
	// stream plus the longest pause of a shipper. A second shipper is
	// refused while the lease is live; after a crash, another host takes
	// over once it expires (the same spool restarted takes over at once).
	// "off" or 0 disables the lease, which leaves nothing but the stores'
	// overlap checks to stop two shippers writing one stream: unsafe.
	// Default 30s; at least 1s.
	LeaseTTL DurationOrOff `toml:"lease_ttl"`

	// Targets are further stores that get every segment besides store
	// (fan-out), as [[ship.targets]] tables: e.g. an S3 archive beside a
	// tcp:// link to the DR site. A segment leaves the spool once every
	// target has it. Default none.
	Targets []Target `toml:"targets"`

	// StartNow names targets ("store" for the main store, or a
	// [[ship.targets]] name or store URL) that may begin the stream at the
	// seq the spool stands at when they hold nothing of it and no other
	// target can backfill them. A start marker in the target then records
	// that its history begins there on purpose. Any other target that
	// lacks the stream's start is backfilled from a dir or s3:// target
	// that has it, or refused (README, "Adding a target"). Default none.
	StartNow []string `toml:"start_now"`
}

// Window is one [[ship.windows]] table: a recurring sending window.
type Window struct {
	// Start is a cron schedule: the window opens whenever it fires, e.g.
	// "0 22 * * 1-5" (22:00 on weekdays). Required.
	Start string `toml:"start"`

	// Duration is how long the window stays open, e.g. "6h". Required.
	Duration Duration `toml:"duration"`

	// BandwidthLimit caps the bytes per second sent to each target while
	// this window is open, e.g. "5MiB". On a tcp:// link the bytes on the
	// wire are paced, and the target's own bandwidth_limit still applies
	// (the lower wins); dir and s3:// targets take whole segments, so there
	// the cap holds on average: a segment goes at full speed and the next
	// waits until the average is back under the cap. When open windows
	// overlap, no cap applies if one of them has none, else the highest.
	// Default 0: no cap; otherwise at least 16KiB.
	BandwidthLimit Size `toml:"bandwidth_limit"`
}

// Target is one [[ship.targets]] table: an extra destination of the stream.
// s3:// targets use the [s3] table, tcp:// targets the [tcp] table.
type Target struct {
	// Name labels the target in logs and status. Default: its store URL.
	// Unique; "store" is the name of the main store.
	Name string `toml:"name"`

	// Store is the target's URL, in the same forms as the top-level store.
	// Required.
	Store string `toml:"store"`

	// Async leaves the target out of the ack modes: appenders never wait
	// for it (an archive that may lag). Default false.
	Async bool `toml:"async"`

	// BandwidthLimit caps a tcp:// target's bytes per second. Default: the
	// [tcp] table's bandwidth_limit.
	BandwidthLimit Size `toml:"bandwidth_limit"`
}

// Receive configures the receiving side: where progress is kept and where
// records go.
type Receive struct {
	// State is the directory that holds the receiver's checkpoint.
	// Required by receive; no default.
	State string `toml:"state"`

	// Apply is where records go: "file:PATH" (append), "exec:CMD" (pipe to
	// a command) or "stdout". Required by receive; no default.
	Apply string `toml:"apply"`

	// GapTimeout is how long a missing segment is waited for before the
	// receiver reports a gap. Default 30s; must be > 0.
	GapTimeout Duration `toml:"gap_timeout"`

	// PollMin is the shortest wait between polls of the store.
	// Default 200ms; must be > 0.
	PollMin Duration `toml:"poll_min"`

	// PollMax is the longest wait between polls when the store is idle.
	// Default 5s; at least PollMin.
	PollMax Duration `toml:"poll_max"`

	// RetryMin is the first backoff after an exec applier fails.
	// Default 1s; must be > 0.
	RetryMin Duration `toml:"retry_min"`

	// RetryMax caps the exec applier's backoff. Default 1m; at least RetryMin.
	RetryMax Duration `toml:"retry_max"`

	// OnceTimeout is how long one operation of a bounded run (receive
	// --once, restore, drill) may keep failing (an unreachable store, an
	// exec command that keeps failing, a full disk) before the run gives
	// up with its error. Default 5m; must be > 0. A receiver without
	// --once retries until stopped.
	OnceTimeout Duration `toml:"once_timeout"`

	// ExecTimeout is how long an exec: command may run on one segment
	// before it is killed with its process group and the segment retried.
	// Default 0: no limit (ferry cannot know how long a load takes, and a
	// command killed at a limit it always needs would be retried forever).
	ExecTimeout Duration `toml:"exec_timeout"`

	// ID names this receiver in the applied watermark it publishes in the
	// store ("<stream>/watermarks/<id>/"), which the primary side and
	// retention read. Default: the host name. Same pattern as stream.
	ID string `toml:"id"`

	// Prefetch is how many segments after the one being applied are read
	// and verified ahead of it (the next one is also decoded), so a
	// receiver catching up on a backlog keeps the store and the CPUs busy
	// while it applies. Decoded segments in flight hold at most 256 MiB
	// (the one applied next may exceed that alone). Default 4; 0 to 64,
	// 0 for none.
	Prefetch int `toml:"prefetch"`

	// MaxSegmentBytes is the largest segment a reader accepts, both as
	// stored and as it claims to decompress to. A segment over it is
	// refused, before anything is allocated for it, with an error naming
	// it, and stops the receiver (it is never retried); what one segment
	// can make receive, restore, drill, verify, cat or fetch allocate is
	// bounded by it. It must be at least the largest segment the shippers
	// make: under their max_bytes plus one max_record_size (20MiB with
	// their defaults). Default 256MiB; between 1MiB and 2GiB.
	MaxSegmentBytes Size `toml:"max_segment_bytes"`

	// Streams lists more streams (names or globs) to apply, besides
	// stream; see fleet.go.
	Streams []string `toml:"streams"`
}

// DefaultMaxSegmentBytes is receive.max_segment_bytes when the config does
// not set it: the readers' default.
const DefaultMaxSegmentBytes = Size(batch.DefaultMaxSegmentBytes)

// Defaults returns a File with every default filled in. Stream, Store,
// Ship.Spool, Receive.State and Receive.Apply have no default.
func Defaults() *File {
	return &File{
		LogLevel:  "info",
		LogFormat: "text",
		Ship: Ship{
			Source:          "stdin",
			Format:          "line",
			Fsync:           "batch",
			MaxBytes:        4 * MiB,
			MaxAge:          Duration(2 * time.Second),
			MaxRecordSize:   16 * MiB,
			SpoolLimit:      1 * GiB,
			ShutdownTimeout: Duration(30 * time.Second),
			Compression:     "fastest",
			Ack:             "local",
			LeaseTTL:        DurationOrOff(DefaultLeaseTTL),
			BundleMax:       DefaultBundleMax,
		},
		Receive: Receive{
			GapTimeout: Duration(30 * time.Second),
			PollMin:    Duration(200 * time.Millisecond),
			PollMax:    Duration(5 * time.Second),
			RetryMin:   Duration(time.Second),
			RetryMax:   Duration(time.Minute),
			Prefetch:   4,

			MaxSegmentBytes: DefaultMaxSegmentBytes,
			OnceTimeout:     Duration(DefaultOnceTimeout),
		},
		Fleet: Fleet{LeaseTTL: Duration(DefaultFleetLeaseTTL)},
		TCP:   TCP{InboxKeep: DefaultInboxKeep, CheckpointDelay: Duration(DefaultCheckpointDelay)},
	}
}

// DefaultOnceTimeout is receive.once_timeout when the config does not set
// it.
const DefaultOnceTimeout = 5 * time.Minute

// DefaultBundleMax is ship.bundle_max when the config does not set it.
const DefaultBundleMax = MiB

// DefaultLeaseTTL is ship.lease_ttl when the config does not set it.
const DefaultLeaseTTL = 30 * time.Second

// DefaultCheckpointDelay is tcp.checkpoint_delay when the config does not
// set it.
const DefaultCheckpointDelay = 100 * time.Millisecond

// DefaultInboxKeep is tcp.inbox_keep when the config does not set it.
const DefaultInboxKeep = 1000

// MemoryLimitFor is the memory limit ship sets for s: memory_limit, or
// when that is 0, 32MiB plus max_bytes. The fixed part holds what ship
// needs whatever the segment size (read and journal buffers, the chunks
// being compressed, the encoders' tables); a segment adds its compressed
// chunks and the sealed copy handed to the senders, a fraction of
// max_bytes for any compressible input.
func (s Ship) MemoryLimitFor() Size {
	if s.MemoryLimit > 0 {
		return s.MemoryLimit
	}
	return 32*MiB + s.MaxBytes
}
