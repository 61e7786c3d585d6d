package main

import (
	"strconv"
	"time"
)

// vocab is what every chunk draws from. Only the client pool depends on the
// seed; the word lists are fixed.
type vocab struct {
	clients [][]byte // client IPs; popular ones come first
}

func newVocab(seed uint64) *vocab {
	r := newRNG(seed, ^uint64(0))
	v := &vocab{clients: make([][]byte, 4096)}
	for i := range v.clients {
		var ip []byte
		switch r.n(4) {
		case 0: // a private range, as behind a load balancer
			ip = append(ip, "10."...)
			ip = strconv.AppendInt(ip, int64(r.n(256)), 10)
		default:
			ip = strconv.AppendInt(ip, int64(1+r.n(223)), 10)
			ip = append(ip, '.')
			ip = strconv.AppendInt(ip, int64(r.n(256)), 10)
		}
		ip = append(ip, '.')
		ip = strconv.AppendInt(ip, int64(r.n(256)), 10)
		ip = append(ip, '.')
		ip = strconv.AppendInt(ip, int64(1+r.n(254)), 10)
		v.clients[i] = ip
	}
	return v
}

// gen holds one chunk's state: its random stream, the clock and the
// per-second timestamp prefixes (formatting a time per line would dominate
// the cost).
type gen struct {
	v   *vocab
	r   *rng
	t   time.Time
	sec int64
	clf []byte // "14/Mar/2025:09:26:53 +0000"
	iso []byte // "2025-03-14T09:26:53"
	// recent request ids: application lines mostly log the id of a request
	// seen shortly before, as a real service does.
	recent [32][16]byte
	nrec   int
}

// chunk appends lines [idx*linesPerChunk, (idx+1)*linesPerChunk) of the
// output to dst. A stack trace counts as one record.
func (v *vocab) chunk(dst []byte, seed, idx uint64) []byte {
	g := &gen{v: v, r: newRNG(seed, idx), sec: -1}
	first := idx * linesPerChunk
	for j := range uint64(linesPerChunk) {
		off := time.Duration(first+j)*lineStep + time.Duration(g.r.n(int(lineStep)))
		g.setTime(startTime.Add(off))
		switch k := g.r.n(1000); {
		case k < 560:
			dst = g.access(dst)
		case k < 900:
			dst = g.app(dst)
		case k < 992:
			dst = g.json(dst)
		default:
			dst = g.trace(dst)
		}
	}
	return dst
}

func (g *gen) setTime(t time.Time) {
	g.t = t
	if s := t.Unix(); s != g.sec {
		g.sec = s
		g.clf = t.AppendFormat(g.clf[:0], "02/Jan/2006:15:04:05 -0700")
		g.iso = t.AppendFormat(g.iso[:0], "2006-01-02T15:04:05")
	}
}

// isoMillis appends "2025-03-14T09:26:53.589Z".
func (g *gen) isoMillis(dst []byte) []byte {
	dst = append(dst, g.iso...)
	ms := g.t.Nanosecond() / 1e6
	return append(dst, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

const hexDigits = "0123456789abcdef"

func (g *gen) hex(dst []byte, n int) []byte {
	for n > 0 {
		x := g.r.u64()
		for i := 0; i < 16 && n > 0; i++ {
			dst = append(dst, hexDigits[x&15])
			x >>= 4
			n--
		}
	}
	return dst
}

// reqID appends a 16-hex-digit request id: a fresh one, or (when reuse) one
// of the recent ones.
func (g *gen) reqID(dst []byte, reuse bool) []byte {
	if reuse && g.nrec > 0 && g.r.percent(85) {
		n := min(g.nrec, len(g.recent))
		return append(dst, g.recent[g.r.skew(n)][:]...)
	}
	var id [16]byte
	g.hex(id[:0], 16)
	copy(g.recent[1:], g.recent[:len(g.recent)-1])
	g.recent[0] = id
	g.nrec++
	return append(dst, id[:]...)
}

// latencyMs draws a long-tailed latency: mostly a few ms, sometimes seconds.
func (g *gen) latencyMs() int {
	switch k := g.r.n(100); {
	case k < 70:
		return 1 + g.r.n(25)
	case k < 95:
		return 20 + g.r.n(300)
	default:
		return 300 + g.r.n(5000)
	}
}

func appendDecimal(dst []byte, v, frac int) []byte {
	dst = strconv.AppendInt(dst, int64(v/frac), 10)
	dst = append(dst, '.')
	s := strconv.Itoa(frac + v%frac)
	return append(dst, s[1:]...)
}

// access appends an nginx "combined" line with request time and id:
//
//	203.0.113.7 - - [14/Mar/2025:09:26:53 +0000] "GET /api/v1/users/42 HTTP/1.1" 200 2326 "-" "curl/8.5.0" rt=0.012 rid=...
func (g *gen) access(dst []byte) []byte {
	r := g.r
	if r.percent(92) {
		dst = append(dst, g.v.clients[r.skew(len(g.v.clients))]...)
	} else {
		for i := range 4 {
			if i > 0 {
				dst = append(dst, '.')
			}
			dst = strconv.AppendInt(dst, int64(r.n(256)), 10)
		}
	}
	dst = append(dst, " - "...)
	if r.percent(10) {
		dst = append(dst, users[r.skew(len(users))]...)
	} else {
		dst = append(dst, '-')
	}
	dst = append(dst, " ["...)
	dst = append(dst, g.clf...)
	dst = append(dst, "] \""...)
	p := &paths[r.skew(len(paths))]
	dst = append(dst, p.method...)
	dst = append(dst, ' ')
	dst = g.expand(dst, p.path)
	if p.query != "" && r.percent(40) {
		dst = g.expand(dst, p.query)
	}
	dst = append(dst, " HTTP/1.1\" "...)
	status := statuses[r.n(len(statuses))]
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	switch {
	case status == 204 || status == 304:
		dst = append(dst, '0')
	case status >= 300:
		dst = strconv.AppendInt(dst, int64(100+r.n(500)), 10)
	default:
		dst = strconv.AppendInt(dst, int64(p.size/2+r.n(p.size+1)), 10)
	}
	dst = append(dst, " \""...)
	if r.percent(75) {
		dst = append(dst, '-')
	} else {
		dst = append(dst, "https://shop.example.com"...)
		dst = g.expand(dst, paths[r.skew(len(paths))].path)
	}
	dst = append(dst, "\" \""...)
	dst = append(dst, agents[r.skew(len(agents))]...)
	dst = append(dst, "\" rt="...)
	dst = appendDecimal(dst, g.latencyMs(), 1000)
	dst = append(dst, " rid="...)
	dst = g.reqID(dst, false)
	return append(dst, '\n')
}

// app appends a logfmt application line:
//
//	2025-03-14T09:26:53.589Z INFO  orders-api [worker-3] req_id=... msg="order created" order_id=... dur_ms=12
func (g *gen) app(dst []byte) []byte {
	r := g.r
	m := &messages[r.skew(len(messages))]
	dst = g.isoMillis(dst)
	dst = append(dst, ' ')
	dst = append(dst, m.level...)
	dst = append(dst, ' ')
	dst = append(dst, services[r.skew(len(services))]...)
	dst = append(dst, " [worker-"...)
	dst = strconv.AppendInt(dst, int64(r.n(16)), 10)
	dst = append(dst, "] req_id="...)
	dst = g.reqID(dst, true)
	dst = append(dst, " msg=\""...)
	dst = append(dst, m.msg...)
	dst = append(dst, "\" "...)
	dst = g.expand(dst, m.kv)
	dst = append(dst, " dur_ms="...)
	dst = strconv.AppendInt(dst, int64(g.latencyMs()), 10)
	return append(dst, '\n')
}

// json appends a structured event line with a small nested payload.
func (g *gen) json(dst []byte) []byte {
	r := g.r
	e := &events[r.skew(len(events))]
	dst = append(dst, `{"ts":"`...)
	dst = g.isoMillis(dst)
	dst = append(dst, `","level":"info","service":"`...)
	dst = append(dst, services[r.skew(len(services))]...)
	dst = append(dst, `","req_id":"`...)
	dst = g.reqID(dst, true)
	dst = append(dst, `","event":"`...)
	dst = append(dst, e.name...)
	dst = append(dst, `",`...)
	dst = g.expand(dst, e.payload)
	dst = append(dst, `,"latency_ms":`...)
	dst = appendDecimal(dst, g.latencyMs()*10+r.n(10), 10)
	return append(dst, "}\n"...)
}

// trace appends an ERROR line followed by a Java-style stack trace.
func (g *gen) trace(dst []byte) []byte {
	r := g.r
	x := &exceptions[r.n(len(exceptions))]
	dst = g.isoMillis(dst)
	dst = append(dst, " ERROR "...)
	dst = append(dst, services[r.skew(len(services))]...)
	dst = append(dst, " [worker-"...)
	dst = strconv.AppendInt(dst, int64(r.n(16)), 10)
	dst = append(dst, "] req_id="...)
	dst = g.reqID(dst, true)
	dst = append(dst, " msg=\"unhandled exception\" "...)
	dst = g.expand(dst, x.kv)
	dst = append(dst, '\n')
	dst = append(dst, x.class...)
	dst = append(dst, ": "...)
	dst = g.expand(dst, x.msg)
	dst = append(dst, '\n')
	// Frames come from one call path with a random entry point and depth,
	// so traces repeat in part, as they do in real logs.
	start := r.n(len(frames) / 2)
	depth := 4 + r.n(10)
	for i := start; i < start+depth && i < len(frames); i++ {
		dst = append(dst, "\tat "...)
		dst = append(dst, frames[i].fn...)
		dst = append(dst, '(')
		dst = append(dst, frames[i].file...)
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, int64(frames[i].line), 10)
		dst = append(dst, ")\n"...)
	}
	if r.percent(30) {
		dst = append(dst, "Caused by: java.net.SocketTimeoutException: Read timed out after "...)
		dst = strconv.AppendInt(dst, int64(1000+r.n(30000)), 10)
		dst = append(dst, "ms\n\t... "...)
		dst = strconv.AppendInt(dst, int64(10+r.n(40)), 10)
		dst = append(dst, " more\n"...)
	}
	return dst
}

// expand appends tmpl with its placeholders filled in:
//
//	{id}   an id, small ones more frequent   {n}    0-99
//	{big}  0-9999999                         {hex}  8 hex digits
//	{word} a word                            {amt}  an amount, 12.34
//	{sku}  SKU-12345                         {host} an upstream host:port
func (g *gen) expand(dst []byte, tmpl string) []byte {
	r := g.r
	for i := 0; i < len(tmpl); i++ {
		c := tmpl[i]
		if c != '{' {
			dst = append(dst, c)
			continue
		}
		end := i + 1
		for end < len(tmpl) && tmpl[end] != '}' {
			end++
		}
		switch tmpl[i+1 : end] {
		case "id":
			dst = strconv.AppendInt(dst, int64(1+r.skew(200000)), 10)
		case "n":
			dst = strconv.AppendInt(dst, int64(r.n(100)), 10)
		case "big":
			dst = strconv.AppendInt(dst, int64(r.n(10000000)), 10)
		case "hex":
			dst = g.hex(dst, 8)
		case "word":
			dst = append(dst, words[r.skew(len(words))]...)
		case "amt":
			dst = appendDecimal(dst, 99+r.skew(50000), 100)
		case "sku":
			dst = append(dst, "SKU-"...)
			dst = strconv.AppendInt(dst, int64(10000+r.skew(9000)), 10)
		case "host":
			dst = append(dst, "10.20."...)
			dst = strconv.AppendInt(dst, int64(r.n(4)), 10)
			dst = append(dst, '.')
			dst = strconv.AppendInt(dst, int64(10+r.n(20)), 10)
			dst = append(dst, ":8080"...)
		default:
			// Not a placeholder (JSON braces): emit the brace only.
			dst = append(dst, c)
			continue
		}
		i = end
	}
	return dst
}
