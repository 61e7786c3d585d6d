package ident

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// Valid accepts exactly what the regexps it replaced accept: batch's
// stream names (punct "._@-") and config's other names (punct "._-").
func TestValidIsTheRegexp(t *testing.T) {
	for _, punct := range []string{"._@-", "._-"} {
		re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9` + punct + `]{0,127}$`)
		cases := []string{"", "a", "pg-wal", "app@site-b", ".x", "-x", "_x", "@x", "x.", "x y", "x/y", "é", "a\n",
			strings.Repeat("a", 127), strings.Repeat("a", 128), strings.Repeat("a", 129), "A0._@-z", "A0._-z"}
		r := rand.New(rand.NewPCG(1, 2))
		alphabet := "aZ09._@-/ \x00\xff:"
		for range 20000 {
			b := make([]byte, r.IntN(132))
			for i := range b {
				if r.IntN(8) == 0 {
					b[i] = alphabet[r.IntN(len(alphabet))]
				} else {
					b[i] = "abcXYZ012"[r.IntN(9)]
				}
			}
			cases = append(cases, string(b))
		}
		for _, s := range cases {
			if got, want := Valid(s, punct), re.MatchString(s); got != want {
				t.Fatalf("Valid(%q, %q) = %v, the regexp says %v", s, punct, got, want)
			}
		}
	}
}
