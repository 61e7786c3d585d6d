package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// leafKeys walks File's fields on its own (not through envKeys): every key
// that holds a value, with its Go type.
func leafKeys(t *testing.T) map[string]reflect.Type {
	t.Helper()
	keys := map[string]reflect.Type{}
	var walk func(prefix string, rt reflect.Type)
	walk = func(prefix string, rt reflect.Type) {
		for i := 0; i < rt.NumField(); i++ {
			sf := rt.Field(i)
			tag, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			key := prefix + tag
			if sf.Type.Kind() == reflect.Struct && !reflect.PointerTo(sf.Type).Implements(textUnmarshaler) {
				walk(key+".", sf.Type)
				continue
			}
			keys[key] = sf.Type
		}
	}
	walk("", reflect.TypeFor[File]())
	if len(keys) < 80 {
		t.Fatalf("found %d keys in File, want the 80 and more there are", len(keys))
	}
	return keys
}

// sampleEnv is a value for a variable of type rt that differs from every
// default.
func sampleEnv(t *testing.T, key string, rt reflect.Type) string {
	switch rt {
	case reflect.TypeFor[Size]():
		return "3KiB"
	case reflect.TypeFor[Duration](), reflect.TypeFor[DurationOrOff]():
		return "7s"
	case reflect.TypeFor[*bool]():
		return "true"
	case reflect.TypeFor[[]string]():
		return "a, b"
	}
	switch rt.Kind() {
	case reflect.String:
		return "sample-" + key
	case reflect.Bool:
		return "true"
	case reflect.Int, reflect.Int64, reflect.Uint32:
		return "7"
	case reflect.Slice: // an array of tables
		return "[{}, {}]"
	}
	t.Fatalf("%s: no sample for %s", key, rt)
	return ""
}

// flatten is f encoded as TOML and read back as dotted keys and values:
// what a reader of the file sees.
func flatten(t *testing.T, f *File) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(f); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if _, err := toml.Decode(buf.String(), &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			out[prefix+k] = v
		}
	}
	walk("", m)
	return out
}

// Every key of File has a variable, named from its tables and key, that
// maps back to it, and setting that variable changes that key and no other.
func TestEnvReachesEveryKey(t *testing.T) {
	keys := leafKeys(t)
	if got := EnvKeys(); !slices.Equal(got, slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	})) {
		t.Fatalf("EnvKeys() = %v\nwant every key of File", got)
	}
	base := flatten(t, Defaults())
	for key, rt := range keys {
		name := "FERRY_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if got := EnvName(key); got != name {
			t.Errorf("EnvName(%q) = %q, want %q", key, got, name)
		}
		if ek, ok := envKeys()[name]; !ok || ek.key != key {
			t.Errorf("%s does not map back to %s (%+v)", name, key, ek)
			continue
		}
		f := Defaults()
		value := sampleEnv(t, key, rt)
		set, err := ApplyEnv(f, []string{name + "=" + value})
		if err != nil {
			t.Errorf("%s=%s: %v", name, value, err)
			continue
		}
		if set[key] != name || f.EnvVars()[key] != name {
			t.Errorf("%s=%s: ApplyEnv reports %v, EnvVars %v; want %s set by it", name, value, set, f.EnvVars(), key)
		}
		var changed []string
		for k, v := range flatten(t, f) {
			if b, ok := base[k]; !ok || !reflect.DeepEqual(b, v) {
				changed = append(changed, k)
			}
		}
		if !slices.Equal(changed, []string{key}) {
			t.Errorf("%s=%s changed %v, want [%s]", name, value, changed, key)
		}
	}
}

// The values are typed as in the file.
func TestEnvValues(t *testing.T) {
	f := Defaults()
	_, err := ApplyEnv(f, []string{
		"FERRY_STORE=s3://bucket/prefix",
		"FERRY_SHIP_MAX_AGE=5s",
		"FERRY_SHIP_MAX_BYTES=8 MiB",
		"FERRY_SHIP_MAX_RECORDS=100",
		"FERRY_SHIP_LEASE_TTL=off",
		"FERRY_GENERATION=3",
		"FERRY_TCP_INSECURE=true",
		"FERRY_S3_PATH_STYLE=false",
		"FERRY_SHIP_DIR_EXCLUDE=*.tmp, *.lock,",
		`FERRY_SHIP_TARGETS=[{name = "archive", store = "s3://archive/app", async = true}, {store = "/srv/b"}]`,
		"FERRY_RECEIVE_ID=", // empty: unset
		"PATH=/usr/bin",     // not ferry's
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Store = "s3://bucket/prefix"
	want.Ship.MaxAge = Duration(5 * time.Second)
	want.Ship.MaxBytes = 8 * MiB
	want.Ship.MaxRecords = 100
	want.Ship.LeaseTTL = 0
	want.Generation = 3
	want.TCP.Insecure = true
	no := false
	want.S3.PathStyle = &no
	want.Ship.DirExclude = []string{"*.tmp", "*.lock"}
	want.Ship.Targets = []Target{{Name: "archive", Store: "s3://archive/app", Async: true}, {Store: "/srv/b"}}
	want.env = f.env
	if !reflect.DeepEqual(f, want) {
		t.Errorf("got  %+v\nwant %+v", f, want)
	}
	if len(f.env) != 10 || f.env["receive.id"] != "" {
		t.Errorf("EnvVars = %v, want the 10 non-empty variables", f.EnvVars())
	}
}

// Flags (the caller's) over the environment over the file over the
// defaults.
func TestEnvPrecedence(t *testing.T) {
	path := writeConfig(t, "[ship]\nmax_age = \"3s\"\nmax_bytes = \"64KiB\"\n")
	for _, tc := range []struct {
		path    string
		environ []string
		age     time.Duration
		bytes   Size
	}{
		{"", nil, 2 * time.Second, 4 * MiB},
		{path, nil, 3 * time.Second, 64 * KiB},
		{"", []string{"FERRY_SHIP_MAX_AGE=5s"}, 5 * time.Second, 4 * MiB},
		{path, []string{"FERRY_SHIP_MAX_AGE=5s"}, 5 * time.Second, 64 * KiB},
	} {
		f, err := LoadEnv(tc.path, tc.environ)
		if err != nil {
			t.Fatalf("LoadEnv(%q, %q): %v", tc.path, tc.environ, err)
		}
		if time.Duration(f.Ship.MaxAge) != tc.age || f.Ship.MaxBytes != tc.bytes {
			t.Errorf("LoadEnv(%q, %q): max_age %v max_bytes %v, want %v %v", tc.path, tc.environ, f.Ship.MaxAge, f.Ship.MaxBytes, tc.age, tc.bytes)
		}
	}
	// Load ignores the environment.
	f, err := Load(path)
	if err != nil || time.Duration(f.Ship.MaxAge) != 3*time.Second {
		t.Fatalf("Load: %v, %v", f, err)
	}
}

// A FERRY_ variable that names no key is refused with the closest one; the
// variables ferry reads for other purposes are not.
func TestEnvUnknownNames(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"FERRY_SHIP_MAX_AGEE", "did you mean FERRY_SHIP_MAX_AGE, the key ship.max_age?"},
		{"FERRY_MAX_AGE", "did you mean FERRY_SHIP_MAX_AGE"}, // the key outside its table
		{"FERRY_SHP_SPOOL", "did you mean FERRY_SHIP_SPOOL"}, // the table misspelt
		{"FERRY_S3_SECRET_KY", "did you mean FERRY_S3_SECRET_KEY"},
		{"FERRY_STORES", "did you mean FERRY_STORE,"},
		{"FERRY_SHIP", ""}, // a table
		{"FERRY_NOTHING_LIKE_IT", ""},
		{"FERRY_ship_max_age", "did you mean FERRY_SHIP_MAX_AGE"},
	} {
		_, err := ApplyEnv(Defaults(), []string{tc.name + "=5s"})
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, tc.name+": unknown variable") || (tc.want != "" && !strings.Contains(msg, tc.want)) ||
			(tc.want == "" && strings.Contains(msg, "did you mean")) {
			t.Errorf("%s: %q, want it named and %q", tc.name, msg, tc.want)
		}
	}
	var environ []string
	for name := range OtherEnv {
		environ = append(environ, name+"=x")
		if _, isKey := envKeys()[name]; isKey {
			t.Errorf("%s is both a key's variable and in OtherEnv", name)
		}
	}
	if _, err := ApplyEnv(Defaults(), environ); err != nil {
		t.Errorf("the variables of OtherEnv are refused: %v", err)
	}
}

// Every FERRY_ variable that something in the repository reads is either a
// key's or in OtherEnv: nothing ferry or its tests use is refused.
func TestEnvOtherVariablesListed(t *testing.T) {
	read := regexp.MustCompile(`(?:Getenv|LookupEnv)\("(FERRY_[A-Z0-9_]+)"\)|(?:export |^|\s)(FERRY_[A-Z0-9_]+)=|"(FERRY_[A-Z0-9_]+)="`)
	found := map[string]string{}
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); d.IsDir() || (ext != ".go" && ext != ".sh" && ext != ".service" && d.Name() != "run") ||
			path == "env_test.go" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range read.FindAllStringSubmatch(string(data), -1) {
			if name := m[1] + m[2] + m[3]; name != "" {
				found[name] = path
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"FERRY_CPUPROFILE", "FERRY_TOKEN", "FERRY_FIRST_SEQ", "FERRY_VERSITYGW"} {
		if found[name] == "" {
			t.Fatalf("the scan missed %s: it finds nothing", name)
		}
	}
	for name, path := range found {
		_, isKey := envKeys()[name]
		if _, other := OtherEnv[name]; !isKey && !other {
			t.Errorf("%s (%s) is neither a key's variable nor in OtherEnv: ferry would refuse it", name, path)
		}
	}
}

// A value that does not parse names the variable, and leaves the key as
// the file set it; a problem Validate finds in it names the variable too,
// while one in the file names its line.
func TestEnvBadValues(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"FERRY_SHIP_MAX_AGE=5x", `FERRY_SHIP_MAX_AGE: invalid duration "5x"`},
		{"FERRY_SHIP_MAX_BYTES=4XB", `FERRY_SHIP_MAX_BYTES: invalid size "4XB"`},
		{"FERRY_TCP_INSECURE=yes", `FERRY_TCP_INSECURE: invalid boolean "yes": want true or false`},
		{"FERRY_RECEIVE_PREFETCH=four", `FERRY_RECEIVE_PREFETCH: invalid integer "four"`},
		{"FERRY_GENERATION=-1", `FERRY_GENERATION: invalid integer "-1"`},
		{"FERRY_SHIP_TARGETS=s3://b/p", `FERRY_SHIP_TARGETS: ship.targets is an array of tables: want a TOML array of inline tables`},
		{`FERRY_SHIP_TARGETS=[{stor = "s3://b/p"}]`, `FERRY_SHIP_TARGETS: unknown key "ship.targets.stor" (did you mean "ship.targets.store"?)`},
		{`FERRY_SHIP_TARGETS=[{store = 1}]`, `FERRY_SHIP_TARGETS: ship.targets is an array of tables`},
		{"FERRY_SHIP_TARGETS=[{store = \"/a\"}]\nstream = \"x\"", `FERRY_SHIP_TARGETS: ship.targets is an array of tables: want one TOML array of inline tables, not the key "stream" after it`},
		{"FERRY_SHIP_MAX_BYTES=10B", `FERRY_SHIP_MAX_BYTES: ship.max_bytes: 10B is out of range 1KiB to 1GiB`},
		{"FERRY_LOG_LEVEL=loud", `FERRY_LOG_LEVEL: log_level: "loud" is not one of debug, info, warn, error`},
		{`FERRY_SHIP_TARGETS=[{store = "s3:/b"}]`, `FERRY_SHIP_TARGETS: ship.targets[0].store: "s3:/b" looks like a URL`},
	} {
		path := writeConfig(t, "[ship]\nmax_age = \"3s\"\n")
		_, err := LoadEnv(path, []string{tc.env})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v\nwant %q", tc.env, err, tc.want)
		}
	}
	f := Defaults()
	if _, err := ApplyEnv(f, []string{"FERRY_SHIP_MAX_AGE=5x"}); err == nil || f.Ship.MaxAge != Defaults().Ship.MaxAge {
		t.Errorf("a bad value changed the key to %v (%v)", f.Ship.MaxAge, err)
	}
	// One from the file, one from the environment: each where it was set.
	path := writeConfig(t, "stream = \"app\"\n[ship]\nfsync = \"sometimes\"\n")
	_, err := LoadEnv(path, []string{"FERRY_SHIP_COMPRESSION=max"})
	if err == nil || !strings.Contains(err.Error(), path+`:3: ship.fsync: "sometimes"`) ||
		!strings.Contains(err.Error(), `FERRY_SHIP_COMPRESSION: ship.compression: "max"`) {
		t.Errorf("got %v", err)
	}
}

// FERRY_STREAM and FERRY_GENERATION that an exec: applier sets for its
// command describe the segment, and are no settings of a ferry it runs.
func TestEnvUnderExecApplier(t *testing.T) {
	f := Defaults()
	if _, err := ApplyEnv(f, []string{"FERRY_STREAM=app", "FERRY_GENERATION=2", "FERRY_FIRST_SEQ=1", "FERRY_LAST_SEQ=9",
		"FERRY_SEGMENT=x", "FERRY_STORE=/srv/s"}); err != nil {
		t.Fatal(err)
	}
	if f.Stream != "" || f.Generation != 0 || f.Store != "/srv/s" {
		t.Errorf("under an applier: stream %q generation %d store %q, want \"\" 0 /srv/s", f.Stream, f.Generation, f.Store)
	}
	f = Defaults()
	if _, err := ApplyEnv(f, []string{"FERRY_STREAM=app", "FERRY_GENERATION=2"}); err != nil || f.Stream != "app" || f.Generation != 2 {
		t.Errorf("stream %q generation %d (%v), want app 2", f.Stream, f.Generation, err)
	}
}

// --config, else FERRY_CONFIG, else the default path if it exists.
func TestLocate(t *testing.T) {
	dir := t.TempDir()
	def := filepath.Join(dir, "ferry.toml")
	getenv := func(v string) func(string) string {
		return func(name string) string {
			if name == PathEnv {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		flag, env, path, from string
		defExists             bool
	}{
		{"", "", "", "", false},
		{"", "", def, FromDefault, true},
		{"", "/e.toml", "/e.toml", FromEnv, true},
		{"/f.toml", "/e.toml", "/f.toml", FromFlag, true},
		{"/f.toml", "", "/f.toml", FromFlag, false},
		{"", "/e.toml", "/e.toml", FromEnv, false},
	} {
		os.Remove(def)
		if tc.defExists {
			if err := os.WriteFile(def, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		path, from := Locate(tc.flag, getenv(tc.env), def)
		if path != tc.path || from != tc.from {
			t.Errorf("Locate(%q, FERRY_CONFIG=%q, default exists %v) = %q, %q; want %q, %q",
				tc.flag, tc.env, tc.defExists, path, from, tc.path, tc.from)
		}
	}
	// A default path that cannot be looked at is not skipped in silence.
	if os.Geteuid() != 0 {
		locked := filepath.Join(dir, "locked")
		os.Mkdir(locked, 0o000)
		defer os.Chmod(locked, 0o700)
		if path, _ := Locate("", getenv(""), filepath.Join(locked, "ferry.toml")); path == "" {
			t.Error("a default path behind a directory ferry may not search was skipped")
		}
	}
}

// The effective config prints as TOML that loads back to the same
// settings, with every secret masked.
func TestWriteTOMLRedactsAndRoundTrips(t *testing.T) {
	const secret = "s3cr3t-value-never-printed"
	yes := true
	f := Defaults()
	f.Stream, f.Store = "app", "s3://bucket/prefix"
	f.Ship.Spool = "/srv/spool"
	f.Ship.DirExclude = []string{"*.tmp"}
	f.Ship.Targets = []Target{{Name: "dr", Store: "tcp://dr:7000", BandwidthLimit: 5 * MiB}}
	f.Ship.Windows = []Window{{Start: "0 22 * * *", Duration: Duration(6 * time.Hour)}}
	f.Sync.Peers = []SyncPeer{{ID: "b", Store: "/srv/b"}}
	f.S3 = S3{Region: "eu-west-1", PathStyle: &yes, AccessKey: "AKIA" + secret, SecretKey: secret, SessionToken: "tok" + secret}
	f.TCP.Token = secret
	var buf bytes.Buffer
	if err := f.WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, secret) {
		t.Fatalf("a secret is printed:\n%s", out)
	}
	for _, k := range []string{`access_key = "***"`, `secret_key = "***"`, `session_token = "***"`, `token = "***"`} {
		if !strings.Contains(out, k) {
			t.Errorf("output lacks %s:\n%s", k, out)
		}
	}
	if f.TCP.Token != secret || f.S3.SecretKey != secret {
		t.Fatal("WriteTOML masked the secrets of the config itself")
	}
	// Decoded only: Load would refuse the masked token as too short.
	got := Defaults()
	md, err := toml.Decode(out, got)
	if err != nil || len(md.Undecoded()) > 0 {
		t.Fatalf("the printed config does not decode: %v, undecoded %v\n%s", err, md.Undecoded(), out)
	}
	want := *f
	want.S3 = f.S3.Redacted()
	want.TCP.Token = "***"
	if !reflect.DeepEqual(got, &want) {
		t.Errorf("loaded back:\n%+v\nwant\n%+v", got, &want)
	}
}
