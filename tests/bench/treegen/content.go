//go:build linux

package main

import (
	"encoding/base64"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// The content looks like what a mail server holds: messages (headers and
// text, a fifth of the larger ones with a base64 attachment), service logs
// and binary attachments that do not compress. Words are drawn with a Zipf
// law, as in real text, so zstd gets about what it gets on real mail and logs.

const (
	kindMail = iota
	kindLog
	kindBlob
	kindMbox  // an mbox folder: phase 2 appends messages
	kindIndex // a mail index: phase 2 rewrites records in place and appends
)

var wordList = strings.Fields(`the of and to a in is it you that he was for on are with as I his they
be at one have this from or had by hot word but what some we can out other were all there when up use
your how said an each she which do their time if will way about many then them write would like so
these her long make thing see him two has look more day could go come did number sound no most people
my over know water than call first who may down side been now find meeting report invoice attached
please regards thanks schedule review project budget quarter server backup replica mailbox account
password reset order shipment delivery customer support ticket update release version deploy network
storage disk volume cluster latency throughput failover recovery site primary secondary archive
monday tuesday wednesday thursday friday contract draft agenda minutes approval request confirm
tomorrow yesterday morning afternoon office team manager director finance legal sales marketing`)

var (
	firstNames = strings.Fields("alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert sybil trent victor walter")
	lastNames  = strings.Fields("smith jones brown taylor wilson davies evans thomas johnson roberts walker wright robinson thompson white hughes")
	domains    = strings.Fields("example.com example.org example.net mail.example.com corp.example.org")
	services   = strings.Fields("imap smtp lmtp sieve webmail")
	logMsgs    = []string{
		"login", "logout", "connect from", "disconnect", "message stored", "quota warning", "spam score computed",
		"delivery ok", "deferred: connection timed out", "sieve: fileinto", "TLS handshake done", "auth failed",
	}
)

// contentGen draws every byte from one seeded generator, so a seed gives
// the same tree on any machine.
type contentGen struct {
	r     *rand.Rand
	words []string // drawn with a Zipf law once; picked from uniformly (faster)
	t     int64    // a clock for dates and log timestamps, seconds
}

func newContentGen(seed uint64) *contentGen {
	r := rand.New(rand.NewPCG(seed, 0x7265656774726565))
	zipf := rand.NewZipf(r, 1.1, 2, uint64(len(wordList)-1))
	words := make([]string, 1<<14)
	for i := range words {
		words[i] = wordList[zipf.Uint64()]
	}
	return &contentGen{r: r, words: words, t: 1735787045}
}

// size draws a file size log-uniformly between 1 KiB and 64 KiB (mean
// about 15 KiB): many small messages, some large.
func (g *contentGen) size() int {
	return int(1024 * math.Pow(64, g.r.Float64()))
}

func (g *contentGen) word() string { return g.words[g.r.IntN(len(g.words))] }

func (g *contentGen) person() (name, addr string) {
	f, l := firstNames[g.r.IntN(len(firstNames))], lastNames[g.r.IntN(len(lastNames))]
	return strings.ToUpper(f[:1]) + f[1:] + " " + strings.ToUpper(l[:1]) + l[1:],
		f + "." + l + "@" + domains[g.r.IntN(len(domains))]
}

func (g *contentGen) date() string {
	g.t += int64(g.r.IntN(90))
	return fmt.Sprintf("%d", g.t)
}

func (g *contentGen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.r.IntN(16)]
	}
	return string(b)
}

// text appends words, wrapped at about 72 columns, until b holds n bytes.
func (g *contentGen) text(b []byte, n int) []byte {
	col := 0
	for len(b) < n {
		w := g.word()
		if col > 0 && col+len(w) > 72 {
			b = append(b, '\n')
			col = 0
			if g.r.IntN(6) == 0 {
				b = append(b, '\n')
			}
		} else if col > 0 {
			b = append(b, ' ')
			col++
		}
		b = append(b, w...)
		col += len(w)
	}
	return b
}

func (g *contentGen) random(b []byte, n int) []byte {
	for len(b) < n {
		v := g.r.Uint64()
		b = append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
	}
	return b
}

func (g *contentGen) mail(n int) []byte {
	fromName, from := g.person()
	_, to := g.person()
	b := make([]byte, 0, n+512)
	b = fmt.Appendf(b, "Return-Path: <%s>\nReceived: from mx%d.%s (mx%d.%s [192.0.2.%d])\n\tby mail.example.com (Postfix) with ESMTPS id %s\n\tfor <%s>; %s +0000\n",
		from, g.r.IntN(4), domains[g.r.IntN(len(domains))], g.r.IntN(4), domains[g.r.IntN(len(domains))], g.r.IntN(255), strings.ToUpper(g.hex(10)), to, g.date())
	b = fmt.Appendf(b, "Message-ID: <%s@%s>\nDate: %s +0000\nFrom: %s <%s>\nTo: <%s>\nSubject: %s %s %s\nMIME-Version: 1.0\n",
		g.hex(24), domains[g.r.IntN(len(domains))], g.date(), fromName, from, to, g.word(), g.word(), g.word())
	if n < 8<<10 || g.r.IntN(5) != 0 {
		b = append(b, "Content-Type: text/plain; charset=utf-8\n\n"...)
		return g.text(b, n)[:n]
	}
	boundary := g.hex(16)
	b = fmt.Appendf(b, "Content-Type: multipart/mixed; boundary=%q\n\n--%s\nContent-Type: text/plain; charset=utf-8\n\n", boundary, boundary)
	b = g.text(b, n/2)
	b = fmt.Appendf(b, "\n--%s\nContent-Type: application/octet-stream; name=\"scan-%s.pdf\"\nContent-Transfer-Encoding: base64\n\n", boundary, g.hex(6))
	raw := g.random(nil, (n-len(b))*3/4+3)
	enc := base64.StdEncoding.EncodeToString(raw)
	for len(enc) > 0 && len(b) < n {
		k := min(76, len(enc))
		b = append(b, enc[:k]...)
		b = append(b, '\n')
		enc = enc[k:]
	}
	if len(b) < n {
		b = g.text(b, n)
	}
	return b[:n]
}

// logLines appends log lines until b holds n more bytes (the last line is cut).
func (g *contentGen) logLines(b []byte, n int) []byte {
	end := len(b) + n
	for len(b) < end {
		g.t += int64(g.r.IntN(3))
		svc := services[g.r.IntN(len(services))]
		_, who := g.person()
		switch g.r.IntN(3) {
		case 0:
			b = fmt.Appendf(b, "%d.%03d mail %s[%d]: %s: client=host-%d.example.net[198.51.100.%d], sasl_username=%s\n",
				g.t, g.r.IntN(1000), svc, 1000+g.r.IntN(30000), strings.ToUpper(g.hex(10)), g.r.IntN(500), g.r.IntN(255), who)
		case 1:
			b = fmt.Appendf(b, "%d.%03d mail %s[%d]: level=info msg=%q user=%s dur=%dms id=%s\n",
				g.t, g.r.IntN(1000), svc, 1000+g.r.IntN(30000), logMsgs[g.r.IntN(len(logMsgs))], who, g.r.IntN(400), g.hex(16))
		default:
			b = fmt.Appendf(b, "%d.%03d mail %s[%d]: %s %s %s (%s %s)\n",
				g.t, g.r.IntN(1000), svc, 1000+g.r.IntN(30000), logMsgs[g.r.IntN(len(logMsgs))], g.word(), g.word(), g.word(), g.word())
		}
	}
	return b[:end]
}

// content makes n bytes of the given kind.
func (g *contentGen) content(kind, n int) []byte {
	switch kind {
	case kindMail:
		return g.mail(n)
	case kindLog:
		return g.logLines(make([]byte, 0, n+256), n)
	default:
		return g.random(make([]byte, 0, n+8), n)[:n]
	}
}
