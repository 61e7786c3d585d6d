package tcp

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Caps on what a peer can put into the receiver's log: strings it chose
// (stream, client_id, site, ...) and error texts that may echo its bytes.
// An unauthenticated peer's strings get the shorter cap.
const (
	maxLoggedPeer   = 64
	maxLoggedShip   = 1024 // strings of an authenticated shipper, and refusal reasons naming them
	maxLoggedErr    = 256
	defaultLogEvery = 10 * time.Second
)

// peerText makes s, a string a peer sent, fit for a log line: control
// and other non-graphic characters, backslashes and invalid UTF-8 are
// escaped as Go does in a quoted string, and the result is cut to about
// max bytes, saying how much was cut.
func peerText(s string, max int) string {
	out := make([]byte, 0, min(len(s), max)+16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		var esc []byte
		switch {
		case r == utf8.RuneError && n == 1:
			esc = fmt.Appendf(nil, `\x%02x`, s[i])
		case r == '\\' || !unicode.IsGraphic(r):
			q := strconv.QuoteRuneToASCII(r) // 'x' with x escaped
			esc = []byte(q[1 : len(q)-1])
		default:
			esc = []byte(s[i : i+n])
		}
		if len(out)+len(esc) > max {
			return string(fmt.Appendf(out, "...(%d bytes cut)", len(s)-i))
		}
		out = append(out, esc...)
		i += n
	}
	return string(out)
}

// errText is err's text fit for a log line (peerText, maxLoggedErr).
func errText(err error) string {
	if err == nil {
		return ""
	}
	return peerText(err.Error(), maxLoggedErr)
}

// logLimiter lets through at most one log line per kind per interval;
// the lines it holds back are counted, and the count is logged once the
// interval is over. A flood of connections from hostile peers then
// costs the journal a line per kind every few seconds, and a one-off
// event is still logged at once.
type logLimiter struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	kinds  map[string]*logKind
	closed bool
}

type logKind struct {
	last       time.Time // when the last line went out
	suppressed int
	level      slog.Level  // of the lines suppressed
	flush      *time.Timer // reports suppressed at the end of the interval
}

func newLogLimiter(log *slog.Logger, every time.Duration) *logLimiter {
	return &logLimiter{log: log, every: every, kinds: map[string]*logKind{}}
}

// Log logs msg with args at level unless a line of the same kind went out
// less than the interval ago; then it only counts it.
func (l *logLimiter) Log(level slog.Level, kind, msg string, args ...any) {
	l.mu.Lock()
	k := l.kinds[kind]
	if k == nil {
		k = &logKind{level: slog.LevelDebug}
		l.kinds[kind] = k
	}
	now := time.Now()
	if !k.last.IsZero() && now.Sub(k.last) < l.every {
		k.suppressed++
		k.level = max(k.level, level)
		if k.flush == nil && !l.closed {
			k.flush = time.AfterFunc(l.every-now.Sub(k.last), func() { l.report(kind) })
		}
		l.mu.Unlock()
		return
	}
	k.last = now
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, args...)
}

// report logs how many lines of kind were held back since the last one.
func (l *logLimiter) report(kind string) {
	l.mu.Lock()
	k := l.kinds[kind]
	n, level := k.suppressed, k.level
	k.suppressed, k.flush, k.level = 0, nil, slog.LevelDebug
	if n > 0 {
		k.last = time.Now()
	}
	l.mu.Unlock()
	if n > 0 {
		l.log.Log(context.Background(), level, "similar log lines suppressed", "kind", kind, "count", n, "interval", l.every)
	}
}

// Close reports what is held back and stops the pending reports.
func (l *logLimiter) Close() {
	l.mu.Lock()
	l.closed = true
	var pending []string
	for kind, k := range l.kinds {
		if k.flush != nil && k.flush.Stop() {
			pending = append(pending, kind)
		}
	}
	l.mu.Unlock()
	for _, kind := range pending {
		l.report(kind)
	}
}
