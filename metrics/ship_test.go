package metrics

import (
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store/dir"
)

func newShipper(t *testing.T, stream string) *shipper.Shipper {
	t.Helper()
	root := t.TempDir()
	st, err := dir.New(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := shipper.New(t.Context(), shipper.Config{
		Spool:   spool.Config{Dir: filepath.Join(root, "spool"), Stream: stream, Fsync: spool.FsyncOff},
		Targets: []shipper.Target{{Name: "store", Store: st}},
		Lease:   shipper.LeaseConfig{TTL: -1},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	return sh
}

// A multi-stream ship watches each stream's shipper; one that ended is
// unwatched: its series (its hooks' too) leave /metrics and its health
// check is no longer run, while the other stream's stay.
func TestUnwatchShipper(t *testing.T) {
	r := New(Build{})
	for _, s := range []string{"a", "b"} {
		r.RetryHook(s)
		r.SendHook(s)("store", 1, time.Millisecond)
	}
	unwatchA := r.WatchShipper(newShipper(t, "a"), "a", Health{})
	r.WatchShipper(newShipper(t, "b"), "b", Health{})
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	body := get(t, srv.URL+"/metrics")
	for _, s := range []string{`ferry_ship_last_seq{stream="a"}`, `ferry_ship_last_seq{stream="b"}`, `ferry_retries_total{reason="timeout",stream="a"}`,
		`ferry_ship_send_seconds_count{stream="a",target="store"}`} {
		if !strings.Contains(body, s) {
			t.Fatalf("/metrics lacks %s:\n%s", s, body)
		}
	}
	if len(r.health) != 2 {
		t.Fatalf("%d health checks for two shippers", len(r.health))
	}
	unwatchA()
	body = get(t, srv.URL+"/metrics")
	if strings.Contains(body, `stream="a"`) || !strings.Contains(body, `ferry_ship_last_seq{stream="b"}`) {
		t.Fatalf("after unwatching stream a, /metrics:\n%s", body)
	}
	if len(r.health) != 1 {
		t.Fatalf("%d health checks after unwatching one of two shippers", len(r.health))
	}
}
