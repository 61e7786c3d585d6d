package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// A ship with [[streams]] publishes the status of every stream it runs in
// one file in its spool root, streams-status.json, rewritten by one
// goroutine every streamStatusEvery: one temp file and rename for all the
// streams, where a status.json per stream was one per stream (100 streams:
// 20 renames a second, 6-8% of the ship's CPU). When a stream stops, its
// last word (running false) goes to its own spool's status.json, as a
// one-stream ship leaves it. ferry status --spool SPOOL/NAME reads
// whichever of the two says more recently how NAME stands.

// streamsStatusFile is that file, in the spool root of a ship with
// [[streams]]. Not fsynced: it is a report, not state.
const streamsStatusFile = "streams-status.json"

// maxStreamsStatusFile caps it as ferry status reads it: about 700 bytes a
// stream, so room for some 90,000 streams.
const maxStreamsStatusFile = 64 << 20

// streamsPublished is the content of streams-status.json.
type streamsPublished struct {
	Role      string                `json:"role"` // "shipper-streams"
	PID       int                   `json:"pid"`
	UpdatedAt time.Time             `json:"updated_at"`
	Streams   map[string]shipStatus `json:"streams"` // by stream name: its spool is SPOOL/NAME
}

// streamsStatus publishes the status of a ship's running streams in
// root/streams-status.json.
type streamsStatus struct {
	root  string
	every time.Duration
	// soon is how long after a stream is added the file is rewritten, so
	// ferry status shows a stream that just started without waiting for
	// the next period (streams started together share that rewrite).
	soon time.Duration

	mu      sync.Mutex
	streams map[string]func(now time.Time) shipStatus
	kick    chan struct{}
}

func newStreamsStatus(root string, every time.Duration) *streamsStatus {
	return &streamsStatus{root: root, every: every, soon: time.Second, streams: map[string]func(time.Time) shipStatus{},
		kick: make(chan struct{}, 1)}
}

// add publishes stream name's status, from snap, from the next rewrite on.
func (p *streamsStatus) add(name string, snap func(now time.Time) shipStatus) {
	p.mu.Lock()
	p.streams[name] = snap
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// remove stops publishing stream name, and leaves its last word, last
// (running false), in its spool's own status.json: dated after any
// rewrite of the shared file that held it, so ferry status reads it.
func (p *streamsStatus) remove(name, spoolDir string, last func(now time.Time) shipStatus) {
	p.mu.Lock()
	delete(p.streams, name)
	p.mu.Unlock()
	s := last(time.Now())
	s.Running = false
	writeShipStatus(spoolDir, s)
}

// run rewrites the file every p.every, and p.soon after a stream is
// added, until ctx ends.
func (p *streamsStatus) run(ctx context.Context) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(p.soon):
			}
		}
		p.publish(time.Now())
	}
}

// publish rewrites the file with every stream's status as of now (temp
// file and rename, so a reader never sees half of it).
func (p *streamsStatus) publish(now time.Time) error {
	p.mu.Lock()
	snaps := make(map[string]func(time.Time) shipStatus, len(p.streams))
	for name, snap := range p.streams {
		snaps[name] = snap
	}
	p.mu.Unlock()
	out := streamsPublished{Role: "shipper-streams", PID: os.Getpid(), UpdatedAt: now.UTC(), Streams: make(map[string]shipStatus, len(snaps))}
	for name, snap := range snaps {
		out.Streams[name] = snap(now)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	tmp := filepath.Join(p.root, "."+streamsStatusFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(p.root, streamsStatusFile))
}

// readStreamsEntry reads the status a ship with [[streams]] published
// for the stream whose spool is dir, in the spool root above it; ok is
// false when there is none (no such file: not a stream's spool, or a ship
// older than this file; or the file does not name the stream).
func readStreamsEntry(dir string) (s shipStatus, ok bool, err error) {
	dir = filepath.Clean(dir)
	path := filepath.Join(filepath.Dir(dir), streamsStatusFile)
	raw, err := readStateFileMax(path, maxStreamsStatusFile)
	if errors.Is(err, os.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, err
	}
	var p streamsPublished
	if err := json.Unmarshal(raw, &p); err != nil {
		return s, false, fmt.Errorf("%s: %v", path, err)
	}
	s, ok = p.Streams[filepath.Base(dir)]
	return s, ok, nil
}
