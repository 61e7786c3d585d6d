// Package ident checks the names ferry uses as path elements and IDs:
// stream names, sites, replicas, fleets and members.
package ident

import "strings"

// Valid reports whether s is 1-128 bytes of ASCII letters, digits and the
// bytes in punct, starting with a letter or digit: the regexp
// ^[A-Za-z0-9][A-Za-z0-9<punct>]{0,127}$ written out (that regexp,
// compiled at every process start, was about 2% of the CPU of a ferry
// push or fetch: its 127 repetitions make a large program).
func Valid(s, punct string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && strings.IndexByte(punct, c) >= 0:
		default:
			return false
		}
	}
	return true
}
