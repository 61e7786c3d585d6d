package syncrec

import (
	"encoding/json"
	"testing"
)

func TestMarkParse(t *testing.T) {
	for _, line := range []string{`{"id":"x","n":1}` + "\n", `{}`, ` { "a" : [1,2] } ` + "\r\n", `{"ferry_originx":1}`} {
		if err := CheckObject([]byte(line)); err != nil {
			t.Fatalf("CheckObject(%q): %v", line, err)
		}
		if _, ok, _ := Parse([]byte(line)); ok {
			t.Fatalf("Parse(%q) found a mark on an unmarked line", line)
		}
		o := Origin{Site: "site-b", Seq: 1 << 40}
		m := Mark(nil, []byte(line), o)
		if m[len(m)-1] != '\n' {
			t.Fatalf("Mark(%q) = %q: no newline", line, m)
		}
		var obj map[string]any
		if err := json.Unmarshal(m, &obj); err != nil {
			t.Fatalf("Mark(%q) = %q: not JSON: %v", line, m, err)
		}
		got, ok, err := Parse(m)
		if !ok || err != nil || got != o {
			t.Fatalf("Parse(Mark(%q)) = %v %v %v", line, got, ok, err)
		}
	}
	for _, bad := range []string{"", "plain text\n", "[1]\n", `{"a":`} {
		if CheckObject([]byte(bad)) == nil {
			t.Errorf("CheckObject(%q) accepted it", bad)
		}
	}
	for _, bad := range []string{`{"ferry_origin":{"site":"b"}}`, `{"ferry_origin":"b"}`, `{"ferry_origin":{"site":"","seq":3}}`} {
		if _, ok, err := Parse([]byte(bad)); !ok || err == nil {
			t.Errorf("Parse(%q) = ok %v, err %v; want an error", bad, ok, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"ferry_origin":{"site":"b","seq":3},"x":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		Parse(b)
		if CheckObject(b) == nil {
			m := Mark(nil, b, Origin{Site: "a", Seq: 1})
			if !json.Valid(m) {
				t.Fatalf("Mark(%q) = %q, not JSON", b, m)
			}
		}
	})
}
