package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/transport/tcp"
)

// openTCP builds the shipper's end of a direct link to tcp://host:port.
func openTCP(cfg *config.File, log *slog.Logger) (store.Store, error) {
	addr := strings.TrimPrefix(cfg.Store, "tcp://")
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("store %q: want tcp://host:port", redact.URL(cfg.Store))}
	}
	t := cfg.TCP
	cc := tcp.ClientConfig{Addr: addr, Stream: cfg.Stream, Generation: cfg.Generation, Token: t.Token,
		Insecure: t.Insecure, BandwidthLimit: int64(t.BandwidthLimit), MaxInFlight: t.MaxInFlight,
		Site: cfg.Site.ID, Spool: cfg.Ship.Spool}
	if t.CAFile != "" || t.CertFile != "" {
		name := t.ServerName
		if name == "" {
			name = host
		}
		cc.TLS, err = tcp.LoadClientTLS(t.CAFile, t.CertFile, t.KeyFile, name)
		if err != nil {
			return nil, err
		}
	}
	c, err := tcp.NewClient(cc, log)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// spoolHistoryDir is where a spool keeps a copy of the stream's history
// (written by ferry promote --spool), for a shipper whose only targets are
// tcp:// links: it must send its generation's record to the receivers,
// and has no store to read it from.
func spoolHistoryDir(spool string) string { return filepath.Join(spool, "history") }

// linkHistory is the history a shipper of generation gen sends over its
// links: what its store targets hold, else the spool's copy.
func linkHistory(ctx context.Context, sh *shipper.Shipper, cfg *config.File) ([]batch.Generation, error) {
	h, ok := sh.History()
	if !ok {
		st, err := dir.New(spoolHistoryDir(cfg.Ship.Spool))
		if err != nil {
			return nil, err
		}
		if h, err = catalog.ReadHistory(ctx, st, cfg.Stream); err != nil {
			return nil, fmt.Errorf("spool %s: %w", cfg.Ship.Spool, err)
		}
	}
	recs := h.Records()
	if len(recs) == 0 && sh.Generation() > 1 {
		return nil, fmt.Errorf("the shipper writes generation %d but neither its store targets nor spool %s hold the stream's history; promote with --spool, or add the archive store as a target",
			sh.Generation(), cfg.Ship.Spool)
	}
	return recs, nil
}

// newLinkServer builds the server of a link receiver. Segments go into
// inbox; generation records into records, the same directory through a
// store that fsyncs before it publishes (a record cannot be resent, so it
// must never be torn). The server accepts the generations the inbox's
// history allows (fencing older ones), not a pinned one.
func newLinkServer(cfg *config.File, inbox, records store.Store, log *slog.Logger) (*tcp.Server, error) {
	t := cfg.TCP
	srv := &tcp.Server{Addr: t.Listen, Token: t.Token, Insecure: t.Insecure, Inbox: inbox, Records: records,
		Stream: cfg.Stream, Log: log,
		MaxStartups: t.MaxStartups, MaxConnections: t.MaxConnections, HandshakeTimeout: time.Duration(t.HandshakeTimeout)}
	// A segment the receiver would refuse is refused by the link, so the
	// shipper is told at once (64 KiB: the frame's name header).
	srv.MaxSegment = int64(cfg.Receive.MaxSegmentBytes) + 64<<10
	if t.CertFile != "" || t.KeyFile != "" {
		var err error
		srv.TLS, err = tcp.LoadServerTLS(t.CertFile, t.KeyFile, t.ClientCAFile)
		if err != nil {
			return nil, err
		}
	}
	if len(t.TLSClientNames) > 0 {
		if srv.TLS == nil {
			return nil, usageError{errors.New("tcp.tls_client_names needs mutual TLS: set cert_file, key_file and client_ca_file (--tls-cert, --tls-key, --tls-client-ca)")}
		}
		if err := tcp.RequireClientNames(srv.TLS, t.TLSClientNames); err != nil {
			return nil, usageError{fmt.Errorf("tcp.tls_client_names: %w", err)}
		}
	}
	if err := srv.Check(); err != nil {
		return nil, usageError{err}
	}
	return srv, nil
}

// A tcp:// target reports the receiver's watermarks to the shipper.
var _ shipper.Watermarker = (*tcp.Client)(nil)
