//go:build linux

package apply_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver/apply"
)

// BenchmarkDirApplyAppends applies segments of 300 appends, one to each of
// 300 mailboxes, as the tree benchmark's churn makes them: the appends'
// fsyncs are what it measures.
func BenchmarkDirApplyAppends(b *testing.B) {
	const files = 300
	var r dirRecs
	var puts []batch.Record
	content := make([]string, files)
	for i := range files {
		content[i] = strings.Repeat(fmt.Sprintf("message %d\n", i), 100)
		puts = append(puts, r.put(fmt.Sprintf("u%d/mbox", i), 0o600, content[i]))
	}
	a := &apply.Dir{Root: filepath.Join(b.TempDir(), "replica")}
	if err := a.Restore(nil); err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	apply := func(rs []batch.Record) error {
		return a.Apply(context.Background(), dirMeta(rs), batch.RecordsOf(rs))
	}
	if err := apply(puts); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		var seg []batch.Record
		for i := range files {
			tail := fmt.Sprintf("From someone\nline %d\n", i)
			seg = append(seg, r.appendRec(fmt.Sprintf("u%d/mbox", i), 0o600, content[i], tail))
			content[i] += tail
		}
		if err := apply(seg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*files), "µs/append")
}
