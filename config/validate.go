package config

import (
	"errors"
	"fmt"
	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ident"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/ferry-dr/ferry/internal/redact"
)

// problem is one invalid setting. Key is the dotted TOML key, so Load can
// point at the line that set it.
type problem struct {
	key string
	msg string
}

func (p *problem) Error() string { return p.key + ": " + p.msg }

// validName reports whether s is a valid stream name, site, replica,
// fleet or member ID: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$.
func validName(s string) bool { return ident.Valid(s, "._-") }

// Size limits enforced by Validate.
const (
	minBundleMax       = KiB
	maxBundleMax       = 64 * MiB
	minMaxBytes        = KiB
	maxMaxBytes        = GiB
	maxRecordSizeLimit = 256 * MiB
	minMemoryLimit     = 16 * MiB // ship.memory_limit, unless 0
	maxPrefetch        = 64       // receive.prefetch, in segments
	minMaxSegmentBytes = MiB
	maxMaxSegmentBytes = Size(batch.DefaultMaxUncompressed)
	// minWindowBandwidth is the lowest ship.windows bandwidth_limit: a
	// link sends in chunks of up to 64 KiB, and at this rate a chunk takes
	// 4 s, well within the receiver's 30 s I/O timeout.
	minWindowBandwidth = 16 * KiB
)

const storeForms = "a directory path, file:///abs/path, s3://bucket/prefix or tcp://host:port"

// Validate checks f for the given verb: "ship", "receive", or "" for the
// settings common to both. Sections of the other verb are still checked
// for well-formed values, but their required keys are not demanded. Every
// problem is reported, joined with errors.Join; each names its key.
func (f *File) Validate(verb string) error {
	var ps []error
	add := func(key, format string, args ...any) {
		ps = append(ps, &problem{key: key, msg: fmt.Sprintf(format, args...)})
	}
	oneOf := func(key, v string, allowed ...string) {
		if !slices.Contains(allowed, v) {
			add(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
		}
	}
	require := func(key, v string) {
		if strings.TrimSpace(v) == "" {
			add(key, "required for %s", verb)
		}
	}

	switch verb {
	case "", "ship", "receive", "sync":
	default:
		return fmt.Errorf("validate config: unknown verb %q (want ship, receive, sync or empty)", verb)
	}

	// Common settings.
	if (verb == "ship" && len(f.Streams) == 0) || (verb == "receive" && !f.MultiStream()) {
		require("stream", f.Stream)
	}
	f.validateStreams(add)
	f.validateFleet(verb, add)
	if verb != "" && (verb != "sync" || !f.Sync.allLinks()) {
		require("store", f.Store)
	}
	f.validateSync(verb, add, require)
	// A top-level stream may name one site's stream of a sync pair
	// (NAME@SITE), for ls, verify, cat and receive.
	if f.Stream != "" && !IsStreamSet(f.Stream) && batch.CheckStream(f.Stream) != nil {
		add("stream", "%q is not a valid stream name: use 1-128 letters, digits, '.', '_', '-' or '@' (NAME@SITE names one site's stream of ferry sync), starting with a letter or digit", f.Stream)
	}
	if f.Store != "" {
		if err := checkStore(f.Store); err != nil {
			add("store", "%v", err)
		}
	}
	oneOf("log_level", f.LogLevel, "debug", "info", "warn", "error")
	oneOf("log_format", f.LogFormat, "text", "json")

	// [ship]
	s := &f.Ship
	if verb == "ship" {
		require("ship.spool", s.Spool)
	}
	if src, ok := strings.CutPrefix(s.Source, "tail:"); ok {
		if strings.TrimSpace(src) == "" {
			add("ship.source", `"tail:" needs a file path, e.g. "tail:/var/log/app.log"`)
		}
	} else if src, ok := strings.CutPrefix(s.Source, "dir:"); ok {
		if strings.TrimSpace(src) == "" {
			add("ship.source", `"dir:" needs a directory, e.g. "dir:/var/mail"`)
		}
	} else if s.Source != "stdin" && s.Source != "none" {
		add("ship.source", `%q is not "stdin", "tail:PATH", "dir:PATH" or "none"`, s.Source)
	}
	for i, g := range s.DirExclude {
		if _, err := path.Match(g, ""); err != nil {
			add("ship.dir_exclude", "pattern %d %q: %v", i, g, err)
		}
	}
	oneOf("ship.format", s.Format, "line", "ndjson", "raw")
	oneOf("ship.fsync", s.Fsync, "always", "batch", "off")
	if s.MaxBytes < minMaxBytes || s.MaxBytes > maxMaxBytes {
		add("ship.max_bytes", "%v is out of range %v to %v", s.MaxBytes, minMaxBytes, maxMaxBytes)
	}
	if s.MaxRecords < 0 {
		add("ship.max_records", "%d is negative; use 0 for no count limit", s.MaxRecords)
	}
	if s.MaxRecordSize < 1 || s.MaxRecordSize > maxRecordSizeLimit {
		add("ship.max_record_size", "%v is out of range 1B to %v", s.MaxRecordSize, maxRecordSizeLimit)
	}
	if s.SpoolLimit < s.MaxBytes {
		add("ship.spool_limit", "%v is smaller than ship.max_bytes (%v); the spool must hold at least one segment", s.SpoolLimit, s.MaxBytes)
	}
	if s.MemoryLimit != 0 && s.MemoryLimit < minMemoryLimit {
		add("ship.memory_limit", "%v is below %v; use 0 for the default (32MiB plus max_bytes)", s.MemoryLimit, minMemoryLimit)
	}
	if s.ShutdownTimeout <= 0 {
		add("ship.shutdown_timeout", "must be greater than 0")
	}
	f.validateBundles(add)
	if s.LeaseTTL != 0 && s.LeaseTTL < DurationOrOff(time.Second) {
		add("ship.lease_ttl", "%v is below 1s: use at least the worst clock skew between the shipping hosts plus a shipper's longest pause, or \"off\"", time.Duration(s.LeaseTTL))
	}
	if f.Site.ID != "" && !validName(f.Site.ID) {
		add("site.id", "%q is not a valid site id (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", f.Site.ID)
	}
	oneOf("ship.compression", s.Compression, "fastest", "default", "better", "best")
	if s.SegmentFormat != 0 && s.SegmentFormat != 1 && s.SegmentFormat != 2 {
		add("ship.segment_format", "%d is not a segment format ferry writes: 1 (read by every ferry) or 2 (the default)", s.SegmentFormat)
	}
	oneOf("ship.ack", s.Ack, "local", "received", "applied")
	names := map[string]bool{"store": true}
	for i, t := range s.Targets {
		key := fmt.Sprintf("ship.targets[%d]", i)
		if strings.TrimSpace(t.Store) == "" {
			add(key+".store", "required: the target's URL")
		} else if err := checkStore(t.Store); err != nil {
			add(key+".store", "%v", err)
		}
		name := t.Name
		if name == "" {
			name = t.Store
		}
		if names[name] {
			add(key+".name", "%q is used by another target; give each target its own name", name)
		}
		names[name] = true
		if t.BandwidthLimit != 0 && !strings.HasPrefix(t.Store, "tcp://") {
			add(key+".bandwidth_limit", "only tcp:// targets have a bandwidth limit")
		}
		if t.BandwidthLimit < 0 {
			add(key+".bandwidth_limit", "must not be negative")
		}
	}
	for i, n := range s.StartNow {
		if !names[n] && !slices.ContainsFunc(s.Targets, func(t Target) bool { return t.Store == n }) && n != f.Store {
			add(fmt.Sprintf("ship.start_now[%d]", i), "%q names no target: give \"store\" (the main store), a [[ship.targets]] name or a target's store URL", n)
		}
	}

	if f.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(f.MetricsAddr); err != nil {
			add("metrics_addr", "%q is not host:port (e.g. 127.0.0.1:9108): %v", f.MetricsAddr, err)
		}
	}
	if f.HealthMaxLag < 0 {
		add("health_max_lag", "must not be negative")
	}
	if f.TimeZone != "" {
		if _, err := time.LoadLocation(f.TimeZone); err != nil {
			add("time_zone", "%q is not a known time zone (want an IANA name such as Europe/Paris): %v", f.TimeZone, err)
		}
	}
	if s.FlushAt != "" {
		if _, err := f.Schedule(s.FlushAt); err != nil {
			add("ship.flush_at", "%q is not a cron schedule: %v", s.FlushAt, err)
		}
	}
	if s.PGData != "" && !filepath.IsAbs(s.PGData) {
		add("ship.pg_data", "%q is not an absolute path: give PostgreSQL's data directory, e.g. \"/var/lib/postgresql/15/main\"", s.PGData)
	}
	if s.Baseline != "" {
		if _, err := f.Schedule(s.Baseline); err != nil {
			add("ship.baseline", "%q is not a cron schedule: %v", s.Baseline, err)
		} else if syncTree := strings.HasPrefix(f.Sync.Data, "dir:"); verb == "sync" && !syncTree {
			add("ship.baseline", "is set but sync.data is %q: baselines are for a directory tree (dir:PATH)", f.Sync.Data)
		} else if verb != "sync" && !strings.HasPrefix(s.Source, "dir:") && (verb != "" || !syncTree) {
			add("ship.baseline", "is set but ship.source is %q: baselines are for a dir: source", s.Source)
		}
	}
	for i, w := range s.Windows {
		key := fmt.Sprintf("ship.windows[%d]", i)
		if w.Start == "" {
			add(key+".start", "required: a cron schedule such as \"0 22 * * *\"")
		} else if _, err := f.Schedule(w.Start); err != nil {
			add(key+".start", "%q is not a cron schedule: %v", w.Start, err)
		}
		if w.Duration <= 0 {
			add(key+".duration", "required and greater than 0, e.g. \"6h\"")
		}
		switch {
		case w.BandwidthLimit < 0:
			add(key+".bandwidth_limit", "must not be negative (leave it out for no cap)")
		case w.BandwidthLimit > 0 && w.BandwidthLimit < minWindowBandwidth:
			add(key+".bandwidth_limit", "%v is below the minimum %v per second (leave it out for no cap)", w.BandwidthLimit, minWindowBandwidth)
		}
	}

	if f.TCP.InboxKeep < 0 {
		add("tcp.inbox_keep", "must not be negative (0 keeps every segment)")
	}
	if f.TCP.CheckpointDelay < 0 {
		add("tcp.checkpoint_delay", "must not be negative (0 checkpoints every apply pass)")
	}
	if f.TCP.MaxInFlight < 0 || f.TCP.MaxInFlight > maxInFlight {
		add("tcp.max_in_flight", "%d is out of range: 1 to %d, or leave it out for the default", f.TCP.MaxInFlight, maxInFlight)
	}
	ps = append(ps, f.TCP.secretProblems(verb)...)
	checkListenLimits(&f.TCP, add)

	// [retention]
	rt := &f.Retention
	if rt.KeepFor < 0 {
		add("retention.keep_for", "must not be negative")
	}
	if rt.KeepMin < 0 {
		add("retention.keep_min", "must not be negative")
	}
	if rt.Schedule != "" {
		if _, err := f.Schedule(rt.Schedule); err != nil {
			add("retention.schedule", "%q is not a cron schedule: %v", rt.Schedule, err)
		} else if rt.KeepFor == 0 && rt.KeepMin == 0 {
			add("retention.schedule", "is set but keep_for and keep_min are not: set at least one")
		}
	}

	// [receive]
	r := &f.Receive
	if verb == "receive" {
		require("receive.state", r.State)
		require("receive.apply", r.Apply)
	}
	if r.Apply != "" {
		if err := checkApply(r.Apply); err != nil {
			add("receive.apply", "%v", err)
		}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"receive.gap_timeout", r.GapTimeout}, {"receive.poll_min", r.PollMin}, {"receive.retry_min", r.RetryMin}, {"receive.once_timeout", r.OnceTimeout}} {
		if d.v <= 0 {
			add(d.key, "must be greater than 0")
		}
	}
	if r.ExecTimeout < 0 {
		add("receive.exec_timeout", "must not be negative (0 for no limit)")
	}
	if r.PollMax < r.PollMin {
		add("receive.poll_max", "%v is less than receive.poll_min (%v)", r.PollMax, r.PollMin)
	}
	if r.RetryMax < r.RetryMin {
		add("receive.retry_max", "%v is less than receive.retry_min (%v)", r.RetryMax, r.RetryMin)
	}
	if r.ID != "" && !validName(r.ID) {
		add("receive.id", "%q is not a valid receiver id (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", r.ID)
	}
	if r.Prefetch < 0 || r.Prefetch > maxPrefetch {
		add("receive.prefetch", "%d is out of range 0 to %d", r.Prefetch, maxPrefetch)
	}
	if r.MaxSegmentBytes < minMaxSegmentBytes || r.MaxSegmentBytes > maxMaxSegmentBytes {
		add("receive.max_segment_bytes", "%v is out of range %v to %v", r.MaxSegmentBytes, minMaxSegmentBytes, maxMaxSegmentBytes)
	}

	// [encryption]
	en := &f.Encryption
	for i, r := range en.Recipients {
		r = strings.TrimSpace(r)
		switch {
		case strings.HasPrefix(strings.ToUpper(r), "AGE-SECRET-KEY"):
			add("encryption.recipients", "entry %d is an age secret key, not a public key: a shipper needs only public keys (age1...); remove it from this file", i+1)
		case !strings.HasPrefix(r, "age1"):
			add("encryption.recipients", "entry %d is not an age X25519 public key (age1...)", i+1)
		}
	}
	if verb == "sync" && en.Encrypts() {
		add("encryption.recipients", "ferry sync does not encrypt segments yet: remove [encryption] recipients from the sync config")
	}
	for i, k := range en.TrustedKeys {
		k = strings.TrimSpace(k)
		switch {
		case strings.Contains(k, "PRIVATE KEY"):
			add("encryption.trusted_keys", "entry %d is a private key, not a public key: a receiver needs only public keys (ferry-ed25519:...); remove it from this file", i+1)
		case !strings.HasPrefix(k, "ferry-ed25519:"):
			add("encryption.trusted_keys", "entry %d is not an ed25519 public key in ferry's form (ferry-ed25519:BASE64, as ferry keygen prints it)", i+1)
		}
	}
	if verb == "sync" && (en.Signs() || en.Verifies()) {
		add("encryption.signing_key_file", "ferry sync does not sign or verify segments yet: remove signing_key_file and trusted_keys from the sync config")
	}

	// [s3]
	c := &f.S3
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("s3.endpoint", "%q is not an http:// or https:// URL", redact.URL(c.Endpoint))
		} else if u.User != nil {
			add("s3.endpoint", "must not contain credentials; use s3.access_key/s3.secret_key or the environment")
		}
	}
	oneOf("s3.sse", c.SSE, "", "AES256", "aws:kms")
	if c.SSEKMSKeyID != "" && c.SSE != "aws:kms" {
		add("s3.sse_kms_key_id", `is set but s3.sse is not "aws:kms"`)
	}
	switch {
	case c.AccessKey != "" && c.SecretKey == "":
		add("s3.access_key", "is set but s3.secret_key is not; set both or neither")
	case c.AccessKey == "" && c.SecretKey != "":
		add("s3.secret_key", "is set but s3.access_key is not; set both or neither")
	}
	if c.SessionToken != "" && c.AccessKey == "" {
		add("s3.session_token", "needs access_key and secret_key")
	}
	if c.Profile != "" && c.AccessKey != "" {
		add("s3.profile", "set either profile or access_key/secret_key, not both")
	}
	return errors.Join(ps...)
}

// urlLike matches the scheme of a string that starts like a URL.
var urlLike = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)

// checkStore accepts the store URL forms ferry knows. Anything without
// "://" is a directory path. Its errors never print a URL's userinfo.
func checkStore(s string) error {
	if !strings.Contains(s, "://") {
		// A path that starts like a URL (s3:/bucket, tcp:host) is a
		// mistyped URL far more often than a directory named so: refuse
		// it rather than make ./s3:/bucket.
		if urlLike.MatchString(s) {
			return fmt.Errorf("%q looks like a URL but is not one (want %s); for a directory named so, write ./%s", redact.URL(s), storeForms, redact.URL(s))
		}
		return nil
	}
	u, err := url.Parse(s)
	// A secret with a '/' (AWS secret keys have them) makes the URL fail
	// to parse; the '@' still gives it away.
	userinfo := (err == nil && u.User != nil) || (err != nil && strings.Contains(s, "@"))
	s = redact.URL(s) // from here on s is only printed
	if userinfo {
		return fmt.Errorf("%q must not contain credentials; use the [s3] table or the environment", s)
	}
	if err != nil {
		return fmt.Errorf("%q is not a valid URL: want %s", s, storeForms)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not have a query or fragment", s)
	}
	switch u.Scheme {
	case "file":
		if (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") {
			return fmt.Errorf("%q: a file URL needs an absolute path, e.g. file:///var/lib/ferry/store", s)
		}
	case "s3":
		if !validBucket(u.Host) {
			return fmt.Errorf("%q: bucket %q is not a valid bucket name (3-63 lowercase letters, digits, '.', '-')", s, u.Host)
		}
	case "tcp":
		// An empty host (tcp://:7070) is allowed: a listener binds every
		// interface, a dialer reaches localhost.
		_, port, err := net.SplitHostPort(u.Host)
		if err != nil || strings.Trim(u.Path, "/") != "" {
			return fmt.Errorf("%q: want tcp://host:port", s)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
		}
	default:
		return fmt.Errorf("%q: unknown scheme %q: want %s", s, u.Scheme, storeForms)
	}
	return nil
}

// validBucket applies the S3 bucket naming rules.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		edge := i == 0 || i == len(b)-1
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '-') && !edge:
		default:
			return false
		}
	}
	return true
}

// checkApply accepts "file:PATH", "exec:CMD" and "stdout".
func checkApply(s string) error {
	if s == "stdout" {
		return nil
	}
	kind, arg, ok := strings.Cut(s, ":")
	if !ok || (kind != "file" && kind != "exec" && kind != "dir") {
		return fmt.Errorf(`%q is not "file:PATH", "dir:PATH", "exec:CMD" or "stdout"`, s)
	}
	if strings.TrimSpace(arg) == "" {
		return fmt.Errorf(`%q: %q needs a %s`, s, kind+":", map[string]string{"file": "path", "dir": "directory", "exec": "command"}[kind])
	}
	return nil
}

// cronParser reads schedules: five fields (minute hour day month weekday),
// descriptors such as "@daily" or "@every 6h", and a CRON_TZ= prefix.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule parses a cron schedule of this file: five fields (minute hour
// day month weekday) or a descriptor such as "@daily", in time_zone unless
// the spec carries its own CRON_TZ= prefix.
func (f *File) Schedule(spec string) (cron.Schedule, error) {
	if f.TimeZone != "" && !strings.HasPrefix(spec, "CRON_TZ=") && !strings.HasPrefix(spec, "TZ=") {
		if _, err := time.LoadLocation(f.TimeZone); err == nil {
			spec = "CRON_TZ=" + f.TimeZone + " " + spec
		}
	}
	return cronParser.Parse(spec)
}

// validateSync checks the [sync] table; its required keys only for sync.
func (f *File) validateSync(verb string, add func(key, format string, args ...any), require func(key, v string)) {
	y := &f.Sync
	if verb == "sync" {
		require("site.id", f.Site.ID)
		require("sync.data", y.Data)
		require("sync.spool", y.Spool)
		require("sync.state", y.State)
		if len(y.Peers) == 0 {
			add("sync.peers", "required for sync: at least one [[sync.peers]] table with the peer's id")
		}
		if strings.HasPrefix(f.Store, "tcp://") {
			add("store", "ferry sync reads and writes a shared store (a directory or s3://), not a tcp:// link: give each peer that is reached over the direct link its address as [[sync.peers]] link, and this site's address as sync.listen")
		}
	}
	links := 0
	for _, p := range y.Peers {
		if p.Link != "" {
			links++
		}
	}
	switch {
	case links > 0 && strings.TrimSpace(y.Listen) == "":
		add("sync.listen", "required when a peer has a link: the HOST:PORT this site accepts its link peers' streams on (they ship theirs to it as this site ships its own to their link)")
	case links == 0 && y.Listen != "":
		add("sync.listen", "is set but no [[sync.peers]] has a link: add link = \"tcp://HOST:PORT\" (the peer's sync.listen) to the peers reached over the direct link, or remove sync.listen")
	}
	if y.Listen != "" {
		if _, port, err := net.SplitHostPort(y.Listen); err != nil || port == "" {
			add("sync.listen", "%q is not HOST:PORT (e.g. \"0.0.0.0:7100\"); a tcp:// prefix is not needed", y.Listen)
		}
	}
	if y.Data != "" {
		kind, p, _ := strings.Cut(y.Data, ":")
		if (kind != "dir" && kind != "tail") || strings.TrimSpace(p) == "" {
			add("sync.data", "%q is neither \"dir:PATH\" (a directory tree) nor \"tail:PATH\" (a record stream: a log of one JSON object per line)", y.Data)
		}
		if kind != "tail" && y.Apply != "" {
			add("sync.apply", "only for a record stream (sync.data = \"tail:PATH\"); a tree is applied to itself")
		}
		if kind == "tail" && len(y.Exclude) > 0 {
			add("sync.exclude", "only for a directory tree (sync.data = \"dir:PATH\")")
		}
	}
	if y.Apply != "" {
		if p, ok := strings.CutPrefix(y.Apply, "file:"); !ok || strings.TrimSpace(p) == "" {
			add("sync.apply", "%q is not \"file:PATH\"", y.Apply)
		}
	}
	if y.Stream != "" && !validName(y.Stream) {
		add("sync.stream", "%q is not a valid stream name: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", y.Stream)
	}
	if y.Spool != "" && y.Spool == y.State {
		add("sync.state", "is the same directory as sync.spool; give each its own")
	}
	for i, g := range y.Exclude {
		if _, err := path.Match(g, ""); err != nil {
			add("sync.exclude", "pattern %d %q: %v", i, g, err)
		}
	}
	seen := map[string]bool{}
	for i, p := range y.Peers {
		key := fmt.Sprintf("sync.peers[%d]", i)
		switch {
		case p.ID == "":
			add(key+".id", "required: the peer's site.id")
		case !validName(p.ID):
			add(key+".id", "%q is not a valid site id (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", p.ID)
		case p.ID == f.Site.ID:
			add(key+".id", "%q is this site's own id (site.id); list the other sites", p.ID)
		case seen[p.ID]:
			add(key+".id", "%q is listed twice", p.ID)
		}
		seen[p.ID] = true
		switch {
		case p.Store != "" && p.Link != "":
			add(key, "peer %q has both store and link: keep store (its stream is read from a store) or link (its stream comes over the direct link)", p.ID)
		case p.Store == "" && p.Link == "" && f.Store == "" && verb == "sync":
			add(key, "peer %q has neither store nor link, and there is no top-level store to read its stream from: set link = \"tcp://HOST:PORT\" (its sync.listen) or store", p.ID)
		}
		if p.Store != "" {
			if err := checkStore(p.Store); err != nil {
				add(key+".store", "%v", err)
			} else if strings.HasPrefix(p.Store, "tcp://") {
				add(key+".store", "ferry sync reads a peer's stream from a directory or s3:// store; for the direct link write link = %q instead", p.Store)
			}
		}
		if p.Link != "" {
			host, port, err := net.SplitHostPort(strings.TrimPrefix(p.Link, "tcp://"))
			if !strings.HasPrefix(p.Link, "tcp://") || err != nil || host == "" || port == "" {
				add(key+".link", "%q is not tcp://HOST:PORT (the peer's sync.listen)", redact.URL(p.Link))
			}
		}
	}
}

// allLinks reports whether every peer is reached over the direct link:
// the site then needs no store.
func (y *Sync) allLinks() bool {
	for _, p := range y.Peers {
		if p.Link == "" {
			return false
		}
	}
	return len(y.Peers) > 0
}

// validateBundles checks ship.bundle_interval and ship.bundle_max.
func (f *File) validateBundles(add func(key, format string, args ...any)) {
	s := &f.Ship
	if s.BundleMax < minBundleMax || s.BundleMax > maxBundleMax {
		add("ship.bundle_max", "%v is out of range %v to %v", s.BundleMax, minBundleMax, maxBundleMax)
	}
	switch {
	case s.BundleInterval < 0:
		add("ship.bundle_interval", "must not be negative; 0 turns bundles off")
	case s.BundleInterval == 0:
	case len(f.Streams) == 0:
		add("ship.bundle_interval", "bundles are for a ship with [[streams]] tables; a ship of one stream seals its own segments")
	case s.Ack != "" && s.Ack != "local":
		add("ship.bundle_interval", "bundles are only for ship.ack = \"local\" (ack is %q): an appender waiting for the targets' ack is served by its stream's own segments", s.Ack)
	case len(s.Windows) > 0:
		add("ship.bundle_interval", "bundles are put at every tick, and [[ship.windows]] would not hold them back: use one or the other")
	case time.Duration(s.BundleInterval) < 10*time.Millisecond:
		add("ship.bundle_interval", "%v is below 10ms", time.Duration(s.BundleInterval))
	}
}
