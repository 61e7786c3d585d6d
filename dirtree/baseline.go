package dirtree

import (
	"encoding/json"
	"fmt"
	"time"
)

// BaselineData is the data of a baseline-begin or baseline-end record,
// JSON so that "ferry cat --json" shows it as it is. Version is 1; readers
// ignore unknown fields.
type BaselineData struct {
	Version   int       `json:"version"`
	StartedAt time.Time `json:"started_at"`          // when the walk began (both records)
	BeginSeq  uint64    `json:"begin_seq,omitempty"` // end: the seq of its begin record
	Paths     uint64    `json:"paths,omitempty"`     // end: paths the walk shipped
}

// CheckBaseline checks a baseline-begin or baseline-end record: key ".",
// data a JSON object with a version of at least 1. The applier reads
// nothing else from it: both records only mark where a full copy of the
// tree begins and ends.
func CheckBaseline(op string, key, data []byte) error {
	if string(key) != "." {
		return fmt.Errorf("malformed record: %s names %q, want \".\"", op, key)
	}
	var d struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &d); err != nil || d.Version < 1 {
		return fmt.Errorf("malformed record: %s data is not a baseline header (%q)", op, data)
	}
	return nil
}
