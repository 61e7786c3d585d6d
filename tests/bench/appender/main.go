// Command appender embeds ferry's shipper through the Go API and drives
// Append from many goroutines, as an application embedding ferry would. It
// serves the link benchmark (latency percentiles and throughput under each
// ack mode) and the end-to-end tests that need to know exactly when an
// Append returned (-print-acks prints "acked SEQ RECORD" the moment it does).
//
//	appender -store tcp://127.0.0.1:7000 -insecure -token T -stream s -spool DIR \
//	    -ack received -n 100000 -c 64
//
// Each record is "PID-N " padded with letters to -size bytes, newline
// included, so records are unique across runs.
//
// At the end it prints one JSON object to stdout: records, seconds,
// records_per_sec, and append latency percentiles in milliseconds.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/loadgen"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/transport/tcp"
)

type result struct {
	Ack           string  `json:"ack"`
	Concurrency   int     `json:"concurrency"`
	Rate          int     `json:"rate"`
	Records       int64   `json:"records"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
	P50ms         float64 `json:"p50_ms"`
	P90ms         float64 `json:"p90_ms"`
	P99ms         float64 `json:"p99_ms"`
	Maxms         float64 `json:"max_ms"`
}

func main() {
	storeURL := flag.String("store", "", "tcp://host:port or a directory")
	insecure := flag.Bool("insecure", false, "plaintext link")
	token := flag.String("token", "", "link token")
	caFile := flag.String("tls-ca", "", "CA file for the receiver's certificate")
	stream := flag.String("stream", "bench", "stream name")
	spool := flag.String("spool", "", "spool dir")
	ack := flag.String("ack", "local", "local, received or applied")
	n := flag.Int64("n", 10000, "records to append in total (0: until SIGTERM)")
	conc := flag.Int("c", 1, "concurrent appenders")
	rate := flag.Int("rate", 0, "records per second in total, evenly paced (0: as fast as acks allow)")
	size := flag.Int("size", 100, "bytes per record")
	maxAge := flag.Duration("max-age", 10*time.Millisecond, "flush policy max_age")
	maxBytes := flag.Int64("max-bytes", 4<<20, "flush policy max_bytes")
	printAcks := flag.Bool("print-acks", false, `print "acked SEQ RECORD" as each Append returns`)
	flag.IntVar(&maxInFlight, "in-flight", 0, "segments outstanding on a tcp:// link (0: the link's default)")
	flag.BoolVar(&debugLog, "debug", false, "log the shipper at debug level (each seal) to stderr")
	flag.Parse()
	// FERRY_CPUPROFILE=FILE writes a CPU profile, as for ferry itself.
	if path := os.Getenv("FERRY_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*storeURL, *insecure, *token, *caFile, *stream, *spool, *ack, *n, *conc, *rate, *size, *maxAge, *maxBytes, *printAcks); err != nil {
		fmt.Fprintln(os.Stderr, "appender:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// maxInFlight is -in-flight; debugLog is -debug.
var (
	maxInFlight int
	debugLog    bool
)

func run(storeURL string, insecure bool, token, caFile, stream, spoolDir, ack string, n int64, conc, rate, size int,
	maxAge time.Duration, maxBytes int64, printAcks bool) error {
	if storeURL == "" || spoolDir == "" || conc < 1 {
		return fmt.Errorf("need -store, -spool and -c >= 1")
	}
	level := slog.LevelWarn
	if debugLog {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var st store.Store
	if addr, ok := strings.CutPrefix(storeURL, "tcp://"); ok {
		cc := tcp.ClientConfig{Addr: addr, Stream: stream, Token: token, Insecure: insecure, MaxInFlight: maxInFlight}
		if caFile != "" {
			host, _, _ := net.SplitHostPort(addr)
			tlsCfg, err := tcp.LoadClientTLS(caFile, "", "", host)
			if err != nil {
				return err
			}
			cc.TLS = tlsCfg
		}
		c, err := tcp.NewClient(cc, log)
		if err != nil {
			return err
		}
		defer c.Close()
		st = c
	} else {
		abs, err := filepath.Abs(storeURL)
		if err != nil {
			return err
		}
		if st, err = dir.New(abs); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sh, err := shipper.New(ctx, shipper.Config{
		Spool: spool.Config{Dir: spoolDir, Stream: stream,
			Policy: batch.FlushPolicy{MaxAge: maxAge, MaxBytes: maxBytes}},
		Targets: []shipper.Target{{Name: "store", Store: st}},
		Retry:   store.RetryPolicy{Min: 50 * time.Millisecond, Max: time.Second, Jitter: 0.2},
		Ack:     shipper.AckMode(ack),
	}, log)
	if err != nil {
		return err
	}
	defer sh.Close()
	runCtx, stopRun := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- sh.Run(runCtx) }()

	o := loadgen.Options{Records: n, Concurrency: conc, Rate: rate, Size: size}
	var out sync.Mutex
	if printAcks {
		o.OnAck = func(seq uint64, rec []byte) {
			out.Lock()
			fmt.Fprintf(os.Stdout, "acked %d %s", seq, rec)
			out.Unlock()
		}
	}
	if n == 0 {
		o.Duration = 365 * 24 * time.Hour // until SIGTERM
	}
	res, lerr := loadgen.Run(ctx, sh, o, nil)
	drainCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	derr := sh.Drain(drainCtx)
	cancel()
	stopRun()
	if err := <-runErr; err != nil && lerr == nil {
		lerr = err
	}
	if lerr != nil {
		return lerr
	}
	if derr != nil {
		return derr
	}
	out2 := result{Ack: ack, Concurrency: conc, Rate: rate, Records: res.Records, Seconds: res.Seconds,
		RecordsPerSec: res.RecordsPerSec, P50ms: res.P50ms, P90ms: res.P90ms, P99ms: res.P99ms, Maxms: res.Maxms}
	if !printAcks {
		return json.NewEncoder(os.Stdout).Encode(out2)
	}
	return nil
}
