package s3e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/store"
)

// putter is a store that only puts, straight into the bucket under
// prefix: what bundletest.Writer needs to fill it as a bundle-writing
// shipper would.
type putter struct {
	client *minio.Client
	bucket string
	prefix string
}

func (p *putter) Put(ctx context.Context, name string, data []byte) error {
	_, err := p.client.PutObject(ctx, p.bucket, p.prefix+"/"+name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	return err
}
func (p *putter) Get(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.New("putter: Get")
}
func (p *putter) List(context.Context, string, string, func(store.Object) error) error {
	return errors.New("putter: List")
}
func (p *putter) Delete(context.Context, string) error { return errors.New("putter: Delete") }
func (p *putter) String() string                       { return "putter" }

// Streams whose segments are bundle parts, read from versitygw: a
// single-stream receive (suffix-range index reads, ranged part reads),
// ls and verify, then a many-stream receive that reads each new bundle
// once while it runs. Every replica ends exact.
func TestBundledReadS3(t *testing.T) {
	h := newHarness(t, withProxy)
	const prefix = "bundled"
	w := bundletest.NewWriter(t, &putter{client: h.srv.Client(t), bucket: h.bucket, prefix: prefix}, "0000000000000a11")
	var streams []string
	for i := range 8 {
		streams = append(streams, fmt.Sprintf("s-%d", i))
	}
	w.Bundle(t, streams, 30)
	w.Alone(t, "s-1", 4)
	w.Bundle(t, streams[1:], 20)
	url := "s3://" + h.bucket + "/" + prefix

	// One stream.
	s := h.newStream(prefix, "s-1")
	s.receiveOnce()
	s.wantReplica(bundletest.Want("s-1", 1, w.Last("s-1")), "after receive --once")
	r := h.ferry(nil, "verify", "--store", url, "--stream", "s-1")
	if !strings.Contains(r.Stdout, "3 segments") {
		t.Errorf("verify of s-1 does not count 3 segments:\n%s", r)
	}

	// Many streams, bundles arriving while it runs.
	root := t.TempDir()
	p := h.start(nil, nil, "receive", "--store", url, "--stream", "s-*", "--state", filepath.Join(root, "state"),
		"--apply", "file:"+filepath.Join(root, "{stream}.log"), "--poll-min", "100ms", "--poll-max", "300ms")
	exact := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(90 * time.Second); ; {
			missing := ""
			for _, s := range streams {
				got, _ := os.ReadFile(filepath.Join(root, s+".log"))
				if !bytes.Equal(got, bundletest.Want(s, 1, w.Last(s))) {
					missing = s
					break
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) || p.Exited() {
				t.Fatalf("%s: %s not exact:\n%s", what, missing, p.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	exact("the bundles stored before the start")
	time.Sleep(time.Second) // the first passes' own listings
	before := h.proxy.Counts()
	const rounds = 5
	for range rounds {
		w.Bundle(t, streams, 10)
		time.Sleep(400 * time.Millisecond)
	}
	exact("the bundles stored while it runs")
	after := h.proxy.Counts()
	gets := after[versitygw.Get] - before[versitygw.Get]
	t.Logf("%d bundles of %d parts while running: %d GETs, %d LISTs", rounds, len(streams), gets, after[versitygw.List]-before[versitygw.List])
	if gets != rounds {
		t.Errorf("%d new bundles cost %d GETs, want one each", rounds, gets)
	}
	if code := p.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receive exited %d:\n%s", code, p.Stderr())
	}
}
