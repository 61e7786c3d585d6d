package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/fleet"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/metrics"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/store"
)

// runReceiveMulti is ferry receive of many streams (a list or glob in
// --stream, [receive] streams, or a fleet): one receiver per stream, each
// with its state in <state>/<stream>/ and its target from the --apply
// template, fed by one listing of the store per poll (receiver.Multi),
// shared with the fleet's other members if there is one (package fleet).
func runReceiveMulti(ctx context.Context, cfg *config.File, stdout io.Writer, log *slog.Logger) error {
	rc := cfg.Receive
	if strings.HasPrefix(cfg.Store, "tcp://") {
		return usageError{errors.New("several streams (a list, a glob or --fleet) are received from a dir or s3 store, not a tcp:// link")}
	}
	if rc.State == "" || rc.Apply == "" {
		return usageError{errors.New("--state DIR (each stream's state goes in DIR/<stream>/) and --apply TEMPLATE (with {stream}) are required")}
	}
	if err := os.MkdirAll(rc.State, 0o755); err != nil {
		return fmt.Errorf("state %s: %w", rc.State, err)
	}
	var reg *metrics.Registry
	var onS3Request func(string)
	if cfg.MetricsAddr != "" {
		reg = metrics.New(readBuildInfo().metrics())
		onS3Request = reg.S3Hook(allStreams) // the streams share the store
	}
	st, err := openExistingStoreWith(ctx, cfg, onS3Request, log)
	if err != nil {
		return err
	}
	dec, err := decrypterFor(cfg)
	if err != nil {
		return err
	}
	trusted, err := verifierFor(cfg)
	if err != nil {
		return err
	}
	patterns := cfg.StreamPatterns()
	if len(patterns) == 0 {
		patterns = []string{"*"}
	}
	id := rc.ID
	if id == "" && cfg.Fleet.Name != "" {
		id = cfg.Fleet.Name // one watermark per stream, whichever member applies it
	}
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		target, err := receiver.ExpandTemplate(rc.Apply, stream)
		if rc.Apply == "stdout" {
			target, err = rc.Apply, nil
		}
		if err != nil {
			return nil, usageError{fmt.Errorf("--apply: %w", err)}
		}
		stateDir, err := receiver.ExpandTemplate(filepath.Join(rc.State, "{stream}"), stream)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(stateDir, 0o755); err != nil {
			return nil, fmt.Errorf("state %s: %w", stateDir, err)
		}
		ap, err := apply.Parse(target, stdout)
		if err != nil {
			return nil, usageError{err}
		}
		slog := log.With("stream", stream)
		configureApplier(ap, rc, slog)
		rcfg := receiveConfig(rc)
		rcfg.Stream, rcfg.Generation, rcfg.StateDir = stream, cfg.Generation, stateDir
		rcfg.Store, rcfg.Applier = st, ap
		rcfg.ReceiverID = receiverID(id)
		rcfg.Decrypter = withKeyEpochs(ctx, dec, st, stream)
		rcfg.RequireEncryption = cfg.Encryption.RequireEncryption
		rcfg.Verifier = batchVerifier(trusted)
		rcfg.Fence = fence
		r, err := receiver.Open(rcfg, slog)
		if err != nil {
			ap.Close()
			return nil, err
		}
		return r, nil
	}
	mcfg := receiver.MultiConfig{Store: st, Match: func(s string) bool { return config.MatchStream(patterns, s) }, Open: open,
		PollMin: time.Duration(rc.PollMin), PollMax: time.Duration(rc.PollMax), Retry: time.Duration(rc.RetryMax)}
	var member *fleet.Member
	if cfg.Fleet.Name != "" {
		sw, err := store.AsSwapper(st, "fleet mode")
		if err != nil {
			return err
		}
		if member, err = newFleetMember(cfg, sw, log); err != nil {
			return err
		}
		if err := member.Join(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		mcfg.Claim = member
	}
	watch := newMultiRecvWatch(rc.State, reg, metrics.Health{MaxLag: time.Duration(cfg.HealthMaxLag)},
		multiRecvPublished{Patterns: patterns, Fleet: cfg.Fleet.Name, Member: memberID(member)})
	mcfg.OnStart, mcfg.OnStop, mcfg.OnGone = watch.started, watch.stopped, watch.gone
	m, err := receiver.NewMulti(mcfg, log)
	if err != nil {
		return err
	}
	if reg != nil {
		stopMetrics, err := reg.Serve(ctx, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	logStart(log, "receive", "streams", strings.Join(patterns, ","), "store", redact.URL(cfg.Store), "state", rc.State,
		"apply", rc.Apply, "fleet", cfg.Fleet.Name, "member", memberID(member))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	fleetErr := make(chan error, 1)
	if member != nil {
		go func() {
			err := member.Run(runCtx)
			if err != nil {
				log.Error("fleet member stopped", "err", err)
			}
			fleetErr <- err
			cancel()
		}()
	}
	statusCtx, stopStatus := context.WithCancel(context.Background())
	statusDone := make(chan struct{})
	go func() {
		watch.loop(statusCtx, m)
		close(statusDone)
	}()
	err = m.Run(runCtx) // stops and releases every stream on its way out
	stopStatus()
	<-statusDone
	if member != nil {
		cancel()
		if ferr := <-fleetErr; ferr != nil && err == nil {
			err = ferr
		}
		member.Leave(context.WithoutCancel(ctx))
	}
	return err
}

func newFleetMember(cfg *config.File, sw store.Swapper, log *slog.Logger) (*fleet.Member, error) {
	id := cfg.Fleet.Member
	if id == "" {
		id = fmt.Sprintf("%s-%d", receiver.DefaultReceiverID(), os.Getpid())
	}
	m, err := fleet.New(fleet.Config{Name: cfg.Fleet.Name, Member: id, TTL: time.Duration(cfg.Fleet.LeaseTTL), Store: sw}, log)
	if err != nil {
		return nil, usageError{err}
	}
	return m, nil
}

func memberID(m *fleet.Member) string {
	if m == nil {
		return ""
	}
	return m.ID()
}
