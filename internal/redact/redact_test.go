package redact

import "testing"

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"s3://AKIA:s3cr3t@bucket/prefix", "s3://***@bucket/prefix"},
		{"s3://AKIA:s3%cr3t@bucket", "s3://***@bucket"},
		{"s3://AKIAEXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY@bucket/p", "s3://***@bucket/p"},
		{"s3://AKIA:p@ss?w#rd@bucket/p", "s3://***@bucket/p"},
		{"https://user:pw@host:9000", "https://***@host:9000"},
		{"s3://bucket/user@example.com", "s3://***@example.com"}, // over-redacted, never under
		{"s3://bucket/prefix", "s3://bucket/prefix"},
		{"/var/lib/ferry/user@host", "/var/lib/ferry/user@host"},
		{"", ""},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
