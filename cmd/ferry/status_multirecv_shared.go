package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A receiver of many streams publishes the status of every stream it
// runs in one file in its state dir, rewritten by its status loop every
// multiStatusEvery: <state>/streams-status.json, or, for a fleet member,
// whose fellow members share <state>, <state>/streams-status.MEMBER.json.
// One temp file and rename for all the streams, where a status.json per
// stream was one per stream (100 streams: 16% of the receiver's CPU in a
// profile). A stream still writes its own <state>/<stream>/status.json
// when it starts and when it stops (its last word: running false, and the
// error it stopped on), and the process removes its shared file once
// every stream has stopped. ferry status --state reads, for each stream,
// the newest of its own status.json and its entries in the shared files,
// with the rule it applies to a status.json (status_recv.go).

// recvStreamsStatusFile is the shared file of a receiver of many streams
// outside a fleet; recvStreamsStatusPrefix+MEMBER+".json" a fleet
// member's.
const (
	recvStreamsStatusFile   = "streams-status.json"
	recvStreamsStatusPrefix = "streams-status."
)

// recvStreamsPublished is the content of a shared file.
type recvStreamsPublished struct {
	Role      string                   `json:"role"` // "receiver-streams"
	PID       int                      `json:"pid"`
	Member    string                   `json:"member,omitempty"`
	UpdatedAt time.Time                `json:"updated_at"`
	Streams   map[string]recvPublished `json:"streams"` // by stream name: its state dir is <state>/NAME
}

// sharedStatusPath is the shared file this process writes in w.state.
func (w *multiRecvWatch) sharedStatusPath() string {
	if w.top.Fleet != "" {
		return filepath.Join(w.state, recvStreamsStatusPrefix+w.top.Member+".json")
	}
	return filepath.Join(w.state, recvStreamsStatusFile)
}

// writeShared publishes every running stream of streams in the shared
// file (temp file and rename, so a reader never sees half of it). Not
// fsynced: a report, not state.
func (w *multiRecvWatch) writeShared(streams map[string]recvPublished, now time.Time) error {
	p := recvStreamsPublished{Role: "receiver-streams", PID: os.Getpid(), Member: w.top.Member, UpdatedAt: now.UTC(), Streams: streams}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	path := w.sharedStatusPath()
	tmp := filepath.Join(w.state, "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readSharedRecvStatus reads the shared files in state: for each stream,
// its newest entry. None is no error (not the state dir of a receiver of
// many streams, or of one older than these files); a damaged, oversize or
// irregular file is an error naming it.
func readSharedRecvStatus(state string) (map[string]recvPublished, error) {
	ents, err := os.ReadDir(state)
	if err != nil {
		return nil, nil // readRecvStatus says what is wrong with the dir
	}
	var out map[string]recvPublished
	for _, e := range ents {
		name := e.Name()
		if name != recvStreamsStatusFile && !(strings.HasPrefix(name, recvStreamsStatusPrefix) && strings.HasSuffix(name, ".json")) {
			continue
		}
		path := filepath.Join(state, name)
		raw, err := readStateFileMax(path, maxStreamsStatusFile)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by its receiver meanwhile
		}
		if err != nil {
			return nil, err
		}
		var p recvStreamsPublished
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		if out == nil {
			out = map[string]recvPublished{}
		}
		for stream, s := range p.Streams {
			if old, ok := out[stream]; !ok || s.UpdatedAt.After(old.UpdatedAt) {
				out[stream] = s
			}
		}
	}
	return out, nil
}
