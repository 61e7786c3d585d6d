package apply_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/receiver/apply"
)

func TestParse(t *testing.T) {
	var stdout bytes.Buffer
	for _, tc := range []struct {
		spec string
		want string // String() of the applier, "" for an error
		err  string
	}{
		{spec: "file:/srv/replica/app.log", want: "file:/srv/replica/app.log"},
		{spec: "exec:load-batch --fast", want: "exec:load-batch --fast"},
		{spec: "exec:sh -c 'a:b'", want: "exec:sh -c 'a:b'"},
		{spec: "stdout", want: "stdout"},
		{spec: "file:", err: "needs a path"},
		{spec: "file", err: "needs a path"},
		{spec: "exec:", err: "needs a command"},
		{spec: "exec:   ", err: "needs a command"},
		{spec: "stdout:x", err: "takes no argument"},
		{spec: "bogus:x", err: "unknown applier"},
		{spec: "", err: "unknown applier"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			a, err := apply.Parse(tc.spec, &stdout)
			if tc.err != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %v, want an error", tc.spec, a)
				}
				if !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.spec)) {
					t.Fatalf("Parse(%q): %q, want it to quote the spec and say %q", tc.spec, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.spec, err)
			}
			if got := a.String(); got != tc.want {
				t.Fatalf("Parse(%q).String() = %q, want %q", tc.spec, got, tc.want)
			}
		})
	}
}
