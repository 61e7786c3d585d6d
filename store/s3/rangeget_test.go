package s3

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// A Content-Range the store cannot take at its word is refused, so that a
// server that ignored the Range header (or lies about the object) is
// never read past the caller's buffer.
func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		v                 string
		first, last, size int64
		ok                bool
	}{
		{"bytes 0-71/72", 0, 71, 72, true},
		{"bytes 100-199/1000", 100, 199, 1000, true},
		{"", 0, 0, 0, false},
		{"bytes 0-71/*", 0, 0, 0, false},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes 0-10/10", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"bytes 0-99999999999999999999/1", 0, 0, 0, false},
	} {
		first, last, size, ok := parseContentRange(tc.v)
		if ok != tc.ok || (ok && (first != tc.first || last != tc.last || size != tc.size)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v", tc.v, first, last, size, ok, tc.first, tc.last, tc.size, tc.ok)
		}
	}
}

// rangeLiar is a proxy in front of the server that rewrites the answers
// to ranged GETs with edit.
func rangeLiar(t *testing.T, f *fixture, edit func(*http.Response)) *Store {
	t.Helper()
	target, err := url.Parse(f.srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method == http.MethodGet && r.Request.Header.Get("Range") != "" {
			edit(r)
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return newStore(t, serverConfig(f.srv, srv.URL, f.bucket, "/liar/"))
}

// A server that ignores Range (200, no Content-Range) or claims a range
// larger than asked is refused with an error naming the object, before
// anything past the caller's buffer is read.
func TestGetRangeRefusesOtherRanges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	data := randomData(10_000, 3)
	for _, tc := range []struct {
		name string
		edit func(*http.Response)
	}{
		{"ignored", func(r *http.Response) { r.Header.Del("Content-Range"); r.StatusCode = http.StatusOK }},
		{"larger", func(r *http.Response) { r.Header.Set("Content-Range", "bytes 0-9999/10000") }},
		{"elsewhere", func(r *http.Response) {
			first, last, size, _ := parseContentRange(r.Header.Get("Content-Range"))
			r.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first+1, last+1, size))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := rangeLiar(t, f, tc.edit)
			key := "s/" + tc.name
			if err := s.Put(t.Context(), key, data); err != nil {
				t.Fatal(err)
			}
			err := s.GetRange(t.Context(), key, 100, make([]byte, 10))
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("GetRange through a server that answers %s: %v, want an error naming %s", tc.name, err, key)
			}
			if tc.name == "elsewhere" {
				return // a suffix range has no start to check
			}
			if _, _, err := s.GetSuffix(t.Context(), key, make([]byte, 10)); err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("GetSuffix through a server that answers %s: %v, want an error naming %s", tc.name, err, key)
			}
		})
	}
}
