package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// encryptedConfig writes a config with [encryption] recipients k and
// identity_file k.file, as a site that both ships and reads would have.
func encryptedConfig(t *testing.T, dir string, k ageKey) string {
	t.Helper()
	cfg := filepath.Join(dir, "enc.toml")
	body := fmt.Sprintf("[encryption]\nrecipients = [%q]\nidentity_file = %q\n", k.public, k.file)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// fetch, restore and drill read an encrypted stream with the identity
// and refuse it without one, naming the segment and its key.
func TestEncryptedFetchRestoreDrill(t *testing.T) {
	t.Parallel()
	s := newStream(t, "encpg")
	k := newAgeKey(t, t.TempDir(), "k.txt")
	cfg := encryptedConfig(t, s.dir, k)

	// push/fetch: a WAL file through an encrypted stream.
	wal := filepath.Join(s.dir, "pg_wal")
	name := "000000010000000000000001"
	data := writeRandomFile(t, wal, name, 300<<10, 7)
	mustFerry(t, nil, s.pushArgs("--config", cfg, filepath.Join(wal, name))...)
	wantEncrypted(t, s.store, s.name, data[1000:1064], k.fp)
	out := filepath.Join(s.dir, "restored-wal")
	mustFerry(t, nil, s.fetchArgs("--config", cfg, name, out)...)
	wantFileContent(t, out, data)
	failFerry(t, nil, []string{k.fp, "identity"}, s.fetchArgs(name, filepath.Join(s.dir, "nokey"))...)

	// restore and drill of a line stream.
	l := newStream(t, "enclog")
	input := logLines(51, 1, 5000)
	l.ship(input, "--config", cfg, "--max-bytes", "64KiB")
	restored := filepath.Join(l.dir, "restored.log")
	mustFerry(t, nil, "restore", "--config", cfg, "--store", l.store, "--stream", l.name,
		"--state", filepath.Join(l.dir, "restore-state"), "--apply", "file:"+restored)
	wantFileContent(t, restored, input)
	first := l.segments()[0]
	failFerry(t, nil, []string{first, k.fp}, "restore", "--store", l.store, "--stream", l.name,
		"--state", filepath.Join(l.dir, "nokey-state"), "--apply", "file:"+filepath.Join(l.dir, "nokey.log"))

	d := mustFerry(t, nil, "drill", "--config", cfg, "--store", l.store, "--stream", l.name, "--scratch", t.TempDir())
	if !strings.Contains(d.Stdout, ": OK") || !strings.Contains(d.Stdout, fmt.Sprintf("%d records", len(lines(input)))) {
		t.Fatalf("drill with the identity:\n%s", d)
	}
	r := ferry(t, nil, "drill", "--store", l.store, "--stream", l.name, "--scratch", t.TempDir())
	if r.Code == 0 || !strings.Contains(r.Output(), k.fp) {
		t.Fatalf("drill without an identity: want a failure naming key %s:\n%s", k.fp, r)
	}
}

// rejoin reads the old primary's divergent segments, which are encrypted,
// with the identity of its config.
func TestEncryptedRejoin(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	store := filepath.Join(base, "store")
	a, b := newSite(t, base, "a"), newSite(t, base, "b")
	k := newAgeKey(t, base, "k.txt")
	cfg := encryptedConfig(t, base, k)
	common := []string{"--store", store, "--stream", "app", "--config", cfg}

	first, more := numberedLines("a", 1, 300), numberedLines("a", 301, 420)
	mustFerry(t, bytes.NewReader(first), append([]string{"ship", "--spool", a.spool, "--max-records", "50"}, common...)...)
	mustFerry(t, nil, append([]string{"receive", "--once", "--id", "b", "--state", b.state, "--apply", "file:" + b.log}, common...)...)
	// The primary ships on, past what the secondary applied, then dies.
	mustFerry(t, bytes.NewReader(more), append([]string{"ship", "--spool", a.spool, "--max-records", "50"}, common...)...)
	if err := os.WriteFile(a.log, append(bytes.Clone(first), more...), 0o644); err != nil {
		t.Fatal(err)
	}
	mustFerry(t, nil, append([]string{"promote", "--id", "b", "--state", b.state, "--site", "b", "--spool", b.spool}, common...)...)

	report := filepath.Join(a.dir, "divergence.ndjson")
	mustFerry(t, nil, append([]string{"rejoin", "--spool", a.spool, "--state", a.state, "--apply", "file:" + a.log, "--report", report}, common...)...)
	sum := ferrytest.ReadDivergenceReport(t, report)
	if sum.ForkSeq != 300 || sum.Records != 120 || len(sum.Lines) != 120 || sum.Lines[0].Data != "a000301\n" {
		t.Fatalf("report %+v, first record %+v: want the 120 records past seq 300", sum, sum.Lines[0])
	}
	if got := readFile(t, a.log); !bytes.Equal(got, first) {
		t.Fatalf("old primary's file after rejoin: %s", describeDiff(first, got))
	}
}

// ferry status shows whether a shipper encrypts and for which keys, and
// how a receiver decrypts; never a secret key.
func TestEncryptedStatus(t *testing.T) {
	t.Parallel()
	s := newStream(t, "encstatus")
	k := newAgeKey(t, t.TempDir(), "k.txt")
	cfg := encryptedConfig(t, s.dir, k)
	s.ship(logLines(61, 1, 200), "--config", cfg)
	st := mustFerry(t, nil, "status", "--spool", s.spool)
	if !strings.Contains(st.Stdout, "encrypt  yes: age for key "+k.fp) {
		t.Fatalf("status of an encrypting shipper:\n%s", st)
	}
	var js struct {
		Encryption struct {
			Encrypting bool     `json:"encrypting"`
			Recipients []string `json:"recipients"`
		} `json:"encryption"`
	}
	sj := mustFerry(t, nil, "status", "--spool", s.spool, "--json")
	if err := json.Unmarshal([]byte(sj.Stdout), &js); err != nil || !js.Encryption.Encrypting || len(js.Encryption.Recipients) != 1 || js.Encryption.Recipients[0] != k.fp {
		t.Fatalf("status --json of an encrypting shipper (%v):\n%s", err, sj)
	}
	plain := newStream(t, "plainstatus")
	plain.ship(logLines(62, 1, 10))
	if st := mustFerry(t, nil, "status", "--spool", plain.spool); !strings.Contains(st.Stdout, "encrypt  no") {
		t.Fatalf("status of a plaintext shipper:\n%s", st)
	}

	s.receiveOnce("--config", cfg)
	rs := mustFerry(t, nil, "status", "--state", s.state)
	if !strings.Contains(rs.Stdout, "decrypts with key "+k.fp+" ("+k.file+")") || !strings.Contains(rs.Stdout, "plaintext segments accepted") {
		t.Fatalf("status of a decrypting receiver:\n%s", rs)
	}
	plain.receiveOnce()
	if rs := mustFerry(t, nil, "status", "--state", plain.state); !strings.Contains(rs.Stdout, "no identity") {
		t.Fatalf("status of a receiver without identity:\n%s", rs)
	}
	for _, out := range []string{st.Output(), sj.Output(), rs.Output()} {
		if strings.Contains(out, "AGE-SECRET-KEY") {
			t.Fatalf("status printed a secret key:\n%s", out)
		}
	}
}
