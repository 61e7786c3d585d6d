package s3

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/storetest"
)

// TestTreeConformance runs the ListTree suite, each store on its own
// prefix in one bucket.
func TestTreeConformance(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	var n atomic.Int64
	storetest.RunTree(t, func(t *testing.T) store.Store {
		return f.store(t, fmt.Sprintf("/tree/%d/", n.Add(1)))
	})
}

// Keys other tools leave under the prefix: a "directory" marker and a
// key ferry cannot name are not listed.
func TestListTreeForeignKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	s := f.store(t, "/foreign/")
	ctx := t.Context()
	if err := s.Put(ctx, "s/ok", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"foreign/s/d/", "foreign/s/d/e/", "foreign/s/back\\slash"} {
		if _, err := f.srv.Client(t).PutObject(ctx, f.bucket, key, bytes.NewReader(nil), 0, minio.PutObjectOptions{}); err != nil {
			t.Fatalf("put %q: %v", key, err)
		}
	}
	var got []string
	if err := s.ListTree(ctx, "", nil, func(o store.Object) error {
		got = append(got, o.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[s/ok]" {
		t.Fatalf("ListTree = %q, want [s/ok]", got)
	}
}

// TestRangeConformance runs the ranged-read suite against the real server.
func TestRangeConformance(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	var n atomic.Int64
	storetest.RunRange(t, func(t *testing.T) store.Store {
		return f.store(t, fmt.Sprintf("/range/%d/", n.Add(1)))
	})
}
