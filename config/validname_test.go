package config

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// validName accepts exactly what the regexp it replaced accepts.
func TestValidNameIsTheRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	cases := []string{"", "a", "pg-wal", "app@site-b", ".x", "-x", "_x", "x.", "x y", "x/y", "é", "a\n",
		strings.Repeat("a", 127), strings.Repeat("a", 128), strings.Repeat("a", 129), "A0._-z"}
	r := rand.New(rand.NewPCG(3, 4))
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
		if got, want := validName(s), re.MatchString(s); got != want {
			t.Fatalf("validName(%q) = %v, the regexp says %v", s, got, want)
		}
	}
}
