package s3e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// TestRoundTripThroughS3 ships 200k lines to s3://bucket/prefix with no
// config file (AWS_* environment only), receives them back, and checks
// that ls, verify and cat --from/--to read the same stream through s3://.
func TestRoundTripThroughS3(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("dr/site-a", "app")
	const total = 200_000
	input := numbered(1, total)

	// Debug logging, so the secret check at the end covers the most output.
	r := s.ship(input, "--max-bytes", "256KiB", "--log-level", "debug")
	names := s.segments()
	if msg := checkContiguous(names, total); msg != "" {
		t.Fatalf("segments in the bucket: %s\n%s", msg, r)
	}
	if len(names) < 10 {
		t.Fatalf("%d segments; the test wants at least 10 so ranges cross segment boundaries", len(names))
	}
	if want := fmt.Sprintf("in %d segments", len(names)); !strings.Contains(r.Stderr, want) {
		t.Errorf("ship summary does not say %q although the bucket holds %d segments:\n%s", want, len(names), r)
	}

	s.receiveOnce()
	s.wantReplica(input, "after receive --once from S3")

	t.Run("ls", func(t *testing.T) {
		ls := h.ferry(nil, "ls", "--store", s.url(), "--stream", s.name)
		want := fmt.Sprintf("%d segments, %d records", len(names), total)
		if !strings.Contains(ls.Stdout, want) {
			t.Errorf("ls does not say %q:\n%s", want, ls)
		}
		for _, n := range names {
			if !strings.Contains(ls.Stdout, n) {
				t.Errorf("ls does not list segment %s:\n%s", n, ls)
			}
		}
		lsj := h.ferry(nil, "ls", "--store", s.url(), "--stream", s.name, "--json")
		var got []string
		var records uint64
		dec := json.NewDecoder(strings.NewReader(lsj.Stdout))
		for dec.More() {
			var row struct {
				Segment  string `json:"segment"`
				FirstSeq uint64 `json:"first_seq"`
				LastSeq  uint64 `json:"last_seq"`
				Records  uint64 `json:"records"`
				Stream   string `json:"stream"`
			}
			if err := dec.Decode(&row); err != nil {
				t.Fatalf("ls --json: %v\n%s", err, lsj)
			}
			if row.Stream != s.name || row.Records != row.LastSeq-row.FirstSeq+1 ||
				row.Segment != batch.SegmentName(1, row.FirstSeq, row.LastSeq) {
				t.Errorf("ls --json row %+v is inconsistent", row)
			}
			got = append(got, row.Segment)
			records += row.Records
		}
		if !slices.Equal(got, names) || records != total {
			t.Errorf("ls --json: %d segments, %d records; the bucket holds %d segments of %d records",
				len(got), records, len(names), total)
		}
	})

	t.Run("verify", func(t *testing.T) {
		v := h.ferry(nil, "verify", "--store", s.url(), "--stream", s.name)
		want := fmt.Sprintf("%d segments, %d records, seq 1..%d: checksums, sequence and hash chain ok", len(names), total, total)
		if !strings.Contains(v.Stdout, want) {
			t.Errorf("verify does not say %q:\n%s", want, v)
		}
	})

	t.Run("cat", func(t *testing.T) {
		_, _, boundary, _ := batch.ParseSegmentName(names[3]) // last seq of the 4th segment
		for _, rg := range [][2]int{
			{1, 1},
			{7, 7},
			{int(boundary), int(boundary) + 1}, // across one boundary
			{12_345, 154_321},                  // across many
			{total - 9, total},
		} {
			c := h.ferry(nil, "cat", "--store", s.url(), "--stream", s.name,
				"--from", fmt.Sprint(rg[0]), "--to", fmt.Sprint(rg[1]))
			if want := numbered(rg[0], rg[1]-rg[0]+1); c.Stdout != string(want) {
				t.Errorf("cat --from %d --to %d: %s", rg[0], rg[1], describeDiff(want, []byte(c.Stdout)))
			}
		}
	})

	// The issue: --store s3://bucket/p must work with no config file. These
	// are the other ways an operator names a loopback endpoint.
	t.Run("endpoint-env-variants", func(t *testing.T) {
		port := h.srv.Endpoint[strings.LastIndex(h.srv.Endpoint, ":")+1:]
		for _, env := range [][]string{
			{"AWS_ENDPOINT_URL_S3=", "AWS_ENDPOINT_URL=" + h.srv.Endpoint},
			{"AWS_ENDPOINT_URL_S3=http://localhost:" + port},
			{"AWS_ENDPOINT_URL_S3=http://localhost:" + port, "AWS_REGION="},
		} {
			r := h.run(h.env(env...), nil, "ls", "--store", s.url(), "--stream", s.name)
			if want := fmt.Sprintf("%d segments, %d records", len(names), total); r.Code != 0 || !strings.Contains(r.Stdout, want) {
				t.Errorf("with %q: want exit 0 and %q:\n%s", env, want, r)
			}
		}
	})
}

// TestDirAndS3StoresAgree ships the same input through the directory store
// and through S3: the replicas are identical, and so are the segment names
// and every segment's records. (Segment bytes differ: records carry their
// ingest time and segments their seal time.)
func TestDirAndS3StoresAgree(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const total = 60_000
	input := numbered(1, total)
	// Size-only sealing, so both runs cut the same segments.
	flags := []string{"--max-bytes", "64KiB", "--max-age", "1h"}

	s3s := h.newStream("agree", "app")
	s3s.ship(input, flags...)
	s3s.receiveOnce()

	dir := t.TempDir()
	dirStore := filepath.Join(dir, "store")
	h.ferry(bytes.NewReader(input), append([]string{"ship", "--store", dirStore, "--stream", "app",
		"--spool", filepath.Join(dir, "spool")}, flags...)...)
	dirReplica := filepath.Join(dir, "replica.out")
	h.ferry(nil, "receive", "--store", dirStore, "--stream", "app", "--state", filepath.Join(dir, "state"),
		"--apply", "file:"+dirReplica, "--once")

	s3s.wantReplica(input, "through S3")
	got, err := os.ReadFile(dirReplica)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, input) {
		t.Fatalf("replica through the directory store: %s", describeDiff(input, got))
	}

	s3Names := s3s.segments()
	var dirNames []string
	ents, err := os.ReadDir(filepath.Join(dirStore, "app"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, _, _, ok := batch.ParseSegmentName(e.Name()); ok {
			dirNames = append(dirNames, e.Name())
		}
	}
	if !slices.Equal(s3Names, dirNames) {
		t.Fatalf("segment names differ:\nS3:  %v\ndir: %v", s3Names, dirNames)
	}
	if msg := checkContiguous(s3Names, total); msg != "" || len(s3Names) < 5 {
		t.Fatalf("%d segments: %s", len(s3Names), msg)
	}

	for _, name := range s3Names {
		fromS3 := h.object(s3s.dirKey() + name)
		fromDir, err := os.ReadFile(filepath.Join(dirStore, "app", name))
		if err != nil {
			t.Fatal(err)
		}
		if msg := sameSegmentContent(fromS3, fromDir); msg != "" {
			t.Errorf("segment %s: S3 and directory copies differ: %s", name, msg)
		}
	}
}

// sameSegmentContent compares two segments' metadata and records, leaving
// out what depends on the clock: times, the hashes and compressed sizes
// that cover them, and the uncompressed size (format 2 writes each record's
// time as a varint delta, whose length depends on the gap between records:
// CI saw 44,494 vs 44,493 bytes for the same 1,004 records).
func sameSegmentContent(a, b []byte) string {
	sa, ra, err := batch.Decode(a, 0)
	if err != nil {
		return "first: " + err.Error()
	}
	sb, rb, err := batch.Decode(b, 0)
	if err != nil {
		return "second: " + err.Error()
	}
	ma, mb := sa.Meta, sb.Meta
	type stable struct {
		Format                 int
		Stream                 string
		Generation             uint32
		FirstSeq, LastSeq      uint64
		Records                uint64
		Compression, Encrypted string
	}
	ka := stable{ma.Format, ma.Stream, ma.Generation, ma.FirstSeq, ma.LastSeq, ma.Records, ma.Compression, ma.Encryption}
	kb := stable{mb.Format, mb.Stream, mb.Generation, mb.FirstSeq, mb.LastSeq, mb.Records, mb.Compression, mb.Encryption}
	if ka != kb {
		return fmt.Sprintf("metadata %+v vs %+v", ka, kb)
	}
	if ra.Len() != rb.Len() {
		return fmt.Sprintf("%d records vs %d", ra.Len(), rb.Len())
	}
	for i := range ra.Len() {
		x, y := ra.At(i), rb.At(i)
		if x.Seq != y.Seq || x.Op != y.Op || !bytes.Equal(x.Key, y.Key) || !bytes.Equal(x.Data, y.Data) {
			return fmt.Sprintf("record %d: seq %d %q vs seq %d %q", i, x.Seq, x.Data, y.Seq, y.Data)
		}
	}
	return ""
}
