package s3e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/store/catalog"
)

// TestShipBundlesReceivedS3 joins the two sides of bundles on versitygw
// with the built binary: 24 streams shipped with bundles on, a
// many-stream receiver applying them as they come, the shipper and then
// the receiver killed with -9 on the way; every replica ends exact.
//
// It then measures what the receiver reads of the bundles put while it
// runs settled: the shipper talks to the server directly and the receiver
// through the fault proxy, so every GET of a key under _bundles/ the proxy
// sees is the receiver's. Read once by the many-stream receiver, a bundle
// costs one GET (read whole) and each stream applies its part from the
// receiver's offer; a stream that lists the store itself instead reads
// the bundle's index and its part, two GETs more. So the GETs of the new
// bundles must stay near one per bundle; the bound allows a few streams
// to fall back now and then (a busy machine), not most streams most of
// the time.
func TestShipBundlesReceivedS3(t *testing.T) {
	h := newHarness(t, withProxy)
	const streams = 24
	logs, spool := filepath.Join(h.tmp, "logs"), filepath.Join(h.tmp, "spool")
	replicas, state := filepath.Join(h.tmp, "replicas"), filepath.Join(h.tmp, "state")
	for _, d := range []string{logs, replicas} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := h.writeConfig("ship.toml", fmt.Sprintf(`store = "s3://%s/site"
[ship]
spool = %q
max_age = "2s"
lease_ttl = "3s"
bundle_interval = "300ms"
[[streams]]
name = "{base}"
source = "tail:%s"
scan_interval = "100ms"
`, h.bucket, spool, filepath.Join(logs, "*.log")))
	want := map[string][]byte{}
	next := 1
	write := func(n int) {
		for i := range streams {
			name := fmt.Sprintf("s-%02d", i)
			data := numbered(next, n)
			f, err := os.OpenFile(filepath.Join(logs, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			want[name] = append(want[name], data...)
		}
		next += n
	}
	shipEnv := h.env("AWS_ENDPOINT_URL_S3=" + h.srv.Endpoint) // not through the proxy
	ship := func() *ferrytest.Process { return h.start(shipEnv, nil, "ship", "--config", cfg) }
	recv := func() *ferrytest.Process {
		return h.start(nil, nil, "receive", "--store", "s3://"+h.bucket+"/site", "--stream", "s-*", "--state", state,
			"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--poll-min", "100ms", "--poll-max", "300ms")
	}
	write(20)
	sp := ship()
	ferrytest.Eventually(t, 60*time.Second, "a first bundle in the bucket", func() (bool, string) {
		if sp.Exited() {
			t.Fatalf("ship exited:\n%s", sp)
		}
		return len(bundleKeys(h)) > 0, "none yet"
	})
	rp := recv()
	var dead []*ferrytest.Process
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append(dead, sp, rp) {
				t.Logf("%s", ferrytest.Clip(p.String()))
			}
		}
	})
	alive := func() {
		for _, p := range []*ferrytest.Process{sp, rp} {
			if p.Exited() {
				t.Fatalf("exited with %d:\n%s", p.Code(), p)
			}
		}
	}
	exact := func(what string) {
		t.Helper()
		ferrytest.Eventually(t, 120*time.Second, what, func() (bool, string) {
			alive()
			for name, w := range want {
				got, _ := os.ReadFile(filepath.Join(replicas, name+".log"))
				if !bytes.HasPrefix(w, got) {
					t.Fatalf("replica of %s is not a prefix of its file (a line twice, lost or out of order): %s", name, describeDiff(w, got))
				}
				if len(got) != len(w) {
					return false, fmt.Sprintf("%s: %d of %d bytes", name, len(got), len(w))
				}
			}
			return true, ""
		})
	}
	for round := range 10 {
		write(15)
		time.Sleep(time.Duration(200+round*30) * time.Millisecond)
		switch round {
		case 3:
			sp.Kill9()
			dead = append(dead, sp)
			sp = ship()
		case 6:
			rp.Kill9()
			dead = append(dead, rp)
			rp = recv()
		}
	}
	exact("every replica exact after the kills")
	all := len(bundleKeys(h))
	t.Logf("%d bundles after the kills, every replica exact", all)

	// Settled: the bundles put from now on, and the receiver's GETs of them.
	time.Sleep(time.Second)
	before := map[string]bool{}
	for _, k := range bundleKeys(h) {
		before[k] = true
	}
	from := len(h.proxy.Requests())
	const rounds = 12
	for range rounds {
		write(10)
		time.Sleep(400 * time.Millisecond)
	}
	exact("every replica exact after the settled rounds")
	var fresh []string
	for _, k := range bundleKeys(h) {
		if !before[k] {
			fresh = append(fresh, k)
		}
	}
	if len(fresh) < 3 {
		t.Fatalf("%d bundles put in %d rounds of writes, want at least 3", len(fresh), rounds)
	}
	gets := map[string]int{}
	lists := 0
	for _, r := range h.proxy.Requests()[from:] {
		switch key := strings.TrimPrefix(r.Path, "/"+h.bucket+"/"); {
		case r.Kind == versitygw.Get && strings.HasPrefix(key, "site/"+catalog.BundlesDir):
			gets[key]++
		case r.Kind == versitygw.List:
			lists++
		}
	}
	total, most := 0, ""
	for _, k := range fresh {
		total += gets[k]
		if most == "" || gets[k] > gets[most] {
			most = k
		}
	}
	t.Logf("%d new bundles for %d streams while it ran settled: %d GETs of them (at most %d, of %s), %d LISTs",
		len(fresh), streams, total, gets[most], most, lists)
	// One GET a bundle; a stream falling back to its own listing for one
	// bundle costs two more. Allowed: a quarter of the streams doing so
	// for one bundle in four.
	if limit := len(fresh) + 2*streams/4*len(fresh)/4; total > limit {
		t.Errorf("%d GETs of %d new bundles (want at most %d, about one each): streams read the bundles themselves instead of taking the receiver's offers", total, len(fresh), limit)
	}
	if code := rp.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receive exit %d on SIGTERM:\n%s", code, rp)
	}
	if code := sp.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("ship exit %d on SIGTERM:\n%s", code, sp)
	}
}
