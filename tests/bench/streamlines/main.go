// Command streamlines appends numbered lines to many files at once, each
// at a steady rate, until it gets SIGTERM or SIGINT, then prints how many
// lines it wrote. The streams benchmark (streams.sh) uses it as the
// applications writing a directory of logs.
//
//	streamlines -dir logs -files 100 -rate 100
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	dir := flag.String("dir", "", "directory of the files (required)")
	files := flag.Int("files", 100, "files, named s000.log, s001.log, ...")
	rate := flag.Int("rate", 100, "lines per second to each file")
	flag.Parse()
	if *dir == "" || *files <= 0 || *rate <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	fs := make([]*os.File, *files)
	for i := range fs {
		f, err := os.OpenFile(filepath.Join(*dir, fmt.Sprintf("s%03d.log", i)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fs[i] = f
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	written := make([]int, *files) // lines per file
	total := 0
	var buf []byte
	for {
		select {
		case <-sig:
			fmt.Println(total)
			return
		case now := <-t.C:
			// Each file gets what its rate owes it by now: steady, whatever
			// the ticks' jitter.
			due := int(now.Sub(start).Seconds() * float64(*rate))
			for i, f := range fs {
				buf = buf[:0]
				for ; written[i] < due; written[i]++ {
					buf = fmt.Appendf(buf, "%s %08d GET /api/v1/items/%d?user=%d 200 %dms\n", now.UTC().Format(time.RFC3339Nano), written[i]+1, written[i]%997, i, written[i]%89)
					total++
				}
				if len(buf) > 0 {
					if _, err := f.Write(buf); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
				}
			}
		}
	}
}
