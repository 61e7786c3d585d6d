package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// The push socket (README "Hooks"): while `ferry ship` runs it serves
// SPOOL/push.sock (mode 0600, so only its user and root can connect).
// One request per connection, one JSON object per line each way:
//
//	request  {"name":"000000010000000000000001","path":"/abs/pg_wal/0000...","sha256":"<hex>","size":16777216}
//	reply    {"ok":true,"already":false,"first_seq":12,"last_seq":28,"pid":4242}
//	         {"ok":false,"error":"...","conflict":true}   the name was pushed with other content
//	         {"ok":false,"error":"...","retry":true}      the shipper is stopping: try again
//
// The shipper reads the file at path itself and refuses it when its size
// or SHA-256 differ from the request's (it changed in between). The reply
// comes only once the records are accepted under the shipper's ack mode
// and the markers are written. A client that hangs up cancels its push;
// pushing again is always safe.
const pushSocket = "push.sock"

type pushRequest struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

type pushReply struct {
	OK       bool   `json:"ok"`
	Already  bool   `json:"already,omitempty"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
	PID      int    `json:"pid,omitempty"`
	Error    string `json:"error,omitempty"`
	Conflict bool   `json:"conflict,omitempty"`
	Retry    bool   `json:"retry,omitempty"`
}

// maxPushRequest caps a request line.
const maxPushRequest = 64 << 10

// pushMarkerStores lists where a push keeps its markers: every target that
// holds arbitrary objects (directory and S3 stores, not tcp:// links, whose
// receiver accepts only segments) and the spool's own index, SPOOL/pushed,
// which also covers a shipper whose only targets are links.
func pushMarkerStores(cfg *config.File, targets []shipper.Target) ([]shipper.MarkerStore, error) {
	idx, err := dir.New(filepath.Join(cfg.Ship.Spool, "pushed"))
	if err != nil {
		return nil, fmt.Errorf("push index in spool %s: %w", cfg.Ship.Spool, err)
	}
	out := []shipper.MarkerStore{{Name: "spool index " + filepath.Join(cfg.Ship.Spool, "pushed"), Store: idx,
		Key: func(name string) string { return name }}}
	stream := cfg.Stream
	for _, t := range targets {
		if store.IsSegmentsOnly(t.Store) {
			continue
		}
		out = append(out, shipper.MarkerStore{Name: "target " + t.Name + " (" + t.Store.String() + ")", Store: t.Store,
			Key: func(name string) string { return shipper.PushMarkerKey(stream, name) }})
	}
	return out, nil
}

// newPusher returns the running shipper's Pusher, made (with SPOOL/pushed)
// on first use; push.sock and the pg_data read-ahead share it, so pushes
// of one name are serialised between them.
func newPusher(cfg *config.File, sh *shipper.Shipper, targets []shipper.Target, log *slog.Logger) func() (*shipper.Pusher, error) {
	var once sync.Once
	var p *shipper.Pusher
	var perr error
	return func() (*shipper.Pusher, error) {
		once.Do(func() {
			markers, err := pushMarkerStores(cfg, targets)
			if err != nil {
				perr = err
				return
			}
			p = &shipper.Pusher{Shipper: sh, Markers: markers, Log: log,
				Retry: store.RetryPolicy{Min: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2},
				// Sealed at once, so the file is on its way to the
				// targets without waiting for max_age.
				AfterAppend: func(context.Context) error { return sh.Spool().Seal("push") }}
		})
		return p, perr
	}
}

// servePush serves the push socket of a running shipper until ctx ends or
// the returned stop is called; stop waits for the pushes in progress. A
// socket that cannot be served is logged, not fatal: pushes then fail
// with an error naming this process.
func servePush(ctx context.Context, cfg *config.File, pusher func() (*shipper.Pusher, error), log *slog.Logger) (stop func()) {
	path := filepath.Join(cfg.Ship.Spool, pushSocket)
	ln, err := listenPrivate(path)
	if err != nil {
		log.Warn("push socket not served; ferry push will fail while this shipper runs", "path", path, "err", err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					log.Warn("push socket accept failed; not serving pushes any more", "err", err)
				}
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handlePush(ctx, pusher, conn.(*net.UnixConn), log)
			}()
		}
	}()
	go func() { <-ctx.Done(); ln.Close() }()
	return func() {
		cancel()
		ln.Close()
		wg.Wait()
		os.Remove(path)
	}
}

// listenPrivate listens on a unix socket at path with mode 0600 from the
// start: it is made in a private directory, chmodded and renamed into
// place. A stale socket at path is replaced (the caller holds the spool's
// lock, so no other shipper serves it).
func listenPrivate(path string) (*net.UnixListener, error) {
	// sun_path holds 108 bytes on Linux, 104 on macOS; the temp name is
	// about 17 longer.
	if len(path)+17 > 103 {
		return nil, fmt.Errorf("%s is too long for a unix socket path: use a spool path of at most 76 bytes", path)
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".push-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, pushSocket)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func handlePush(ctx context.Context, pusher func() (*shipper.Pusher, error), conn *net.UnixConn, log *slog.Logger) {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(conn, maxPushRequest)).ReadBytes('\n')
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	var req pushRequest
	if err := json.Unmarshal(line, &req); err != nil {
		writeReply(conn, pushReply{Error: fmt.Sprintf("bad request: %v", err)})
		return
	}
	// The client sends nothing more; its hanging up ends the read.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		var b [1]byte
		conn.Read(b[:])
		cancel()
	}()
	start := time.Now()
	var reply pushReply
	if p, err := pusher(); err != nil {
		reply = pushReply{Error: err.Error()}
	} else {
		reply = pushFromRequest(ctx, p, req)
	}
	switch {
	case reply.OK && reply.Already:
		log.Info("pushed file was already stored", "via", "push.sock", "name", req.Name, "bytes", req.Size)
	case reply.OK:
		log.Info("pushed file", "via", "push.sock", "name", req.Name, "bytes", req.Size,
			"first_seq", reply.FirstSeq, "last_seq", reply.LastSeq, "took", time.Since(start).Round(time.Millisecond))
	case ctx.Err() == nil:
		log.Warn("push refused", "via", "push.sock", "name", req.Name, "err", reply.Error)
	}
	if ctx.Err() != nil && !reply.OK {
		reply = pushReply{Error: "the shipper is stopping; push again", Retry: true}
	}
	reply.PID = os.Getpid()
	writeReply(conn, reply)
}

func pushFromRequest(ctx context.Context, p *shipper.Pusher, req pushRequest) pushReply {
	if err := shipper.CheckPushName(req.Name); err != nil {
		return pushReply{Error: err.Error()}
	}
	if !filepath.IsAbs(req.Path) {
		return pushReply{Error: fmt.Sprintf("path %q is not absolute", req.Path)}
	}
	// Already shipped (by the read-ahead of --pg-data, or an earlier
	// push): the markers agree with the hash ferry push took of the file,
	// so there is nothing to read.
	if m, ok, err := p.Shipped(ctx, req.Name, req.SHA256, req.Size); err != nil {
		return pushReply{Error: err.Error(), Conflict: errors.Is(err, shipper.ErrPushConflict)}
	} else if ok {
		return pushReply{OK: true, Already: true, FirstSeq: m.FirstSeq, LastSeq: m.LastSeq}
	}
	src, closeSrc, err := openPushFile(req.Path, req.Name)
	if err != nil {
		return pushReply{Error: err.Error()}
	}
	defer closeSrc()
	if src.Size != req.Size {
		return pushReply{Error: fmt.Sprintf("%s changed while it was pushed: ferry push read %d bytes with sha256 %s, the shipper finds %d bytes",
			req.Path, req.Size, req.SHA256, src.Size)}
	}
	src.Check = checkPushHash(req)
	res, err := p.PushFrom(ctx, src)
	if err != nil {
		return pushReply{Error: err.Error(), Conflict: errors.Is(err, shipper.ErrPushConflict)}
	}
	return pushReply{OK: true, Already: res.Already, FirstSeq: res.Marker.FirstSeq, LastSeq: res.Marker.LastSeq}
}

func writeReply(conn net.Conn, r pushReply) {
	b, _ := json.Marshal(r)
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	conn.Write(append(b, '\n'))
}

// openPushFile opens a regular file to push under name: the records are
// read from it by Pusher.PushFrom. The caller calls closeFile once that
// returned.
func openPushFile(path, name string) (src shipper.PushSource, closeFile func(), err error) {
	f, fi, err := fsutil.OpenRegular(path)
	if err != nil {
		return src, nil, err
	}
	if fi.Size() > shipper.MaxPushSize {
		f.Close()
		return src, nil, fmt.Errorf("%s is %d bytes; a push carries at most %d", path, fi.Size(), shipper.MaxPushSize)
	}
	mode := uint32(fi.Mode().Perm())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		mode = uint32(st.Mode) & 0o7777
	}
	// Read errors name the path, not just the name.
	r := &pathReader{f: f, path: path}
	return shipper.PushSource{Name: name, R: r, Size: fi.Size(), Mode: mode, Mtime: fi.ModTime().UnixNano()}, func() { f.Close() }, nil
}

// pathReader is a file whose read errors name its path.
type pathReader struct {
	f    *os.File
	path string
}

func (r *pathReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s: %w", r.path, err)
	}
	return n, err
}

// checkPushHash is the check a shipper makes of a file ferry push asked
// it to push: the content it read has the size and SHA-256 ferry push
// took (the file did not change in between).
func checkPushHash(req pushRequest) func(sum [32]byte) error {
	return func(sum [32]byte) error {
		if got := hex.EncodeToString(sum[:]); got != req.SHA256 {
			return fmt.Errorf("%s changed while it was pushed: ferry push read %d bytes with sha256 %s, the shipper read sha256 %s",
				req.Path, req.Size, req.SHA256, got)
		}
		return nil
	}
}
