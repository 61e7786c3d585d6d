//go:build linux

package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// runCPU runs a command, passes SIGTERM and SIGINT on to it (the third
// one becomes SIGKILL), and when it
// has exited writes its CPU time to -o: "user S\nsys S\nwall S\nexit E\n",
// and "own S" (the command's own CPU time, without its children) when it
// was stopped by a signal.
// The times are wait4's rusage of the command, which includes every
// descendant the command waited for (lsyncd's rsync processes, the rsync
// daemon's per-connection processes). treegen cpu itself exits 0 unless it
// could not run the command.
func runCPU(args []string) error {
	fl := flag.NewFlagSet("cpu", flag.ContinueOnError)
	out := fl.String("o", "", "file for the CPU times")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" || fl.NArg() == 0 {
		return errors.New("usage: treegen cpu -o FILE -- CMD [ARGS...]")
	}
	cmd := exec.Command(fl.Arg(0), fl.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	// At the first signal, before the command starts to exit, its own CPU
	// time (without its children) goes in the report too.
	var own atomic.Value
	go func() {
		n := 0
		for s := range sigs {
			if n == 0 {
				if t, err := ownCPU(cmd.Process.Pid); err == nil {
					own.Store(t)
				}
			}
			if n++; n >= 3 {
				cmd.Process.Kill() // a third signal: the command ignores them
				continue
			}
			cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		return err
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return errors.New("no rusage from wait")
	}
	report := fmt.Sprintf("user %.3f\nsys %.3f\nwall %.3f\nexit %s\n",
		tvSeconds(ru.Utime), tvSeconds(ru.Stime), wall.Seconds(), strings.ReplaceAll(cmd.ProcessState.String(), " ", "_"))
	if t, ok := own.Load().(float64); ok {
		report += fmt.Sprintf("own %.3f\n", t)
	}
	return writeFileAtomic(*out, report)
}

// ownCPU reads a process's own user + system time from /proc/PID/stat
// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func ownCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(u+s) / 100, nil
}

func tvSeconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// runWatching waits until PID or one of its descendants has an inotify
// watch on DIR (from /proc/PID/fdinfo), that is until a tool is watching
// the source tree.
func runWatching(args []string) error {
	fl := flag.NewFlagSet("watching", flag.ContinueOnError)
	pid := fl.Int("pid", 0, "process whose tree to look at")
	dir := fl.String("path", "", "directory that must be watched")
	timeout := fl.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *pid <= 0 || *dir == "" {
		return errors.New("want -pid and -path")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(*dir, &st); err != nil {
		return fmt.Errorf("stat %s: %w", *dir, err)
	}
	want := "ino:" + strconv.FormatUint(st.Ino, 16) + " "
	deadline := time.Now().Add(*timeout)
	for {
		for _, p := range descendants(*pid) {
			if watches(p, want) {
				return nil
			}
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", *pid)); err != nil {
			return fmt.Errorf("process %d exited before watching %s", *pid, *dir)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d is not watching %s after %s", *pid, *dir, *timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// descendants returns pid and every process below it.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// watches reports whether one of pid's inotify descriptors has a watch
// whose fdinfo line holds want ("ino:HEX ").
func watches(pid int, want string) bool {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		found := false
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "inotify wd:") && strings.Contains(line, want) {
				found = true
				break
			}
		}
		f.Close()
		if found {
			return true
		}
	}
	return false
}
