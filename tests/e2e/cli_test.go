package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// verbNames are the commands ferry --help lists.
func verbNames(t *testing.T) []string {
	t.Helper()
	r := mustFerry(t, nil, "--help")
	_, list, ok := strings.Cut(r.Stdout, "Commands:\n")
	if !ok {
		t.Fatalf("ferry --help lists no commands:\n%s", r.Stdout)
	}
	var names []string
	for _, line := range strings.Split(list, "\n") {
		if !strings.HasPrefix(line, "  ") {
			break
		}
		names = append(names, strings.Fields(line)[0])
	}
	if !slices.Contains(names, "ship") || !slices.Contains(names, "receive") {
		t.Fatalf("ferry --help lists %v", names)
	}
	return names
}

// ferry completion SHELL prints a script for bash, zsh and fish; the bash
// one parses (bash -n) and, sourced, completes verbs and flags through the
// binary (ferry __complete).
func TestCompletionScripts(t *testing.T) {
	dir := t.TempDir()
	for shell, want := range map[string]string{"bash": "__start_ferry", "zsh": "#compdef ferry", "fish": "complete -c ferry"} {
		r := mustFerry(t, nil, "completion", shell)
		if !strings.Contains(r.Stdout, want) || r.Stderr != "" {
			t.Errorf("ferry completion %s: no %q in %d bytes\nstderr:\n%s", shell, want, len(r.Stdout), r.Stderr)
		}
		path := filepath.Join(dir, "ferry."+shell)
		if err := os.WriteFile(path, []byte(r.Stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("bash", "-n", filepath.Join(dir, "ferry.bash")).CombinedOutput(); err != nil {
		t.Fatalf("bash -n on the bash completion: %v\n%s", err, out)
	}
	// COMP_WORDS as bash fills them for "ferry sh<TAB>" and "ferry ship
	// --st<TAB>". The script needs the bash-completion package, as in a
	// user's shell.
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("the bash-completion package is needed (Debian: apt-get install bash-completion; tests/run.sh installs it): %v", err)
	}
	complete := func(words ...string) []string {
		script := `source ` + bashCompletion + ` 2>/dev/null; source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
__start_ferry ferry 2>/dev/null; printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", append([]string{"-c", script, "bash", filepath.Join(dir, "ferry.bash")}, words...)...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(ferryBin)+":"+os.Getenv("PATH"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", words, err, stderr.String())
		}
		return strings.Fields(string(out))
	}
	if got := complete("ferry", "sh"); !slices.Equal(got, []string{"ship"}) {
		t.Errorf("ferry sh<TAB>: %q, want ship", got)
	}
	if got := complete("ferry", "ship", "--st"); !slices.Contains(got, "--store") || !slices.Contains(got, "--stream") || !slices.Contains(got, "--start-now") {
		t.Errorf("ferry ship --st<TAB>: %q, want --store, --stream and --start-now", got)
	}
	if got := complete("ferry", "bench", "--bench"); len(got) != 0 {
		t.Errorf("ferry bench --bench<TAB> offers the deprecated --bench-spool: %q", got)
	}
}

// ferry man --dir DIR writes ferry.1 and a page per verb, which groff
// renders without a warning.
func TestManPages(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Fatal("groff is needed to check the man pages (Debian: apt-get install groff-base; tests/run.sh installs it)")
	}
	dir := filepath.Join(t.TempDir(), "man1")
	mustFerry(t, nil, "man", "--dir", dir)
	pages := []string{"ferry.1"}
	for _, v := range verbNames(t) {
		if v != "help" {
			pages = append(pages, "ferry-"+v+".1")
		}
	}
	for _, page := range pages {
		path := filepath.Join(dir, page)
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-P-cbou", path)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("groff -man %s: %v\n%s", page, err, stderr.String())
			continue
		}
		if page == "ferry-prune.1" {
			// The page carries the verb's synopsis, flags and examples.
			text := stdout.String()
			for _, want := range []string{"ferry prune --store URL", "keep-for", "dry-run", "EXAMPLE"} {
				if !strings.Contains(strings.ReplaceAll(text, "\u2010", "-"), want) {
					t.Errorf("%s lacks %q:\n%s", page, want, text)
				}
			}
		}
	}
	r := failFerry(t, nil, []string{"--dir is required"}, "man")
	if r.Code != 2 {
		t.Errorf("ferry man without --dir: exit %d, want 2", r.Code)
	}
}
