// Command applylat measures append→applied latency for the streams
// benchmark (streams.sh). It follows the files a receiver applies
// (DIR/*.log, one per stream) and, for every line, takes the time from
// the write time the line carries (its first field, RFC 3339, as
// streamlines writes it just before it appends the line) to the moment
// this process first read the line, complete, from the applied file. It
// reads a file when inotify reports a change to it (and every -poll
// anyway), so each line is timed, not a sample of them, to within a few
// milliseconds of when the receiver wrote it. It also checks that each
// file's lines carry the numbers 1, 2, 3, ... (the second field):
// every line applied exactly once, in order.
//
// On SIGTERM or SIGINT it reads every file a last time and prints one line:
//
//	lines N files F p50_ms X p99_ms Y max_ms Z bad B
//
// (bad: lines out of order, repeated, missing before a later one, or not
// parsable; the first few are described on stderr). While it runs it
// rewrites -count FILE with the lines seen so far, so a script can wait
// for all of them.
//
//	applylat -dir applied -count applied.count
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// follower reads one applied file from where it left off.
type follower struct {
	path    string
	f       *os.File
	partial []byte // a line not complete yet
	next    uint64 // the number the next line must carry
}

type stats struct {
	lat    []time.Duration
	bad    int
	badLog int
}

func (s *stats) complain(format string, args ...any) {
	s.bad++
	if s.badLog < 10 {
		s.badLog++
		fmt.Fprintf(os.Stderr, "applylat: "+format+"\n", args...)
	}
}

// read reads what the file holds past the last read and times each
// complete line at seen.
func (fl *follower) read(seen time.Time, st *stats) error {
	if fl.f == nil {
		f, err := os.Open(fl.path)
		if err != nil {
			return err
		}
		fl.f, fl.next = f, 1
	}
	buf := make([]byte, 256<<10)
	for {
		n, err := fl.f.Read(buf)
		data := buf[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				fl.partial = append(fl.partial, data...)
				break
			}
			line := data[:i]
			if len(fl.partial) > 0 {
				line = append(fl.partial, line...)
				fl.partial = nil
			}
			fl.line(line, seen, st)
			data = data[i+1:]
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// line checks one line "TIME NUMBER ..." and records its latency.
func (fl *follower) line(line []byte, seen time.Time, st *stats) {
	fields := strings.SplitN(string(line), " ", 3)
	if len(fields) < 2 {
		st.complain("%s: line %d: not TIME NUMBER ...: %q", fl.path, fl.next, line)
		return
	}
	at, err := time.Parse(time.RFC3339Nano, fields[0])
	if err != nil {
		st.complain("%s: line %d: %v", fl.path, fl.next, err)
		return
	}
	num, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		st.complain("%s: line %d: number %q: %v", fl.path, fl.next, fields[1], err)
		return
	}
	if num != fl.next {
		st.complain("%s: line carries number %d where %d was due (repeated, out of order or missing)", fl.path, num, fl.next)
	}
	fl.next = num + 1
	st.lat = append(st.lat, seen.Sub(at))
}

func main() {
	dir := flag.String("dir", "", "directory of the applied files, *.log (required)")
	count := flag.String("count", "", "file rewritten with the lines seen so far")
	poll := flag.Duration("poll", 100*time.Millisecond, "read every file at least this often, events or not")
	flag.Parse()
	if *dir == "" {
		flag.Usage()
		os.Exit(2)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		fmt.Fprintln(os.Stderr, "applylat:", err)
		os.Exit(1)
	}
	if err := w.Add(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "applylat:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	files := map[string]*follower{}
	st := &stats{}
	readOne := func(path string, now time.Time) {
		fl := files[path]
		if fl == nil {
			fl = &follower{path: path}
			files[path] = fl
		}
		if err := fl.read(now, st); err != nil && !os.IsNotExist(err) {
			fmt.Fprintln(os.Stderr, "applylat:", err)
			os.Exit(1)
		}
	}
	readAll := func() {
		paths, _ := filepath.Glob(filepath.Join(*dir, "*.log"))
		now := time.Now()
		for _, p := range paths {
			readOne(p, now)
		}
	}
	written := -1
	writeCount := func() {
		if *count == "" || len(st.lat) == written {
			return
		}
		written = len(st.lat)
		tmp := *count + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(written)+"\n"), 0o644); err == nil {
			os.Rename(tmp, *count)
		}
	}
	t := time.NewTicker(*poll)
	defer t.Stop()
	for {
		select {
		case <-sig:
			readAll()
			writeCount()
			report(st, len(files))
			return
		case ev := <-w.Events:
			if strings.HasSuffix(ev.Name, ".log") && ev.Op&(fsnotify.Write|fsnotify.Create) != 0 {
				readOne(ev.Name, time.Now())
			}
		case err := <-w.Errors:
			// An overflow loses events, not lines: the next poll reads them.
			fmt.Fprintln(os.Stderr, "applylat: watch:", err)
		case <-t.C:
			readAll()
			writeCount()
		}
	}
}

func report(st *stats, files int) {
	lat := st.lat
	slices.Sort(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := int(p*float64(len(lat))+0.5) - 1
		i = max(0, min(i, len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "lines %d files %d p50_ms %.1f p99_ms %.1f max_ms %.1f bad %d\n", len(lat), files, q(0.50), q(0.99), q(1), st.bad)
	out.Flush()
}
