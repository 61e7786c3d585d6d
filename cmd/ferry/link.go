package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/transport/tcp"
)

// addLinkFlags adds the direct-link flags (see [tcp] in the config).
func addLinkFlags(fs *flag.FlagSet, receiverSide bool) {
	fs.String("token", "", "shared secret for the TCP link (prefer the config file: flags show in ps)")
	fs.Bool("insecure", false, "allow a plaintext TCP link (no TLS)")
	fs.String("tls-cert", "", "this side's TLS certificate `file` (PEM)")
	fs.String("tls-key", "", "this side's TLS key `file` (PEM)")
	if receiverSide {
		fs.String("listen", "", "accept shippers on this `address` (host:port) and apply what they send")
		fs.String("tls-client-ca", "", "require client certificates signed by this CA `file` (mutual TLS)")
		fs.String("inbox", "", "`dir` for received segments (default STATE/inbox)")
	} else {
		fs.String("tls-ca", "", "CA `file` that signed the receiver's certificate")
		fs.String("bandwidth-limit", "", "cap the link at this many `bytes` per second (e.g. 10MiB)")
	}
}

// applyLinkFlag applies one direct-link flag; ok is false if f is not one.
func applyLinkFlag(cfg *config.File, f *flag.Flag) (ok bool, err error) {
	t := &cfg.TCP
	v := f.Value.String()
	switch f.Name {
	case "token":
		t.Token = v
	case "insecure":
		t.Insecure = v == "true"
	case "tls-cert":
		t.CertFile = v
	case "tls-key":
		t.KeyFile = v
	case "tls-ca":
		t.CAFile = v
	case "tls-client-ca":
		t.ClientCAFile = v
	case "listen":
		t.Listen = v
	case "inbox":
		t.Inbox = v
	case "bandwidth-limit":
		t.BandwidthLimit, err = config.ParseSize(v)
	default:
		return false, nil
	}
	return true, err
}

// openTCP builds the shipper's end of a direct link to tcp://host:port.
func openTCP(cfg *config.File, log *slog.Logger) (store.Store, error) {
	addr := strings.TrimPrefix(cfg.Store, "tcp://")
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("store %q: want tcp://host:port", cfg.Store)}
	}
	t := cfg.TCP
	cc := tcp.ClientConfig{Addr: addr, Stream: cfg.Stream, Generation: cfg.Generation, Token: t.Token,
		Insecure: t.Insecure, BandwidthLimit: int64(t.BandwidthLimit), MaxInFlight: t.MaxInFlight}
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

// newLinkServer builds the receiver's end of the direct link.
func newLinkServer(cfg *config.File, inbox store.Store, log *slog.Logger) (*tcp.Server, error) {
	t := cfg.TCP
	srv := &tcp.Server{Addr: t.Listen, Token: t.Token, Insecure: t.Insecure, Inbox: inbox,
		Stream: cfg.Stream, Generation: cfg.Generation, Log: log}
	if t.CertFile != "" || t.KeyFile != "" {
		var err error
		srv.TLS, err = tcp.LoadServerTLS(t.CertFile, t.KeyFile, t.ClientCAFile)
		if err != nil {
			return nil, err
		}
	}
	if err := srv.Check(); err != nil {
		return nil, usageError{err}
	}
	return srv, nil
}

// A tcp:// target reports the receiver's watermarks to the shipper.
var _ shipper.Watermarker = (*tcp.Client)(nil)
