package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// complete returns a File that passes Validate for every verb.
func complete() *File {
	f := Defaults()
	f.Stream = "app"
	f.Store = "/srv/store"
	f.Ship.Spool = "/srv/spool"
	f.Receive.State = "/srv/state"
	f.Receive.Apply = "file:/srv/replica.log"
	return f
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(f *File)
		want string // "" means valid
	}{
		{"complete", func(f *File) {}, ""},
		{"fsync", func(f *File) { f.Ship.Fsync = "sometimes" }, `ship.fsync: "sometimes" is not one of always, batch, off`},
		{"format", func(f *File) { f.Ship.Format = "csv" }, `ship.format: "csv" is not one of line, ndjson, raw`},
		{"compression", func(f *File) { f.Ship.Compression = "max" }, `ship.compression: "max" is not one of fastest, default, better, best`},
		{"segment format", func(f *File) { f.Ship.SegmentFormat = 3 }, `ship.segment_format: 3 is not a segment format ferry writes: 1 (read by every ferry) or 2 (the default)`},
		{"ack", func(f *File) { f.Ship.Ack = "remote" }, `ship.ack: "remote" is not one of local, received, applied`},
		{"log level", func(f *File) { f.LogLevel = "INFO" }, `log_level: "INFO" is not one of debug, info, warn, error`},
		{"log format", func(f *File) { f.LogFormat = "xml" }, `log_format: "xml" is not one of text, json`},
		{"sse", func(f *File) { f.S3.SSE = "aes256" }, `s3.sse: "aes256" is not one of , AES256, aws:kms`},
		{"source", func(f *File) { f.Ship.Source = "/var/log/x" }, `ship.source: "/var/log/x" is not "stdin", "tail:PATH", "dir:PATH" or "none"`},
		{"tail source", func(f *File) { f.Ship.Source = "tail:/var/log/x" }, ""},
		{"push-only source", func(f *File) { f.Ship.Source = "none" }, ""},
		{"empty tail", func(f *File) { f.Ship.Source = "tail:" }, `ship.source: "tail:" needs a file path`},
		{"apply exec", func(f *File) { f.Receive.Apply = "exec:psql -f -" }, ""},
		{"apply stdout", func(f *File) { f.Receive.Apply = "stdout" }, ""},
		{"apply unknown", func(f *File) { f.Receive.Apply = "http://x" }, `receive.apply: "http://x" is not "file:PATH", "dir:PATH", "exec:CMD" or "stdout"`},
		{"apply empty exec", func(f *File) { f.Receive.Apply = "exec: " }, `needs a command`},
		{"stream pattern", func(f *File) { f.Stream = "-app" }, `stream: "-app" is not a valid stream name`},
		{"stream slash", func(f *File) { f.Stream = "a/b" }, `stream: "a/b" is not a valid stream name`},
		{"stream too long", func(f *File) { f.Stream = strings.Repeat("a", 129) }, `is not a valid stream name`},
		{"stream 128", func(f *File) { f.Stream = "A" + strings.Repeat("z._-", 31) + "abc" }, ""},
		{"generation 0 follows the history", func(f *File) { f.Generation = 0 }, ""},
		{"lease_ttl off", func(f *File) { f.Ship.LeaseTTL = 0 }, ""},
		{"lease_ttl short", func(f *File) { f.Ship.LeaseTTL = DurationOrOff(500 * time.Millisecond) }, `ship.lease_ttl: 500ms is below 1s`},
		{"lease_ttl 1s", func(f *File) { f.Ship.LeaseTTL = DurationOrOff(time.Second) }, ""},
		{"site id", func(f *File) { f.Site.ID = "dr-b.east_1" }, ""},
		{"site id pattern", func(f *File) { f.Site.ID = "dr b" }, `site.id: "dr b" is not a valid site id`},
		{"site id at", func(f *File) { f.Site.ID = "dr@b" }, `site.id: "dr@b" is not a valid site id`},
		{"max_bytes small", func(f *File) { f.Ship.MaxBytes = 1023 }, `ship.max_bytes: 1023B is out of range 1KiB to 1GiB`},
		{"max_bytes big", func(f *File) { f.Ship.MaxBytes = GiB + 1 }, `ship.max_bytes: `},
		{"max_bytes edges", func(f *File) { f.Ship.MaxBytes = KiB; f.Ship.SpoolLimit = GiB }, ""},
		{"max_records", func(f *File) { f.Ship.MaxRecords = -1 }, `ship.max_records: -1 is negative`},
		{"max_segment_bytes small", func(f *File) { f.Receive.MaxSegmentBytes = MiB - 1 }, `receive.max_segment_bytes: 1048575B is out of range 1MiB to 2GiB`},
		{"max_segment_bytes big", func(f *File) { f.Receive.MaxSegmentBytes = 2*GiB + 1 }, `receive.max_segment_bytes: `},
		{"max_segment_bytes edges", func(f *File) { f.Receive.MaxSegmentBytes = 2 * GiB }, ""},
		{"max_record_size", func(f *File) { f.Ship.MaxRecordSize = 257 * MiB }, `ship.max_record_size: 257MiB is out of range 1B to 256MiB`},
		{"spool_limit", func(f *File) { f.Ship.SpoolLimit = MiB }, `ship.spool_limit: 1MiB is smaller than ship.max_bytes (4MiB)`},
		{"shutdown_timeout", func(f *File) { f.Ship.ShutdownTimeout = 0 }, `ship.shutdown_timeout: must be greater than 0`},
		{"memory_limit default", func(f *File) { f.Ship.MemoryLimit = 0 }, ""},
		{"memory_limit small", func(f *File) { f.Ship.MemoryLimit = 16*MiB - 1 }, `ship.memory_limit: 16777215B is below 16MiB`},
		{"memory_limit edge", func(f *File) { f.Ship.MemoryLimit = 16 * MiB }, ""},
		{"poll order", func(f *File) { f.Receive.PollMax = Duration(100 * time.Millisecond) }, `receive.poll_max: 100ms is less than receive.poll_min (200ms)`},
		{"poll equal", func(f *File) { f.Receive.PollMax = f.Receive.PollMin }, ""},
		{"retry order", func(f *File) { f.Receive.RetryMax = 0 }, `receive.retry_max: 0s is less than receive.retry_min (1s)`},
		{"gap_timeout", func(f *File) { f.Receive.GapTimeout = 0 }, `receive.gap_timeout: must be greater than 0`},
		{"once_timeout", func(f *File) { f.Receive.OnceTimeout = 0 }, `receive.once_timeout: must be greater than 0`},
		{"exec_timeout none", func(f *File) { f.Receive.ExecTimeout = 0 }, ""},
		{"exec_timeout", func(f *File) { f.Receive.ExecTimeout = Duration(time.Minute) }, ""},
		{"prefetch none", func(f *File) { f.Receive.Prefetch = 0 }, ""},
		{"prefetch negative", func(f *File) { f.Receive.Prefetch = -1 }, `receive.prefetch: -1 is out of range 0 to 64`},
		{"prefetch big", func(f *File) { f.Receive.Prefetch = 65 }, `receive.prefetch: 65 is out of range 0 to 64`},
		{"store file url", func(f *File) { f.Store = "file:///srv/store" }, ""},
		{"store relative file url", func(f *File) { f.Store = "file://srv/store" }, `store: "file://srv/store": a file URL needs an absolute path`},
		{"store s3", func(f *File) { f.Store = "s3://my-bucket/a/b" }, ""},
		{"store s3 bucket", func(f *File) { f.Store = "s3://My_Bucket/a" }, `is not a valid bucket name`},
		{"store s3 creds", func(f *File) { f.Store = "s3://AKIA:secret@bucket/a" }, `must not contain credentials`},
		{"store tcp", func(f *File) { f.Store = "tcp://replica.example:7070" }, ""},
		{"store tcp listen", func(f *File) { f.Store = "tcp://:7070" }, ""},
		{"store tcp no port", func(f *File) { f.Store = "tcp://replica" }, `want tcp://host:port`},
		{"store tcp bad port", func(f *File) { f.Store = "tcp://h:99999" }, `port "99999"`},
		{"store scheme", func(f *File) { f.Store = "gs://bucket/x" }, `store: "gs://bucket/x": unknown scheme "gs"`},
		{"store s3 one slash", func(f *File) { f.Store = "s3:/bucket" }, `store: "s3:/bucket" looks like a URL but is not one`},
		{"store tcp no slashes", func(f *File) { f.Store = "tcp:host:7070" }, `store: "tcp:host:7070" looks like a URL`},
		{"store relative", func(f *File) { f.Store = "store" }, ""},
		{"store dot colon", func(f *File) { f.Store = "./s3:/bucket" }, ""},
		{"store absolute colon", func(f *File) { f.Store = "/srv/a:b" }, ""},
		{"s3 endpoint", func(f *File) { f.S3.Endpoint = "s3.example.com" }, `s3.endpoint: "s3.example.com" is not an http:// or https:// URL`},
		{"s3 half keys", func(f *File) { f.S3.AccessKey = "AKIA" }, `s3.access_key: is set but s3.secret_key is not`},
		{"s3 other half", func(f *File) { f.S3.SecretKey = "sk" }, `s3.secret_key: is set but s3.access_key is not`},
		{"s3 token alone", func(f *File) { f.S3.SessionToken = "tok" }, `s3.session_token: needs access_key and secret_key`},
		{"s3 profile and keys", func(f *File) { f.S3.Profile = "p"; f.S3.AccessKey = "a"; f.S3.SecretKey = "b" }, `s3.profile: set either profile`},
		{"s3 kms key", func(f *File) { f.S3.SSEKMSKeyID = "k" }, `s3.sse_kms_key_id: is set but s3.sse is not "aws:kms"`},
		{"s3 kms ok", func(f *File) { f.S3.SSE = "aws:kms"; f.S3.SSEKMSKeyID = "k" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := complete()
			tc.edit(f)
			for _, verb := range []string{"", "ship", "receive"} {
				err := f.Validate(verb)
				if tc.want == "" && err != nil {
					t.Errorf("Validate(%q) = %v, want nil", verb, err)
				}
				if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
					t.Errorf("Validate(%q) = %v\nwant it to contain %q", verb, err, tc.want)
				}
			}
		})
	}
	if err := complete().Validate("replicate"); err == nil {
		t.Error("Validate with an unknown verb: want error")
	}
}

func TestValidateRequired(t *testing.T) {
	for _, tc := range []struct {
		verb    string
		want    []string
		notWant []string
	}{
		{"", nil, []string{"required"}},
		{"ship", []string{"stream: required for ship", "store: required for ship", "ship.spool: required for ship"},
			[]string{"receive.state", "receive.apply"}},
		{"receive", []string{"stream: required for receive", "store: required for receive",
			"receive.state: required for receive", "receive.apply: required for receive"}, []string{"ship.spool"}},
	} {
		err := Defaults().Validate(tc.verb)
		msg := fmt.Sprint(err)
		if len(tc.want) == 0 && err != nil {
			t.Errorf("Validate(%q) = %v, want nil", tc.verb, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("Validate(%q) = %v\nmissing %q", tc.verb, err, w)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(msg, w) {
				t.Errorf("Validate(%q) = %v\nshould not mention %q", tc.verb, err, w)
			}
		}
	}
}

// All problems come back together, each on its own line, and Load points
// at the line that set each key.
func TestMultipleProblems(t *testing.T) {
	path := writeConfig(t, `stream = "app"
store = "/srv/store"
log_level = "loud"
[ship]
spool = "/srv/spool"
fsync = "sometimes"
[receive]
poll_min = "10s"
`)
	_, err := Load(path)
	if err == nil {
		t.Fatal("want error")
	}
	want := []string{
		path + `:3: log_level: "loud" is not one of debug, info, warn, error`,
		path + `:6: ship.fsync: "sometimes" is not one of always, batch, off`,
		// poll_max is not in the file: the file, but no line.
		path + `: receive.poll_max: 5s is less than receive.poll_min (10s)`,
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("problem %d = %q\nwant        %q", i, lines[i], w)
		}
	}

	// Unknown keys and invalid values are reported together too.
	path = writeConfig(t, "stream = \"-x\"\n[ship]\nfsynk = \"off\"\n")
	_, err = Load(path)
	for _, w := range []string{path + `:3: unknown key "ship.fsynk"`, path + `:1: stream: "-x" is not a valid`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Load error = %v\nwant it to contain %q", err, w)
		}
	}
}

func TestS3Redaction(t *testing.T) {
	yes := true
	s := S3{
		Endpoint: "https://s3.example.com", Region: "eu-west-1", PathStyle: &yes,
		AccessKey: "AKIAEXAMPLEKEY", SecretKey: "wJalrXUtnFEMI/K7MDENG", SessionToken: "FwoGZXIvYXdzEJr",
	}
	secrets := []string{s.AccessKey, s.SecretKey, s.SessionToken}

	r := s.Redacted()
	if r.AccessKey != "***" || r.SecretKey != "***" || r.SessionToken != "***" {
		t.Errorf("Redacted() = %#v", r)
	}
	if r.Endpoint != s.Endpoint || !r.UsePathStyle() || r.PathStyle == s.PathStyle {
		t.Error("Redacted() should keep other fields and copy PathStyle")
	}
	if s.AccessKey != "AKIAEXAMPLEKEY" {
		t.Error("Redacted() modified its receiver")
	}
	if (S3{}).Redacted().AccessKey != "" {
		t.Error("an unset secret should stay empty")
	}

	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("s3", "s3", s)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("s3", "s3", s)
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	f := complete()
	f.S3 = s
	outputs := map[string]string{
		"String":   s.String(),
		"GoString": s.GoString(),
		"slog":     logs.String(),
		"json":     string(js),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%10.3v", "%d"} {
		outputs[verb] = fmt.Sprintf(verb, s)
		outputs[verb+" pointer"] = fmt.Sprintf(verb, &s)
		outputs[verb+" in File"] = fmt.Sprintf(verb, f)
		outputs[verb+" in *File"] = fmt.Sprintf(verb, *f)
	}
	for name, out := range outputs {
		for _, secret := range secrets {
			if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
				t.Errorf("%s leaks %q: %s", name, secret, out)
			}
		}
	}
	for _, name := range []string{"String", "%v", "%+v", "slog"} {
		if !strings.Contains(outputs[name], "eu-west-1") || !strings.Contains(outputs[name], "***") {
			t.Errorf("%s should show settings and masks: %s", name, outputs[name])
		}
	}
	if want := `access_key="***"`; !strings.Contains(outputs["%+v"], want) {
		t.Errorf("%%+v = %s, want it to contain %s", outputs["%+v"], want)
	}
	if !strings.HasPrefix(outputs["%#v"], "config.S3{") {
		t.Errorf("%%#v = %s", outputs["%#v"])
	}
}

// Every sample in etc/ loads and validates for the verbs its name implies:
// ferry-ship.toml for ship, ferry-receive.toml for receive, ferry-sync-*.toml
// for sync, others for both.
func TestSampleConfigs(t *testing.T) {
	paths, err := filepath.Glob("../etc/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 3 {
		t.Fatalf("found %d sample configs in etc/, want at least 3", len(paths))
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			var verbs []string
			for _, v := range []string{"ship", "receive", "sync"} {
				if strings.Contains(filepath.Base(path), v) {
					verbs = append(verbs, v)
				}
			}
			if len(verbs) == 0 {
				verbs = []string{"ship", "receive"}
			}
			for _, v := range verbs {
				if err := f.Validate(v); err != nil {
					t.Errorf("Validate(%q): %v", v, err)
				}
			}
			if f.S3.AccessKey != "" || f.S3.SecretKey != "" || f.S3.SessionToken != "" {
				t.Error("sample configs must not carry credentials")
			}
		})
	}
}

func FuzzLoad(f *testing.F) {
	paths, _ := filepath.Glob("../etc/*.toml")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"", valid, "[ship]\nmax_bytes = \"4 potatoes\"\n", "a.b.c.d = 1\n[x.y]\n[[z]]\n",
		"Stream = 1\nstream = 2\n", "s3 = { path_style = true, \"\" = 1 }\n", "\"a,b\" = 1\n\"-\" = 2\n",
		"[ship]\nmax_bytes = 9223372036854775807\nmax_record_size = -9223372036854775808\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.toml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path) {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		if err := cfg.Validate(""); err != nil {
			t.Errorf("Load accepted a config that Validate refuses: %v", err)
		}
		_ = cfg.S3.String()
	})
}

// ship.baseline is a cron schedule, and only for a dir: source.
func TestShipBaseline(t *testing.T) {
	f := Defaults()
	f.Stream, f.Store, f.Ship.Spool = "mail", "/srv/ferry", "/var/lib/ferry/spool"
	f.Ship.Source, f.Ship.Baseline = "dir:/var/mail", "@every 1h"
	if err := f.Validate("ship"); err != nil {
		t.Fatalf("dir: source with a baseline: %v", err)
	}
	f.Ship.Baseline = "every sunday"
	if err := f.Validate("ship"); err == nil || !strings.Contains(err.Error(), "ship.baseline") {
		t.Fatalf("bad schedule: %v", err)
	}
	f.Ship.Source, f.Ship.Baseline = "stdin", "0 2 * * 0"
	if err := f.Validate("ship"); err == nil || !strings.Contains(err.Error(), "baselines are for a dir: source") {
		t.Fatalf("baseline on stdin: %v", err)
	}
	// ferry sync: for a tree (sync.data = "dir:..."), not a record stream.
	f.Sync.Data = "dir:/var/mail"
	for _, verb := range []string{"", "sync"} {
		if err := f.Validate(verb); err != nil && strings.Contains(err.Error(), "ship.baseline") {
			t.Fatalf("Validate(%q): a sync tree with a baseline: %v", verb, err)
		}
	}
	if err := f.Validate("ship"); err == nil || !strings.Contains(err.Error(), "baselines are for a dir: source") {
		t.Fatalf("ferry ship of stdin with a baseline, the config also holding a sync tree: %v", err)
	}
	f.Sync.Data = "tail:/var/log/app.log"
	if err := f.Validate("sync"); err == nil || !strings.Contains(err.Error(), "baselines are for a directory tree") {
		t.Fatalf("sync of a record stream with a baseline: %v", err)
	}
}

// ship.pg_data is an absolute path (a service's working directory is
// anybody's guess).
func TestShipPGData(t *testing.T) {
	f := Defaults()
	f.Stream, f.Store, f.Ship.Spool, f.Ship.Source = "pg", "/srv/ferry", "/var/lib/ferry/spool", "none"
	f.Ship.PGData = "/var/lib/postgresql/15/main"
	if err := f.Validate("ship"); err != nil {
		t.Fatalf("absolute pg_data: %v", err)
	}
	f.Ship.PGData = "15/main"
	if err := f.Validate("ship"); err == nil || !strings.Contains(err.Error(), "ship.pg_data") {
		t.Fatalf("relative pg_data: %v", err)
	}
}

// ferry sync needs its site id, tree, spool, state and peers, each named
// when missing; a peer may not be this site, nor a tcp:// link.
func TestValidateSync(t *testing.T) {
	f := Defaults()
	f.Store = "/srv/s"
	err := f.Validate("sync")
	for _, key := range []string{"site.id", "sync.data", "sync.spool", "sync.state", "sync.peers"} {
		if err == nil || !strings.Contains(err.Error(), key+":") {
			t.Errorf("Validate(sync) without %s: %v", key, err)
		}
	}
	f.Site.ID = "a"
	f.Sync = Sync{Data: "/var/mail", Spool: "/sp", State: "/st", Peers: []SyncPeer{{ID: "a"}, {ID: "b", Store: "tcp://h:1"}}}
	err = f.Validate("sync")
	for _, want := range []string{`sync.data: "/var/mail" is neither "dir:PATH"`, `sync.peers[0].id: "a" is this site's own id`, "sync.peers[1].store: ferry sync reads"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	f.Sync.Data, f.Sync.Peers = "dir:/var/mail", []SyncPeer{{ID: "b"}}
	if err := f.Validate("sync"); err != nil {
		t.Fatalf("a valid sync config: %v", err)
	}
	// A record stream: apply only there, and only file:; exclude only for trees.
	f.Sync.Apply = "file:/var/log/peers.ndjson"
	if err := f.Validate("sync"); err == nil || !strings.Contains(err.Error(), "sync.apply: only for a record stream") {
		t.Errorf("apply on a tree: %v", err)
	}
	f.Sync.Data, f.Sync.Exclude, f.Sync.Apply = "tail:/var/log/app/events.ndjson", []string{"*.lock"}, "/var/log/peers.ndjson"
	err = f.Validate("sync")
	for _, want := range []string{"sync.exclude: only for a directory tree", `sync.apply: "/var/log/peers.ndjson" is not "file:PATH"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	f.Sync.Exclude = nil
	for _, apply := range []string{"", "file:/var/log/peers.ndjson"} {
		f.Sync.Apply = apply
		if err := f.Validate("sync"); err != nil {
			t.Fatalf("a valid record stream config (apply %q): %v", apply, err)
		}
	}
}

// Direct links in ferry sync: a peer has a store or a link (not both; with
// neither it reads the top-level store, which must then be there), a link
// is tcp://HOST:PORT, links need this site's sync.listen (which needs a
// link peer), and a site whose peers are all links needs no store.
func TestValidateSyncLinks(t *testing.T) {
	base := func() *File {
		f := Defaults()
		f.Site.ID = "a"
		f.Sync = Sync{Data: "dir:/var/mail", Spool: "/sp", State: "/st", Listen: "0.0.0.0:7100",
			Peers: []SyncPeer{{ID: "b", Link: "tcp://b.example:7100"}, {ID: "c", Link: "tcp://[::1]:7100"}}}
		return f
	}
	if err := base().Validate("sync"); err != nil {
		t.Fatalf("two link peers, no store: %v", err)
	}
	mixed := base()
	mixed.Store = "/srv/s"
	mixed.Sync.Peers = append(mixed.Sync.Peers, SyncPeer{ID: "d"}, SyncPeer{ID: "e", Store: "s3://bucket/p"})
	if err := mixed.Validate("sync"); err != nil {
		t.Fatalf("link peers beside store peers: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*File)
		want string
	}{
		{"both", func(f *File) { f.Sync.Peers[0].Store = "/srv/s" }, `sync.peers[0]: peer "b" has both store and link`},
		{"neither", func(f *File) { f.Sync.Peers[1].Link = "" }, `sync.peers[1]: peer "c" has neither store nor link, and there is no top-level store`},
		{"store as link", func(f *File) { f.Sync.Peers[1] = SyncPeer{ID: "c", Store: "tcp://c:1"} }, `sync.peers[1].store: ferry sync reads a peer's stream from a directory or s3:// store; for the direct link write link = "tcp://c:1"`},
		{"not tcp", func(f *File) { f.Sync.Peers[0].Link = "b.example:7100" }, `sync.peers[0].link: "b.example:7100" is not tcp://HOST:PORT`},
		{"no port", func(f *File) { f.Sync.Peers[0].Link = "tcp://b.example" }, `sync.peers[0].link: "tcp://b.example" is not tcp://HOST:PORT`},
		{"no listen", func(f *File) { f.Sync.Listen = "" }, "sync.listen: required when a peer has a link"},
		{"bad listen", func(f *File) { f.Sync.Listen = "tcp://0.0.0.0:7100" }, `sync.listen: "tcp://0.0.0.0:7100" is not HOST:PORT`},
		{"listen without links", func(f *File) { f.Store = "/srv/s"; f.Sync.Peers = []SyncPeer{{ID: "b"}} }, "sync.listen: is set but no [[sync.peers]] has a link"},
		{"duplicate", func(f *File) { f.Sync.Peers[1].ID = "b" }, `sync.peers[1].id: "b" is listed twice`},
		{"own id", func(f *File) { f.Sync.Peers[1].ID = "a" }, `sync.peers[1].id: "a" is this site's own id`},
		{"tcp store", func(f *File) { f.Store = "tcp://h:1" }, "store: ferry sync reads and writes a shared store (a directory or s3://), not a tcp:// link: give each peer"},
		{"store peer needs a store", func(f *File) { f.Sync.Peers = append(f.Sync.Peers, SyncPeer{ID: "d"}) }, `sync.peers[2]: peer "d" has neither store nor link`},
	} {
		f := base()
		tc.edit(f)
		if err := f.Validate("sync"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v; want %q", tc.name, err, tc.want)
		}
	}
	// The keys load from TOML, and an unknown one is still refused.
	dir := t.TempDir()
	p := filepath.Join(dir, "sync.toml")
	os.WriteFile(p, []byte("[site]\nid = \"a\"\n[sync]\ndata = \"dir:/m\"\nspool = \"/sp\"\nstate = \"/st\"\nlisten = \"127.0.0.1:7100\"\n[[sync.peers]]\nid = \"b\"\nlink = \"tcp://127.0.0.1:7101\"\n"), 0o600)
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if f.Sync.Listen != "127.0.0.1:7100" || len(f.Sync.Peers) != 1 || f.Sync.Peers[0].Link != "tcp://127.0.0.1:7101" {
		t.Fatalf("loaded %+v", f.Sync)
	}
	if err := f.Validate("sync"); err != nil {
		t.Fatalf("loaded link config: %v", err)
	}
}

// TestMemoryLimitFor checks ship's memory limit: memory_limit when set,
// else 32MiB plus max_bytes, read from a file as written.
func TestMemoryLimitFor(t *testing.T) {
	for _, tc := range []struct {
		toml string
		want Size
	}{
		{"", 36 * MiB}, // max_bytes' default 4MiB
		{"[ship]\nmax_bytes = \"16MiB\"\n", 48 * MiB},
		{"[ship]\nmax_bytes = \"16MiB\"\nmemory_limit = \"100MiB\"\n", 100 * MiB},
	} {
		f := Defaults()
		if _, err := toml.Decode(tc.toml, f); err != nil {
			t.Fatalf("%q: %v", tc.toml, err)
		}
		if got := f.Ship.MemoryLimitFor(); got != tc.want {
			t.Errorf("%q: MemoryLimitFor() = %v, want %v", tc.toml, got, tc.want)
		}
	}
}
