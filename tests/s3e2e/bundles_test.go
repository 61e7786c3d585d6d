package s3e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/store/catalog"
)

// TestShipBundlesS3 runs 20 streams through one ship with bundles on into
// versitygw: the bucket holds bundles under PREFIX/_bundles/<writer>/ and
// a bundle marker per stream, and each stream's own segments and parts
// (every part opened against its bundle's index) hold exactly its file's
// lines, once each, in one chain.
func TestShipBundlesS3(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const streams = 20
	logs, spool := filepath.Join(h.tmp, "logs"), filepath.Join(h.tmp, "spool")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := h.writeConfig("ship.toml", fmt.Sprintf(`store = "s3://%s/site"
[ship]
spool = %q
max_age = "2s"
bundle_interval = "300ms"
[[streams]]
name = "{base}"
source = "tail:%s"
scan_interval = "100ms"
`, h.bucket, spool, filepath.Join(logs, "*.log")))
	want := map[string][]byte{}
	write := func(from, n int) {
		for i := range streams {
			name := fmt.Sprintf("s-%02d", i)
			data := numbered(from, n)
			f, err := os.OpenFile(filepath.Join(logs, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			f.Close()
			want[name] = append(want[name], data...)
		}
	}
	write(1, 50)
	p := h.start(nil, nil, "ship", "--config", cfg)
	for k := range 4 {
		time.Sleep(400 * time.Millisecond)
		write(51+k*30, 30)
	}
	var bundles map[string]*batch.Bundle
	ferrytest.Eventually(t, 60*time.Second, "every stream's lines in the bucket", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("ship exited:\n%s", p)
		}
		bundles = map[string]*batch.Bundle{}
		for _, key := range bundleKeys(h) {
			data := h.object(key)
			b, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			bundles[key] = b
		}
		for name, w := range want {
			got, err := s3StreamData(h, name, bundles)
			if err != nil {
				return false, name + ": " + err.Error()
			}
			if !bytes.HasPrefix(w, got) {
				t.Fatalf("%s: the bucket's lines are not a prefix of the file's", name)
			}
			if len(got) != len(w) {
				return false, fmt.Sprintf("%s: %d of %d bytes", name, len(got), len(w))
			}
		}
		return true, ""
	})
	if len(bundles) == 0 {
		t.Fatal("no bundle in the bucket")
	}
	for name := range want {
		if ms := h.objects("site/" + catalog.BundledDir(name)); len(ms) != 1 {
			t.Errorf("stream %s: bundle markers %v, want one", name, ms)
		}
	}
	t.Logf("%d bundles for %d streams", len(bundles), streams)
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("ship exit %d on SIGTERM, want 0:\n%s", code, p)
	}
}

// s3StreamData is stream's records under site/: its own segments and its
// parts, merged by seq and checked as one chain from seq 1.
func s3StreamData(h *harness, stream string, bundles map[string]*batch.Bundle) ([]byte, error) {
	type seg struct {
		meta batch.Meta
		hash string
		data []byte
	}
	var segs []seg
	add := func(name string, raw []byte) error {
		s, recs, err := batch.Decode(raw, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		var b []byte
		for _, r := range recs.All() {
			b = append(b, r.Data...)
		}
		segs = append(segs, seg{meta: s.Meta, hash: s.Hash, data: b})
		return nil
	}
	dir := "site/" + stream + "/"
	for _, key := range h.objects(dir) {
		if _, _, _, ok := batch.ParseSegmentName(strings.TrimPrefix(key, dir)); !ok {
			continue // claims/, bundled/, generations/
		}
		if err := add(key, h.object(key)); err != nil {
			return nil, err
		}
	}
	for key, b := range bundles {
		i, ok := b.Find(stream)
		if !ok {
			continue
		}
		_, raw, err := b.OpenPart(i, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if err := add(key, raw); err != nil {
			return nil, err
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].meta.FirstSeq < segs[j].meta.FirstSeq })
	var out []byte
	next, prev := uint64(1), batch.ZeroHash
	for _, s := range segs {
		if s.meta.FirstSeq != next || s.meta.PrevSHA256 != prev {
			return nil, fmt.Errorf("segment %s starts at %d after %d (gap, overlap or broken chain)", s.meta.Name(), s.meta.FirstSeq, next-1)
		}
		out = append(out, s.data...)
		next, prev = s.meta.LastSeq+1, s.hash
	}
	return out, nil
}

// bundleKeys lists every bundle under site/_bundles/ (every writer).
func bundleKeys(h *harness) []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	for o := range h.srv.Client(h.t).ListObjects(ctx, h.bucket, minio.ListObjectsOptions{Prefix: "site/" + catalog.BundlesDir, Recursive: true}) {
		if o.Err != nil {
			h.t.Fatalf("list: %v", o.Err)
		}
		if _, _, ok := catalog.ParseBundleKey(strings.TrimPrefix(o.Key, "site/")); !ok {
			h.t.Fatalf("%s under _bundles/ is not a bundle", o.Key)
		}
		keys = append(keys, o.Key)
	}
	return keys
}
