package config

import (
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

// maxUnknownReported bounds the unknown-key errors Load lists; the rest are
// counted. Finding each line re-reads the file, and a file with hundreds of
// unknown keys is the wrong file anyway.
const maxUnknownReported = 20

// Load reads the TOML file at path on top of [Defaults] and checks it with
// Validate("") (values well-formed; keys a verb requires are not demanded,
// since flags may still supply them: call Validate(verb) after applying
// flags). Every error names the file and, where the file sets the key, the
// line: "etc/ferry.toml:7: unknown key \"ship.max_byts\"". A syntax or
// type error stops decoding and is reported alone; otherwise every unknown
// key and every Validate problem is reported, joined.
func Load(path string) (*File, error) {
	return load(path, nil, false)
}

// LoadEnv is Load with the FERRY_* variables of environ (os.Environ's form,
// "NAME=VALUE") applied over the file (see [ApplyEnv]): the order of
// precedence is flags (the caller's), then the environment, then the file,
// then the defaults. An empty path reads no file: the defaults and the
// environment. A problem with a value the environment set names the
// variable instead of the file.
func LoadEnv(path string, environ []string) (*File, error) {
	return load(path, environ, true)
}

func load(path string, environ []string, useEnv bool) (*File, error) {
	f := Defaults()
	var src string
	var md toml.MetaData
	var keysErr error
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		src = string(data)
		md, err = toml.Decode(src, f)
		if err != nil {
			return nil, decodeError(path, src, md, err)
		}
		keysErr = checkKeys(path, src, md)
	}
	var fromEnv map[string]string
	var envErr error
	if useEnv {
		fromEnv, envErr = ApplyEnv(f, environ)
	}
	var validErr error
	if err := f.Validate(""); err != nil {
		validErr = locate(path, src, md, fromEnv, err)
	}
	if err := errors.Join(keysErr, envErr, validErr); err != nil {
		return nil, err
	}
	return f, nil
}

// decodeError puts the file and line first in a TOML syntax or type error.
func decodeError(path, src string, md toml.MetaData, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// A syntax error stops the parser before any key is recorded; an error
		// from a value (wrong type, bad size) comes after.
		if len(md.Keys()) == 0 || pe.LastKey == "" {
			msg := pe.Message
			if strings.Contains(msg, "'store'") {
				msg += storeHint
			}
			return fmt.Errorf("%s: %s", at(path, syntaxLine(src, pe)), msg)
		}
		return fmt.Errorf("%s: %s: %s%s", at(path, pe.Position.Line), pe.LastKey, pe.Message, keyHint(pe.LastKey))
	}
	// Type mismatches are plain errors: "toml: line 3 (last key "x"): ...".
	if m := typeErrorPattern.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		key, uerr := strconv.Unquote(m[2])
		if uerr == nil {
			if line == 0 {
				line = lineOf(src, md, toml.Key(strings.Split(key, ".")))
			}
			return fmt.Errorf("%s: %s: %s%s", at(path, line), key, m[3], keyHint(key))
		}
	}
	return fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "toml: "))
}

// syntaxLine is the line of a syntax error. The parser's line is one too
// far when the offending character is the newline itself ("[ship\n"), so
// count lines up to the error's byte offset instead.
func syntaxLine(src string, pe toml.ParseError) int {
	if s := pe.Position.Start; s >= 0 && s <= len(src) && pe.Position.Line > 0 {
		return strings.Count(src[:s], "\n") + 1
	}
	return pe.Position.Line
}

// keyHint is what to add to a decoding error of key.
func keyHint(key string) string {
	switch key {
	case "store":
		return storeHint
	case "generation":
		return generationHint
	}
	return ""
}

// generationHint says what a generation may be.
const generationHint = "; a generation is 1 to 4294967295, or 0 (the default) to follow the stream's history"

// storeHint explains the one departure from the obvious layout.
const storeHint = "; store is the store URL string, and S3 settings go in a top-level [s3] table"

var typeErrorPattern = regexp.MustCompile(`(?s)^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

// at formats "path:line", or just path when the line is unknown.
func at(path string, line int) string {
	if line <= 0 {
		return path
	}
	return path + ":" + strconv.Itoa(line)
}

// checkKeys reports every key in the file that File has no field for.
// Undecoded catches unknown names; comparing Keys with the known set also
// catches case variants ("Stream"), which the decoder folds onto a field.
func checkKeys(path, src string, md toml.MetaData) error {
	known := knownKeys()
	var unknown []toml.Key
	seen := map[string]bool{}
	for _, k := range slices.Concat(md.Keys(), md.Undecoded()) {
		for i := 1; i <= len(k); i++ {
			top := k[:i]
			if known[top.String()] {
				continue
			}
			if !seen[top.String()] {
				seen[top.String()] = true
				unknown = append(unknown, top)
			}
			break
		}
	}
	var errs []error
	for i, k := range unknown {
		if i == maxUnknownReported {
			errs = append(errs, fmt.Errorf("%s: and %d more unknown keys", path, len(unknown)-i))
			break
		}
		line := lineOf(src, md, k)
		errs = append(errs, fmt.Errorf("%s: unknown key %q%s", at(path, line), k.String(), suggest(k)))
	}
	return errors.Join(errs...)
}

// lineOf returns the line of src that sets key, or 0 if it cannot tell.
// An implicit table ([a.b] or a.b = 1 creates "a") has no position of its
// own; the first key under it stands in. Each try decodes src again, so
// only a few are made.
func lineOf(src string, md toml.MetaData, key toml.Key) int {
	if line := keyLine(src, key); line > 0 {
		return line
	}
	tries := 3
	for _, sub := range md.Keys() {
		if tries == 0 {
			break
		}
		if len(sub) > len(key) && slices.Equal(sub[:len(key)], key) {
			tries--
			if line := keyLine(src, sub); line > 0 {
				return line
			}
		}
	}
	return 0
}

// locate prefixes each Validate problem with the environment variable
// that set its key (fromEnv: variables by key), else with the file and, if
// the file sets that key, its line. A problem of a key neither set is left
// as it is when there is no file.
func locate(path, src string, md toml.MetaData, fromEnv map[string]string, err error) error {
	var errs []error
	for _, e := range unjoin(err) {
		var p *problem
		line := 0
		if errors.As(e, &p) {
			base, _, _ := strings.Cut(p.key, "[") // ship.targets[1].store: set as a whole
			if name := fromEnv[base]; name != "" {
				errs = append(errs, fmt.Errorf("%s: %w", name, e))
				continue
			}
			if k := toml.Key(strings.Split(p.key, ".")); md.IsDefined(k...) {
				line = lineOf(src, md, k)
			} else {
				line = arrayKeyLine(src, p.key)
			}
		}
		if path == "" {
			errs = append(errs, e)
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %w", at(path, line), e))
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// knownKeys is the set of every key path File accepts, tables included,
// as toml.Key.String() values, read from the toml struct tags.
var knownKeys = sync.OnceValue(func() map[string]bool {
	m, _ := keySets()
	return m
})

// arrayTables is the set of key paths that are arrays of tables ([[a.b]]).
var arrayTables = sync.OnceValue(func() map[string]bool {
	_, a := keySets()
	return a
})

// keySets walks File's toml tags, once: every key path, and those that
// are arrays of tables.
var keySets = sync.OnceValues(func() (map[string]bool, map[string]bool) {
	m, arrays := map[string]bool{}, map[string]bool{}
	var walk func(prefix toml.Key, t reflect.Type)
	walk = func(prefix toml.Key, t reflect.Type) {
		tomlFields(prefix, t, func(k toml.Key, _ int, ft reflect.Type) {
			m[k.String()] = true
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem() // an array of tables: [[a.b]]
				arrays[k.String()] = true
			}
			if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textUnmarshaler) {
				walk(k, ft)
			}
		})
	}
	walk(nil, reflect.TypeFor[File]())
	return m, arrays
})

// tomlFields calls fn for each field of struct t that has a toml key: the
// key under prefix, the field's index in t and its type.
func tomlFields(prefix toml.Key, t reflect.Type, fn func(k toml.Key, i int, ft reflect.Type)) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fn(append(slices.Clip(prefix), name), i, sf.Type)
	}
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// keyProbe fails to decode on purpose. The decoder turns an
// UnmarshalTOML error into a toml.ParseError carrying the position of the
// key being decoded; BurntSushi/toml v1.6 has no other public way to ask
// where a key is.
type keyProbe struct{}

var errProbe = errors.New("probe")

func (*keyProbe) UnmarshalTOML(any) error { return errProbe }

// keyLine returns the line of src that sets key, or 0 if it cannot tell.
// It decodes src into a struct built for that one key path, whose leaf is
// a keyProbe.
func keyLine(src string, key toml.Key) int {
	if len(key) == 0 {
		return 0
	}
	t := reflect.TypeFor[keyProbe]()
	for i := len(key) - 1; i >= 0; i-- {
		name := key[i]
		// A tag cannot carry these names: "," splits options, "" and "-"
		// mean something else.
		if name == "" || name == "-" || strings.Contains(name, ",") {
			return 0
		}
		if i < len(key)-1 && arrayTables()[toml.Key(key[:i+1]).String()] {
			t = reflect.SliceOf(t) // [[a.b]]: each table decodes into an element
		}
		t = reflect.StructOf([]reflect.StructField{{
			Name: "K",
			Type: t,
			Tag:  reflect.StructTag(`toml:` + strconv.Quote(name)),
		}})
	}
	_, err := toml.Decode(src, reflect.New(t).Interface())
	var pe toml.ParseError
	// The decoder also matches keys case-insensitively; only trust a hit on
	// exactly this key.
	if errors.As(err, &pe) && pe.LastKey == key.String() {
		return pe.Position.Line
	}
	return 0
}

// suggest returns ` (did you mean "x"?)` for the known key closest to k,
// or "" if none is close (see closestKey).
func suggest(k toml.Key) string {
	best := closestKey(k, nil)
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// closestKey returns the known key closest to k, or "" if none is close:
// same table and at most two edits away, or the same name in another table
// (a key written above its [table] header). With a non-nil allow, only the
// keys it allows are candidates. k itself is never returned.
func closestKey(k toml.Key, allow func(key string) bool) string {
	ks, name := k.String(), k[len(k)-1]
	if len(name) > 64 {
		return "" // no known key is this long; spare the edit distance
	}
	parent := toml.Key(k[:len(k)-1]).String()
	best, bestDist := "", 3
	for cand := range knownKeys() {
		if allow != nil && !allow(cand) {
			continue
		}
		cparent, cname := "", cand
		if i := strings.LastIndexByte(cand, '.'); i >= 0 {
			cparent, cname = cand[:i], cand[i+1:]
		}
		d := 3
		switch {
		case cparent == parent:
			d = editDistance(strings.ToLower(name), cname)
		case cname == name:
			d = 2
		}
		if d < bestDist || (d == bestDist && cand < best) {
			best, bestDist = cand, d
		}
	}
	if best == ks {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
