package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ferry-dr/ferry/metrics"
	"github.com/ferry-dr/ferry/receiver"
)

// A receiver of many streams (receive_multi.go) publishes its running
// streams' status, with each stream's stored seq and lag from the Multi's
// listing, in one shared file in its state dir every multiStatusEvery
// (status_multirecv_shared.go); each stream's own status.json in its
// state dir, <state>/<stream>/, as a receiver of one stream writes in its
// own (status_recv.go), when the stream starts and when it stops; and, in
// <state>/status.json, the process's own: that it is a receiver of many
// streams, which, and how many it applies. ferry status --state <state>
// reads them all.

// multiStatusEvery is how often a receiver of many streams rewrites its
// status files: every 5 s, under ferry status's 10 s staleness limit,
// rather than every second.
const multiStatusEvery = 5 * time.Second

// multiRecvPublished is <state>/status.json of a receiver of many streams.
type multiRecvPublished struct {
	Multi     bool      `json:"multi"` // always true: tells it from a one-stream receiver's
	Running   bool      `json:"running"`
	PID       int       `json:"pid"`
	UpdatedAt time.Time `json:"updated_at"`
	Patterns  []string  `json:"patterns"`
	Fleet     string    `json:"fleet,omitempty"`
	Member    string    `json:"member,omitempty"`
	Applying  int       `json:"applying"` // streams running
}

// multiRecvStatus is `ferry status --state STATE --json` of a receiver
// of many streams.
type multiRecvStatus struct {
	Role      string       `json:"role"` // "receiver"
	State     string       `json:"state"`
	Multi     bool         `json:"multi"`
	Running   bool         `json:"running"`
	PID       int          `json:"pid,omitempty"`
	UpdatedAt time.Time    `json:"updated_at,omitzero"`
	Patterns  []string     `json:"patterns,omitempty"`
	Fleet     string       `json:"fleet,omitempty"`
	Member    string       `json:"member,omitempty"`
	Streams   []recvStatus `json:"streams"`
}

// multiRecvWatch publishes the streams of a receiver of many streams: it
// watches each running stream's receiver in the metrics registry (reg,
// nil without metrics_addr) and writes the status files.
type multiRecvWatch struct {
	state string
	reg   *metrics.Registry
	h     metrics.Health
	top   multiRecvPublished

	mu      sync.Mutex
	watched map[string]*watchedStream
}

// watchedStream is one stream's entry in the registry.
type watchedStream struct {
	r       *receiver.Receiver
	running bool // r runs: the status loop may publish it
	unwatch func()
	failed  atomic.Pointer[error] // what its receiver stopped on, until it is opened again
}

func newMultiRecvWatch(state string, reg *metrics.Registry, h metrics.Health, top multiRecvPublished) *multiRecvWatch {
	top.Multi, top.PID = true, os.Getpid()
	return &multiRecvWatch{state: state, reg: reg, h: h, top: top, watched: map[string]*watchedStream{}}
}

// started is the Multi's OnStart.
func (w *multiRecvWatch) started(stream string, r *receiver.Receiver) {
	w.mu.Lock()
	if old := w.watched[stream]; old != nil && old.unwatch != nil {
		old.unwatch() // its previous receiver, which stopped on an error
	}
	ws := &watchedStream{r: r, running: true}
	w.watched[stream] = ws
	w.writeStream(receiver.StreamState{Stream: stream, Receiver: r}, true, nil, time.Now())
	w.mu.Unlock()
	if w.reg != nil {
		ws.unwatch = w.reg.WatchReceiver(r, stream, func() error {
			if p := ws.failed.Load(); p != nil {
				return *p
			}
			return nil
		}, w.h)
	}
}

// stopped is the Multi's OnStop. A stream stopped on an error stays in
// /metrics (ferry_receive_stopped says why) until it is opened again; one
// stopped by the Multi (handed over, or the process stopping) leaves it.
func (w *multiRecvWatch) stopped(stream string, r *receiver.Receiver, err error, _ bool) {
	w.mu.Lock()
	ws := w.watched[stream]
	if ws != nil {
		ws.running = false
		if err == nil {
			delete(w.watched, stream)
		}
	}
	w.writeStream(receiver.StreamState{Stream: stream, Receiver: r}, false, err, time.Now())
	w.mu.Unlock()
	if ws != nil {
		if err != nil {
			ws.failed.Store(&err)
		} else if ws.unwatch != nil {
			ws.unwatch()
		}
	}
}

// gone is the Multi's OnGone: a stream that stopped on an error here and
// that this process will not open again (another fleet member holds it
// now) leaves /metrics and /healthz, as one handed over while running
// does. Its status.json is left as it is: the new owner rewrites it.
func (w *multiRecvWatch) gone(stream string) {
	w.mu.Lock()
	ws := w.watched[stream]
	if ws != nil && !ws.running {
		delete(w.watched, stream)
	} else {
		ws = nil // opened again meanwhile: started replaced it
	}
	w.mu.Unlock()
	if ws != nil && ws.unwatch != nil {
		ws.unwatch()
	}
}

// streamStatus is one stream's status as of now: running, or stopped on
// stopErr.
func streamStatus(st receiver.StreamState, running bool, stopErr error, now time.Time) recvPublished {
	p := snapshotRecv(st.Receiver, st.Stream, now)
	p.Running = running
	if stopErr != nil {
		p.LastError = stopErr.Error()
	}
	if running {
		stored, lag := st.StoredSeq, 0.0
		if !st.OldestUnapplied.IsZero() {
			lag = max(now.Sub(st.OldestUnapplied).Seconds(), 0)
		}
		p.StoredSeq, p.LagSeconds = &stored, &lag
	}
	return p
}

// writeStream publishes one stream's status.json in its state dir, as it
// starts and as it stops; while it runs, the loop publishes it in the
// shared file. mu held: a stream's writes do not interleave.
func (w *multiRecvWatch) writeStream(st receiver.StreamState, running bool, stopErr error, now time.Time) {
	dir, err := receiver.ExpandTemplate(filepath.Join(w.state, "{stream}"), st.Stream)
	if err != nil {
		return
	}
	writeRecvStatus(dir, streamStatus(st, running, stopErr, now)) // a report: a failure is not the stream's
}

// writeTop publishes <state>/status.json, but for a fleet member: the
// members share <state>, and ferry status --fleet shows them.
func (w *multiRecvWatch) writeTop(running bool, applying int, now time.Time) {
	if w.top.Fleet != "" {
		return
	}
	p := w.top
	p.Running, p.Applying, p.UpdatedAt = running, applying, now.UTC()
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return
	}
	tmp := filepath.Join(w.state, "."+statusFile+".tmp")
	if os.WriteFile(tmp, append(b, '\n'), 0o644) == nil {
		os.Rename(tmp, filepath.Join(w.state, statusFile))
	}
}

// loop rewrites <state>/status.json and the shared file every
// multiStatusEvery until ctx ends, then removes the shared file and marks
// the process not running.
func (w *multiRecvWatch) loop(ctx context.Context, m *receiver.Multi) {
	t := time.NewTicker(multiStatusEvery)
	defer t.Stop()
	for {
		now := time.Now()
		streams := m.Streams()
		w.writeTop(true, len(streams), now)
		// Under mu, so that a stream that stops meanwhile is either in
		// this round, dated before its last word, or not in it.
		shared := make(map[string]recvPublished, len(streams))
		w.mu.Lock()
		for _, st := range streams {
			if ws := w.watched[st.Stream]; ws != nil && ws.r == st.Receiver && ws.running {
				shared[st.Stream] = streamStatus(st, true, nil, now)
			}
		}
		w.mu.Unlock()
		w.writeShared(shared, now) // a report: a failure is not the streams'
		select {
		case <-ctx.Done():
			// Every stream has stopped (Multi.Run returned) and left its
			// last word in its own status.json.
			os.Remove(w.sharedStatusPath())
			w.writeTop(false, 0, time.Now())
			return
		case <-t.C:
		}
	}
}

// isMultiRecvState says whether dir is the state dir of a receiver of
// many streams: its status.json says so, or it has no checkpoint of its
// own but a stream's state dir in it.
func isMultiRecvState(dir string) bool {
	if raw, err := readStateFile(filepath.Join(dir, statusFile)); err == nil {
		var p multiRecvPublished
		if json.Unmarshal(raw, &p) == nil {
			return p.Multi
		}
	}
	if _, ok, err := receiver.LoadCheckpoint(dir); ok || err != nil {
		return false
	}
	return len(multiStreamDirs(dir)) > 0
}

// multiStreamDirs lists the stream state dirs in dir: those holding a
// checkpoint.
func multiStreamDirs(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		if _, ok, _ := receiver.LoadCheckpoint(sub); ok {
			out = append(out, sub)
		} else if _, err := os.Stat(filepath.Join(sub, "LOCK")); err == nil {
			out = append(out, sub) // opened, nothing applied yet
		}
	}
	return out
}

func readMultiRecvStatus(dir string, now time.Time) (multiRecvStatus, error) {
	s := multiRecvStatus{Role: "receiver", State: dir, Multi: true, Streams: []recvStatus{}}
	if raw, err := readStateFile(filepath.Join(dir, statusFile)); err == nil {
		var p multiRecvPublished
		if json.Unmarshal(raw, &p) == nil && p.Multi {
			s.Patterns, s.Fleet, s.Member = p.Patterns, p.Fleet, p.Member
			alive := syscall.Kill(p.PID, 0)
			if p.Running && p.PID > 0 && (alive == nil || alive == syscall.EPERM) && now.Sub(p.UpdatedAt) < 2*multiStatusEvery+5*time.Second {
				s.Running, s.PID, s.UpdatedAt = true, p.PID, p.UpdatedAt
			}
		}
	}
	shared, err := readSharedRecvStatus(dir)
	if err != nil {
		return s, err
	}
	for _, sub := range multiStreamDirs(dir) {
		r, err := readRecvStatusShared(sub, now, shared)
		if err != nil {
			return s, fmt.Errorf("state %s, stream dir %s: %w", dir, filepath.Base(sub), err)
		}
		if r.Stream == "" {
			r.Stream = filepath.Base(sub)
		}
		s.Streams = append(s.Streams, r)
	}
	return s, nil
}

func printMultiRecvStatus(w io.Writer, dir string, now time.Time, asJSON bool) error {
	s, err := readMultiRecvStatus(dir, now)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, s)
	}
	state := "not running"
	if s.Running {
		state = fmt.Sprintf("running (pid %d)", s.PID)
	}
	fmt.Fprintf(w, "receiver  state %s  %s, many streams", s.State, state)
	if len(s.Patterns) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(s.Patterns, ","))
	}
	if s.Fleet != "" {
		fmt.Fprintf(w, ", fleet %s member %s", s.Fleet, s.Member)
	}
	fmt.Fprintf(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tAPPLYING\tAPPLIED\tSTORED\tLAG RECORDS\tLAG\tCHECKPOINT AGE\tLAST ERROR")
	for _, r := range s.Streams {
		applying := "no"
		if r.Running {
			applying = fmt.Sprintf("yes (pid %d)", r.PID)
		}
		stored, lagRecs, lag, age := "-", "-", "-", "-"
		if r.StoredSeq != nil {
			stored = strconv.FormatUint(*r.StoredSeq, 10)
			lagRecs = strconv.FormatUint(*r.LagRecords, 10)
		}
		if r.LagSeconds != nil {
			lag = (time.Duration(*r.LagSeconds * float64(time.Second))).Round(time.Millisecond).String()
		}
		if r.CheckpointAgeSeconds != nil {
			age = (time.Duration(*r.CheckpointAgeSeconds * float64(time.Second))).Round(time.Second).String()
		}
		errText := r.LastError
		if !r.GapSince.IsZero() {
			errText = "waiting on a gap since " + r.GapSince.Local().Format(time.RFC3339)
		}
		if errText == "" {
			errText = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Stream, applying, r.AppliedSeq, stored, lagRecs, lag, age, errText)
	}
	return tw.Flush()
}
