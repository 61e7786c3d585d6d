package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/ferry-dr/ferry/batch"
)

// StreamTable is one [[streams]] table: a stream that one "ferry ship"
// process runs beside the others (docs/STREAMS.md). Every stream shares
// the top-level store, [[ship.targets]] and [ship] settings; a table
// overrides only what it sets. Its spool is the subdirectory named after
// it under ship.spool.
type StreamTable struct {
	// Name is the stream's name, or, for a glob source, the template
	// each matching file's stream is named by: "{base}" is the file name
	// without its last extension, "{name}" the whole file name (see
	// StreamName for how other characters are mapped). Required.
	Name string `toml:"name"`

	// Source is "tail:PATH" (follow one file across rotation) or
	// "tail:GLOB" such as "tail:/var/log/app/*.log": one stream per
	// matching file, new files picked up every scan_interval, removed
	// ones finished and closed. Required.
	Source string `toml:"source"`

	// Format, MaxBytes, MaxRecords and MaxAge override ship.format,
	// ship.max_bytes, ship.max_records and ship.max_age for this stream.
	// Default: the [ship] value.
	Format     string   `toml:"format"`
	MaxBytes   Size     `toml:"max_bytes"`
	MaxRecords int64    `toml:"max_records"`
	MaxAge     Duration `toml:"max_age"`

	// ScanInterval is how often a glob source looks for new and removed
	// files. Default 1s; only for a glob source.
	ScanInterval Duration `toml:"scan_interval"`
}

// DefaultScanInterval is a glob stream's scan_interval when it sets none.
const DefaultScanInterval = time.Second

// IsGlob reports whether the table's source is a glob: one stream per
// matching file.
func (t StreamTable) IsGlob() bool {
	return strings.ContainsAny(strings.TrimPrefix(t.Source, "tail:"), "*?[")
}

// Path is the file (or glob) the source follows.
func (t StreamTable) Path() string { return strings.TrimPrefix(t.Source, "tail:") }

// Scan is the table's scan interval, with its default.
func (t StreamTable) Scan() time.Duration {
	if t.ScanInterval > 0 {
		return time.Duration(t.ScanInterval)
	}
	return DefaultScanInterval
}

// Ship returns base (the [ship] table) with the table's overrides and
// source, and the spool dir of stream under base's spool.
func (t StreamTable) Ship(base Ship, stream, file string) Ship {
	s := base
	s.Source = "tail:" + file
	s.Spool = filepath.Join(base.Spool, stream)
	if t.Format != "" {
		s.Format = t.Format
	}
	if t.MaxBytes != 0 {
		s.MaxBytes = t.MaxBytes
	}
	if t.MaxRecords != 0 {
		s.MaxRecords = t.MaxRecords
	}
	if t.MaxAge != 0 {
		s.MaxAge = t.MaxAge
	}
	return s
}

// StreamName is the stream a glob table's template names for file: in
// template, "{base}" becomes file's base name without its last extension
// and "{name}" its whole base name. Every character of those that a
// stream name cannot hold (anything but A-Z a-z 0-9 . _ -) becomes '_',
// so "web 1.log" under "app-{base}" is "app-web_1". The result must be a
// valid stream name (1-128 characters, starting with a letter or digit);
// an error names the file otherwise.
func StreamName(template, file string) (string, error) {
	name := filepath.Base(file)
	base := strings.TrimSuffix(name, filepath.Ext(name))
	out := strings.NewReplacer("{base}", mapStreamChars(base), "{name}", mapStreamChars(name)).Replace(template)
	if err := checkStreamTableName(out); err != nil {
		return "", fmt.Errorf("file %s: template %q gives %q: %w", file, template, out, err)
	}
	return out, nil
}

// mapStreamChars replaces each character a stream name cannot hold
// with '_'.
func mapStreamChars(s string) string {
	return strings.Map(func(r rune) rune {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '_' || r == '-') {
			return r
		}
		return '_'
	}, s)
}

// checkStreamTableName checks a stream's name is a stream name that is
// also a safe directory name under the spool: no '@' (the sync verbs'
// NAME@SITE), no path separators, no "..".
func checkStreamTableName(name string) error {
	if err := batch.CheckStream(name); err != nil {
		return err
	}
	if strings.Contains(name, "@") || strings.Contains(name, "..") {
		return fmt.Errorf("stream name %q invalid: '@' and \"..\" are not allowed in a [[streams]] name", name)
	}
	return nil
}

// validateStreams checks the [[streams]] tables: each problem names the
// table index and key.
func (f *File) validateStreams(add func(key, format string, args ...any)) {
	if len(f.Streams) == 0 {
		return
	}
	if f.Stream != "" {
		add("stream", "is set together with [[streams]] tables: name each stream in its table and leave the top-level stream out")
	}
	if f.Ship.Source != "stdin" && f.Ship.Source != "" {
		add("ship.source", "%q is set together with [[streams]] tables: give each stream its source in its table and leave ship.source out", f.Ship.Source)
	}
	if f.Retention.Schedule != "" {
		add("retention.schedule", "is not run by a ship with [[streams]] yet: prune with ferry prune --stream NAME on a schedule of your own")
	}
	if f.Ship.PGData != "" {
		add("ship.pg_data", "is not read by a ship with [[streams]] (it has no push socket): run a one-stream ferry ship for PostgreSQL's WAL")
	}
	if f.Ship.MemoryLimit != 0 {
		add("ship.memory_limit", "is not set by a ship with [[streams]] yet: set GOMEMLIMIT in its environment instead")
	}
	if f.Ship.Format == "raw" {
		add("ship.format", "\"raw\" is not a format a tail: source reads: use line or ndjson with [[streams]]")
	}
	if strings.HasPrefix(f.Store, "tcp://") {
		add("store", "a tcp:// link carries one stream: [[streams]] ship to dir or s3:// stores")
	}
	for i, t := range f.Ship.Targets {
		if strings.HasPrefix(t.Store, "tcp://") {
			add(fmt.Sprintf("ship.targets[%d].store", i), "a tcp:// link carries one stream: [[streams]] ship to dir or s3:// stores")
		}
	}
	names := map[string]int{}
	for i, t := range f.Streams {
		key := fmt.Sprintf("streams[%d]", i)
		glob := t.IsGlob()
		placeholder := strings.Contains(t.Name, "{base}") || strings.Contains(t.Name, "{name}")
		switch {
		case strings.TrimSpace(t.Name) == "":
			add(key+".name", "required: the stream's name (or, for a glob source, a template such as \"app-{base}\")")
		case strings.ContainsFunc(t.Name, unicode.IsControl):
			add(key+".name", "%q holds a control character", t.Name)
		case glob && !placeholder:
			add(key+".name", "%q has no {base} or {name}: a glob source makes one stream per file, and each needs its own name", t.Name)
		case !glob && placeholder:
			add(key+".name", "%q is a template, but source %q is not a glob", t.Name, t.Source)
		default:
			// A template is checked with a plain file name standing in.
			probe := t.Name
			if glob {
				probe = strings.NewReplacer("{base}", "x", "{name}", "x.log").Replace(t.Name)
			}
			if err := checkStreamTableName(probe); err != nil {
				add(key+".name", "%q: %v (and it names the stream's spool directory)", t.Name, err)
			} else if j, dup := names[t.Name]; dup {
				add(key+".name", "%q is also the name of streams[%d]: each stream needs its own name", t.Name, j)
			} else {
				names[t.Name] = i
			}
		}
		path, ok := strings.CutPrefix(t.Source, "tail:")
		switch {
		case !ok:
			add(key+".source", "%q: want tail:PATH or tail:GLOB (e.g. \"tail:/var/log/app/*.log\")", t.Source)
		case strings.TrimSpace(path) == "":
			add(key+".source", `"tail:" needs a file path or glob, e.g. "tail:/var/log/app/*.log"`)
		case strings.ContainsFunc(path, unicode.IsControl):
			add(key+".source", "%q holds a control character", t.Source)
		default:
			if _, err := filepath.Match(filepath.Base(path), ""); err != nil {
				add(key+".source", "%q: bad glob: %v", t.Source, err)
			} else if strings.ContainsAny(filepath.Dir(path), "*?[") {
				add(key+".source", "%q: only the file name may be a glob, not the directory", t.Source)
			}
		}
		if t.Format != "" && t.Format != "line" && t.Format != "ndjson" {
			add(key+".format", "%q is not one of line, ndjson", t.Format)
		}
		if t.MaxBytes != 0 && (t.MaxBytes < minMaxBytes || t.MaxBytes > maxMaxBytes) {
			add(key+".max_bytes", "%v is out of range %v to %v", t.MaxBytes, minMaxBytes, maxMaxBytes)
		}
		if t.MaxBytes > f.Ship.SpoolLimit {
			add(key+".max_bytes", "%v is above ship.spool_limit (%v); each stream's spool must hold at least one segment", t.MaxBytes, f.Ship.SpoolLimit)
		}
		if t.MaxRecords < 0 {
			add(key+".max_records", "%d is negative; leave it out for ship.max_records", t.MaxRecords)
		}
		if t.MaxAge < 0 {
			add(key+".max_age", "must not be negative; leave it out for ship.max_age")
		}
		if t.ScanInterval < 0 {
			add(key+".scan_interval", "must not be negative")
		} else if t.ScanInterval != 0 && !glob {
			add(key+".scan_interval", "is only for a glob source (tail:/dir/*.log)")
		}
	}
}
