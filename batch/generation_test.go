package batch

import (
	"strings"
	"testing"
	"time"
)

// forkHash is a stand-in for the hash of the segment a fork ends at.
var forkHash = strings.Repeat("ab", 32)

func TestGenerationRecord(t *testing.T) {
	g := Generation{Stream: "mail", Generation: 3, Parent: 2, ForkSeq: 0x2a, ForkHash: forkHash,
		Time: time.Date(2026, 3, 1, 4, 0, 0, 5e8, time.FixedZone("CET", 3600)), Site: "dr-b", Host: "db7", Reason: "promote"}
	if key := GenerationKey("mail", 3); key != "mail/generations/00000003.json" {
		t.Fatalf("key %q", key)
	}
	name := strings.TrimPrefix(GenerationKey("mail", 3), GenerationDir("mail"))
	data, err := MarshalGeneration(g)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"stream":"mail","generation":3,"parent":2,"fork_seq":42,"fork_hash":"` + forkHash +
		`","time":"2026-03-01T03:00:00.5Z","site":"dr-b","host":"db7","reason":"promote"}` + "\n"
	if string(data) != want {
		t.Fatalf("MarshalGeneration:\n got %s\nwant %s", data, want)
	}
	if again, _ := MarshalGeneration(g); string(again) != string(data) {
		t.Fatal("record content is not deterministic")
	}
	got, err := ParseGeneration(name, data)
	g.Version, g.Time = GenerationVersion, g.Time.UTC()
	if err != nil || got != g {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := ParseGeneration(name, []byte(strings.Replace(string(data), `"reason"`, `"new":[1],"reason"`, 1))); err != nil {
		t.Errorf("unknown field refused: %v", err)
	}

	// Fork 0: the new generation starts the stream again from seq 1.
	zero := Generation{Stream: "mail", Generation: 2, Parent: 1}
	data, err = MarshalGeneration(zero)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseGeneration("00000002.json", data); err != nil {
		t.Fatalf("fork 0: %v", err)
	}

	rec := func(edit string) string { // the record of generation 3 with one field replaced
		base := map[string]string{"version": "1", "stream": `"mail"`, "generation": "3", "parent": "2",
			"fork_seq": "42", "fork_hash": `"` + forkHash + `"`, "time": `"2026-03-01T03:00:00Z"`}
		k, v, _ := strings.Cut(edit, "=")
		if k != "" {
			base[k] = v
		}
		var b strings.Builder
		for _, k := range []string{"version", "stream", "generation", "parent", "fork_seq", "fork_hash", "time"} {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + k + `":` + base[k])
		}
		return "{" + b.String() + "}"
	}
	if _, err := ParseGeneration(name, []byte(rec(""))); err != nil {
		t.Fatalf("base record refused: %v", err)
	}
	for _, tc := range []struct{ name, data, want string }{
		{name, rec("version=2"), "has version 2; this ferry reads 1 (upgrade ferry)"},
		{name, rec("version=0"), "damaged: version 0"},
		{name, rec("generation=4"), "damaged: it says generation 4"},
		{name, rec("parent=1"), "damaged: generation 3 has parent 1, want 2"},
		{name, rec("parent=3"), "damaged: generation 3 has parent 3"},
		{name, rec("stream=\"../x\""), "damaged: stream name"},
		{name, rec("fork_seq=0"), "damaged: fork_hash"},
		{name, rec(`fork_hash=""`), "damaged: fork_hash"},
		{name, rec(`fork_hash="` + strings.ToUpper(forkHash) + `"`), "damaged: fork_hash"},
		{name, rec(`fork_hash="` + forkHash[:62] + `"`), "damaged: fork_hash"},
		{name, rec(`fork_hash="` + ZeroHash + `"`), "damaged: fork_hash"},
		{name, rec("fork_seq=18446744073709551615"), "damaged: fork_seq 18446744073709551615 leaves no seq"},
		{name, rec("fork_seq=-1"), "damaged: json"},
		{name, rec("generation=4294967296"), "damaged: json"},
		{name, rec(`time="9999-12-31T23:00:00-02:00"`), "damaged: time"},
		{name, rec(`time="yesterday"`), "damaged"},
		{name, `{`, "damaged"},
		{name, `null`, "damaged: version 0"},
		{name, rec("") + " {}", "damaged"},
		{"00000001.json", rec(""), "not a generation record name"},
		{"00000000.json", rec(""), "not a generation record name"},
		{"0000000A.json", rec(""), "not a generation record name"},
		{"3.json", rec(""), "not a generation record name"},
		{"00000003.json.tmp", rec(""), "not a generation record name"},
		{"00000003-0000000000000001-0000000000000002.json", rec(""), "not a generation record name"},
	} {
		_, err := ParseGeneration(tc.name, []byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("ParseGeneration(%s, %s): %v, want %q naming the record", tc.name, tc.data, err, tc.want)
		}
	}

	// A record a reader would refuse is never written: it could not be
	// replaced.
	for _, bad := range []Generation{
		{Stream: "mail", Generation: 1},
		{Stream: "mail", Generation: 3, Parent: 1},
		{Stream: "mail", Generation: 3, Parent: 2, ForkSeq: 5},
		{Stream: "mail", Generation: 3, Parent: 2, ForkHash: forkHash},
		{Stream: "", Generation: 3, Parent: 2},
		{Stream: "mail", Generation: 3, Parent: 2, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if data, err := MarshalGeneration(bad); err == nil {
			t.Errorf("MarshalGeneration(%+v) = %s, want an error", bad, data)
		}
	}
}

func TestGenerationName(t *testing.T) {
	for _, gen := range []uint32{2, 0xa, 0x7fffffff, 0xffffffff} {
		name := GenerationName(gen)
		if got, ok := ParseGenerationName(name); !ok || got != gen {
			t.Errorf("ParseGenerationName(%s) = %d, %t, want %d", name, got, ok, gen)
		}
	}
	if name := GenerationName(0xffffffff); name != "ffffffff.json" {
		t.Errorf("GenerationName(max) = %s", name)
	}
}

// FuzzParseGeneration holds ParseGeneration to never panicking and to
// round-tripping what it accepts: MarshalGeneration writes an accepted
// record back, and the bytes parse to the same record.
func FuzzParseGeneration(f *testing.F) {
	good, err := MarshalGeneration(Generation{Stream: "app", Generation: 2, Parent: 1, ForkSeq: 7, ForkHash: forkHash,
		Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Site: "dr", Host: "h", Reason: "switchover"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("00000002.json", good)
	f.Add("00000002.json", []byte(`{"version":1,"stream":"app","generation":2,"parent":1,"fork_seq":0,"fork_hash":"","time":"0000-01-01T00:30:00+01:00"}`))
	f.Add("00000002.json", []byte(`{"version":1,"stream":"app","generation":2,"parent":1,"site":"\ud800\u00e9","reason":"<&>"}`))
	f.Add("00000002.json", []byte(`{"version":2}`))
	f.Add("ffffffff.json", []byte(`{"version":1,"stream":"a","generation":4294967295,"parent":4294967294,"fork_seq":1,"fork_hash":"`+forkHash+`"}`))
	f.Add("00000001.json", []byte(`{}`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		g, err := ParseGeneration(name, data)
		if err != nil {
			return
		}
		if GenerationName(g.Generation) != name {
			t.Fatalf("ParseGeneration(%q) accepted generation %d", name, g.Generation)
		}
		out, err := MarshalGeneration(g)
		if err != nil {
			t.Fatalf("MarshalGeneration refuses what ParseGeneration accepted (%+v): %v", g, err)
		}
		back, err := ParseGeneration(name, out)
		if err != nil || back != g {
			t.Fatalf("round trip of %s:\n got %+v, %v\nwant %+v", out, back, err, g)
		}
		if again, _ := MarshalGeneration(back); string(again) != string(out) {
			t.Fatalf("MarshalGeneration is not stable:\n%s\n%s", out, again)
		}
	})
}
