package s3e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/treetest"
)

// Two ferry sync sites of a directory tree sharing one S3 bucket: each
// site's changes (creates, a rewrite of the other's file, a delete) reach
// the other, the trees end identical, and each site's stream in the
// bucket holds segments of its own.
func TestSyncDirOverS3(t *testing.T) {
	h := newHarness(t)
	base := t.TempDir()
	type site struct {
		id, tree, conf string
		proc           *ferrytest.Process
	}
	var sites []*site
	for _, id := range []string{"a", "b"} {
		s := &site{id: id, tree: filepath.Join(base, id, "tree")}
		if err := os.MkdirAll(s.tree, 0o755); err != nil {
			t.Fatal(err)
		}
		peer := map[string]string{"a": "b", "b": "a"}[id]
		s.conf = h.writeConfig("sync-"+id+".toml", fmt.Sprintf(`store = "s3://%s/sync"
[site]
id = %q
[sync]
data = "dir:%s"
stream = "mail"
spool = %q
state = %q
[[sync.peers]]
id = %q
[ship]
max_age = "100ms"
[receive]
poll_min = "50ms"
poll_max = "200ms"
`, h.bucket, id, s.tree, filepath.Join(base, id, "spool"), filepath.Join(base, id, "state"), peer))
		sites = append(sites, s)
	}
	a, b := sites[0], sites[1]
	put := func(s *site, p, data string) {
		t.Helper()
		full := filepath.Join(s.tree, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put(a, "box/from-a", "a's first\n")
	put(b, "box/from-b", "b's first\n")
	put(b, "box/b-gone", "b deletes this\n")
	for _, s := range sites {
		s.proc = h.start(nil, nil, "sync", "--config", s.conf)
	}
	// The sites change their trees while the test reads them (a file
	// listed may be gone by its lstat), so a failed read is retried.
	read := func(s *site) (treetest.Tree, error) {
		return treetest.Walk(s.tree, treetest.Options{Mode: 0o7777, Mtime: time.Nanosecond, NoRoot: true, Skip: func(rel string, _ fs.DirEntry) bool { return strings.HasPrefix(filepath.Base(rel), ".ferry-") }})
	}
	identical := func(what string) treetest.Tree {
		t.Helper()
		var last treetest.Tree
		ferrytest.Eventually(t, 60*time.Second, what, func() (bool, string) {
			ta, err := read(a)
			if err != nil {
				return false, err.Error()
			}
			tb, err := read(b)
			if err != nil {
				return false, err.Error()
			}
			last = ta
			d := treetest.Diff("a", ta, "b", tb)
			return d == "", d
		})
		return last
	}
	tr := identical("both sites' first files on both")
	if len(tr) < 4 {
		t.Fatalf("tree after the first exchange: %v", tr)
	}
	put(a, "box/from-b", "a rewrites b's file\n")
	if err := os.Remove(filepath.Join(b.tree, "box/b-gone")); err != nil {
		t.Fatal(err)
	}
	put(b, "box/new-b", "b's second\n")
	identical("the second round on both")
	for p, want := range map[string]string{"box/from-b": "a rewrites b's file\n", "box/new-b": "b's second\n"} {
		if got, err := os.ReadFile(filepath.Join(a.tree, p)); string(got) != want {
			t.Errorf("%s on a: %q (%v); want %q", p, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(a.tree, "box/b-gone")); !os.IsNotExist(err) {
		t.Errorf("box/b-gone, deleted on b, is still on a (%v)", err)
	}
	for _, s := range sites {
		if n := len(h.objects("sync/mail@" + s.id + "/")); n == 0 {
			t.Errorf("no objects under sync/mail@%s/ in the bucket", s.id)
		}
		if code := s.proc.Terminate(20 * time.Second); code != 0 {
			t.Fatalf("site %s exited %d:\n%s", s.id, code, s.proc)
		}
	}
}
