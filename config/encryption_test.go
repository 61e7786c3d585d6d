package config

import (
	"strings"
	"testing"
)

func TestEncryptionTable(t *testing.T) {
	const pub = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
	f, err := Load(writeConfig(t, "stream = \"app\"\nstore = \"/tmp/x\"\n[encryption]\nrecipients = [\""+pub+"\"]\n"+
		"recipients_file = \"/etc/ferry/recipients.txt\"\nidentity_file = \"/etc/ferry/age.key\"\nrequire_encryption = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := f.Encryption
	if len(e.Recipients) != 1 || e.Recipients[0] != pub || e.RecipientsFile != "/etc/ferry/recipients.txt" ||
		e.IdentityFile != "/etc/ferry/age.key" || !e.RequireEncryption || !e.Encrypts() {
		t.Fatalf("loaded %+v", e)
	}
	_, err = Load(writeConfig(t, "stream = \"app\"\n[encryption]\nrecipient = [\""+pub+"\"]\n"))
	if err == nil || !strings.Contains(err.Error(), "encryption.recipient") || !strings.Contains(err.Error(), ":3:") {
		t.Fatalf("unknown [encryption] key: %v, want an error naming encryption.recipient on line 3", err)
	}
	const secret = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
	for _, c := range []struct {
		recipients []string
		verb       string
		want       string
	}{
		{[]string{secret}, "ship", "entry 1 is an age secret key"},
		{[]string{pub, "ssh-ed25519 AAAA"}, "ship", "entry 2 is not an age X25519 public key"},
		{[]string{pub}, "sync", "ferry sync does not encrypt"},
		{[]string{pub}, "ship", ""},
	} {
		f := Defaults()
		f.Stream, f.Store, f.Ship.Spool = "app", "/tmp/x", "/tmp/spool"
		f.Sync.Data, f.Sync.State, f.Sync.Spool = "dir:/tmp/d", "/tmp/s", "/tmp/sp"
		f.Encryption.Recipients = c.recipients
		err := f.Validate(c.verb)
		if c.want == "" {
			if err != nil {
				t.Fatalf("%v: %v", c.recipients, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "encryption.recipients") {
			t.Fatalf("%v for %s: %v, want %q", c.recipients, c.verb, err, c.want)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatal("the error quotes the secret key")
		}
	}
}

func TestSigningKeys(t *testing.T) {
	const pub = "ferry-ed25519:DmnWRfXEG7yShT7UNEQcZVKuyeYCx2YRfb5qs9ASwb4="
	f, err := Load(writeConfig(t, "stream = \"app\"\nstore = \"/tmp/x\"\n[encryption]\nsigning_key_file = \"/etc/ferry/signing.key\"\n"+
		"trusted_keys = [\""+pub+"\"]\ntrusted_keys_file = \"/etc/ferry/trusted.txt\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := f.Encryption
	if e.SigningKeyFile != "/etc/ferry/signing.key" || len(e.TrustedKeys) != 1 || e.TrustedKeys[0] != pub ||
		e.TrustedKeysFile != "/etc/ferry/trusted.txt" || !e.Signs() || !e.Verifies() {
		t.Fatalf("loaded %+v", e)
	}
	for _, c := range []struct {
		keys    []string
		signing string
		verb    string
		want    string
	}{
		{[]string{"-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----"}, "", "receive", "entry 1 is a private key"},
		{[]string{pub, "ssh-ed25519 AAAA"}, "", "receive", "entry 2 is not an ed25519 public key"},
		{nil, "/k", "sync", "ferry sync does not sign"},
		{[]string{pub}, "", "sync", "ferry sync does not sign"},
		{[]string{pub}, "/k", "ship", ""},
	} {
		f := Defaults()
		f.Stream, f.Store, f.Ship.Spool = "app", "/tmp/x", "/tmp/spool"
		f.Sync.Data, f.Sync.State, f.Sync.Spool = "dir:/tmp/d", "/tmp/s", "/tmp/sp"
		f.Encryption.TrustedKeys, f.Encryption.SigningKeyFile = c.keys, c.signing
		err := f.Validate(c.verb)
		if c.want == "" {
			if err != nil {
				t.Fatalf("%v: %v", c.keys, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "encryption.") {
			t.Fatalf("%v for %s: %v, want %q", c.keys, c.verb, err, c.want)
		}
		if strings.Contains(err.Error(), "MC4C") {
			t.Fatal("the error quotes the private key")
		}
	}
}
