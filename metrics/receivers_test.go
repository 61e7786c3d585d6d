package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// Two receivers in one process (ferry sync: one per peer) are both
// exported, told apart by their stream; a second registration used to
// panic on the duplicate collector.
func TestTwoReceiversInOneRegistry(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 2, 3)...)
	r := New(Build{})
	for _, stream := range []string{"mail@b", "mail@c"} {
		cfg := receivertest.Config(t, st, &apply.Writer{W: io.Discard, Name: "discard"})
		if stream == "mail@b" {
			cfg.Stream = receivertest.Stream // the one holding segments
		}
		rc := receivertest.Open(t, cfg)
		if stream == "mail@b" {
			if err := receivertest.Run(t, rc); err != nil {
				t.Fatal(err)
			}
		}
		r.WatchReceiver(rc, stream, func() error { return nil }, Health{})
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	for _, want := range []string{
		`ferry_receive_records_applied_total{stream="mail@b"} 6`,
		`ferry_receive_applied_seq{stream="mail@b"} 6`,
		`ferry_receive_records_applied_total{stream="mail@c"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}
