package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ferry-dr/ferry/metrics"
)

const healthExamples = `  # a container's or a script's health check (distroless has no curl)
  ferry health --addr 127.0.0.1:9464

  # the metrics_addr of a config
  ferry health --config /etc/ferry/ship.toml
`

// runHealth exits 0 when a running ferry's /healthz answers 200, and 1
// (with the reason on stderr) otherwise.
func runHealth(args []string, stdout, stderr io.Writer) error {
	c := newFlags("health", "ferry health [--addr HOST:PORT] [--timeout 2s] [--config FILE]", healthExamples, stderr)
	c.accept("metrics-addr")
	addr := c.fs.String("addr", "", "the `host:port` a running ferry serves /metrics and /healthz on (default: metrics_addr of --config)")
	timeout := c.fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := c.parseNoArgs(args, ""); err != nil {
		return err
	}
	if *addr == "" {
		*addr = c.cfg.MetricsAddr
	}
	if *addr == "" {
		return usageError{errors.New("--addr is required (or a --config or --metrics-addr naming metrics_addr)")}
	}
	if *timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %s: want a positive duration", *timeout)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	text, err := metrics.Probe(ctx, *addr)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (no answer within --timeout %s)", err, *timeout)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: %s\n", *addr, text)
	return err
}
