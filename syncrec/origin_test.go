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

// TestSplit cuts marked lines at every byte, appends the next writer's
// line, and checks that Split finds that line whole after the cut part,
// and that it leaves whole lines, and lines of other shapes, alone.
func TestSplit(t *testing.T) {
	marked := string(Mark(nil, []byte(`{"id":"b-1","m":{"k":[1,{"x":"{\"y\":1}"}]},"s":"a{b}"}`), Origin{Site: "b", Seq: 7}))
	for _, next := range []string{`{"id":"a-9","m":{"z":{}}}` + "\n", string(Mark(nil, []byte(`{"id":"b-1"}`), Origin{Site: "b", Seq: 7}))} {
		for cut := 1; cut < len(marked); cut++ {
			line := marked[:cut] + next
			torn, rest, ok := Split([]byte(line))
			if !ok || string(torn) != marked[:cut] || string(rest) != next {
				t.Fatalf("Split(%q) = %q, %q, %v; want %q, %q", line, torn, rest, ok, marked[:cut], next)
			}
		}
	}
	for _, line := range []string{
		marked,                        // whole
		`{"id":"a-1"}` + "\n",         // whole, unmarked
		`{"id":"a-1"}{"id":"a-2"}`,    // two objects, not after a mark
		`{"ferry_origin":{"site":"b"`, // cut, nothing after it yet
		`{"ferry_origin":{"site":"b","seq":1},"x":[1,2` + "\n",
		`[1]{"id":"a-1"}` + "\n",
		`x{"id":"a-1"}` + "\n",
		``,
	} {
		if torn, rest, ok := Split([]byte(line)); ok {
			t.Errorf("Split(%q) = %q, %q: took apart a line that is not a cut mark and a whole object", line, torn, rest)
		}
	}
}
