package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/store"
)

const pushExamples = `  # PostgreSQL (postgresql.conf): archive every WAL segment, .history, .backup
  # and .partial file; PostgreSQL retries until ferry push exits 0
  archive_command = 'ferry push --config /etc/ferry/ferry-pg.toml %p %f'

  # by hand, with flags instead of a config file
  ferry push --store s3://dr-bucket/ferry --stream pg-wal --spool /var/lib/ferry/pg-spool \
      pg_wal/000000010000000000000001

How it works: when a ferry ship runs on the spool, the file is handed to it
through SPOOL/push.sock; otherwise push runs a shipper on the spool itself
(with the config's targets and ack mode), ships the file and waits up to
shutdown_timeout for the targets to store it. It exits 0 once the file is
accepted under the ack mode: with ack "local" that is durable in the spool,
even if sending did not finish in time (the next ship or push sends it);
with "received" or "applied" the targets have it.

NAME defaults to FILE's base name and must be a plain file name (no '/',
no leading '.'). The file travels as one record (1 MiB chunks for a larger
file) named NAME, in the encoding of a dir: source, so a receiver with
--apply dir:DIR keeps pushed files as DIR/NAME. A marker <stream>/pushed/NAME
(sha256, size, seq range) is written to every directory and S3 target and
to SPOOL/pushed after the file is accepted. Pushing the same content again
exits 0 without shipping it again; the same NAME with other content is
refused (exit 1). Every store must answer to check markers, even under ack
"local". The file is held in memory while it is pushed (at most 1023 MiB).
`

// pushSummary is what ferry push --json prints on stdout.
type pushSummary struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Already: pushed before with the same content, nothing shipped now.
	Already  bool   `json:"already"`
	FirstSeq uint64 `json:"first_seq"` // the records that carry the file
	LastSeq  uint64 `json:"last_seq"`
	// Via is "shipper" (the running shipper, ShipperPID, pushed it) or
	// "own" (push ran its own shipper on the spool, under Ack).
	Via        string `json:"via"`
	ShipperPID int    `json:"shipper_pid,omitempty"`
	Ack        string `json:"ack,omitempty"`
}

func runPush(args []string, stdout, stderr io.Writer) error {
	c := newFlags("push", "ferry push [--config FILE | --store URL --stream NAME --spool DIR] [--json] FILE [NAME]", pushExamples, stderr)
	c.acceptWithUsage("spool", "spool `dir` of the stream's shipper (where push.sock and LOCK are)")
	c.acceptWithUsage("ack", "local, received or applied (default: the config's, else local); a running shipper uses its own")
	c.accept("fsync", "max-bytes")
	c.acceptWithUsage("shutdown-timeout", "how long to try sending before exiting when no shipper runs (default 30s)")
	c.acceptWithUsage("also", "also send to this store `URL` (repeatable; see [[ship.targets]])")
	c.accept(shipperLinkFlags...)
	timeout := c.duration("timeout", 10*time.Minute, "give up (exit 1) after this long; PostgreSQL retries a failed archive_command")
	wait := c.duration("wait", 30*time.Second, "how long to wait for a spool that another process holds without answering on push.sock")
	quiet := c.fs.Bool("quiet", false, "print nothing on success")
	asJSON := c.fs.Bool("json", false, "print what was pushed as JSON on stdout")
	err := c.parse(args, "ship")
	if err != nil {
		return err
	}
	if c.fs.NArg() < 1 || c.fs.NArg() > 2 {
		return usageError{errors.New("want FILE [NAME]")}
	}
	path := c.fs.Arg(0)
	name := filepath.Base(path)
	if c.fs.NArg() == 2 {
		name = c.fs.Arg(1)
	}
	if err := shipper.CheckPushName(name); err != nil {
		return usageError{err}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	// A running shipper reads the file itself: hash it here without
	// holding it in memory, so the shipper can tell if it changed.
	req, err := hashPushFile(abs, name)
	if err != nil {
		return err
	}
	log := c.logger(stderr)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stopSig := signalContext(ctx, log)
	defer stopSig()

	spool := c.cfg.Ship.Spool
	sock := filepath.Join(spool, pushSocket)
	waitUntil := time.Now().Add(*wait)
	done := func(s pushSummary, by string) error {
		s.Name, s.Size, s.SHA256 = name, req.Size, req.SHA256
		switch {
		case *asJSON:
			return printJSON(stdout, s)
		case !*quiet:
			reportPush(stderr, name, req, s.Already, s.FirstSeq, s.LastSeq, by)
		}
		return nil
	}
	for {
		reply, served, err := pushViaSocket(ctx, sock, req)
		if err != nil {
			return err
		}
		if served && !reply.Retry {
			if !reply.OK {
				return fmt.Errorf("%s (shipper pid %d)", reply.Error, reply.PID) // names the file
			}
			return done(pushSummary{Already: reply.Already, FirstSeq: reply.FirstSeq, LastSeq: reply.LastSeq, Via: "shipper", ShipperPID: reply.PID},
				fmt.Sprintf("the running shipper (pid %d)", reply.PID))
		}
		if !served {
			held, err := fsutil.Locked(spool)
			if err != nil {
				return err
			}
			if !held {
				src, closeSrc, err := openPushFile(abs, name)
				if err != nil {
					return err
				}
				if src.Size != req.Size {
					closeSrc()
					return fmt.Errorf("%s changed while it was pushed: %d bytes when hashed, %d now", abs, req.Size, src.Size)
				}
				src.Check = checkPushHash(req)
				res, err := pushOwn(ctx, c.cfg, src, log)
				closeSrc()
				if errors.Is(err, errSpoolTaken) {
					continue // another process took the spool meanwhile
				}
				if err != nil {
					return err // names the file, or the spool or store at fault
				}
				return done(pushSummary{Already: res.Already, FirstSeq: res.Marker.FirstSeq, LastSeq: res.Marker.LastSeq, Via: "own", Ack: string(c.cfg.Ship.Ack)},
					"push's own shipper (none was running), ack "+string(c.cfg.Ship.Ack))
			}
			if time.Now().After(waitUntil) {
				return fmt.Errorf("%s: spool %s is held by pid %s, which does not answer on %s (a ferry ship from before push existed, or stuck?); stop it or run ferry push again",
					name, spool, lockPid(spool), sock)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// hashPushFile checks that path is a regular file a push can carry and
// returns the request for it, with its size and SHA-256.
func hashPushFile(path, name string) (pushRequest, error) {
	req := pushRequest{Name: name, Path: path}
	f, fi, err := fsutil.OpenRegular(path)
	if err != nil {
		return req, err
	}
	defer f.Close()
	if fi.Size() > shipper.MaxPushSize {
		return req, fmt.Errorf("%s is %d bytes; a push carries at most %d", path, fi.Size(), shipper.MaxPushSize)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return req, fmt.Errorf("read %s: %w", path, err)
	}
	req.SHA256, req.Size = hex.EncodeToString(h.Sum(nil)), n
	return req, nil
}

// reportPush prints the one line a successful push prints; by says who
// did it.
func reportPush(w io.Writer, name string, req pushRequest, already bool, first, last uint64, by string) {
	if already {
		fmt.Fprintf(w, "ferry push: %s: already pushed with identical content (sha256 %.16s, %s); nothing shipped (checked by %s)\n",
			name, req.SHA256, sizeString(req.Size), by)
		return
	}
	fmt.Fprintf(w, "ferry push: %s: %s, sha256 %.16s, seq %d-%d, shipped by %s\n", name, sizeString(req.Size), req.SHA256, first, last, by)
}

// pushViaSocket asks the shipper serving sock to push req. served is false
// when nothing answers there (no socket, connection refused) or the
// connection broke before a reply (the shipper died: pushing again is
// safe).
func pushViaSocket(ctx context.Context, sock string, req pushRequest) (pushReply, bool, error) {
	var reply pushReply
	if _, err := os.Stat(sock); err != nil {
		return reply, false, nil
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return reply, false, nil
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return reply, false, nil
	}
	line, err := bufio.NewReader(io.LimitReader(conn, maxPushRequest)).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return reply, false, fmt.Errorf("%s: %w (waiting for the shipper on %s)", req.Name, ctx.Err(), sock)
		}
		return reply, false, nil
	}
	if err := json.Unmarshal(line, &reply); err != nil {
		return reply, false, fmt.Errorf("%s: bad reply from %s: %v", req.Name, sock, err)
	}
	return reply, true, nil
}

func lockPid(spool string) string {
	b, _ := os.ReadFile(filepath.Join(spool, "LOCK"))
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return "unknown"
}

var errSpoolTaken = errors.New("spool taken by another process")

// pushOwn runs a shipper on the spool for one file: append it, try to send
// everything in the spool within shutdown_timeout, write the markers.
func pushOwn(ctx context.Context, cfg *config.File, file shipper.PushSource, log *slog.Logger) (shipper.PushResult, error) {
	var res shipper.PushResult
	sc := cfg.Ship
	retry := store.RetryPolicy{Min: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
	enc, err := encrypterFor(cfg, nil)
	if err != nil {
		return res, err
	}
	signer, err := signerFor(cfg, nil)
	if err != nil {
		return res, err
	}
	sh, targets, closeTargets, err := openShipper(ctx, cfg, nil, log, func(targets []shipper.Target, gen uint32) shipper.Config {
		c := shipConfig(cfg, targets, gen, enc, signer)
		c.Retry = retry
		return c
	})
	if err != nil {
		if held, _ := fsutil.Locked(sc.Spool); held {
			return res, errSpoolTaken
		}
		return res, err
	}
	defer closeTargets()
	defer sh.Close()
	markers, err := pushMarkerStores(cfg, targets)
	if err != nil {
		return res, err
	}
	// The file stays where it is until push exits 0, and push exits 0
	// only once its records are sealed: they are written once, into the
	// segment, with no journal copy.
	sh.SourceReplayable()
	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- sh.Run(runCtx) }()
	defer func() { stopRun(); <-runErr }()
	// drain tries to send everything in the spool within shutdown_timeout.
	// Running out of time is no error: the file is accepted under the ack
	// mode already, and the next ship or push sends the rest.
	drain := func(ctx context.Context) error {
		dctx, cancel := context.WithTimeout(ctx, time.Duration(sc.ShutdownTimeout))
		defer cancel()
		err := sh.Drain(dctx)
		if err != nil && sh.Failed() == nil && ctx.Err() == nil && dctx.Err() != nil {
			log.Warn("not every segment was sent within shutdown_timeout; they stay in the spool", "err", err)
			return nil
		}
		return err
	}
	p := &shipper.Pusher{Shipper: sh, Markers: markers, Retry: retry, Log: log.With("via", "own shipper"),
		// Nothing else appends to this shipper: the file may go in
		// several spool entries, which avoids rewriting a large entry's
		// tail at every seal.
		BatchBytes:  int(sc.MaxBytes),
		AfterAppend: drain,
	}
	res, err = p.PushFrom(ctx, file)
	if err == nil && res.Already && sh.Spool().Stats().SealedPending > 0 {
		err = drain(ctx) // what an earlier push left in the spool
	}
	return res, err
}
