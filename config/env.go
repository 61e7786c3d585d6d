package config

import (
	"encoding"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

// EnvPrefix starts every environment variable ferry reads.
const EnvPrefix = "FERRY_"

// PathEnv names the config file when --config does not.
const PathEnv = "FERRY_CONFIG"

// DefaultPath is the config file read when neither --config nor
// FERRY_CONFIG names one, if it exists.
const DefaultPath = "/etc/ferry/ferry.toml"

// Where Locate found the config file.
const (
	FromFlag    = "--config"
	FromEnv     = PathEnv
	FromDefault = "default path"
)

// Locate returns the config file to read and where its name came from:
// flagPath (--config) if given, else $FERRY_CONFIG (read with getenv; empty
// counts as unset), else defaultPath if something is there. A default path
// that cannot be looked at for another reason than its absence (a
// directory ferry may not search) is returned too, so that reading it
// fails loudly rather than the file being silently skipped. With none, it
// returns "", "".
func Locate(flagPath string, getenv func(string) string, defaultPath string) (path, from string) {
	switch {
	case flagPath != "":
		return flagPath, FromFlag
	case getenv(PathEnv) != "":
		return getenv(PathEnv), FromEnv
	case defaultPath == "":
		return "", ""
	}
	if _, err := os.Stat(defaultPath); errors.Is(err, fs.ErrNotExist) {
		return "", ""
	}
	return defaultPath, FromDefault
}

// OtherEnv are the FERRY_ variables that are not config keys, with what
// each is for. Any other FERRY_ variable that names no key is refused, so a
// misspelt override never goes unnoticed.
var OtherEnv = map[string]string{
	PathEnv:            "the config file",
	TokenEnv:           "the tcp:// link token (README, Security)",
	IdentityEnv:        "the age identity file, when [encryption] identity_file is not set",
	"FERRY_CPUPROFILE": "write a CPU profile to this file",
	"FERRY_MEMPROFILE": "write a heap profile to this file",
	// Set by an exec: applier for its command (receiver/apply/exec.go),
	// with FERRY_STREAM and FERRY_GENERATION (see ApplyEnv).
	"FERRY_FIRST_SEQ": "set by an exec: applier",
	"FERRY_LAST_SEQ":  "set by an exec: applier",
	"FERRY_SEGMENT":   "set by an exec: applier",
	// Read by the tests only.
	"FERRY_VERSITYGW":     "tests: the versitygw binary",
	"FERRY_REQUIRE_S3":    "tests: fail, never skip, without versitygw",
	"FERRY_REQUIRE_AGE":   "tests: fail, never skip, without the age binary",
	"FERRY_REQUIRE_TOOLS": "tests: fail, never skip, without promtool and prometheus",
	"FERRY_E2E_SEED":      "tests: replay a seed",
	"FERRY_E2E_KEEP":      "tests: copy a failed sync churn's sites here",
	"FERRY_CHAOS_SEED":    "tests: replay a chaos seed",
	"FERRY_CHAOS_KILLS":   "tests: kills per chaos scenario",
	"FERRY_CHAOS_FAULTS":  "tests: faults per chaos scenario",
	"FERRY_CHAOS_REPORT":  "tests: where the chaos report goes",
	"FERRY_SYNC_LOGS":     "tests: print the sync tests' logs",
	"FERRY_HOLD_LOCK":     "tests: a helper process's lock",
	"FERRY_BUNDLE_KILL":   "tests: kill -9 ferry ship at this step of a bundle (written, renamed, committed, marked, put)",
}

// appliedOnly are the key variables an exec: applier also sets for its
// command, describing the segment it hands over. A ferry run by that
// command (FERRY_SEGMENT is set) does not take them as settings: they
// belong to the stream being applied, not to the one it works on.
var appliedOnly = []string{"FERRY_STREAM", "FERRY_GENERATION"}

// envKey is one config key reachable from the environment.
type envKey struct {
	key   string // dotted: "ship.max_age"
	index []int  // the field's index path in File
}

// envKeys maps each variable name to its key: EnvName of every leaf key
// of File (a value, a list, or an array of tables as a whole).
var envKeys = sync.OnceValue(func() map[string]envKey {
	m := map[string]envKey{}
	var walk func(prefix toml.Key, index []int, t reflect.Type)
	walk = func(prefix toml.Key, index []int, t reflect.Type) {
		tomlFields(prefix, t, func(k toml.Key, i int, ft reflect.Type) {
			idx := append(slices.Clip(index), i)
			if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textUnmarshaler) {
				walk(k, idx, ft) // a table: its keys
				return
			}
			env := EnvName(k.String())
			if prev, dup := m[env]; dup {
				panic(fmt.Sprintf("config: keys %s and %s both map to %s", prev.key, k, env))
			}
			m[env] = envKey{key: k.String(), index: idx}
		})
	}
	walk(nil, nil, reflect.TypeFor[File]())
	return m
})

// EnvName is the environment variable of a dotted config key:
// "ship.max_age" is FERRY_SHIP_MAX_AGE.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// EnvKeys returns every config key the environment can set, sorted.
func EnvKeys() []string {
	var keys []string
	for _, k := range envKeys() {
		keys = append(keys, k.key)
	}
	slices.Sort(keys)
	return keys
}

// EnvSettings returns the names of the variables in environ that
// ApplyEnv takes as settings: those a process ferry starts (an exec:
// applier) should not inherit.
func EnvSettings(environ []string) []string {
	var names []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if _, ok := envKeys()[name]; ok {
			names = append(names, name)
		}
	}
	return names
}

// ApplyEnv sets in f every config key that a FERRY_ variable of environ
// ("NAME=VALUE", as os.Environ returns) names, and returns those variables
// by dotted key. The name of a key's variable is FERRY_ and the key with
// its tables joined by "_", upper-cased: [ship] max_age is
// FERRY_SHIP_MAX_AGE, store is FERRY_STORE. Values are written as in the
// file without quotes: sizes ("4MiB"), durations ("2s"), booleans (true,
// false), integers; a list of strings is comma-separated ("*.tmp,*.lock");
// an array of tables is a TOML array of inline tables
// ('[{store = "s3://b/p", async = true}]'). An empty value counts as unset.
//
// Every FERRY_ variable that is neither a key nor in OtherEnv is an error
// naming it, with the closest variable; so is a value that does not parse,
// which leaves its key as it was. The exec: applier's FERRY_STREAM and
// FERRY_GENERATION are not settings when FERRY_SEGMENT is set too.
func ApplyEnv(f *File, environ []string) (map[string]string, error) {
	vars := map[string]string{}
	for _, kv := range environ {
		if name, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(name, EnvPrefix) {
			vars[name] = v
		}
	}
	_, underApplier := vars["FERRY_SEGMENT"]
	set := map[string]string{}
	var errs []error
	root := reflect.ValueOf(f).Elem()
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		if _, ok := OtherEnv[name]; ok {
			continue
		}
		ek, ok := envKeys()[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown variable: it names no config key%s", name, suggestEnv(name)))
			continue
		}
		v := vars[name]
		if v == "" || (underApplier && slices.Contains(appliedOnly, name)) {
			continue
		}
		if err := setFromEnv(root.FieldByIndex(ek.index), v, ek.key); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		set[ek.key] = name
	}
	if len(set) > 0 {
		if f.env == nil {
			f.env = map[string]string{}
		}
		maps.Copy(f.env, set)
	}
	return set, errors.Join(errs...)
}

// suggestEnv returns " (did you mean FERRY_X, the key x?)" for the
// variable of the key closest to the one name would be, or "". The key is guessed by
// splitting the name after a table's name ("SHIP_MAX_AGEE" is
// ship.max_agee) and found as Load finds the key of an unknown one; failing
// that, any variable within two edits.
func suggestEnv(name string) string {
	rest := strings.ToLower(strings.TrimPrefix(name, EnvPrefix))
	k := toml.Key{rest}
	for key := range knownKeys() {
		if strings.Contains(key, ".") || isLeaf(key) {
			continue // only the top-level tables
		}
		if r, ok := strings.CutPrefix(rest, key+"_"); ok && r != "" && (len(k) == 1 || len(key) > len(k[0])) {
			k = toml.Key{key, r}
		}
	}
	best := ""
	switch {
	case isLeaf(k.String()):
		best = k.String() // the name in lower case
	case k[len(k)-1] != "":
		best = closestKey(k, isLeaf)
	}
	if best == "" {
		dist := 3
		for env, ek := range envKeys() {
			if d := editDistance(name, env); d < dist || (d == dist && ek.key < best) {
				best, dist = ek.key, d
			}
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s, the key %s?)", EnvName(best), best)
}

// isLeaf reports whether key is one the environment can set.
func isLeaf(key string) bool {
	_, ok := envKeys()[EnvName(key)]
	return ok
}

// setFromEnv parses s into v, the field of key, as the file would type it.
func setFromEnv(v reflect.Value, s, key string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
		return nil
	case reflect.Bool:
		b, err := parseBool(s)
		if err == nil {
			v.SetBool(b)
		}
		return err
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
		return nil
	case reflect.Uint32:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
		if err != nil {
			return fmt.Errorf("invalid integer %q: want 0 to %d", s, uint32(1<<32-1))
		}
		v.SetUint(n)
		return nil
	}
	switch t := v.Type(); {
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Bool: // unset or a bool: s3.path_style
		b, err := parseBool(s)
		if err == nil {
			v.Set(reflect.ValueOf(&b))
		}
		return err
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		var list []string
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		v.Set(reflect.ValueOf(list))
		return nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return setTables(v, s, key)
	}
	// A key of a new type: TestEnvReachesEveryKey fails until it is parsed here.
	panic(fmt.Sprintf("config: no environment parser for %s (%s)", key, v.Type()))
}

func parseBool(s string) (bool, error) {
	switch strings.TrimSpace(s) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q: want true or false", s)
}

// setTables parses s, a TOML array of inline tables, into v, the slice of
// the array of tables key. Unknown keys in the tables are errors, as in
// the file.
func setTables(v reflect.Value, s, key string) error {
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{
		Name: "V", Type: v.Type(), Tag: `toml:"v"`,
	}}))
	md, err := toml.Decode("v = "+s, holder.Interface())
	if err != nil {
		var pe toml.ParseError
		msg := strings.TrimPrefix(err.Error(), "toml: ")
		if errors.As(err, &pe) {
			msg = pe.Message
		}
		return fmt.Errorf("%s is an array of tables: want a TOML array of inline tables, e.g. [{store = \"s3://bucket/prefix\"}]: %s", key, msg)
	}
	var errs []error
	seen := map[string]bool{}
	for _, k := range slices.Concat(md.Keys(), md.Undecoded()) {
		if k[0] != "v" { // "[...]\nother = 1"
			return fmt.Errorf("%s is an array of tables: want one TOML array of inline tables, not the key %q after it", key, k.String())
		}
		full := append(toml.Key(strings.Split(key, ".")), k[1:]...)
		if len(k) > 1 && !knownKeys()[full.String()] && !seen[full.String()] {
			seen[full.String()] = true
			errs = append(errs, fmt.Errorf("unknown key %q%s", full.String(), suggest(full)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	v.Set(holder.Elem().Field(0))
	return nil
}

// EnvVars returns the variables ApplyEnv took settings from, by dotted
// key (a copy).
func (f *File) EnvVars() map[string]string { return maps.Clone(f.env) }
