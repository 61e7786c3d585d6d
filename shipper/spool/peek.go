package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Generation reads the generation the state.json of the spool in dir pins,
// without opening the spool: its owner may be running (ferry switchover
// checks a primary before stopping it). A spool of another stream, or a
// damaged state.json, is an error naming it.
func Generation(dir, stream string) (uint32, error) {
	path := filepath.Join(dir, "state.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("spool %s: %w", dir, err)
	}
	var st spoolState
	if err := json.Unmarshal(raw, &st); err != nil || st.Generation == 0 {
		return 0, fmt.Errorf("%s is damaged (%v); restore it or start a new spool", path, err)
	}
	if st.Stream != stream {
		return 0, fmt.Errorf("spool belongs to stream %q, not %q", st.Stream, stream)
	}
	return st.Generation, nil
}

// Held counts the records the spool in dir holds without seqs yet (Hold)
// and their journal's size, without opening the spool: its owner may be
// running (ferry status). A placed spool holds none.
func Held(dir string) (records uint64, bytes int64, err error) {
	raw, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return 0, 0, fmt.Errorf("spool %s: %w", dir, err)
	}
	var st spoolState
	if err := json.Unmarshal(raw, &st); err != nil {
		return 0, 0, fmt.Errorf("%s is damaged (%v)", filepath.Join(dir, "state.json"), err)
	}
	if !st.Unplaced {
		return 0, 0, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, provisionalName))
	if err != nil && !os.IsNotExist(err) {
		return 0, 0, err
	}
	for off := 0; off < len(data); {
		recs, _, n, err := parseEntry(data[off:])
		if err != nil {
			break // a torn tail being written, or one recovery drops
		}
		records += uint64(len(recs))
		off += n
	}
	return records, int64(len(data)), nil
}

// Empty reports whether the spool in dir holds nothing to ship, without
// opening it: no sealed segment, no journal record past state.json's
// sealed seq, no provisional record. A stream that ended with everything
// confirmed leaves its spool so. A journal it cannot parse is not empty:
// Open reports it.
func Empty(dir string) (bool, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return false, fmt.Errorf("spool %s: %w", dir, err)
	}
	var st spoolState
	if err := json.Unmarshal(raw, &st); err != nil {
		return false, fmt.Errorf("%s is damaged (%v)", filepath.Join(dir, "state.json"), err)
	}
	sealed, err := os.ReadDir(filepath.Join(dir, "sealed"))
	if err != nil && !os.IsNotExist(err) {
		return false, fmt.Errorf("spool %s: %w", dir, err)
	}
	if len(sealed) > 0 {
		return false, nil // a temp file too: recovery may adopt it
	}
	// With sealed/ empty, state.json's sealed seq covers every segment
	// sealed: a segment leaves sealed/ only once a saved state covers it.
	journals, err := listJournals(dir)
	if err != nil {
		return false, fmt.Errorf("spool %s: %w", dir, err)
	}
	for _, name := range append(journals, provisionalName) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("spool %s: %w", dir, err)
		}
		for off := 0; off < len(data); {
			recs, _, n, err := parseEntry(data[off:])
			if errors.Is(err, errTornEntry) {
				break // recovery drops it: nothing in it was acknowledged
			}
			if err != nil {
				return false, nil
			}
			for i := range recs {
				if name == provisionalName || recs[i].Seq > st.SealedSeq {
					return false, nil
				}
			}
			off += n
		}
	}
	return true, nil
}
