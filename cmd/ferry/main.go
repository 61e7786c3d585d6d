// Command ferry ships change records from a primary to a secondary in
// zstd segments through a store (a directory, S3, or a direct TCP link).
package main

import (
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// Exit status (README, "Exit status"): 0 success, 1 error, 2 usage, and
// 128 plus the signal's number when SIGINT or SIGTERM ended a run before
// its work was done (see errInterrupted).

// exitUsage is the exit status for command-line mistakes.
const exitUsage = 2

// A verb is one command of ferry: run parses its own arguments (flags
// anywhere among them; see common.parse) and returns nil, errHelp, a
// usageError or another error. Register a verb with one line in verbs; the
// command layer (cli.go) does the rest.
type verb struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var verbs = map[string]verb{
	"ship":       {"read records, spool them durably, seal segments and send them to the store", runShip},
	"receive":    {"apply segments from the store in order, exactly once, with a durable checkpoint", runReceive},
	"ls":         {"list a stream's segments: seq range, records, sizes, ratio, times", runLs},
	"bench":      {"measure a target before going live: throughput, compression, append latency", runBench},
	"cat":        {"decode a segment file, or a seq range of a stream, to its records", runCat},
	"verify":     {"check every segment of a stream and the hash chain between them", runVerify},
	"prune":      {"delete a stream's oldest segments by retention policy, never one a receiver has not applied", runPrune},
	"status":     {"show a shipper (targets, lag, spool) or a receiver (checkpoint), running or not", runStatus},
	"push":       {"ship one file (a WAL segment from archive_command) and wait until it is accepted", runPush},
	"fetch":      {"write a pushed file from the store or a receiver's tree (restore_command)", runFetch},
	"restore":    {"rebuild a new target from the store up to a seq or a time; resumable", runRestore},
	"drill":      {"restore the newest state to a scratch dir, verify it, report RPO and RTO", runDrill},
	"promote":    {"make this DR site the writer of the stream: record a new generation forked at its checkpoint", runPromote},
	"switchover": {"planned, zero-loss role swap: drain the primary, promote the secondary at its last seq, rejoin the old primary", runSwitchover},
	"sync":       {"run one site of a two-way pair (or ring) for a directory tree: ship its changes, apply its peers', resolve conflicts", runSync},
	"rejoin":     {"turn a fenced old primary into a receiver at the fork, with a report of what it had past it", runRejoin},
	"rekey":      {"re-wrap the file keys of a stream's encrypted segments for new age recipients, leaving every segment as stored", runRekey},
	"version":    {"print the version, commit and build date", runVersion},
	"config":     {"check a config file and the FERRY_* environment; print the effective settings, secrets masked", runConfig},
	"health":     {"check a running ferry's /healthz (metrics_addr): exit 0 if healthy, 1 if not", runHealth},
	"keygen":     {"write a new age identity and/or ed25519 signing key (mode 600) and print their public parts", runKeygen},
}

// usageError marks errors that exit with status 2.
type usageError struct{ error }

func main() {
	// FERRY_CPUPROFILE=FILE writes a CPU profile (for benchmarks).
	if path := os.Getenv("FERRY_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			code := run(os.Args[1:], os.Stdout, os.Stderr)
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(code)
		}
	}
	// FERRY_MEMPROFILE=FILE writes a heap profile of peak-ish use: the
	// profile records every allocation site of live and freed memory.
	if path := os.Getenv("FERRY_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 64 << 10
		code := run(os.Args[1:], os.Stdout, os.Stderr)
		if f, err := os.Create(path); err == nil {
			pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}
