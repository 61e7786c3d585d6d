package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-dr/ferry/receiver"
)

// A running receiver publishes what only it knows (that its store has not
// answered since the start, the error it keeps retrying, a gap it waits
// on) in its state dir as status.json, once a second and when it stops,
// as the shipper does in its spool; ferry status --state reads it with the
// checkpoint. Not fsynced: it is a report, not state. Error texts are the
// store's and applier's errors as the log shows them: no secrets.

// recvPublished is the content of a receiver's status.json.
type recvPublished struct {
	Running      bool      `json:"running"`
	PID          int       `json:"pid"`
	UpdatedAt    time.Time `json:"updated_at"`
	Stream       string    `json:"stream"`
	AppliedSeq   uint64    `json:"applied_seq"`
	Waiting      string    `json:"waiting,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	GapSince     time.Time `json:"gap_since,omitzero"`
	// Of a receiver of many streams (ferry receive --stream 'a-*'): the
	// newest seq its last listing of the store showed, and how long ago
	// the store wrote the oldest listed segment not applied yet (0 when
	// every listed one is).
	StoredSeq  *uint64  `json:"stored_seq,omitempty"`
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
}

func snapshotRecv(r *receiver.Receiver, stream string, now time.Time) recvPublished {
	h := r.Health()
	p := recvPublished{Running: true, PID: os.Getpid(), UpdatedAt: now.UTC(), Stream: stream, AppliedSeq: r.Applied(),
		LastError: h.Retrying, FailingSince: h.RetryingSince, GapSince: h.GapSince}
	if h.Waiting {
		p.Waiting = h.Retrying
	}
	if p.LastError == "" {
		p.FailingSince = time.Time{}
	}
	return p
}

// writeRecvStatus publishes p in stateDir (temp file and rename, so a
// reader never sees half of it).
func writeRecvStatus(stateDir string, p recvPublished) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(stateDir, "."+statusFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(stateDir, statusFile))
}

// recvStatusLoop rewrites status.json every statusEvery until ctx ends,
// then once more, marked not running.
func recvStatusLoop(ctx context.Context, r *receiver.Receiver, stream, stateDir string) {
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	for {
		writeRecvStatus(stateDir, snapshotRecv(r, stream, time.Now()))
		select {
		case <-ctx.Done():
			p := snapshotRecv(r, stream, time.Now())
			p.Running = false
			writeRecvStatus(stateDir, p)
			return
		case <-t.C:
		}
	}
}

// readRecvPublished reads what the receiver holding dir's lock (pid)
// published, if it is that process's and fresh: dir's status.json, or
// the stream's entry in shared (a receiver of many streams' shared
// files in the state dir above, by stream) if that is newer.
func readRecvPublished(dir string, pid int, now time.Time, shared map[string]recvPublished) (recvPublished, bool) {
	var p recvPublished
	raw, err := readStateFile(filepath.Join(dir, statusFile))
	if err != nil || json.Unmarshal(raw, &p) != nil {
		p = recvPublished{}
	}
	if e, ok := shared[filepath.Base(filepath.Clean(dir))]; ok && e.UpdatedAt.After(p.UpdatedAt) {
		p = e
	}
	return p, p.Running && p.PID == pid && now.Sub(p.UpdatedAt) < 10*statusEvery
}
