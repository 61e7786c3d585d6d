package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"filippo.io/age"

	"github.com/ferry-dr/ferry/batch/crypt"
	"github.com/ferry-dr/ferry/batch/sign"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

const keygenExamples = `  ferry keygen --age /etc/ferry/age.key             # readers' identity; prints the recipient for the shipper
  ferry keygen --signing /etc/ferry/signing.key     # shipper's key; prints the public key for receivers' trusted_keys
  ferry keygen --age age.key --signing signing.key --json
`

// keygenReport is what ferry keygen --json prints.
type keygenReport struct {
	Age     *ageKeyReport     `json:"age,omitempty"`
	Signing *signingKeyReport `json:"signing,omitempty"`
}

type ageKeyReport struct {
	IdentityFile string `json:"identity_file"`
	Recipient    string `json:"recipient"`
	Fingerprint  string `json:"fingerprint"`
}

type signingKeyReport struct {
	KeyFile       string `json:"key_file"`
	PublicKeyFile string `json:"public_key_file"`
	PublicKey     string `json:"public_key"`
	KeyID         string `json:"key_id"`
}

// runKeygen writes new keys, mode 0600, never over an existing file, and
// prints their public parts.
func runKeygen(args []string, stdout, stderr io.Writer) error {
	c := newVerbFlags("keygen", "ferry keygen [--age FILE] [--signing FILE] [--json]", keygenExamples, stderr)
	agePath := c.fs.String("age", "", "write a new age X25519 identity to `FILE` ([encryption] identity_file of the readers)")
	sigPath := c.fs.String("signing", "", "write a new ed25519 signing key to `FILE` ([encryption] signing_key_file of the shipper) and its public key to FILE.pub")
	asJSON := c.fs.Bool("json", false, "print the public parts as JSON")
	if err := c.parseArgs(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", c.fs.Args())}
	}
	if *agePath == "" && *sigPath == "" {
		return usageError{errors.New("give --age FILE, --signing FILE, or both")}
	}
	// Refuse before writing anything, so that no key is made for nothing.
	var paths []string
	if *agePath != "" {
		paths = append(paths, *agePath)
	}
	if *sigPath != "" {
		paths = append(paths, *sigPath, *sigPath+".pub")
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: not overwritten (remove it, or choose another name)", p)
		}
	}
	var rep keygenReport
	if *agePath != "" {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return err
		}
		r := id.Recipient().String()
		data := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), r, id)
		if err := fsutil.CreateNew(*agePath, []byte(data), 0o600); err != nil {
			return err
		}
		rep.Age = &ageKeyReport{IdentityFile: *agePath, Recipient: r, Fingerprint: crypt.Fingerprint(r)}
	}
	if *sigPath != "" {
		key, err := sign.Generate()
		if err != nil {
			return err
		}
		data, err := sign.MarshalPrivateKey(key)
		if err != nil {
			return err
		}
		pub := key.Public().(ed25519.PublicKey)
		if err := fsutil.CreateNew(*sigPath, data, 0o600); err != nil {
			return err
		}
		if err := fsutil.CreateNew(*sigPath+".pub", []byte(sign.PublicKey(pub)+"\n"), 0o600); err != nil {
			return err
		}
		rep.Signing = &signingKeyReport{KeyFile: *sigPath, PublicKeyFile: *sigPath + ".pub", PublicKey: sign.PublicKey(pub), KeyID: sign.KeyID(pub)}
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	if a := rep.Age; a != nil {
		fmt.Fprintf(stdout, "# age identity written to %s (mode 600; readers' [encryption] identity_file)\n", a.IdentityFile)
		fmt.Fprintf(stdout, "# recipient, fingerprint %s: put it in the shipper's [encryption] recipients\n%s\n", a.Fingerprint, a.Recipient)
	}
	if s := rep.Signing; s != nil {
		fmt.Fprintf(stdout, "# ed25519 signing key written to %s (mode 600; the shipper's [encryption] signing_key_file), public key to %s\n",
			s.KeyFile, s.PublicKeyFile)
		fmt.Fprintf(stdout, "# public key, key id %s: put it in the readers' [encryption] trusted_keys\n%s\n", s.KeyID, s.PublicKey)
	}
	return nil
}
