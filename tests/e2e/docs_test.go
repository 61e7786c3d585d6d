package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The documents a new user reads: the README and docs/*.md. Their links,
// the flags of the ferry commands they show and the README's quick start
// are checked against the repository and the built binary.
func docFiles(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md (%v)", err)
	}
	return append([]string{"../../README.md"}, docs...)
}

// mdDoc is a markdown file split into its prose (code fences blanked out,
// line numbers kept) and its fenced code blocks.
type mdDoc struct {
	prose  []string // one entry per line; "" for lines inside a fence
	blocks []mdBlock
}

type mdBlock struct {
	lang  string
	line  int // the line of the opening fence, 1-based
	lines []string
}

func readMarkdown(t *testing.T, path string) mdDoc {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d mdDoc
	var cur *mdBlock
	for i, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			if cur == nil {
				cur = &mdBlock{lang: strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "```")), line: i + 1}
			} else {
				d.blocks = append(d.blocks, *cur)
				cur = nil
			}
			d.prose = append(d.prose, "")
			continue
		}
		if cur != nil {
			cur.lines = append(cur.lines, l)
			d.prose = append(d.prose, "")
			continue
		}
		d.prose = append(d.prose, l)
	}
	if cur != nil {
		t.Fatalf("%s:%d: code fence never closed", path, cur.line)
	}
	return d
}

// anchors are the GitHub anchors of a markdown file's headings: lower
// case, punctuation dropped, spaces to hyphens, "-1", "-2" for repeats.
func anchors(d mdDoc) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, l := range d.prose {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(l, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			out[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsLinks: every relative link in the README and docs/*.md names a
// file of the repository, and a #anchor one of its headings.
func TestDocsLinks(t *testing.T) {
	t.Parallel()
	parsed := map[string]mdDoc{}
	parse := func(path string) mdDoc {
		if d, ok := parsed[path]; ok {
			return d
		}
		parsed[path] = readMarkdown(t, path)
		return parsed[path]
	}
	links := 0
	for _, file := range docFiles(t) {
		d := parse(file)
		// A link may wrap: join the prose, keeping line numbers by offset.
		text := strings.Join(d.prose, "\n")
		for _, m := range mdLink.FindAllStringSubmatchIndex(text, -1) {
			target := text[m[2]:m[3]]
			line := strings.Count(text[:m[0]], "\n") + 1
			where := fmt.Sprintf("%s:%d", strings.TrimPrefix(file, "../../"), line)
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), path)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %q: no such file %s", where, target, strings.TrimPrefix(dest, "../../"))
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s: link %q: an anchor into a file that is not markdown", where, target)
				continue
			}
			if !anchors(parse(dest))[anchor] {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", where, target, strings.TrimPrefix(dest, "../../"), anchor)
			}
		}
	}
	t.Logf("%d relative links checked", links)
	if links < 20 {
		t.Errorf("found only %d relative links in the README and docs/*.md: is the link parser broken?", links)
	}
}

// renamedFlags still work (with a notice) but are hidden from --help; the
// docs name them as the old spelling (docs/COMMANDS.md, "Flags").
var renamedFlags = map[string][]string{
	"fetch":      {"from"},
	"switchover": {"from", "to"},
	"bench":      {"bench-spool"},
}

// notYetVerbs are verbs the docs name as not done yet (README, "Limits";
// docs/SECURITY.md). They must not exist: when one does, the docs saying
// it does not are stale.
var notYetVerbs = []string{}

var (
	helpFlag    = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)
	shownFlag   = regexp.MustCompile(`(?:^|[\s\[|(])--([a-z][a-z0-9-]*)`)
	ferryInline = regexp.MustCompile("`(ferry [^`]+)`")
)

// TestDocsFlags: every `ferry VERB ... --flag` the README and docs/*.md
// show, in a code block or inline, names a verb and flags that verb has.
func TestDocsFlags(t *testing.T) {
	t.Parallel()
	helps := map[string]map[string]bool{}
	flagsOf := func(verb []string) (map[string]bool, error) {
		key := strings.Join(verb, " ")
		if f, ok := helps[key]; ok {
			return f, nil
		}
		r := ferry(t, nil, append(slices.Clone(verb), "--help")...)
		if r.Code != 0 {
			return nil, fmt.Errorf("ferry %s --help: exit %d: %s", key, r.Code, r.Stderr)
		}
		f := map[string]bool{}
		for _, m := range helpFlag.FindAllStringSubmatch(r.Stdout, -1) {
			f[m[1]] = true
		}
		for _, old := range renamedFlags[verb[0]] {
			f[old] = true
		}
		helps[key] = f
		return f, nil
	}
	checked := 0
	check := func(where, cmd string) {
		words := strings.Fields(cmd)
		if len(words) < 2 || words[0] != "ferry" || strings.HasPrefix(words[1], "-") {
			return
		}
		verb := words[1:2]
		if slices.Contains(notYetVerbs, verb[0]) {
			if r := ferry(t, nil, verb[0], "--help"); r.Code != 2 {
				t.Errorf("%s: the docs say `ferry %s` does not exist yet, but ferry %s --help exits %d: update the docs", where, verb[0], verb[0], r.Code)
			}
			return
		}
		switch {
		case verb[0] == "config" && len(words) > 2 && words[2] == "check":
			verb = []string{"config", "check"}
		case !regexp.MustCompile(`^[a-z]+$`).MatchString(verb[0]) || verb[0] == "VERB" || verb[0] == "COMMAND":
			return
		}
		// Only the command itself: not a comment after it.
		if i := strings.Index(cmd, " #"); i >= 0 {
			cmd = cmd[:i]
		}
		flags, err := flagsOf(verb)
		if err != nil {
			t.Errorf("%s: %s: %v", where, cmd, err)
			return
		}
		checked++
		for _, m := range shownFlag.FindAllStringSubmatch(cmd, -1) {
			if !flags[m[1]] {
				t.Errorf("%s: `%s`: ferry %s has no flag --%s", where, strings.TrimSpace(cmd), strings.Join(verb, " "), m[1])
			}
		}
	}
	for _, file := range docFiles(t) {
		d := readMarkdown(t, file)
		name := strings.TrimPrefix(file, "../../")
		for _, b := range d.blocks {
			// Commands are in sh and ini blocks; a bare block is output
			// or a table (README's list of verbs, FORMAT.md's hex dump).
			if b.lang != "sh" && b.lang != "ini" {
				continue
			}
			for i, l := range b.lines {
				// A command continued with a backslash is one command.
				for strings.HasSuffix(l, `\`) && i+1 < len(b.lines) {
					i++
					l = strings.TrimSuffix(l, `\`) + " " + b.lines[i]
				}
				// ferry may follow a prompt, a pipe or a quote (archive_command = 'ferry push ...').
				if j := strings.Index(l, "ferry "); j >= 0 && (j == 0 || strings.ContainsAny(l[j-1:j], " '|&;(`$")) {
					check(fmt.Sprintf("%s:%d", name, b.line+1+i), l[j:])
				}
			}
		}
		text := strings.Join(d.prose, "\n")
		for _, m := range ferryInline.FindAllStringSubmatchIndex(text, -1) {
			line := strings.Count(text[:m[0]], "\n") + 1
			check(fmt.Sprintf("%s:%d", name, line), strings.ReplaceAll(text[m[2]:m[3]], "\n", " "))
		}
	}
	t.Logf("%d ferry commands checked", checked)
	if checked < 50 {
		t.Errorf("checked only %d ferry commands in the README and docs/*.md: is the parser broken?", checked)
	}
}

// TestReadmeQuickStart runs the README's quick start as written: its three
// sh blocks, terminal 1's two in one shell and terminal 2's receiver in the
// background, with the built ferry on the PATH, in a temp dir instead of
// /tmp/ferry-qs and waiting for the receiver instead of a fixed time. What it says
// it shows must be there.
func TestReadmeQuickStart(t *testing.T) {
	t.Parallel()
	d := readMarkdown(t, "../../README.md")
	start := slices.IndexFunc(d.prose, func(l string) bool { return strings.HasPrefix(l, "## Quick start") })
	if start < 0 {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	var blocks []string
	for _, b := range d.blocks {
		if b.line > start && b.lang == "sh" && len(blocks) < 3 {
			blocks = append(blocks, strings.Join(b.lines, "\n"))
		}
	}
	if len(blocks) != 3 {
		t.Fatalf("README quick start: want 3 sh blocks (terminal 1, terminal 2, terminal 1), got %d", len(blocks))
	}
	dir := t.TempDir()
	qs := filepath.Join(dir, "ferry-qs")
	for i := range blocks {
		if !strings.Contains(blocks[i], "/tmp/ferry-qs") && i < 2 {
			t.Fatalf("README quick start block %d does not cd to /tmp/ferry-qs:\n%s", i+1, blocks[i])
		}
		blocks[i] = strings.ReplaceAll(blocks[i], "/tmp/ferry-qs", qs)
	}
	if !strings.Contains(blocks[2], "sleep 8") {
		t.Fatalf("README quick start: terminal 1's second block no longer waits with sleep 8:\n%s", blocks[2])
	}
	// Instead of a fixed wait, which a loaded machine may outlast, wait up
	// to a minute for what it waits for: the receiver at seq 4.
	blocks[2] = strings.Replace(blocks[2], "sleep 8",
		`end=$((SECONDS + 60)); while [ $SECONDS -lt $end ]; do ferry status --state state 2>/dev/null | grep -q "applied   seq 4" && cmp -s app.log replica.log && break; sleep 0.2; done`, 1)
	// Terminal 2 runs in the background, its ferry exec'd so that it can
	// be stopped as Ctrl-C would: SIGINT, then exit 0.
	recv := strings.Replace(blocks[1], "\nferry receive", "\nexec ferry receive", 1)
	if recv == blocks[1] {
		t.Fatalf("README quick start: terminal 2 does not run ferry receive:\n%s", blocks[1])
	}
	script := blocks[0] + "\n( " + recv + "\n) >" + filepath.Join(dir, "t2.out") + " 2>&1 &\nRECV=$!\nsleep 1\n" +
		blocks[2] + "\nwait %1; echo \"ship exit $?\"\nkill -INT $RECV; wait $RECV; echo \"receive exit $?\"\n"
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(ferryBin)+":"+os.Getenv("PATH"))
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the quick start did not finish in 2 minutes:\n%s", out)
	}
	t2, _ := os.ReadFile(filepath.Join(dir, "t2.out"))
	if err != nil {
		t.Fatalf("the quick start failed: %v\n%s\nterminal 2:\n%s", err, out, t2)
	}
	s := string(out)
	for _, want := range []string{
		"order=1 amount=10\norder=2 amount=20\norder=3 amount=30\norder=4 amount=40\n", // cat replica.log
		"shipper  stream app (generation 1)  running",                                  // status --spool
		"last seq 4",
		"receiver  state state  running", // status --state
		"applied   seq 4",
		"history starts at seq 1", // ls
		"4 records, seq 1..4: checksums, sequence and hash chain ok", // verify
		"identical",
		"ship exit 0",
		"receive exit 0",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the quick start's output lacks %q:\n%s\nterminal 2:\n%s", want, s, t2)
		}
	}
}
