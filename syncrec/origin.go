// Package syncrec is the origin mark of a ferry sync record stream
// (docs/SYNC.md, "Record streams"), used by both sides: the applier writes
// every record it applies from a peer as its JSON object with the origin
// as the first field,
//
//	{"ferry_origin":{"site":"b","seq":42},"id":"…",…}
//
// and the sync source ships only the lines that do not start so: a site
// never ships a record whose origin is another site. The applier finds by
// the same mark, after a crash, the records it applied past its
// checkpoint.
package syncrec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Field is the name of the origin field.
const Field = "ferry_origin"

var prefix = []byte(`{"` + Field + `":`)

// Origin is where a record was first written: the site and the record's
// seq in that site's stream.
type Origin struct {
	Site string `json:"site"`
	Seq  uint64 `json:"seq"`
}

// ErrNotObject is returned for a line that is not one JSON object.
var ErrNotObject = errors.New("not a JSON object")

// CheckObject returns ErrNotObject (wrapped) unless line, without its
// trailing newline, is one JSON object.
func CheckObject(line []byte) error {
	t := bytes.TrimSpace(line)
	if len(t) == 0 || t[0] != '{' || !json.Valid(t) {
		return fmt.Errorf("%w: %q", ErrNotObject, clip(t))
	}
	return nil
}

// Parse returns the origin of a marked line; ok is false for a line that
// does not start with the mark. A line that starts with it but whose
// origin is unreadable is an error.
func Parse(line []byte) (o Origin, ok bool, err error) {
	if !bytes.HasPrefix(line, prefix) {
		return Origin{}, false, nil
	}
	rest := line[len(prefix):]
	end := bytes.IndexByte(rest, '}')
	if end < 0 {
		return Origin{}, true, fmt.Errorf("%s field unreadable: %q", Field, clip(line))
	}
	if err := json.Unmarshal(rest[:end+1], &o); err != nil || o.Site == "" || o.Seq == 0 {
		return Origin{}, true, fmt.Errorf("%s field unreadable: %q", Field, clip(line))
	}
	return o, true, nil
}

// Mark appends to dst the line, one JSON object (CheckObject), with o as
// its first field and a newline at the end.
func Mark(dst, line []byte, o Origin) []byte {
	t := bytes.TrimSpace(line)
	body := bytes.TrimLeft(t[1:], " \t\r\n")
	dst = append(dst, prefix...)
	dst = append(dst, `{"site":`...)
	dst = strconv.AppendQuote(dst, o.Site)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, o.Seq, 10)
	dst = append(dst, '}')
	if len(body) > 0 && body[0] != '}' {
		dst = append(dst, ',')
	}
	dst = append(dst, body...)
	return append(dst, '\n')
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}
