// Command ratelines appends numbered lines to a file at a steady rate until
// it gets SIGTERM or SIGINT, then prints how many it wrote and the Unix
// time (seconds, with fraction) of the last write. The failover benchmark
// uses it as the application writing the primary's log.
//
//	ratelines -o app.log -rate 10000 -prefix a
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	out := flag.String("o", "", "file to append to (required)")
	rate := flag.Int("rate", 10000, "lines per second")
	prefix := flag.String("prefix", "l", "text before each line's number")
	flag.Parse()
	if *out == "" || *rate <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	const tick = 5 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	n := 0
	var last time.Time
	w := bufio.NewWriterSize(f, 1<<20)
	for {
		select {
		case <-stop:
			fmt.Printf("%d %.6f\n", n, float64(last.UnixNano())/1e9)
			return
		case now := <-t.C:
			want := int(now.Sub(start).Seconds() * float64(*rate))
			for ; n < want; n++ {
				fmt.Fprintf(w, "%s%09d the quick brown fox jumps over the lazy dog\n", *prefix, n+1)
			}
			if err := w.Flush(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			last = now
		}
	}
}
