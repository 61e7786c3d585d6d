package ferrytest

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
)

// DivergenceReport is what the tests read of a `ferry rejoin` report: the
// summary (its first line) and the records (the lines with a seq).
type DivergenceReport struct {
	ForkSeq uint64 `json:"fork_seq"`
	Records int    `json:"records"`
	InStore int    `json:"in_store"`
	Lines   []ReportRecord
}

// ReportRecord is one record line of a report, as ferry cat --json prints it.
type ReportRecord struct {
	Seq  uint64 `json:"seq"`
	Data string `json:"data"`
}

// ReadDivergenceReport reads the report at path, failing the test on a
// line that is not JSON.
func ReadDivergenceReport(t testing.TB, path string) DivergenceReport {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	var r DivergenceReport
	for i := 0; sc.Scan(); i++ {
		if i == 0 {
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("report %s line 1: %v", path, err)
			}
			continue
		}
		var rec ReportRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("report %s line %d: %v", path, i+1, err)
		}
		if rec.Seq != 0 {
			r.Lines = append(r.Lines, rec)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return r
}
