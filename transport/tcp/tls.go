package tcp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// LoadServerTLS builds a server TLS config (TLS 1.3 minimum) from PEM
// files: the receiver's certificate chain and key, and, if clientCAFile is
// not empty, the CA that shippers' client certificates must chain to
// (mutual TLS: a shipper without such a certificate is refused). Errors
// name the file at fault.
func LoadServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if clientCAFile != "" {
		pool, err := loadCAs(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// LoadClientTLS builds a client TLS config (TLS 1.3 minimum) from PEM
// files: the CA that must have signed the receiver's certificate (empty
// means the system roots), and, for mutual TLS, this shipper's certificate
// and key (both or neither). serverName overrides the name the receiver's
// certificate is checked against; empty means the host of the address
// dialled. Errors name the file at fault.
func LoadClientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: serverName}
	if caFile != "" {
		pool, err := loadCAs(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("TLS client certificate needs both a cert file and a key file (got cert %q, key %q)", certFile, keyFile)
	}
	if certFile != "" {
		cert, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, fmt.Errorf("TLS needs both a cert file and a key file (got cert %q, key %q)", certFile, keyFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read TLS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// maxLoggedName bounds a certificate name quoted in an error: the names
// come from the peer.
const maxLoggedName = 64

// ErrClientName is the error (wrapped) of a mutual-TLS handshake refused
// because the client certificate's names are not in the allow-list.
var ErrClientName = errors.New("client certificate name not allowed")

// RequireClientNames narrows a mutual-TLS server config (one with a client
// CA) to client certificates whose subject common name or one of whose DNS
// names equals one of names, ignoring case. Any other certificate, even
// one the CA signed, fails the handshake with an error wrapping
// ErrClientName that quotes what it presented, truncated. Empty names
// leave cfg as it is.
func RequireClientNames(cfg *tls.Config, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		return errors.New("TLS client names need a client CA (mutual TLS)")
	}
	allowed := make(map[string]bool, len(names))
	for _, n := range names {
		allowed[strings.ToLower(n)] = true
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: no verified client certificate", ErrClientName)
		}
		leaf := cs.PeerCertificates[0]
		presented := append([]string{leaf.Subject.CommonName}, leaf.DNSNames...)
		for _, n := range presented {
			if n != "" && allowed[strings.ToLower(n)] {
				return nil
			}
		}
		return fmt.Errorf("%w: the certificate presents %s, none of them in tls_client_names", ErrClientName, describeNames(leaf))
	}
	return nil
}

// describeNames quotes a certificate's common name and first DNS names for
// a log line, each truncated and escaped: the peer chose them.
func describeNames(c *x509.Certificate) string {
	quote := func(s string) string {
		if len(s) > maxLoggedName {
			s = s[:maxLoggedName] + "..."
		}
		return strconv.QuoteToASCII(s)
	}
	parts := []string{"common name " + quote(c.Subject.CommonName)}
	const shown = 3
	for i, n := range c.DNSNames {
		if i == shown {
			parts = append(parts, fmt.Sprintf("and %d more", len(c.DNSNames)-shown))
			break
		}
		parts = append(parts, "DNS name "+quote(n))
	}
	return strings.Join(parts, ", ")
}
