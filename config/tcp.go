package config

import (
	"fmt"
	"log/slog"

	"github.com/ferry-dr/ferry/internal/redact"
)

// TCP configures the direct link: "ferry ship" with store = "tcp://host:port"
// and "ferry receive --listen". It is the top-level [tcp] table.
type TCP struct {
	// Token is the shared secret both ends must present: at least 16
	// bytes, not the samples' placeholder. Required unless mutual TLS is
	// used. Prefer TokenFile or FERRY_TOKEN, which keep it out of this
	// file (see ResolveToken). Secret: never printed.
	Token string `toml:"token"`

	// Insecure allows plaintext. Default false: without it, the link
	// needs TLS (ca_file on the shipper, cert_file and key_file on the
	// receiver).
	Insecure bool `toml:"insecure"`

	// CAFile (shipper) is the PEM CA that signed the receiver's
	// certificate. CertFile and KeyFile are this side's certificate: the
	// receiver's server certificate, or the shipper's client certificate
	// for mutual TLS.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`

	// ServerName overrides the name checked in the receiver's
	// certificate. Default: the host of the store URL.
	ServerName string `toml:"server_name"`

	// ClientCAFile (receiver) turns on mutual TLS: shippers must present
	// a certificate signed by this CA. Refused with Insecure.
	ClientCAFile string `toml:"client_ca_file"`

	// Listen (receiver) is the address to accept shippers on, e.g.
	// "0.0.0.0:7000". Same as --listen.
	Listen string `toml:"listen"`

	// Inbox (receiver) is the directory where received segments are kept
	// durably before they are applied. Default: STATE/inbox.
	Inbox string `toml:"inbox"`

	// InboxKeep (receiver) prunes the inbox: once applied, segments are
	// deleted except the newest InboxKeep of them (and always the newest
	// one, which a shipper starting on a fresh spool continues from).
	// Default 1000 (DefaultInboxKeep), so a receiver in rolling mode does
	// not grow its inbox, and every pass's listing, without bound; 0 keeps
	// every segment (the inbox is then a full archive).
	InboxKeep int `toml:"inbox_keep"`

	// CheckpointDelay (receiver) lets its durable checkpoint trail what it
	// has applied from the inbox by up to this long, so a steady stream of
	// small segments shares fsyncs and checkpoints. What it applied
	// meanwhile is reported as applied (ack "applied") once it is also
	// durable in the inbox; after a crash it is undone and applied again
	// from there, exactly once. Default 100ms; 0 makes every apply pass
	// durable before it is reported.
	CheckpointDelay Duration `toml:"checkpoint_delay"`

	// BandwidthLimit (shipper) caps the bytes per second sent over the
	// link, e.g. "10MiB". Default 0: no cap.
	BandwidthLimit Size `toml:"bandwidth_limit"`

	// MaxInFlight (shipper) is how many segments may be sent before the
	// first is acknowledged: across a WAN a link waiting for each answer
	// idles for a round trip per segment. The receiver may offer fewer.
	// Default 0: the link's default (4); 1 waits for every answer.
	MaxInFlight int `toml:"max_in_flight"`

	// TokenFile is a file that holds the token, instead of Token: the
	// token alone, one trailing newline allowed, in a regular file that
	// group and others cannot read or write (chmod 600), else ferry
	// refuses to start. Symlinks are followed. See ResolveToken for the
	// order of --token, --token-file, FERRY_TOKEN, token_file and token.
	TokenFile string `toml:"token_file"`

	// TLSClientNames (receiver) narrows mutual TLS to these shippers: a
	// client certificate (already signed by ClientCAFile) whose common
	// name or one of whose DNS names is in the list is accepted, any other
	// refused at the TLS handshake. Matched exactly, ignoring case.
	// Default none: every certificate the CA signed. Needs ClientCAFile.
	TLSClientNames []string `toml:"tls_client_names"`

	// TokenSource says where Token came from once ResolveToken has run:
	// one of the TokenFrom constants. Not a config key.
	TokenSource string `toml:"-"`

	// Limits of the receiver's listener on peers that have not
	// authenticated (docs/PROTOCOL.md "Limits"). 0 means the default.

	// MaxStartups (receiver) caps the connections still in their TLS
	// handshake or HELLO. Default 16.
	MaxStartups int `toml:"max_startups"`
	// MaxConnections (receiver) caps connections in all; the listener
	// holds fewer if the file descriptor limit would otherwise leave less
	// than 64 descriptors for the receiver's own files. Default 64.
	MaxConnections int `toml:"max_connections"`
	// HandshakeTimeout (receiver) is how long a connection has for its
	// TLS handshake and HELLO together. Default 5s.
	HandshakeTimeout Duration `toml:"handshake_timeout"`
}

// maxInFlight bounds tcp.max_in_flight.
const maxInFlight = 64

// String describes t with the token masked.
func (t TCP) String() string {
	tok := ""
	if t.Token != "" {
		tok = redact.Mark
	}
	return fmt.Sprintf("{token:%s insecure:%t ca_file:%s cert_file:%s key_file:%s server_name:%s client_ca_file:%s listen:%s inbox:%s inbox_keep:%d checkpoint_delay:%s bandwidth_limit:%s max_in_flight:%d token_file:%s tls_client_names:%q max_startups:%d max_connections:%d handshake_timeout:%s}",
		tok, t.Insecure, t.CAFile, t.CertFile, t.KeyFile, t.ServerName, t.ClientCAFile, t.Listen, t.Inbox, t.InboxKeep, t.CheckpointDelay, t.BandwidthLimit, t.MaxInFlight, t.TokenFile, t.TLSClientNames,
		t.MaxStartups, t.MaxConnections, t.HandshakeTimeout)
}

// GoString masks the token too.
func (t TCP) GoString() string { return "config.TCP" + t.String() }

// Format makes every fmt verb print the masked form.
func (t TCP) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, t.GoString())
		return
	}
	fmt.Fprint(f, t.String())
}

// LogValue masks the token in slog output.
func (t TCP) LogValue() slog.Value { return slog.StringValue(t.String()) }

// checkListenLimits validates the listener's limits on unauthenticated
// peers, reporting each problem through add.
func checkListenLimits(t *TCP, add func(key, format string, args ...any)) {
	if t.MaxStartups < 0 {
		add("tcp.max_startups", "must not be negative (leave it out for the default 16)")
	}
	switch {
	case t.MaxConnections < 0:
		add("tcp.max_connections", "must not be negative (leave it out for the default 64)")
	case t.MaxConnections == 1:
		add("tcp.max_connections", "1 is too few: the shipper's link and a connection replacing it need 2")
	}
	conns := t.MaxConnections
	if conns == 0 {
		conns = 64
	}
	if t.MaxStartups >= conns {
		add("tcp.max_startups", "%d must be below max_connections (%d)", t.MaxStartups, conns)
	}
	if t.HandshakeTimeout < 0 {
		add("tcp.handshake_timeout", "must not be negative (leave it out for the default 5s)")
	}
}
