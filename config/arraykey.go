package config

import (
	"regexp"
	"strconv"
	"strings"
)

// indexedKey is a problem key inside an array of tables:
// "ship.windows[1].bandwidth_limit".
var indexedKey = regexp.MustCompile(`^([A-Za-z0-9_.]+)\[(\d+)\]\.([A-Za-z0-9_]+)$`)

// arrayKeyLine returns the line of src that sets an indexed key such as
// "ship.windows[1].bandwidth_limit" (the key in the second [[ship.windows]]
// table), or 0 if it cannot tell. The decoder's metadata has no indexes, so
// this reads the text: the table headers, then the key's line before the
// next header.
func arrayKeyLine(src, key string) int {
	m := indexedKey.FindStringSubmatch(key)
	if m == nil {
		return 0
	}
	table, field := m[1], m[3]
	want, _ := strconv.Atoi(m[2])
	header := regexp.MustCompile(`^\s*\[\[\s*` + strings.ReplaceAll(regexp.QuoteMeta(table), `\.`, `\s*\.\s*`) + `\s*\]\]`)
	set := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(field) + `"?\s*=`)
	n := -1
	for i, line := range strings.Split(src, "\n") {
		switch {
		case header.MatchString(line):
			n++
		case n == want && strings.HasPrefix(strings.TrimSpace(line), "["):
			return 0 // the next table: the key is not in this one
		case n == want && set.MatchString(line):
			return i + 1
		}
	}
	return 0
}
