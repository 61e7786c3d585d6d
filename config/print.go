package config

import (
	"io"
	"slices"

	"github.com/BurntSushi/toml"

	"github.com/ferry-dr/ferry/internal/redact"
)

// Redacted returns a copy of f that is safe to print: every secret that
// is set (tcp.token and, as S3.Redacted masks them, s3.access_key,
// s3.secret_key and s3.session_token) is redact.Mark, and every URL loses
// its userinfo (Validate refuses one anyway). An unset secret stays "", so
// the reader still sees whether one was set. The copy shares no slice or
// pointer with f.
func (f *File) Redacted() *File {
	r := *f
	r.Store = redact.URL(r.Store)
	r.S3 = f.S3.Redacted()
	r.S3.Endpoint = redact.URL(r.S3.Endpoint)
	if r.TCP.Token != "" {
		r.TCP.Token = redact.Mark
	}
	r.TCP.TLSClientNames = slices.Clone(f.TCP.TLSClientNames)
	r.Ship.DirExclude = slices.Clone(f.Ship.DirExclude)
	r.Ship.StartNow = slices.Clone(f.Ship.StartNow)
	for i, s := range r.Ship.StartNow {
		r.Ship.StartNow[i] = redact.URL(s)
	}
	r.Ship.Windows = slices.Clone(f.Ship.Windows)
	r.Ship.Targets = slices.Clone(f.Ship.Targets)
	for i := range r.Ship.Targets {
		r.Ship.Targets[i].Store = redact.URL(r.Ship.Targets[i].Store)
	}
	r.Sync.Exclude = slices.Clone(f.Sync.Exclude)
	r.Sync.Peers = slices.Clone(f.Sync.Peers)
	for i := range r.Sync.Peers {
		r.Sync.Peers[i].Store = redact.URL(r.Sync.Peers[i].Store)
	}
	return &r
}

// WriteTOML writes f, redacted, as a TOML file that Load reads back to the
// same settings (but for the redacted secrets): every key, defaults
// included, sizes and durations with their units. s3.path_style is left
// out while unset.
func (f *File) WriteTOML(w io.Writer) error {
	return toml.NewEncoder(w).Encode(f.Redacted())
}
