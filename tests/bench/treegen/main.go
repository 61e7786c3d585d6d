//go:build linux

// Command treegen is the helper of the directory-tree benchmark
// (tests/bench/dirtree.sh) and of the two-way sync benchmark
// (tests/bench/sync.sh; mailtree and twoway, in twoway.go). It plays the
// workload, measures when a replica matches, counts the bytes a replication
// tool puts on the wire and the CPU time it spends, so that every tool is
// measured the same way:
//
//	treegen run -src SRC -dst DST -seed 1 -files 10000   workload, waiting for a match after each phase
//	treegen cmp SRC DST                                  compare two trees (exit 1 if they differ)
//	treegen proxy -listen ADDR -to ADDR -stats FILE      counting TCP proxy
//	treegen cpu -o FILE -- CMD ARGS...                   run CMD, record its CPU time
//	treegen watching -pid PID -path DIR                  wait until PID's tree watches DIR
//	treegen freeport                                     print a free loopback port
//	treegen mailtree -dir D -seed 1 -files 10000         write a Maildir-like tree (sync.sh)
//	treegen twoway -a A -b B -seed 1 [...]               two-sided churn, then wait until A and B converge (sync.sh)
//
// run plays two phases on SRC: phase 1 creates FILES files in nested
// directories (a mail store with logs and binary attachments); once DST
// matches SRC, phase 2 appends to, rewrites, deletes and renames some of
// them, creates new ones and renames a directory, and again waits for DST to
// match. The workload depends only on -seed and -files. For each phase it
// prints the time the writes took and the time from the phase's first write
// to the moment the comparison confirmed the match, and with -bytes (a
// proxy's -live file) the bytes the proxy passed during the phase.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: treegen run|cmp|proxy|cpu|watching|freeport|mailtree|twoway [flags]
  (see the package comment in tests/bench/treegen/main.go)`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		err = runWorkload(args)
	case "cmp":
		err = runCmp(args)
	case "proxy":
		err = runProxy(args)
	case "cpu":
		err = runCPU(args)
	case "watching":
		err = runWatching(args)
	case "freeport":
		err = runFreePort(args)
	case "mailtree":
		err = runMailtree(args)
	case "twoway":
		err = runTwoway(args)
	default:
		fmt.Fprintf(os.Stderr, "treegen: unknown command %q\n%s\n", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "treegen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
