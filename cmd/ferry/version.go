package main

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"

	"github.com/ferry-dr/ferry/metrics"
)

// Set at build time with -ldflags "-X main.version=1.2.3 -X main.commit=…
// -X main.buildDate=…" (packaging does); a plain go build takes the commit
// and its time from the module's VCS stamp.
var (
	version   = "0.1.0-dev"
	commit    = ""
	buildDate = ""
)

// buildInfo is what ferry version prints and ferry_build_info exports.
type buildInfo struct {
	Version, Commit, Date, GoVersion string
	Modified                         bool
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: buildDate, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if len(b.Commit) > 12 {
		b.Commit = b.Commit[:12]
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

// metrics is b as ferry_build_info labels it.
func (b buildInfo) metrics() metrics.Build {
	return metrics.Build{Version: b.Version, Commit: b.Commit, GoVersion: b.GoVersion}
}

// String is the one line ferry version and ferry --version print.
func (b buildInfo) String() string {
	dirty := ""
	if b.Modified {
		dirty = "-dirty"
	}
	return fmt.Sprintf("ferry %s (commit %s%s, built %s, %s %s/%s)", b.Version, b.Commit, dirty, b.Date, b.GoVersion, runtime.GOOS, runtime.GOARCH)
}

func runVersion(_ []string, stdout, _ io.Writer) error {
	_, err := fmt.Fprintln(stdout, readBuildInfo())
	return err
}

// logStart logs a service's start-up line: "VERB starting" with the
// version and commit, then attrs (stream, store, where it resumes, ...).
func logStart(log *slog.Logger, verb string, attrs ...any) {
	b := readBuildInfo()
	log.Info(verb+" starting", append([]any{"version", b.Version, "commit", b.Commit}, attrs...)...)
}
